#!/usr/bin/env python3
"""Ship a GPU training run as the package's demo checkpoint (the one step after examples/gpu_train_demo.sh).

    python3 examples/ship_demo_checkpoint.py RUN_DIR [--to hla_deploy/checkpoints/tiny-pystdlib]
        [--benchmarks docs/BENCHMARKS.md] [--force]

RUN_DIR is what the GPU call returned (its `ckpt/` folder, or that folder itself): config.json,
model.safetensors (or the `model.safetensors.part-NN` pieces of `split -b 15m`, joined here in
order), metrics.json, loss_curve.png, TRAINING_RUN.md and SHA256SUMS. In order:
1. joins the parts and checks the SHA-256 of config.json and model.safetensors against SHA256SUMS
   (a mismatch or a missing file is an error naming the file: nothing is written);
2. loads the checkpoint (hla_deploy.models.load_checkpoint checks every tensor);
3. checks the targets of issue 20 from metrics.json: held-out <= 0.80 nats/byte, greedy card
   samples <= 50% whitespace, >= 400,000 training tokens/s, wall <= 1.15 x training time; a missed
   target stops here (exit 1) unless --force, and the card says which targets were missed;
4. writes into --to: the five files, and MODEL_CARD.md generated from metrics.json and
   TRAINING_RUN.md (command, data, split, precision, tokens/s, loss curve, samples);
5. replaces the `train-demo` section of --benchmarks with the run's speed and the command.
Then run the shipped-checkpoint tests and the quickstart (printed at the end) and commit.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hla_deploy._atomic import atomic_write_text  # noqa: E402

FILES = ("config.json", "model.safetensors", "metrics.json", "loss_curve.png", "TRAINING_RUN.md")
TARGETS = {"held-out loss <= 0.80 nats/byte": lambda m: m["final_val_loss"] <= 0.80,
           "greedy card samples <= 50% whitespace": lambda m: all(
               r["whitespace_fraction"] <= 0.5 for r in m["card_samples_greedy"].values()),
           ">= 400,000 training tokens/s": lambda m: m["train_tokens_per_s"] >= 400_000,
           "wall <= 1.15 x training time": lambda m: m["timing"]["wall_over_train"] <= 1.15}
SECTION = "train-demo"


class ShipError(Exception):
    pass


def find_run(run_dir: Path) -> Path:
    for cand in (run_dir / "ckpt", run_dir):
        if (cand / "SHA256SUMS").is_file():
            return cand
    raise ShipError(f"{run_dir}: no SHA256SUMS in it or in {run_dir / 'ckpt'} (expected what "
                    f"examples/gpu_train_demo.sh writes: ckpt/{{{', '.join(FILES)}, SHA256SUMS}})")


def joined_weights(src: Path, tmp: Path) -> Path:
    """model.safetensors itself, or its split parts joined (in name order) into tmp."""
    whole = src / "model.safetensors"
    parts = sorted(src.glob("model.safetensors.part-*"))
    if whole.is_file():
        if parts:
            raise ShipError(f"{src}: both model.safetensors and its parts {[p.name for p in parts]}: keep one")
        return whole
    if not parts:
        raise ShipError(f"{src}: neither model.safetensors nor model.safetensors.part-* found")
    out = tmp / "model.safetensors"
    with open(out, "wb") as dst:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, dst)
    print(f"joined {len(parts)} parts ({', '.join(p.name for p in parts)}) into {out.stat().st_size:,} bytes")
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_digests(src: Path, weights: Path) -> dict:
    want = {}
    for line in (src / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            want[name.lstrip("*")] = digest
    got = {}
    for name, path in (("config.json", src / "config.json"), ("model.safetensors", weights)):
        if name not in want:
            raise ShipError(f"{src / 'SHA256SUMS'} has no line for {name}")
        if not path.is_file():
            raise ShipError(f"{path} is missing")
        got[name] = sha256(path)
        if got[name] != want[name]:
            raise ShipError(f"{path}: SHA-256 {got[name]} differs from {want[name]} in SHA256SUMS "
                            f"(a broken copy or wrongly joined parts)")
        print(f"SHA-256 ok: {name} {got[name]}")
    return got


def target_report(m: dict) -> dict:
    return {name: bool(ok(m)) for name, ok in TARGETS.items()}


# ------------------------------------------------------------------------------------------ card
def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def model_card(m: dict, run_md: str, digests: dict, targets: dict) -> str:
    c, d, t = m["config"], m["data"], m["timing"]
    n_params = m["parameters"]
    state_n = c["n_layers"] * c["n_heads"]
    missed = [k for k, ok in targets.items() if not ok]
    val_points = ", ".join(f"{s}: {v:.3f}" for s, v in m["val"])
    samples = []
    for prompt, r in m["card_samples_greedy"].items():
        samples += [f"Greedy, prompt {prompt!r} ({100 * r['whitespace_fraction']:.0f}% whitespace):", "",
                    "```", r["text"], "```", ""]
    lines = [
        f"# tiny-pystdlib: a {n_params / 1e6:.1f}M-parameter byte-level HLA language model (demo)", "",
        "**What it is for.** A small, real, trained checkpoint for hla-deploy's demos and tests: export to ONNX, "
        "run with ONNX Runtime / TensorRT, check parity against the torch model, generate text on a laptop or a "
        "Jetson. It was trained with the package's Triton kernels on one GPU. It writes text that looks like "
        "Python; it is **not** a useful model of Python or of anything else.", "",
        "| | |", "| --- | --- |",
        f"| files | `config.json` (HLAConfig), `model.safetensors` ({m['save_dtype']} weights, "
        f"{m['checkpoint_bytes'] / 2**20:.2f} MiB; loaded as float32), `metrics.json` (training log), "
        "`loss_curve.png`, `TRAINING_RUN.md` (the run's own record), this card |",
        f"| SHA-256 of model.safetensors | `{digests['model.safetensors']}` |",
        "| load | `HLALanguageModel.load(hla_deploy.models.default_checkpoint())` |",
        f"| parameters | {n_params:,} (tied input/output embedding) |",
        "| tokens | bytes (vocab 256), `hla_deploy.models.tokenizer` |",
        f"| held-out loss | **{m['final_val_loss']:.4f} nats/byte ({m['final_val_loss'] / 0.6931471805599453:.3f} "
        f"bits/byte)**, {m['final_val_note']}; byte-unigram cross-entropy {m['unigram_val_ce']:.3f} |",
        f"| training | {m['train_seconds']:.0f} s on one {m['device_name']}, {m['final_step']:,} steps, "
        f"{m['final_step'] * m['batch'] * m['seq_len'] / 1e6:.0f}M tokens, **{m['train_tokens_per_s']:,.0f} "
        f"tokens/s** (attention backend `{m['attn_backend']}`, {m['precision']}) |",
    ]
    if missed:
        lines.append(f"| targets missed (shipped with --force) | {'; '.join(missed)} |")
    lines += [
        "", "## Architecture", "",
        "`hla_deploy.models.HLALanguageModel` (exact forward and parameter names in `hla_deploy/models/model.py`):", "",
        f"- d_model {c['d_model']}, {c['n_layers']} blocks, SwiGLU MLP hidden {c['mlp_hidden']}, RMSNorm "
        f"(eps {c['rms_eps']}), no biases, tied embeddings.",
        f"- Mixer per block: {c['n_heads']} HLA heads, variant `{c['variant']}`, head_dim {c['head_dim']}, "
        f"value_dim {c['value_dim']}, q and k L2-normalised per head, per-head decay γ = {c['decay']} "
        "(geometric in 1 − γ), no normaliser, no ridge; per-head RMSNorm on the mixer output, then the "
        "output projection.",
        f"- Recurrent state: [L, B, H, N] = [{c['n_layers']}, B, {c['n_heads']}, "
        f"{c['head_dim'] * (c['head_dim'] + c['value_dim'])}] float32 "
        f"({state_n * c['head_dim'] * (c['head_dim'] + c['value_dim']) * 4 / 1024:.0f} KiB per sequence, "
        "whatever the context length; bounded with γ < 1 and unit-norm keys).", "",
        "## Data", "",
        f"The `.py` files of the Python standard library of the training machine: Python **{d['python']}**, "
        f"`{d['root']}`, excluding folders named {', '.join('`' + x + '`' for x in d['excluded_dirs'])}: "
        f"{d['files']} files, sorted by relative path. Every {_ordinal(d['val_every'])} file is held out for "
        f"validation: {d['val_files']} files, {d['val_bytes']:,} bytes (e.g. "
        f"{', '.join('`' + x + '`' for x in d['val_file_examples'][:3])}); the other {d['train_files']} files "
        f"({d['train_bytes']:,} bytes) are training text. Files are joined with a blank line. Validation "
        f"loss is the mean over {m.get('eval_windows', 128)} fixed windows of {m['seq_len']} bytes evenly "
        "spaced over the held-out text. (On another Python version the stdlib, and so the split, differ.)", "",
        "## Training", "",
        f"AdamW (betas 0.9/0.95, weight decay 0.1 on matrices, fused), lr {m['lr']}, linear warm-up, cosine "
        f"decay, gradient clip 1.0, batch {m['batch']} windows × {m['seq_len']} bytes, seed {m['seed']}, "
        f"{m['final_step']:,} steps ({m['steps_from']}). Precision: {m['precision_note']}. torch.compile: "
        f"{m['compile']}. Attention backend `{m['attn_backend']}` (`triton`: hla_deploy/ops/triton). "
        f"{m['device_name']}, torch {m['torch']}, Triton {m['triton']}. Command, from the repo root "
        "(`examples/gpu_train_demo.sh` ran it after checking the bf16 Triton gradients at these shapes "
        "against the float32 chunk form, `tests/gpu/test_train_bf16.py`):", "",
        f"    python3 examples/train_tiny_lm.py {' '.join(m['argv'])}", "",
        f"Speed: {m['train_tokens_per_s']:,.0f} training tokens/s over the whole run, "
        f"{t['steady_tokens_per_s'] or 0:,.0f} in steady state ({t['steady_ms_per_step'] or 0:.2f} ms per step); "
        f"wall time {t['wall_seconds']:.0f} s = {t['wall_over_train']:.3f} × the {m['train_seconds']:.0f} s of "
        "training. " + (f"The hard stop ended it at step {m['final_step']:,} of {m['steps']:,}. " if m.get("stopped_early")
                        else "The same run without the time budget: replace `--time-budget-min ... --hard-stop-min ...` "
                        f"by `--steps {m['steps']}` (bit-identical results are not expected across GPUs or library "
                        "versions)."), "",
        f"Validation loss (nats/byte, {m['precision']} during training) by step: {val_points} "
        "(`loss_curve.png`, `metrics.json`).", "",
        "## Samples (greedy, from the shipped weights, float32)", "", *samples,
        f"Temperature 0.8, top_k 40, seed {m['seed']}:", "", "```", m["sample_t0.8_k40"], "```", "",
        "## The run's own record", "",
        "`TRAINING_RUN.md` (written by the training run itself, unchanged):", "",
        *["> " + line if line else ">" for line in run_md.strip().splitlines()], "",
        "## Limitations", "",
        f"A {n_params / 1e6:.1f}M-parameter model trained for {m['train_seconds'] / 60:.0f} minutes: syntax-shaped, "
        "mostly meaningless code; greedy decoding repeats itself; it saw only Python stdlib text. License of the "
        "training text: the Python Software Foundation License (the stdlib sources).",
    ]
    return "\n".join(lines) + "\n"


def benchmarks_section(m: dict) -> str:
    t = m["timing"]
    prof = m.get("profile") or {}
    busy = ("" if prof.get("device_busy_fraction") is None or prof.get("error") else
            f" The profiled steps ({prof['steps']} after step {prof['after_step']}): {prof['wall_ms_per_step']:.2f} ms "
            f"wall, {prof['device_ms_per_step']:.2f} ms of kernels ({100 * prof['device_busy_fraction']:.0f}% busy), "
            f"{prof['kernels_per_step']:.0f} kernels per step.")
    return "\n".join([
        f"<!-- section: {SECTION} -->",
        "## Training the demo model (Triton kernels, one GPU)", "",
        f"`examples/gpu_train_demo.sh` on one {m['device_name']} (torch {m['torch']}, Triton {m['triton']}), "
        f"recorded by the run itself (`hla_deploy/checkpoints/tiny-pystdlib/TRAINING_RUN.md`, `metrics.json`). "
        f"Model: {m['parameters']:,} parameters, batch {m['batch']} × {m['seq_len']} bytes, {m['precision']}, "
        f"torch.compile {m['compile']}. Command:", "",
        f"    python3 examples/train_tiny_lm.py {' '.join(m['argv'])}", "",
        "| training tokens/s (whole run) | steady state | ms per step | training s | wall s | wall / training | held-out nats/byte |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {m['train_tokens_per_s']:,.0f} | {t['steady_tokens_per_s'] or 0:,.0f} | {t['steady_ms_per_step'] or 0:.2f} | "
        f"{m['train_seconds']:.1f} | {t['wall_seconds']:.1f} | {t['wall_over_train']:.3f} | {m['final_val_loss']:.4f} |", "",
        f"Before (issue 20, float32 Triton kernels, 5.18M parameters): 39,293 tokens/s.{busy}",
        f"<!-- /section: {SECTION} -->", ""])


def update_benchmarks(path: Path, m: dict) -> None:
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = benchmarks_section(m)
    pat = re.compile(rf"<!-- section: {SECTION} -->.*?<!-- /section: {SECTION} -->\n?", re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block
    atomic_write_text(path, text)


# ------------------------------------------------------------------------------------------ main
def ship(run_dir: Path, to: Path, benchmarks: Path | None, force: bool) -> int:
    from hla_deploy import checkpoint_manifest
    from hla_deploy.models import load_checkpoint
    src = find_run(run_dir)
    with tempfile.TemporaryDirectory(prefix="hla-ship-") as tmp:
        weights = joined_weights(src, Path(tmp))
        digests = check_digests(src, weights)
        for name in ("metrics.json", "loss_curve.png", "TRAINING_RUN.md"):
            if not (src / name).is_file():
                raise ShipError(f"{src / name} is missing")
        stage = Path(tmp) / "stage"
        stage.mkdir()
        for name in FILES:
            shutil.copyfile(weights if name == "model.safetensors" else src / name, stage / name)
        # the digest every load checks, written here from the checked weights (the run's own
        # manifest.json may be absent; a shipped folder must never keep the previous model's)
        checkpoint_manifest.write_manifest(stage, ["model.safetensors"])
        model = load_checkpoint(stage)                                   # checks names, shapes, finiteness
        m = json.loads((src / "metrics.json").read_text())
        if m["parameters"] != model.num_parameters():
            raise ShipError(f"{src / 'metrics.json'} says {m['parameters']} parameters, the checkpoint has "
                            f"{model.num_parameters()}")
        targets = target_report(m)
        for name, ok in targets.items():
            print(f"{'met   ' if ok else 'MISSED'}  {name}")
        if not all(targets.values()) and not force:
            print("not shipped: a target was missed (--force ships it anyway; the card then says which)")
            return 1
        card = model_card(m, (src / "TRAINING_RUN.md").read_text(), digests, targets)
        to.mkdir(parents=True, exist_ok=True)
        shipped = FILES + (checkpoint_manifest.MANIFEST_NAME,)
        for name in shipped:
            shutil.copyfile(stage / name, to / f".{name}.ship")
        for name in shipped:
            (to / f".{name}.ship").replace(to / name)
        atomic_write_text(to / "MODEL_CARD.md", card)
    print(f"shipped into {to}: {', '.join(shipped)}, MODEL_CARD.md")
    if benchmarks is not None:
        update_benchmarks(benchmarks, m)
        print(f"updated the '{SECTION}' section of {benchmarks}")
    print("next: python -m pytest -q tests/test_models.py -k shipped tests/test_quickstart.py "
          "tests/test_ort_runtime.py -k shipped; hla-deploy quickstart; git add " + str(to))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="what gpu_train_demo.sh returned (OUT or OUT/ckpt)")
    ap.add_argument("--to", type=Path, default=ROOT / "hla_deploy" / "checkpoints" / "tiny-pystdlib")
    ap.add_argument("--benchmarks", default=str(ROOT / "docs" / "BENCHMARKS.md"),
                    help="docs file whose train-demo section gets the run's numbers ('': none)")
    ap.add_argument("--force", action="store_true", help="ship even if a target was missed")
    args = ap.parse_args(argv)
    try:
        return ship(args.run_dir, args.to, Path(args.benchmarks) if args.benchmarks else None, args.force)
    except (ShipError, ValueError) as exc:      # CheckpointError is a ValueError
        print(f"ship_demo_checkpoint: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
