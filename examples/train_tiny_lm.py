#!/usr/bin/env python3
"""Train a tiny byte-level HLA language model on the Python standard library's own sources.

Data: every `*.py` file under `sysconfig.get_paths()["stdlib"]` (site-packages, `test`/`tests`
folders and `__pycache__` excluded), sorted by relative path; every `--val-every`-th file (by
that order) is held out for validation, the rest is training text. Files are read as bytes and
joined with a blank line; tokens are bytes (vocab 256).

Training: AdamW (betas 0.9/0.95, weight decay on matrices only), linear warm-up then cosine decay
to `--min-lr-ratio * lr`, gradient clipping, random windows of `--seq-len + 1` bytes drawn with a
seeded generator. Periodic validation loss on fixed held-out windows, a tqdm progress bar,
`metrics.json` + `loss_curve.png` in `--out`, and atomic checkpoints every `--ckpt-every` steps
(`--out/checkpoints/step_NNNNNN/` = model (config.json + model.safetensors) + train_state.pt with
optimizer, step, RNG states; `--out/latest.txt` names the newest). `--resume` continues from it.

`--time-budget-min M` first times a few steps, then sets `--steps` so the training steps take
about M minutes (printed, and recorded in metrics.json as `steps`): the run is then the same as
one with that `--steps` value. `--hard-stop-min` ends training early (with a checkpoint) as a
safety net.

Presets (`--preset NAME` sets defaults; explicit flags still win):
    demo-triton   the demo to ship (issue 12), trained with the Triton kernels on one CUDA GPU:
                  d_model 256, 6 blocks of 4 hla2 heads (d = dv = 64), MLP 768 (5,181,056
                  parameters, a 19.8 MiB float32 checkpoint), batch 32 x 512 bytes, --device cuda
                  --attn-backend triton. Not run yet: hla_deploy/checkpoints/tiny-pystdlib is still
                  the torch-chunk-trained model until this runs on a GPU.

Every run writes TRAINING_RUN.md (also into --export-dir): the command, seed, data and split,
the loss curve, validation loss, training tokens/s, checkpoint size and greedy samples from
--card-prompts, the facts a model card needs.

Examples (from the repo root):
    PYTHONPATH=. python examples/train_tiny_lm.py --device cpu --steps 200 --d-model 64 --n-layers 2 \\
        --n-heads 2 --head-dim 32 --value-dim 32 --mlp-hidden 128 --out runs/tiny-cpu
    PYTHONPATH=. python examples/train_tiny_lm.py --device cuda --attn-backend chunk \\
        --time-budget-min 3 --export-dir hla_deploy/checkpoints/tiny-pystdlib
    PYTHONPATH=. python examples/train_tiny_lm.py --preset demo-triton --time-budget-min 20 \\
        --hard-stop-min 26 --seed 0 --out /tmp/run --export-dir hla_deploy/checkpoints/tiny-pystdlib
    PYTHONPATH=. python examples/train_tiny_lm.py --plot-from runs/x/metrics.json runs/x/loss_curve.png
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hla_deploy.models import HLAConfig, HLALanguageModel, generate, geometric_decay, tokenizer
from hla_deploy.models.checkpoint import load_checkpoint

EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "__pycache__", "idle_test"}

PRESETS = {
    "demo-triton": dict(d_model=256, n_layers=6, n_heads=4, head_dim=64, value_dim=64, mlp_hidden=768,
                        decay_lo=0.9, decay_hi=0.995, device="cuda", attn_backend="triton", batch=32,
                        seq_len=512, eval_every=250, log_every=50),
}
CARD_PROMPTS = ["import os\n", "class Foo:", "def fib(n):"]


# ------------------------------------------------------------------------------------------ data
def stdlib_files(root: Path | None = None):
    """Sorted list of (relative path, absolute Path) of the stdlib's .py files (see module doc)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if EXCLUDED_DIRS.intersection(rel.parts[:-1]) or not p.is_file():
            continue
        files.append((rel.as_posix(), p))
    files.sort(key=lambda x: x[0])
    if not files:
        raise SystemExit(f"no .py files found under {root} (the stdlib path); use --data-root")
    return root, files


