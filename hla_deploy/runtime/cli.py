"""`hla-deploy generate MODEL --prompt TEXT --max-new-tokens N [--device cpu|cuda [--tf32]] ...`

MODEL is an exported ``.onnx`` (ONNX Runtime + the custom-op library), a TensorRT ``.plan``
(hla_deploy.runtime.trt_session.TrtHLASession) or a checkpoint directory (the torch reference
model). Prints the prompt followed by the generated text, and the decode speed on stderr;
``--json`` prints one JSON object with the token ids instead.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported .onnx, TensorRT .plan, or checkpoint directory")
    parser.add_argument("--prompt", default="def ", help="prompt text (byte-level tokens; default 'def ')")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate, >= 1 (default 64)")
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


def _generator(args):
    """Returns (name, generate(prompt_ids, n) -> list[int])."""
    path = Path(args.model)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    kw = dict(temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    tf32 = bool(getattr(args, "tf32", False))
    if tf32 and (args.device != "cuda" or path.suffix != ".onnx"):
        raise ValueError("--tf32 applies only to an .onnx model with --device cuda (the ONNX Runtime "
                         "CUDA EP's MatMul)")
    if path.is_dir():
        try:
            from hla_deploy.models import HLALanguageModel, generate
        except ImportError as e:  # a device without torch: the exported model is what runs there
            raise RuntimeError(f"a checkpoint directory runs on the torch model, and torch is not "
                               f"importable here ({e}); pass an exported .onnx or a TensorRT .plan") from e
        if args.device == "cuda":
            import torch
            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() "
                                   "is False); use --device cpu")
        model = HLALanguageModel.load(path, map_location=args.device).eval()
        return "torch", lambda ids, n: generate(model, ids, n, **kw)
    if path.suffix == ".onnx":
        from hla_deploy.runtime.ort_session import OrtHLASession
        sess = OrtHLASession(path, device=args.device, library=args.library, tf32=tf32)
        return f"onnxruntime-{args.device}", lambda ids, n: sess.generate(ids, n, **kw)
    if path.suffix in (".plan", ".engine", ".trt"):
        try:
            from hla_deploy.runtime.trt_session import TrtHLASession
        except ImportError as e:
            raise RuntimeError(f"TensorRT runtime unavailable ({e}); it needs the `tensorrt` package "
                               f"and hla_deploy.runtime.trt_session") from e
        sess = TrtHLASession(path, plugin_path=args.plugin)
        return "tensorrt", lambda ids, n: sess.generate(ids, n, **kw)
    raise ValueError(f"cannot tell the model kind of {path}: expected a .onnx file, a .plan file "
                     f"or a checkpoint directory")


def run(args: argparse.Namespace) -> int:
    from hla_deploy import tokenizer  # torch-free (hla_deploy.models imports torch)

    if args.max_new_tokens < 1:  # as quickstart and the C++ runner: generating nothing is a mistake
        print(f"generate: error: --max-new-tokens must be >= 1, got {args.max_new_tokens}", file=sys.stderr)
        return 2
    try:
        backend, gen = _generator(args)
        prompt_ids = tokenizer.encode(args.prompt)
        if not prompt_ids:
            raise ValueError("--prompt must not be empty")
        t0 = time.perf_counter()
        ids = gen(prompt_ids, args.max_new_tokens)
        elapsed = time.perf_counter() - t0
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        print(f"generate: error: {e}", file=sys.stderr)
        return 1
    tok_s = len(ids) / elapsed if elapsed > 0 else 0.0
    if args.json:
        print(json.dumps({"backend": backend, "prompt_ids": prompt_ids, "generated_ids": ids,
                          "text": tokenizer.decode(ids), "seconds": elapsed, "tokens_per_s": tok_s}))
    else:
        print(tokenizer.decode(prompt_ids + ids))  # printable even when the prompt was not UTF-8
        print(f"[{backend}] {len(ids)} tokens in {elapsed:.3f} s ({tok_s:.1f} tokens/s, prefill included)",
              file=sys.stderr)
    return 0
