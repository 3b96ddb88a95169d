#!/usr/bin/env python3
"""Train a tiny byte-level HLA language model on the Python standard library's own sources.

Data: every `*.py` file under `sysconfig.get_paths()["stdlib"]` (site-packages, `test`/`tests`
folders and `__pycache__` excluded), sorted by relative path; every `--val-every`-th file (by
that order) is held out for validation, the rest is training text. Files are read as bytes and
joined with a blank line; tokens are bytes (vocab 256).

Training: AdamW (betas 0.9/0.95, weight decay on matrices only; fused on CUDA), linear warm-up
then cosine decay to `--min-lr-ratio * lr`, gradient clipping, random windows of `--seq-len + 1`
bytes drawn on the device from a seeded generator (the corpus is copied there once:
hla_deploy.training.WindowSampler). Periodic validation loss on fixed held-out windows, a tqdm
progress bar, `metrics.json` + `loss_curve.png` in `--out`, and atomic checkpoints every
`--ckpt-every` steps (`--out/checkpoints/step_NNNNNN/` = model (config.json + model.safetensors)
+ train_state.pt with optimizer, step, RNG states; `--out/latest.txt` names the newest).
`--resume` continues from it.

Speed on a GPU (hla_deploy/training/): `--precision bf16` (the default on CUDA) runs the forward
under bf16 autocast: float32 master weights, optimizer state and HLA state, bf16 operands for the
matmuls and the Triton kernels. `--compile on` (the default on CUDA) compiles every block with
torch.compile (the HLA op stays one custom op; evaluation and sampling run eagerly); if that
compilation fails, the run says so, records it and trains eagerly. No value is read back to the
host during a step except every `--log-every` steps. `--profile-steps N` profiles N steps after
the first few (`--out/profile/`: a table, a trace, a summary in metrics.json).

`--time-budget-min M` times the run's own steps inside the learning-rate warm-up (whose rates do
not depend on the step count), then sets `--steps` so that training takes about M minutes
(printed, and recorded in metrics.json as `steps`): the run is then the same as one with that
`--steps` value. `--hard-stop-min H` ends training once H minutes of wall time have passed since
the script started (then evaluates, samples, saves, exports and writes TRAINING_RUN.md as usual).

Presets (`--preset NAME` sets defaults; explicit flags still win):
    demo-triton   the demo to ship, trained with the Triton kernels on one CUDA GPU (H200):
                  d_model 256, 4 blocks of 3 hla2 heads (d = dv = 64), MLP 1024 (4,000,256
                  parameters; the HLA state of today's 1.8M demo, so the CPU quickstart costs
                  the same: docs/BENCHMARKS.md, quickstart-size), batch 32 x 512 bytes, bf16
                  autocast, compiled blocks, --device cuda --attn-backend triton; the exported
                  weights are stored as float16 (`--save-dtype fp16`: 7.6 MiB; the final
                  evaluation and samples use exactly those weights). Run by
                  examples/gpu_train_demo.sh.

Every run writes TRAINING_RUN.md (also into --export-dir): the command, seed, data and split,
precision, the loss curve, validation loss, training tokens/s, wall and training time, checkpoint
size and greedy samples from --card-prompts, the facts a model card needs
(examples/ship_demo_checkpoint.py folds it into the shipped checkpoint's MODEL_CARD.md).

Examples (from the repo root):
    PYTHONPATH=. python examples/train_tiny_lm.py --device cpu --steps 200 --d-model 64 --n-layers 2 \\
        --n-heads 2 --head-dim 32 --value-dim 32 --mlp-hidden 128 --out runs/tiny-cpu
    PYTHONPATH=. python examples/train_tiny_lm.py --preset demo-triton --time-budget-min 6.5 \\
        --hard-stop-min 7.6 --seed 0 --out /tmp/run --export-dir /tmp/ckpt
    PYTHONPATH=. python examples/train_tiny_lm.py --plot-from runs/x/metrics.json runs/x/loss_curve.png
"""
from __future__ import annotations

import time

_T_MODULE = time.perf_counter()   # the wall time of a run counts from here (imports included)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import sysconfig  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hla_deploy.models import HLAConfig, HLALanguageModel, generate, geometric_decay, tokenizer  # noqa: E402
from hla_deploy.models import load_checkpoint  # noqa: E402
from hla_deploy.training import (PRECISIONS, Deadline, StepProfiler, StepWindow, WindowSampler,  # noqa: E402
                                 autocast, check_precision, compile_blocks, default_precision, eager,
                                 steps_for_budget, uncompile_blocks)
from hla_deploy.training.report import plot_loss_curve, write_training_run  # noqa: E402

EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "__pycache__", "idle_test"}

PRESETS = {
    "demo-triton": dict(d_model=256, n_layers=4, n_heads=3, head_dim=64, value_dim=64, mlp_hidden=1024,
                        decay_lo=0.9, decay_hi=0.995, device="cuda", attn_backend="triton", batch=32,
                        seq_len=512, eval_every=500, log_every=100, ckpt_every=10**9, precision="bf16",
                        compile="on", save_dtype="fp16"),
}
CARD_PROMPTS = ["import os\n", "class Foo:", "def fib(n):"]
SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
WHITESPACE = (9, 10, 13, 32)


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


def val_windows(val: torch.Tensor, n: int, seq_len: int) -> torch.Tensor:
    """n fixed windows [n, seq_len + 1] (uint8), evenly spaced over the validation text."""
    last = val.numel() - seq_len - 1
    if last < 0:
        raise SystemExit(f"the validation text has {val.numel()} bytes, fewer than --seq-len + 1 = {seq_len + 1}")
    starts = torch.linspace(0, last, n).long()
    return val[starts[:, None] + torch.arange(seq_len + 1)[None, :]]


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, batch: int, amp) -> float:
    """Mean cross-entropy (nats/byte) over the windows [n, T + 1] (on the model's device), eagerly."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=windows.device)
    with eager():
        for i in range(0, windows.shape[0], batch):
            xy = windows[i:i + batch]
            with amp():
                logits, _ = model(xy[:, :-1], return_state=False)
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), xy[:, 1:].reshape(-1).long(),
                                     reduction="sum")
    model.train()
    return float(total) / (windows.shape[0] * (windows.shape[1] - 1))


# ------------------------------------------------------------------------------------------ optim
def make_optimizer(model, lr: float, weight_decay: float, fused: bool = False):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "norm" not in name else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95),
                             **({"fused": True} if fused else {}))


def lr_at(step: int, steps, lr: float, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    if steps is None:
        raise RuntimeError(f"lr_at: the step count is still unknown at step {step} (past the warm-up)")
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_step(model, opt, x, y, lr, grad_clip, amp):
    """One optimizer step; returns (loss, grad norm) as device tensors (no host sync)."""
    for g in opt.param_groups:
        g["lr"] = lr
    with amp():
        logits, _ = model(x, return_state=False)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.detach(), gnorm


# ------------------------------------------------------------------------------------------ checkpoints
def save_training_checkpoint(out: Path, step: int, model, opt, sampler, metrics, args, keep: int):
    ck_root = out / "checkpoints"
    ck_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    tmp = ck_root / f".tmp_{name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(tmp)
    state = {"step": step, "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             "data_gen": sampler.get_state(), "metrics": metrics, "args": vars(args)}
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


# ------------------------------------------------------------------------------------------ arguments
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
                   "loss_curve.png, TRAINING_RUN.md) here")
    p.add_argument("--resume", action="store_true", help="continue from --out/latest.txt")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--attn-backend", default="auto", choices=["auto", "chunk", "recurrent", "triton"])
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="bf16: autocast (float32 weights and HLA state); default bf16 on CUDA, fp32 elsewhere")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile the blocks (auto: on for CUDA)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager: no codegen)")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="profile this many steps (after the first few) into --out/profile/")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--time-budget-min", type=float, default=None,
                   help="set --steps from the run's own timed warm-up steps so training takes about this long")
    p.add_argument("--hard-stop-min", type=float, default=None,
                   help="safety: stop training (then save and report) this many minutes after the start")
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
    p.add_argument("--save-dtype", default="fp32", choices=sorted(SAVE_DTYPES),
                   help="dtype of the final / exported weights (the final evaluation and samples use "
                        "exactly those weights)")
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
    for name in ("time_budget_min", "hard_stop_min"):
        val = getattr(args, name)
        if val is not None and not (math.isfinite(val) and val > 0):
            p.error(f"--{name.replace('_', '-')} must be a number of minutes > 0, got {val}")
    if args.profile_steps < 0:
        p.error(f"--profile-steps must be >= 0, got {args.profile_steps}")
    return args


def build_config(args) -> HLAConfig:
    decay = 1.0 if args.variant == "hla3" else geometric_decay(args.n_heads, args.decay_lo, args.decay_hi)
    return HLAConfig(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                     head_dim=args.head_dim, value_dim=args.value_dim, mlp_hidden=args.mlp_hidden,
                     variant=args.variant, decay=decay)


def resolve_device(args) -> torch.device:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False (no GPU or a CPU-only torch)")
    if args.attn_backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("--attn-backend triton needs --device cuda (or TRITON_INTERPRET=1 for the "
                         "Triton CPU interpreter, tiny runs only)")
    return device


# ------------------------------------------------------------------------------------------ after training
def round_weights(model, dtype: torch.dtype) -> None:
    """Round every parameter through ``dtype`` in place (the weights the checkpoint will hold)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(p.dtype))


