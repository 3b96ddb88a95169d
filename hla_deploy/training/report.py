"""A training run's record: `TRAINING_RUN.md` and `loss_curve.png`, from its metrics dict.

TRAINING_RUN.md holds the facts a model card needs (command, seed, data and split, precision,
speed, wall and training time, the loss curve's points, greedy samples); both files are
written atomically. The metrics keys are those examples/train_tiny_lm.py records.
"""
from __future__ import annotations

from pathlib import Path

from hla_deploy._atomic import atomic_path, atomic_write_text

FENCE = "`" * 3


def plot_loss_curve(metrics: dict, path: Path) -> bool:
    """Write the loss curve PNG; returns False (with a message) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no loss curve PNG (use --plot-from metrics.json later)")
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    tr, va = metrics.get("train", []), metrics.get("val", [])
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
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return True


def _speed_rows(m: dict) -> list:
    t = m.get("timing", {})
    rows = [f"| training tokens/s | **{m['train_tokens_per_s']:,.0f}** over the {m['final_step'] - m.get('start_step', 0):,} "
            f"steps of this run ({m['train_tokens_this_run']:,} tokens in {t.get('step_seconds', m['train_seconds']):.1f} s "
            f"of steps); steady state {t.get('steady_tokens_per_s') or 0:,.0f} tokens/s "
            f"({t.get('steady_ms_per_step') or 0:.2f} ms/step, steps {t.get('steady_window', '-')}) |"]
    if t:
        rows.append(f"| time | wall {t['wall_seconds']:.1f} s = **{t['wall_over_train']:.3f}x the training time** "
                    f"{m['train_seconds']:.1f} s (steps {t['step_seconds']:.1f} s incl. the first step's "
                    f"{t['first_step_seconds']:.1f} s of compilation, periodic evaluation {t['eval_seconds']:.1f} s, "
                    f"checkpoints {t['ckpt_seconds']:.1f} s); before training {t['setup_seconds']:.1f} s "
                    f"(imports, data), after it {t['after_seconds']:.1f} s (final evaluation, samples, saving) |")
    return rows


def write_training_run(path: Path, m: dict) -> None:
    """TRAINING_RUN.md: the facts of this run a model card needs (written atomically)."""
    d, c = m["data"], m["config"]
    lines = [
        f"# Training run: {m['title']}", "",
        "| | |", "| --- | --- |",
        f"| command | `python3 examples/train_tiny_lm.py {' '.join(m['argv'])}` |",
        f"| seed | {m['seed']} |",
        f"| device, attention backend | {m['device']} ({m.get('device_name', m['device'])}), `{m['attn_backend']}`; "
        f"torch {m.get('torch', '?')}, triton {m.get('triton', '-')} |",
        f"| precision | {m.get('precision', 'fp32')}: {m.get('precision_note', '')} |",
        f"| torch.compile | {m.get('compile', 'off')} |",
        f"| model | {c['variant']}, d_model {c['d_model']}, {c['n_layers']} blocks, {c['n_heads']} heads "
        f"(d {c['head_dim']}, dv {c['value_dim']}), MLP {c['mlp_hidden']}, decay {c['decay']} |",
        f"| parameters, checkpoint | {m['parameters']:,}; model.safetensors {m['checkpoint_bytes'] / 2**20:.2f} MiB "
        f"({m.get('save_dtype', 'fp32')} weights) |",
        f"| data | {d['files']} .py files under {d['root']} (Python {d['python']}), excluded folders "
        f"{', '.join(d['excluded_dirs'])} |",
        f"| split | every {d['val_every']}-th file held out: {d['val_files']} files ({d['val_bytes']:,} bytes), "
        f"e.g. {', '.join(d['val_file_examples'][:3])}; training {d['train_files']} files ({d['train_bytes']:,} bytes) |",
        f"| steps, batch | {m['final_step']} of {m['steps']}{' (hard stop)' if m.get('stopped_early') else ''}, "
        f"{m['batch']} x {m['seq_len']} bytes, lr {m['lr']}; {m.get('steps_from', 'given')} |",
        *_speed_rows(m),
        f"| held-out loss | **{m['final_val_loss']:.4f} nats/byte** ({m.get('final_val_note', 'last evaluation')}; "
        f"byte unigram {m['unigram_val_ce']:.3f}) |",
    ]
    if m.get("profile", {}).get("error"):
        lines.append(f"| profile | not written: {m['profile']['error']} |")
    elif m.get("profile"):
        p = m["profile"]
        busy = "" if p.get("device_busy_fraction") is None else (
            f", device busy {100 * p['device_busy_fraction']:.0f}% ({p['device_ms_per_step']:.2f} ms of kernels, "
            f"{p['kernels_per_step']:.0f} kernels per step)")
        lines.append(f"| profile | {p['steps']} steps after step {p['after_step']}: {p['wall_ms_per_step']:.2f} ms "
                     f"wall per step{busy}; `profile/profile_table.txt`, `profile/trace.json.gz` |")
    lines += ["", "Validation loss by step: " + ", ".join(f"{s}: {v:.3f}" for s, v in m["val"]) +
              " (`loss_curve.png`, `metrics.json`).", "", "## Greedy samples", ""]
    for prompt, r in m.get("card_samples_greedy", {}).items():
        lines += [f"Prompt {prompt!r} (whitespace {100 * r['whitespace_fraction']:.0f}% of the new bytes):", "",
                  FENCE, r["text"], FENCE, ""]
    atomic_write_text(path, "\n".join(lines) + "\n")
