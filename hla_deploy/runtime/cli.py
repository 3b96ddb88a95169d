"""`hla-deploy generate MODEL --prompt TEXT --max-new-tokens N [--device cpu|cuda [--tf32]] ...`

MODEL is an exported ``.onnx`` (ONNX Runtime + the custom-op library), a TensorRT ``.plan``
(hla_deploy.runtime.trt_session.TrtHLASession) or a checkpoint directory (the torch reference
model, the [export] extra). Prints the prompt, then each generated token as soon as it is sampled
(flushed, so a pipe or a terminal sees the text grow), and the decode speed on stderr; ``--json``
prints one JSON object with the token ids at the end instead.

Ctrl-C keeps what was printed, ends the line, says on stderr how many tokens were generated
before the interrupt, and exits 130 (with ``--json``: the JSON of the tokens so far, with
``"interrupted": true``). ``--max-new-tokens`` is 1 to MAX_NEW_TOKENS.

Exit status (hla_deploy.exit_codes): 0 done; 1 a failure while generating; 2 a bad option, or a
model / library / checkpoint that cannot be used (named); 3 a runtime that is not installed
(onnxruntime, onnxruntime-gpu for --device cuda, TensorRT, torch for a checkpoint); 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import codecs
import json
import math
import sys
import time
from pathlib import Path

from hla_deploy.exit_codes import UsageError

#: The largest --max-new-tokens (the state is fixed-size, so this is a guard against a typo such
#: as 99999999999999999999, not a context limit).
MAX_NEW_TOKENS = 1_000_000
TRT_SUFFIXES = (".plan", ".engine", ".trt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported .onnx, TensorRT .plan, or checkpoint directory")
    parser.add_argument("--prompt", default="def ", help="prompt text (byte-level tokens; default 'def ')")
    parser.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                        help=f"tokens to generate, 1 to {MAX_NEW_TOKENS} (default 64)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="ONNX Runtime execution provider / torch device (default cpu)")
    parser.add_argument("--tf32", action="store_true",
                        help="with --device cuda and an .onnx model: let the CUDA EP run MatMul in "
                             "TF32 (faster, logits ~1e-3 off); default off, exact float32")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (reproducible output)")
    parser.add_argument("--library", default=None,
                        help="ORT custom-op library (default: build/find libhla_ort_op.so)")
    parser.add_argument("--plugin", default=None, help="TensorRT plugin library for a .plan (default: built one)")
    parser.add_argument("--json", action="store_true", help="print token ids and timing as JSON")


def check_arguments(args) -> list:
    """Every option, before any model is opened; returns the prompt's token ids. UsageError (exit 2)."""
    from hla_deploy import tokenizer  # torch-free (hla_deploy.models imports torch)

    n = args.max_new_tokens
    if not 1 <= n <= MAX_NEW_TOKENS:  # 0 is a mistake too, as in quickstart and the C++ runner
        raise UsageError(f"--max-new-tokens must be between 1 and {MAX_NEW_TOKENS}, got {n}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UsageError(f"--temperature must be a finite value >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    try:
        prompt_ids = tokenizer.encode(args.prompt)
    except ValueError as e:
        raise UsageError(f"--prompt: {e}") from None
    if not prompt_ids:
        raise UsageError("--prompt must not be empty")
    path = Path(args.model)
    if not path.exists():
        raise UsageError(f"model {str(path)!r} not found ({_why_missing(path)}; expected an exported .onnx "
                         f"file, a TensorRT .plan or a checkpoint directory)")
    if path.is_file() and path.suffix != ".onnx" and path.suffix not in TRT_SUFFIXES:
        raise UsageError(f"cannot tell the model kind of {str(path)!r}: expected a .onnx file, a .plan "
                         f"file or a checkpoint directory")
    if args.tf32 and (args.device != "cuda" or path.suffix != ".onnx"):
        raise UsageError("--tf32 applies only to an .onnx model with --device cuda (the ONNX Runtime "
                         "CUDA EP's MatMul)")
    for flag, value in (("--library", args.library), ("--plugin", args.plugin)):
        if value is not None:
            _check_library(flag, Path(value))
    return prompt_ids


def _why_missing(path: Path) -> str:
    """Why ``path`` is not there: a component that is a file, a missing directory, or no such file."""
    from hla_deploy._atomic import missing_parent
    return missing_parent(path) or "no such file"


def _check_library(flag: str, path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a directory; expected a shared library (.so)")
    if not path.is_file():
        raise UsageError(f"{flag} {str(path.absolute())!r} not found ({_why_missing(path)})")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"\x7fELF":
        raise UsageError(f"{flag} {str(path.absolute())!r} is not a shared library (no ELF header)")


def open_model(args):
    """(backend name, stream(prompt_ids, n) -> iterator of new token ids). A model, checkpoint or
    library that cannot be used raises UsageError (exit 2); a missing runtime MissingDependencyError (3)."""
    from hla_deploy.extras import require_extra

    path = Path(args.model)
    kw = dict(temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    if path.is_dir():
        require_extra("export", "generate from a checkpoint directory (the torch model; an exported .onnx "
                                "or .plan runs without it)")
        from hla_deploy.models import HLALanguageModel
        from hla_deploy.models.generate import generate_stream
        if args.device == "cuda":
            import torch
            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() "
                                   "is False); use --device cpu")
        model = HLALanguageModel.load(path, map_location=args.device).eval()  # CheckpointError: exit 2
        return "torch", lambda ids, n: generate_stream(model, ids, n, **kw)
    if path.suffix == ".onnx":
        from hla_deploy.ort_install import require_onnxruntime
        from hla_deploy.runtime.onnx_file import read_export
        from hla_deploy.runtime.ort_session import OrtHLASession
        require_onnxruntime()  # MissingDependencyError: exit 3 (and without the CUDA EP for --device cuda)
        try:
            read_export(path)  # not an hla-deploy export, unreadable: the file the user named
        except (OSError, ValueError) as e:
            raise UsageError(str(e)) from None
        sess = OrtHLASession(path, device=args.device, library=args.library, tf32=bool(args.tf32))
        return f"onnxruntime-{args.device}", lambda ids, n: sess.generate_stream(ids, n, **kw)
    from hla_deploy.runtime.trt_session import TrtHLASession
    sess = TrtHLASession(path, plugin_path=args.plugin)  # TensorRTUnavailableError: exit 3
    return "tensorrt", lambda ids, n: sess.generate_stream(ids, n, **kw)


def run(args: argparse.Namespace) -> int:
    from hla_deploy import exit_codes
    prompt_ids = check_arguments(args)  # UsageError: exit 2 (hla_deploy.cli)
    backend, stream = open_model(args)
    out = sys.stdout
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # as tokenizer.decode, piece by piece
    if not args.json:
        out.write(decoder.decode(bytes(prompt_ids)))  # printable even when the prompt was not UTF-8
        out.flush()
    ids, interrupted = [], False
    t0 = time.perf_counter()
    try:
        for tok in stream(prompt_ids, args.max_new_tokens):
            ids.append(int(tok))
            if not args.json:
                piece = decoder.decode(bytes([tok]))
                if piece:
                    out.write(piece)
                    out.flush()
    except KeyboardInterrupt:
        interrupted = True
    except Exception:  # a failure while generating: end the printed line, then exit 1 (hla_deploy.cli)
        if not args.json:
            out.write(decoder.decode(b"", final=True) + "\n")
            out.flush()
        raise
    elapsed = time.perf_counter() - t0
    tok_s = len(ids) / elapsed if elapsed > 0 else 0.0
    if args.json:
        from hla_deploy import tokenizer
        doc = {"backend": backend, "prompt_ids": prompt_ids, "generated_ids": ids,
               "text": tokenizer.decode(ids), "seconds": elapsed, "tokens_per_s": tok_s}
        if interrupted:
            doc["interrupted"] = True
        print(json.dumps(doc), flush=True)
    else:
        out.write(decoder.decode(b"", final=True) + "\n")
        out.flush()
    if interrupted:
        print(f"generate: interrupted after {len(ids)} of {args.max_new_tokens} tokens (the text above is "
              f"what was generated)", file=sys.stderr)
        return exit_codes.INTERRUPTED
    if not args.json:
        print(f"[{backend}] {len(ids)} tokens in {elapsed:.3f} s ({tok_s:.1f} tokens/s, prefill included)",
              file=sys.stderr)
    return exit_codes.OK