def final_samples(model, args) -> dict:
    """Greedy and sampled text from the final weights (float32, eager, TF32 off)."""
    out = {}
    ids = generate(model, tokenizer.encode(args.sample_prompt), args.sample_tokens,
                   temperature=0.8, top_k=40, seed=args.seed)
    out["sample_t0.8_k40"] = args.sample_prompt + tokenizer.decode(ids)
    out["sample_greedy"] = args.sample_prompt + tokenizer.decode(
        generate(model, tokenizer.encode(args.sample_prompt), args.sample_tokens))
    out["card_samples_greedy"] = {}
    for prompt in args.card_prompts:
        ids = generate(model, tokenizer.encode(prompt), args.sample_tokens)
        out["card_samples_greedy"][prompt] = {
            "text": prompt + tokenizer.decode(ids),
            "whitespace_fraction": sum(1 for t in ids if t in WHITESPACE) / max(1, len(ids))}
    return out


class _NoTF32:
    """TF32 matmuls off inside (the final evaluation and samples are of the float32 model)."""

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


# ------------------------------------------------------------------------------------------ main
def main(argv=None, t0: float | None = None) -> int:
    t0 = time.perf_counter() if t0 is None else t0
    args = parse_args(argv)
    if args.plot_from:
        plot_loss_curve(json.loads(Path(args.plot_from[0]).read_text()), Path(args.plot_from[1]))
        return 0
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    device = resolve_device(args)
    precision = check_precision(args.precision or default_precision(device), device)
    use_compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    amp = lambda: autocast(device, precision)  # noqa: E731
    deadline = Deadline(t0, None if args.hard_stop_min is None else args.hard_stop_min * 60)
    try:                                   # before any work: a budget needs timed steps in the warm-up
        StepWindow.for_run(args.warmup, 0, args.profile_steps,
                           need_within_warmup=bool(args.time_budget_min) and not args.resume)
    except ValueError as exc:
        raise SystemExit(f"train_tiny_lm.py: error: {exc}") from None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True       # fp32 runs: TF32 matmuls outside the HLA op
        torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train, val, data_info = load_corpus(args.data_root, args.val_every)
    unigram = unigram_cross_entropy(train, val)
    print(f"data: {data_info['train_files']} train files ({data_info['train_bytes']} bytes), "
          f"{data_info['val_files']} val files ({data_info['val_bytes']} bytes) from {data_info['root']} "
          f"(Python {data_info['python']}); unigram val CE {unigram:.3f} nats/byte", flush=True)
    vwin = val_windows(val, args.eval_windows, args.seq_len).to(device)

    config = build_config(args)
    start_step = 0
    metrics = {"train": [], "val": [], "unigram_val_ce": unigram, "data": data_info}
    sampler = WindowSampler(train, args.batch, args.seq_len, args.seed, device)
    steps_from = "--steps"
    if args.resume:
        latest = out / "latest.txt"
        if not latest.is_file():
            raise SystemExit(f"--resume: {latest} not found (no checkpoint in {out})")
        ck = out / "checkpoints" / latest.read_text().strip()
        model = load_checkpoint(ck, map_location=device, attn_backend=args.attn_backend)
        st = torch.load(ck / "train_state.pt", map_location="cpu", weights_only=False)
        if model.config != config:
            print(f"--resume: using the checkpoint's model config {model.config}", flush=True)
        opt = make_optimizer(model, args.lr, args.weight_decay, fused=cuda)
        opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["torch_rng"])
        if st.get("cuda_rng") is not None and cuda:
            torch.cuda.set_rng_state_all(st["cuda_rng"])
        sampler.set_state(st["data_gen"])
        metrics = st["metrics"]
        start_step = st["step"]
        args.steps = st["args"]["steps"]
        steps_from = "resumed"
        print(f"resumed from {ck} at step {start_step} of {args.steps}", flush=True)
    else:
        torch.manual_seed(args.seed)
        if cuda:
            torch.cuda.manual_seed_all(args.seed)
        model = HLALanguageModel(config, attn_backend=args.attn_backend).to(device)
        opt = make_optimizer(model, args.lr, args.weight_decay, fused=cuda)
        if args.time_budget_min:
            args.steps = None                                  # set from the timed warm-up steps
            steps_from = f"set from the run's own steps {{window}} for --time-budget-min {args.time_budget_min}"
    budgeted = args.steps is None
    window = StepWindow.for_run(args.warmup, start_step, args.profile_steps, need_within_warmup=budgeted)
    prof = StepProfiler(out, window.start - args.profile_steps, args.profile_steps, device)
    compile_note = "off"
    if use_compile:
        compile_blocks(model, args.compile_backend)
        compile_note = f"blocks compiled ({args.compile_backend})"
    metrics.update({"config": model.config.to_dict(), "steps": args.steps, "batch": args.batch,
                    "eval_windows": args.eval_windows,
                    "seq_len": args.seq_len, "lr": args.lr, "seed": args.seed, "start_step": start_step,
                    "device": str(device), "attn_backend": args.attn_backend, "precision": precision,
                    "device_name": torch.cuda.get_device_name(device) if cuda else "CPU",
                    "torch": torch.__version__, "triton": _triton_version(),
                    "parameters": model.num_parameters(), "save_dtype": args.save_dtype,
                    "argv": list(argv) if argv is not None else sys.argv[1:],
                    "title": f"HLA {model.config.variant} byte LM, {model.num_parameters() / 1e6:.2f}M params"})
    metrics["precision_note"] = ("bf16 autocast: float32 weights, optimizer state and HLA state; bf16 operands "
                                 "for the matmuls and the HLA op's q, k, v (the Triton kernels multiply them in "
                                 "bf16, the chunk form in float32)" if precision == "bf16" else "float32")
    print(f"model: {model.num_parameters()} parameters, {model.config}; precision {precision}; "
          f"compile {compile_note}", flush=True)

    model.train()
    # a progress bar on a terminal; otherwise (a log file, a device call) one line per evaluation
    bar = (tqdm(total=args.steps, initial=start_step, dynamic_ncols=True, mininterval=5.0)
           if tqdm and sys.stderr.isatty() else None)
    say = bar.write if bar else (lambda msg: print(msg, flush=True))
    acc, acc_n, step = 0.0, 0, start_step
    eval_s = ckpt_s = 0.0
    first_step_s = None
    stopped_early = False
    t_train = time.perf_counter()
    setup_s = t_train - t0
    while args.steps is None or step < args.steps:
        x, y = sampler.next()
        lr = lr_at(step, args.steps, args.lr, args.warmup, args.min_lr_ratio)
        prof.before_step(step, sync)
        try:
            loss, gnorm = train_step(model, opt, x, y, lr, args.grad_clip, amp)
        except Exception as exc:   # noqa: BLE001 (only the first compiled step falls back)
            if not (use_compile and step == start_step):
                raise
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            say(f"WARNING: torch.compile of the blocks failed ({msg}); training eagerly")
            compile_note = f"failed ({msg}); trained eagerly"
            uncompile_blocks(model)
            use_compile = False
            loss, gnorm = train_step(model, opt, x, y, lr, args.grad_clip, amp)
        step += 1
        if first_step_s is None:
            sync()
            first_step_s = time.perf_counter() - t_train
        prof.after_step(step, sync)
        window.observe(step, sync)
        if budgeted and args.steps is None and window.done:
            overhead = (args.eval_windows / args.batch) / (3 * args.eval_every)
            args.steps = steps_for_budget(args.time_budget_min * 60, window, t_train, overhead)
            steps_from = steps_from.format(window=f"{window.start}-{window.end}")
            metrics["steps"] = args.steps
            say(f"timed steps {window.start}-{window.end}: {window.step_seconds() * 1e3:.2f} ms/step -> --steps "
                f"{args.steps} for {args.time_budget_min} min of training")
            if bar:
                bar.total = args.steps
                bar.refresh()
        acc += loss
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
        hard_stop = deadline.passed()
        if step % args.eval_every == 0 or step == args.steps or hard_stop:
            sync()
            t_e = time.perf_counter()
            vl = evaluate(model, vwin, args.batch, amp)
            eval_s += time.perf_counter() - t_e
            metrics["val"].append([step, vl])
            tail = "" if bar or not metrics["train"] else (
                f"; train loss {metrics['train'][-1][1]:.4f} (step {metrics['train'][-1][0]}), lr {lr:.2e}, "
                f"{time.perf_counter() - t_train:.0f} s")
            say(f"step {step}: val loss {vl:.4f} nats/byte ({vl / math.log(2):.3f} bits/byte){tail}")
        if step % args.ckpt_every == 0 or step == args.steps or hard_stop:
            sync()
            t_c = time.perf_counter()
            metrics["train_seconds"] = t_c - t_train
            save_training_checkpoint(out, step, model, opt, sampler, metrics, args, args.keep)
            write_json_atomic(out / "metrics.json", metrics)
            ckpt_s += time.perf_counter() - t_c
        if hard_stop and (args.steps is None or step < args.steps):
            say(f"--hard-stop-min {args.hard_stop_min} reached at step {step}: stopping")
            stopped_early = True
            if args.steps is None:
                args.steps = metrics["steps"] = step
            break
    if bar:
        bar.close()
    sync()
    t_end = time.perf_counter()
    metrics["train_seconds"] = t_end - t_train
    step_s = metrics["train_seconds"] - eval_s - ckpt_s
    metrics["train_tokens_this_run"] = (step - start_step) * args.batch * args.seq_len
    metrics["train_tokens_per_s"] = metrics["train_tokens_this_run"] / max(step_s, 1e-9)
    steady = window.step_seconds()
    metrics["final_step"] = step
    metrics["stopped_early"] = stopped_early
    metrics["steps_from"] = steps_from.replace("{window}", "(not reached)")
    metrics["compile"] = compile_note
    if prof.summary:
        metrics["profile"] = prof.summary

    # the shipped weights: rounded to --save-dtype, then evaluated and sampled in float32 with the
    # torch chunk form (eager, no TF32: the float32 model itself, and no new Triton specialisations
    # to compile for float32, T = 1 and other prompt lengths; parity compares the backends later)
    last_val = metrics["val"][-1][1] if metrics["val"] else None
    round_weights(model, SAVE_DTYPES[args.save_dtype])
    model.eval()
    model.attn_backend = "chunk"
    with _NoTF32(), eager():
        if precision != "fp32" or args.save_dtype != "fp32":
            metrics["final_val_loss"] = evaluate(model, vwin, args.batch, lambda: autocast(device, "fp32"))
            metrics["final_val_note"] = (f"float32 evaluation (chunk form) of the {args.save_dtype} weights"
                                         + ("" if last_val is None else f"; the last {precision} evaluation "
                                            f"during training gave {last_val:.4f}"))
        else:
            metrics["final_val_loss"] = last_val
            metrics["final_val_note"] = "float32, the evaluation at the last step"
        metrics.update(final_samples(model, args))
    print("---- sample (temperature 0.8, top_k 40) ----\n" + metrics["sample_t0.8_k40"] + "\n----", flush=True)
    save_model = model.to(SAVE_DTYPES[args.save_dtype]) if args.save_dtype != "fp32" else model
    save_model.save(out / "final")
    metrics["checkpoint_bytes"] = (out / "final" / "model.safetensors").stat().st_size
    plot_loss_curve(metrics, out / "loss_curve.png")
    if args.export_dir:
        exp = Path(args.export_dir)
        save_model.to("cpu").save(exp)
        if (out / "loss_curve.png").is_file():
            shutil.copyfile(out / "loss_curve.png", exp / "loss_curve.png")
    wall = time.perf_counter() - t0
    metrics["timing"] = {
        "wall_seconds": wall, "setup_seconds": setup_s, "after_seconds": wall - setup_s - metrics["train_seconds"],
        "step_seconds": step_s, "eval_seconds": eval_s, "ckpt_seconds": ckpt_s,
        "first_step_seconds": first_step_s or 0.0,
        "wall_over_train": wall / max(metrics["train_seconds"], 1e-9),
        "steady_ms_per_step": None if steady is None else steady * 1e3,
        "steady_tokens_per_s": None if steady is None else args.batch * args.seq_len / steady,
        "steady_window": f"{window.start}-{window.end}" if steady is not None else None,
        "note": "wall counts from the script's start (imports included) to the end of the export; training "
                "is the step loop (steps + periodic evaluation + checkpoints); tokens/s divide the tokens by "
                "the time of the steps alone"}
    for where in [out] + ([Path(args.export_dir)] if args.export_dir else []):
        write_json_atomic(where / "metrics.json", metrics)
        write_training_run(where / "TRAINING_RUN.md", metrics)
    t = metrics["timing"]
    print(f"done: step {step}, final val loss {metrics['final_val_loss']:.4f} nats/byte (unigram {unigram:.3f}); "
          f"{metrics['train_tokens_per_s']:,.0f} training tokens/s (steady {t['steady_tokens_per_s'] or 0:,.0f}); "
          f"{metrics['train_seconds']:.1f} s of training, wall {wall:.1f} s ({t['wall_over_train']:.3f}x)", flush=True)
    return 0


def _triton_version():
    try:
        import triton
        return triton.__version__
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    sys.exit(main(t0=_T_MODULE))
