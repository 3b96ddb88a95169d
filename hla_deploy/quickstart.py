"""`hla-deploy quickstart`: the whole path on the CPU, in under a minute, no GPU.

1. load the shipped trained checkpoint (hla_deploy/checkpoints/tiny-pystdlib/);
2. export it to ONNX twice: the custom-op graph (one HLARecurrentStep node per layer) and the
   standard-op graph (plain ONNX ops, runs in stock onnxruntime);
3. build (first use, into the per-user build cache) or reuse the ONNX Runtime custom-op library;
4. run the parity harness on the CPU backends (torch, ort-cpu, onnx-standard) against the
   reference model and write its report;
5. generate text from a prompt with ONNX Runtime (OrtHLASession.generate) and check it against
   the torch model's greedy generation.

Exit status: 0 all good; 1 parity failed (or the ORT text differs from the torch text);
2 a step could not run (missing checkpoint, export or build failure).
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


def _step(n: int, msg: str) -> None:
    print(f"[{n}/5] {msg}", flush=True)


def run(args) -> int:
    t_start = time.perf_counter()
    from pathlib import Path

    out = Path(args.out).resolve()
    # every option is checked before any work, so a bad one costs nothing and leaves nothing
    if args.max_new_tokens < 1:
        print("hla-deploy quickstart: error: --max-new-tokens must be >= 1", file=sys.stderr)
        return 2
    if args.decode_steps < 0:
        print("hla-deploy quickstart: error: --decode-steps must be >= 0", file=sys.stderr)
        return 2
    from hla_deploy.models import tokenizer
    try:
        prompt_ids = tokenizer.encode(args.prompt)
    except ValueError as exc:
        print(f"hla-deploy quickstart: error: --prompt: {exc}", file=sys.stderr)
        return 2
    if not prompt_ids:
        print("hla-deploy quickstart: error: --prompt must not be empty", file=sys.stderr)
        return 2

    # 1. checkpoint ---------------------------------------------------------------------------
    try:
        from hla_deploy.models import HLALanguageModel, default_checkpoint, generate
        ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
        model = HLALanguageModel.load(ckpt, map_location="cpu")
    except Exception as exc:
        print(f"hla-deploy quickstart: error: cannot load the checkpoint: {exc}", file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"hla-deploy quickstart: error: cannot create output directory {out}: {exc}", file=sys.stderr)
        return 2
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
        print(f"hla-deploy quickstart: error: ONNX export failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    _step(2, f"exported ONNX in {t_export:.1f}s: custom op {custom} ({_size(custom)}), "
             f"standard ops {standard} ({_size(standard)})")

    # 3. ORT custom-op library ------------------------------------------------------------------
    try:
        from hla_deploy.plugins import ort_library_path
        from hla_deploy.plugins.build import ort_library_fresh
        t0 = time.perf_counter()
        reused = ort_library_fresh()
        library = Path(ort_library_path(build=True))
        t_lib = time.perf_counter() - t0
    except Exception as exc:
        print(f"hla-deploy quickstart: error: the ONNX Runtime custom-op library is not available: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
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
        print(f"hla-deploy quickstart: error: parity check could not run: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2
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
        print(f"hla-deploy quickstart: error: generation failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
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