def load_corpus(data_root: str | None, val_every: int):
    """-> (train uint8 tensor, val uint8 tensor, info dict)."""
    root, files = stdlib_files(Path(data_root) if data_root else None)
    train, val, ntrain, nval = [], [], 0, 0
    for i, (rel, p) in enumerate(files):
        data = p.read_bytes() + b"\n\n"
        if i % val_every == val_every - 1:
            val.append(data)
            nval += 1
        else:
            train.append(data)
            ntrain += 1
    tr = torch.frombuffer(bytearray(b"".join(train)), dtype=torch.uint8)
    va = torch.frombuffer(bytearray(b"".join(val)), dtype=torch.uint8)
    info = {"root": str(root), "python": sys.version.split()[0], "files": len(files),
            "train_files": ntrain, "val_files": nval, "train_bytes": int(tr.numel()),
            "val_bytes": int(va.numel()), "val_every": val_every,
            "excluded_dirs": sorted(EXCLUDED_DIRS),
            "val_file_examples": [rel for i, (rel, _) in enumerate(files) if i % val_every == val_every - 1][:5]}
    return tr, va, info


def unigram_cross_entropy(train: torch.Tensor, val: torch.Tensor) -> float:
    """Cross-entropy (nats/byte) of val under the train set's add-one-smoothed byte unigram."""
    counts = torch.bincount(train.long(), minlength=256).double() + 1.0
    logp = (counts / counts.sum()).log()
    vc = torch.bincount(val.long(), minlength=256).double()
    return float(-(vc * logp).sum() / vc.sum())


def sample_batch(data: torch.Tensor, batch: int, seq_len: int, gen: torch.Generator, device):
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch,), generator=gen)
    idx = starts[:, None] + torch.arange(seq_len + 1)[None, :]
    xy = data[idx].long().to(device, non_blocking=True)                       # [B, T + 1]
    return xy[:, :-1], xy[:, 1:]


def val_windows(val: torch.Tensor, n: int, seq_len: int) -> torch.Tensor:
    """n fixed windows [n, seq_len + 1], evenly spaced over the validation text."""
    last = val.numel() - seq_len - 1
    starts = torch.linspace(0, last, n).long()
    return val[starts[:, None] + torch.arange(seq_len + 1)[None, :]].long()


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, batch: int, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        xy = windows[i:i + batch].to(device)
        logits, _ = model(xy[:, :-1], return_state=False)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), xy[:, 1:].reshape(-1),
                                 reduction="sum").item()
        count += xy[:, 1:].numel()
    model.train()
    return total / count


