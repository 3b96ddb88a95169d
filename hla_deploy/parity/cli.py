"""`hla-deploy parity [CKPT] [--onnx ...]`: check every backend against the reference model (the
checkpoint's torch model; without CKPT the float32 standard-op graph given with --onnx, no torch).

Exit status (hla_deploy.exit_codes): 0 every backend that ran is within tolerance (and at least
one ran); 1 a backend is out of tolerance or failed to run (named in the output and the JSON), the
reference failed to run, or the report could not be written; 2 bad input (checkpoint, ONNX file,
option, output path) or no backend could run here; 3 a checkpoint given without the [export]
extra (torch).
"""
from __future__ import annotations

import argparse
import sys

from .backend_names import BACKEND_NAMES as _BACKENDS

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", default=None,
                        help="checkpoint directory (config.json + model.safetensors); the reference is its "
                             "torch model ([export] extra). Without it: compare exported graphs, the float32 "
                             "standard-op graph given with --onnx being the reference (no torch)")
    parser.add_argument("--onnx", action="append", metavar="MODEL.onnx",
                        help="check this exported ONNX file as is (custom-op graph for ort-*/trt, "
                             "standard-op graph for onnx-standard; may be given twice, once per kind). "
                             "Default: export to a temp dir")
    parser.add_argument("--backends", default=",".join(_BACKENDS),
                        help=f"comma-separated backends (default: all: {','.join(_BACKENDS)})")
    parser.add_argument("--prompts", metavar="FILE",
                        help="UTF-8 text file, one prompt per line (\\n and \\t escapes are expanded); "
                             "default: built-in prompts")
    parser.add_argument("--decode-steps", type=int, default=16, metavar="N",
                        help="teacher-forced greedy decode steps after the prefill (default 16)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="precision of the backends under test; the reference is fp32 (default fp32)")
    parser.add_argument("--json", metavar="OUT.json", help="write the report as JSON (docs/PARITY.md schema)")
    parser.add_argument("--report", metavar="DIR", help="write parity.json, PARITY_REPORT.md and a PNG plot into DIR")
    parser.add_argument("--tol", action="append", metavar="KEY=VALUE", default=[],
                        help="override a tolerance (max_abs_err, rel_rms_err, min_cosine, token_agreement, "
                             "state_rel_err); repeatable")
    parser.add_argument("--library", metavar="PATH", help="ORT custom-op library (default: build or find it)")
    parser.add_argument("--quiet", action="store_true", help="print only the table")


def read_prompts(path: str) -> list:
    """One prompt per non-empty line; the escapes \\n, \\t and \\\\ are expanded."""
    from pathlib import Path
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"prompts file {p} is not UTF-8 text ({exc})") from None
    prompts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        prompts.append(_unescape(line))
    if not prompts:
        raise ValueError(f"prompts file {p} has no non-empty lines")
    return prompts


def _unescape(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[s[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def run(args) -> int:
    from . import run_parity
    from .report import format_table, write_json, write_report_dir
    from .tolerances import parse_overrides

    def say(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    from hla_deploy._atomic import check_output_path
    from hla_deploy.extras import MissingDependencyError

    try:
        # outputs first: a bad --json / --report path must not cost a whole parity run
        if args.json:
            check_output_path(args.json, "--json file")
        if args.report:
            check_output_path(args.report, "--report directory", directory=True)
        overrides = parse_overrides(args.tol)
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        prompts = read_prompts(args.prompts) if args.prompts else None
        report = run_parity(args.checkpoint, onnx=args.onnx, backends=backends, prompts=prompts,
                            decode_steps=args.decode_steps, dtype=args.dtype, tolerances=overrides,
                            library=args.library, log=say)
    except MissingDependencyError:
        raise  # exit 3 with what to install (hla_deploy.cli)
    except (ValueError, TypeError, OSError) as exc:  # CheckpointError (a ValueError) included
        print(f"hla-deploy parity: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # e.g. a reference model that cannot run: a failure while running
        print(f"hla-deploy parity: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAIL

    print(format_table(report))
    try:
        if args.json:
            print(f"JSON report: {write_json(report, args.json)}")
        if args.report:
            paths = write_report_dir(report, args.report)
            print(f"report: {paths['markdown']} (plot {paths['plot']}, JSON {paths['json']})")
    except OSError as exc:  # the path was checked first: this is a failure while writing (disk full, ...)
        print(f"hla-deploy parity: error: cannot write the report: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return exit_code(report)


def exit_code(report: dict) -> int:
    s = report["summary"]
    if s["failed"] or s["errors"]:
        return EXIT_FAIL
    if not s["passed"]:
        print("hla-deploy parity: no backend could run here (all skipped); nothing was checked",
              file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
