"""`hla-deploy quickstart`: the whole path on the CPU, in under a minute, no GPU.

1. load the shipped trained checkpoint (hla_deploy/checkpoints/tiny-pystdlib/);
2. export it to ONNX twice: the custom-op graph (one HLARecurrentStep node per layer) and the
   standard-op graph (plain ONNX ops, runs in stock onnxruntime);
3. build (first use, into the per-user build cache) or reuse the ONNX Runtime custom-op library;
4. run the parity harness on the CPU backends (torch, ort-cpu, onnx-standard) against the
   reference model and write its report;
5. generate text from a prompt with ONNX Runtime (OrtHLASession.generate) and check it against
   the torch model's greedy generation.

Needs the [export] extra (torch, onnxscript). Exit status (hla_deploy.exit_codes): 0 all good;
1 a step failed while running (export, build, parity out of tolerance, the ORT text differs from
the torch text, a write); 2 a bad option, checkpoint or output directory (before any work);
3 the [export] extra or a build tool is missing; 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
import time

DEFAULT_OUT = "hla_deploy_out"
DEFAULT_PROMPT = "def main(argv=None):\n    "
QUICKSTART_BACKENDS = ("torch", "ort-cpu", "onnx-standard")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"output directory for the exported models and reports (default ./{DEFAULT_OUT}/)")
    parser.add_argument("--checkpoint", metavar="DIR",
                        help="checkpoint directory (default: the shipped tiny-pystdlib model)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt for the text generation")
    parser.add_argument("--max-new-tokens", type=int, default=80, metavar="N",
                        help="tokens to generate (default 80)")
    parser.add_argument("--decode-steps", type=int, default=16, metavar="N",
                        help="teacher-forced decode steps in the parity check (default 16)")


def _fail(msg: str, code: int = 1) -> int:
    print(f"hla-deploy quickstart: error: {msg}", file=sys.stderr)
    return code


def _step(n: int, msg: str) -> None:
    print(f"[{n}/5] {msg}", flush=True)


def run(args) -> int:
    t_start = time.perf_counter()
    from pathlib import Path

    from hla_deploy import tokenizer  # torch-free
    from hla_deploy._atomic import check_output_path
    from hla_deploy.extras import require_extra
    from hla_deploy.runtime.cli import MAX_NEW_TOKENS

    require_extra("export", "hla-deploy quickstart")  # MissingDependencyError: exit 3 (hla_deploy.cli)
    out = Path(args.out).resolve()
    # every option is checked before any work, so a bad one costs nothing and leaves nothing
    if not 1 <= args.max_new_tokens <= MAX_NEW_TOKENS:
        return _fail(f"--max-new-tokens must be between 1 and {MAX_NEW_TOKENS}, got {args.max_new_tokens}", 2)
    if args.decode_steps < 0:
        return _fail("--decode-steps must be >= 0", 2)
    try:
        prompt_ids = tokenizer.encode(args.prompt)
    except ValueError as exc:
        return _fail(f"--prompt: {exc}", 2)
    if not prompt_ids:
        return _fail("--prompt must not be empty", 2)
    try:
        check_output_path(out, "--out directory", directory=True)
    except ValueError as exc:
        return _fail(str(exc), 2)

    # 1. checkpoint ---------------------------------------------------------------------------
    from hla_deploy.models import CheckpointError, HLALanguageModel, default_checkpoint, generate
    try:
        ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
        model = HLALanguageModel.load(ckpt, map_location="cpu")
    except (CheckpointError, OSError) as exc:
        return _fail(f"cannot load the checkpoint: {exc}", 2)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"cannot create output directory {out}: {exc}", 2)
    model.eval()
    c = model.config
    _step(1, f"loaded checkpoint {ckpt}: {model.num_parameters() / 1e6:.2f}M parameters, "
             f"{c.n_layers} layers x {c.n_heads} heads, variant {c.variant}, state "
             f"[{c.n_layers}, B, {c.n_heads}, {c.state_size}] float32")

    # 2. export ---------------------------------------------------------------------------------
    try:
        from hla_deploy.exporters import export_onnx
        t0 = time.perf_counter()
        custom = Path(export_onnx(ckpt, None, out / "model.onnx", op="custom", dtype="fp32"))
        standard = Path(export_onnx(ckpt, None, out / "model_standard.onnx", op="standard", dtype="fp32"))
        t_export = time.perf_counter() - t0
    except Exception as exc:
        return _fail(f"ONNX export failed: {type(exc).__name__}: {exc}")
    _step(2, f"exported ONNX in {t_export:.1f}s: custom op {custom} ({_size(custom)}), "
             f"standard ops {standard} ({_size(standard)})")

    # 3. ORT custom-op library ------------------------------------------------------------------
    from hla_deploy.extras import MissingDependencyError
    try:
        from hla_deploy.native import ort_library_path
        from hla_deploy.native.build import ort_library_fresh
        t0 = time.perf_counter()
        reused = ort_library_fresh()
        library = Path(ort_library_path(build=True))
        t_lib = time.perf_counter() - t0
    except MissingDependencyError:
        raise  # cmake / onnxruntime missing: exit 3 with what to install (hla_deploy.cli)
    except Exception as exc:
        return _fail(f"the ONNX Runtime custom-op library is not available: {type(exc).__name__}: {exc}")
    _step(3, f"ONNX Runtime custom-op library {library} "
             f"({'reused from the build cache' if reused else 'built'}, {t_lib:.1f}s)")

    # 4. parity on the CPU backends -------------------------------------------------------------
    from hla_deploy.parity import run_parity
    from hla_deploy.parity.cli import exit_code
    from hla_deploy.parity.report import format_table, write_report_dir
    try:
        t0 = time.perf_counter()
        report = run_parity(ckpt, onnx=[custom, standard], backends=list(QUICKSTART_BACKENDS),
                            decode_steps=args.decode_steps, dtype="fp32", library=library)
        t_parity = time.perf_counter() - t0
        paths = write_report_dir(report, out / "parity")
    except Exception as exc:
        return _fail(f"parity check could not run: {type(exc).__name__}: {exc}")
    _step(4, f"parity on the CPU backends ({t_parity:.1f}s):")
    print(format_table(report))
    parity_rc = exit_code(report)

    # 5. generate with ONNX Runtime -------------------------------------------------------------
    try:
        from hla_deploy.runtime import OrtHLASession
        t0 = time.perf_counter()
        session = OrtHLASession(str(custom), device="cpu", library=library)
        ort_ids = list(session.generate(prompt_ids, args.max_new_tokens, temperature=0.0))
        t_gen = time.perf_counter() - t0
        torch_ids = list(generate(model, prompt_ids, args.max_new_tokens, temperature=0.0))
    except Exception as exc:
        return _fail(f"generation failed: {type(exc).__name__}: {exc}")
    new_ids, torch_new = ort_ids, torch_ids  # both return only the new tokens
    same = new_ids == torch_new
    gen_path = out / "generated.txt"
    full_text = tokenizer.decode(prompt_ids + new_ids)  # valid text even when the prompt was not UTF-8
    _write_text(gen_path, full_text)
    _step(5, f"generated {len(new_ids)} tokens with ONNX Runtime (CPU) in {t_gen:.2f}s "
             f"({len(new_ids) / max(t_gen, 1e-9):.0f} tokens/s incl. prefill); greedy tokens "
             f"{'identical to' if same else 'DIFFER from'} the torch model's")
    print("----- prompt + generated text -----")
    print(full_text)
    print("-----------------------------------")

    total = time.perf_counter() - t_start
    verdict = "PASS" if parity_rc == 0 and same else "FAIL"
    print(f"\nquickstart {verdict} in {total:.1f}s. Artifacts in {out}:")
    for label, p in (("custom-op ONNX (ORT custom op / TensorRT plugin)", custom),
                     ("standard-op ONNX (stock onnxruntime)", standard),
                     ("ORT custom-op library", library),
                     ("parity JSON", paths["json"]), ("parity report", paths["markdown"]),
                     ("parity plot", paths["plot"]), ("generated text", gen_path)):
        print(f"  {label}: {p}")
    print(f"check these files again (or after changing them): hla-deploy parity {ckpt} --onnx {custom} "
          f"--onnx {standard} --backends {','.join(QUICKSTART_BACKENDS)} --report {out / 'parity'}")
    if parity_rc != 0:
        print("hla-deploy quickstart: parity FAILED (see the table above)", file=sys.stderr)
        return 1
    if not same:
        print("hla-deploy quickstart: the ONNX Runtime greedy text differs from the torch model's",
              file=sys.stderr)
        return 1
    return 0


def _size(path) -> str:
    from pathlib import Path
    n = Path(path).stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _write_text(path, text: str) -> None:
    from hla_deploy._atomic import atomic_write_text
    atomic_write_text(path, text)