# ------------------------------------------------------------------------------------------ optim
def make_optimizer(model, lr: float, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "norm" not in name else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def lr_at(step: int, steps: int, lr: float, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------------------------ checkpoints
def save_training_checkpoint(out: Path, step: int, model, opt, data_gen, metrics, args, keep: int):
    ck_root = out / "checkpoints"
    ck_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    tmp = ck_root / f".tmp_{name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(tmp)
    state = {"step": step, "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             "data_gen": data_gen.get_state(), "metrics": metrics, "args": vars(args)}
    torch.save(state, tmp / "train_state.pt")
    final = ck_root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)                                    # the directory appears complete
    latest_tmp = out / f".latest.txt.{os.getpid()}"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, out / "latest.txt")
    olds = sorted(p for p in ck_root.iterdir() if p.name.startswith("step_") and p.name != name)
    for p in olds[:max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(p)
    return final


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def plot_loss_curve(metrics: dict, path: Path) -> bool:
    """Write the loss curve PNG (atomically); returns False (with a message) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no loss curve PNG (use --plot-from metrics.json later)")
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    tr = metrics.get("train", [])
    va = metrics.get("val", [])
    if tr:
        ax.plot([r[0] for r in tr], [r[1] for r in tr], lw=1, alpha=0.8, label="train loss (mean over log interval)")
    if va:
        ax.plot([r[0] for r in va], [r[1] for r in va], "o-", ms=3, label="validation loss (held-out stdlib files)")
    if metrics.get("unigram_val_ce"):
        ax.axhline(metrics["unigram_val_ce"], color="gray", ls="--", lw=1,
                   label=f"byte-unigram cross-entropy ({metrics['unigram_val_ce']:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / byte)")
    ax.set_title(metrics.get("title", "HLA byte-level LM"))
    ax.set_ylim(0, 5.8)                                        # ln(256) = 5.55: a uniform guess
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def write_training_run(path: Path, m: dict) -> None:
    """TRAINING_RUN.md: the facts of this run a model card needs (written atomically)."""
    d, c = m["data"], m["config"]
    fence = "`" * 3
    lines = [
        f"# Training run: {m['title']}", "",
        "| | |", "| --- | --- |",
        f"| command | `python3 examples/train_tiny_lm.py {' '.join(m['argv'])}` |",
        f"| seed | {m['seed']} |",
        f"| device, attention backend | {m['device']}, `{m['attn_backend']}` |",
        f"| model | {c['variant']}, d_model {c['d_model']}, {c['n_layers']} blocks, {c['n_heads']} heads "
        f"(d {c['head_dim']}, dv {c['value_dim']}), MLP {c['mlp_hidden']}, decay {c['decay']} |",
        f"| parameters, checkpoint | {m['parameters']:,}; model.safetensors {m['checkpoint_bytes'] / 2**20:.2f} MiB |",
        f"| data | {d['files']} .py files under {d['root']} (Python {d['python']}), excluded folders "
        f"{', '.join(d['excluded_dirs'])} |",
        f"| split | every {d['val_every']}-th file held out: {d['val_files']} files ({d['val_bytes']:,} bytes), "
        f"e.g. {', '.join(d['val_file_examples'][:3])}; training {d['train_files']} files ({d['train_bytes']:,} bytes) |",
        f"| steps, batch | {m['final_step']} of {m['steps']}, {m['batch']} x {m['seq_len']} bytes, lr {m['lr']} |",
        f"| training time, speed | {m['train_seconds']:.0f} s, **{m['train_tokens_per_s']:,.0f} tokens/s** "
        f"({m['train_tokens_this_run']:,} tokens this run) |",
        f"| held-out loss | **{m['final_val_loss']:.4f} nats/byte** (byte unigram {m['unigram_val_ce']:.3f}) |",
        "", "Validation loss by step: " + ", ".join(f"{s}: {v:.3f}" for s, v in m["val"]) +
        " (`loss_curve.png`, `metrics.json`).", "", "## Greedy samples", ""]
    for prompt, r in m.get("card_samples_greedy", {}).items():
        lines += [f"Prompt {prompt!r} (whitespace {100 * r['whitespace_fraction']:.0f}% of the new bytes):", "",
                  fence, r["text"], fence, ""]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default=None)
    preset = pre.parse_known_args(argv)[0].preset
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named configuration (module docstring); explicit flags override it")
    p.add_argument("--out", default="runs/tiny-pystdlib", help="run directory (checkpoints, metrics, PNG)")
    p.add_argument("--export-dir", default=None, help="also write the final model (+ metrics.json, "
                   "loss_curve.png) here")
    p.add_argument("--resume", action="store_true", help="continue from --out/latest.txt")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--attn-backend", default="auto", choices=["auto", "chunk", "recurrent", "triton"])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--time-budget-min", type=float, default=None,
                   help="set --steps from a timed calibration so training takes about this long")
    p.add_argument("--hard-stop-min", type=float, default=None, help="safety: stop (and save) after this")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-windows", type=int, default=128, help="validation windows of seq-len bytes")
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--keep", type=int, default=2, help="training checkpoints kept")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--val-every", type=int, default=20, help="every N-th file is validation")
    p.add_argument("--data-root", default=None, help="folder of .py files (default: the stdlib)")
    # model
    p.add_argument("--d-model", type=int, default=192)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=3)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--value-dim", type=int, default=64)
    p.add_argument("--mlp-hidden", type=int, default=512)
    p.add_argument("--variant", default="hla2", choices=["hla2", "ahla", "hla3"])
    p.add_argument("--decay-lo", type=float, default=0.9, help="decay of head 0 (geometric spacing)")
    p.add_argument("--decay-hi", type=float, default=0.99, help="decay of the last head")
    p.add_argument("--sample-prompt", default="def ")
    p.add_argument("--sample-tokens", type=int, default=200, help="length of the final samples")
    p.add_argument("--card-prompts", nargs="*", default=CARD_PROMPTS,
                   help="prompts of the greedy samples in TRAINING_RUN.md (\\n escapes allowed)")
    p.add_argument("--plot-from", nargs=2, metavar=("METRICS_JSON", "OUT_PNG"), default=None,
                   help="only draw the loss curve of an earlier run and exit")
    if preset:
        p.set_defaults(**PRESETS[preset])
    args = p.parse_args(argv)
    args.card_prompts = [x.encode().decode("unicode_escape") for x in args.card_prompts]
    return args


def build_config(args) -> HLAConfig:
    decay = 1.0 if args.variant == "hla3" else geometric_decay(args.n_heads, args.decay_lo, args.decay_hi)
    return HLAConfig(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                     head_dim=args.head_dim, value_dim=args.value_dim, mlp_hidden=args.mlp_hidden,
                     variant=args.variant, decay=decay)


def train_step(model, opt, x, y, lr, grad_clip):
    for g in opt.param_groups:
        g["lr"] = lr
    logits, _ = model(x, return_state=False)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss, gnorm


def calibrate_steps(args, config, train, device) -> int:
    """Time a few steps of a throwaway model; return the step count that fits the time budget."""
    model = HLALanguageModel(config, attn_backend=args.attn_backend).to(device)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    gen = torch.Generator().manual_seed(12345)

    def run(n):
        for _ in range(n):
            x, y = sample_batch(train, args.batch, args.seq_len, gen, device)
            loss, _ = train_step(model, opt, x, y, 1e-4, args.grad_clip)
        loss.item()
    run(3)
    if device.type == "cuda":
        torch.cuda.synchronize()
    n = 10 if device.type == "cuda" else 3
    t0 = time.perf_counter()
    run(n)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / n
    # evaluation costs about (eval windows / batch) forward passes every eval_every steps
    steps = int(args.time_budget_min * 60 / dt / (1 + (args.eval_windows / args.batch) / (3 * args.eval_every)))
    print(f"calibration: {dt * 1e3:.1f} ms/step -> --steps {steps} for {args.time_budget_min} min", flush=True)
    return max(steps, args.warmup + 1)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plot_from:
        plot_loss_curve(json.loads(Path(args.plot_from[0]).read_text()), Path(args.plot_from[1]))
        return 0
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    t_start = time.perf_counter()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.attn_backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("--attn-backend triton needs --device cuda (or TRITON_INTERPRET=1 for the "
                         "Triton CPU interpreter, tiny runs only)")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train, val, data_info = load_corpus(args.data_root, args.val_every)
    unigram = unigram_cross_entropy(train, val)
    print(f"data: {data_info['train_files']} train files ({data_info['train_bytes']} bytes), "
          f"{data_info['val_files']} val files ({data_info['val_bytes']} bytes) from {data_info['root']} "
          f"(Python {data_info['python']}); unigram val CE {unigram:.3f} nats/byte", flush=True)
    vwin = val_windows(val, args.eval_windows, args.seq_len)

    config = build_config(args)
    start_step = 0
    metrics = {"train": [], "val": [], "unigram_val_ce": unigram, "data": data_info}
    if args.resume:
        latest = out / "latest.txt"
        if not latest.is_file():
            raise SystemExit(f"--resume: {latest} not found (no checkpoint in {out})")
        ck = out / "checkpoints" / latest.read_text().strip()
        model = load_checkpoint(ck, map_location=device, attn_backend=args.attn_backend)
        st = torch.load(ck / "train_state.pt", map_location="cpu", weights_only=False)
        steps = st["args"]["steps"]
        if model.config != config:
            print(f"--resume: using the checkpoint's model config {model.config}", flush=True)
        opt = make_optimizer(model, args.lr, args.weight_decay)
        opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["torch_rng"])
        if st.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(st["cuda_rng"])
        data_gen = torch.Generator()
        data_gen.set_state(st["data_gen"])
        metrics = st["metrics"]
        start_step = st["step"]
        args.steps = steps
        print(f"resumed from {ck} at step {start_step} of {steps}", flush=True)
    else:
        if args.time_budget_min:
            args.steps = calibrate_steps(args, config, train, device)
        torch.manual_seed(args.seed)
        if device.type == "cuda":
            torch.cuda.manual_seed_all(args.seed)
        model = HLALanguageModel(config, attn_backend=args.attn_backend).to(device)
        opt = make_optimizer(model, args.lr, args.weight_decay)
        data_gen = torch.Generator().manual_seed(args.seed)
    metrics.update({"config": model.config.to_dict(), "steps": args.steps, "batch": args.batch,
                    "seq_len": args.seq_len, "lr": args.lr, "seed": args.seed,
                    "device": str(device), "attn_backend": args.attn_backend,
                    "parameters": model.num_parameters(),
                    "argv": list(argv) if argv is not None else sys.argv[1:],
                    "title": f"HLA {model.config.variant} byte LM, {model.num_parameters() / 1e6:.2f}M params"})
    print(f"model: {model.num_parameters()} parameters, {model.config}", flush=True)

    model.train()
    bar = tqdm(total=args.steps, initial=start_step, dynamic_ncols=True, mininterval=2.0) if tqdm else None
    acc, acc_n, step = 0.0, 0, start_step
    t_train = time.perf_counter()
    stopped_early = False
    while step < args.steps:
        x, y = sample_batch(train, args.batch, args.seq_len, data_gen, device)
        lr = lr_at(step, args.steps, args.lr, args.warmup, args.min_lr_ratio)
        loss, gnorm = train_step(model, opt, x, y, lr, args.grad_clip)
        step += 1
        acc += loss.detach()
        acc_n += 1
        if step % args.log_every == 0 or step == args.steps:
            mean = (acc / acc_n).item()
            if not math.isfinite(mean):
                raise SystemExit(f"training diverged at step {step}: loss {mean}")
            metrics["train"].append([step, mean])
            acc, acc_n = 0.0, 0
            if bar:
                bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.2e}", gnorm=f"{float(gnorm):.2f}")
        if bar:
            bar.update(1)
        hard_stop = args.hard_stop_min and (time.perf_counter() - t_start) > args.hard_stop_min * 60
        if step % args.eval_every == 0 or step == args.steps or hard_stop:
            vl = evaluate(model, vwin, args.batch, device)
            metrics["val"].append([step, vl])
            msg = f"step {step}: val loss {vl:.4f} nats/byte ({vl / math.log(2):.3f} bits/byte)"
            (bar.write if bar else print)(msg)
        if step % args.ckpt_every == 0 or step == args.steps or hard_stop:
            metrics["train_seconds"] = time.perf_counter() - t_train
            save_training_checkpoint(out, step, model, opt, data_gen, metrics, args, args.keep)
            write_json_atomic(out / "metrics.json", metrics)
        if hard_stop and step < args.steps:
            (bar.write if bar else print)(f"--hard-stop-min reached at step {step}: stopping")
            stopped_early = True
            break
    if bar:
        bar.close()
    metrics["train_seconds"] = time.perf_counter() - t_train
    metrics["train_tokens_this_run"] = (step - start_step) * args.batch * args.seq_len
    metrics["train_tokens_per_s"] = metrics["train_tokens_this_run"] / max(metrics["train_seconds"], 1e-9)
    metrics["final_step"] = step
    metrics["stopped_early"] = stopped_early
    metrics["final_val_loss"] = metrics["val"][-1][1] if metrics["val"] else None
    model.eval()
    sample = tokenizer.decode(generate(model, tokenizer.encode(args.sample_prompt), args.sample_tokens,
                                       temperature=0.8, top_k=40, seed=args.seed))
    greedy = tokenizer.decode(generate(model, tokenizer.encode(args.sample_prompt), args.sample_tokens))
    metrics["sample_t0.8_k40"] = args.sample_prompt + sample
    metrics["sample_greedy"] = args.sample_prompt + greedy
    metrics["card_samples_greedy"] = {}
    for prompt in args.card_prompts:
        ids = generate(model, tokenizer.encode(prompt), args.sample_tokens)
        metrics["card_samples_greedy"][prompt] = {
            "text": prompt + tokenizer.decode(ids),
            "whitespace_fraction": sum(1 for t in ids if t in (9, 10, 13, 32)) / max(1, len(ids))}
    print("---- sample (temperature 0.8, top_k 40) ----\n" + args.sample_prompt + sample + "\n----", flush=True)
    write_json_atomic(out / "metrics.json", metrics)
    plot_loss_curve(metrics, out / "loss_curve.png")
    model.save(out / "final")
    metrics["checkpoint_bytes"] = (out / "final" / "model.safetensors").stat().st_size
    write_json_atomic(out / "metrics.json", metrics)
    write_training_run(out / "TRAINING_RUN.md", metrics)
    if args.export_dir:
        exp = Path(args.export_dir)
        model.to("cpu").save(exp)
        write_json_atomic(exp / "metrics.json", metrics)
        write_training_run(exp / "TRAINING_RUN.md", metrics)
        if (out / "loss_curve.png").is_file():
            shutil.copyfile(out / "loss_curve.png", exp / "loss_curve.png")
    print(f"done: step {step}, final val loss {metrics['final_val_loss']:.4f} nats/byte "
          f"(unigram {unigram:.3f}); {metrics['train_seconds']:.0f} s of training; "
          f"total {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
