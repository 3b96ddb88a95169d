"""examples/train_tiny_lm.py: the demo-triton preset's size, the run facts it records for the
model card (TRAINING_RUN.md), and its Triton path at tiny size on the CPU interpreter."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from hla_deploy.models import HLALanguageModel

ROOT = Path(__file__).resolve().parent.parent


def _train_module():
    spec = importlib.util.spec_from_file_location("train_tiny_lm", ROOT / "examples" / "train_tiny_lm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _data(tmp_path):
    data = tmp_path / "data"
    if data.is_dir():
        return data
    data.mkdir()
    for f in sorted((ROOT / "hla_deploy" / "models").glob("*.py")):
        shutil.copyfile(f, data / f.name)
    return data


TINY = ["--device", "cpu", "--val-every", "2", "--steps", "4", "--ckpt-every", "4", "--eval-every", "2",
        "--eval-windows", "2", "--batch", "2", "--seq-len", "32", "--warmup", "1", "--log-every", "2",
        "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--head-dim", "16", "--value-dim", "16",
        "--mlp-hidden", "16", "--sample-tokens", "6"]


def test_demo_triton_preset_size_and_speed_settings(tmp_path):
    """The shipped demo's preset: Triton on CUDA, bf16, compiled; larger than the 1.8M model but with
    its HLA state (4 layers x 3 heads of 64: the CPU quickstart's cost); float16 weights under
    10 MB (a tracked file over 10 MB is flagged) and under test_models' 8 MiB bound."""
    mod = _train_module()
    args = mod.parse_args(["--preset", "demo-triton"])
    assert (args.attn_backend, args.device, args.batch, args.seq_len) == ("triton", "cuda", 32, 512)
    assert (args.precision, args.compile, args.save_dtype) == ("bf16", "on", "fp16")
    assert mod.parse_args(["--preset", "demo-triton", "--batch", "8"]).batch == 8  # flags win
    model = HLALanguageModel(mod.build_config(args))
    c = model.config
    assert model.num_parameters() == 4_000_256 > 1_820_608
    assert c.n_layers * c.n_heads * c.state_size == 4 * 3 * 8192        # today's demo's state
    path = model.to(torch.float16).save(tmp_path / "ck")
    size = (Path(path) / "model.safetensors").stat().st_size
    assert size <= min(10 * 10**6, 8 * 2**20), size
    assert HLALanguageModel.load(path).embed.weight.dtype == torch.float32
    from hla_deploy.ops import triton as hla_triton
    assert hla_triton.supports(c.variant, c.normalize, c.ridge, head_dim=c.head_dim, value_dim=c.value_dim)


def test_run_records_the_model_card_facts(tmp_path):
    mod = _train_module()
    out, exp = tmp_path / "out", tmp_path / "exp"
    argv = TINY + ["--data-root", str(_data(tmp_path)), "--seed", "3", "--out", str(out), "--export-dir", str(exp)]
    assert mod.main(argv) == 0
    m = json.loads((exp / "metrics.json").read_text())
    assert m["argv"] == argv and m["seed"] == 3
    assert m["train_tokens_this_run"] == 4 * 2 * 32 and m["train_tokens_per_s"] > 0
    assert set(m["card_samples_greedy"]) == {"import os\n", "class Foo:", "def fib(n):"}
    for prompt, r in m["card_samples_greedy"].items():
        assert r["text"].startswith(prompt) and 0.0 <= r["whitespace_fraction"] <= 1.0
    card = (exp / "TRAINING_RUN.md").read_text()
    for fact in ("--seed 3", "tokens/s", "held-out", "every 2-th file held out", "loss_curve.png",
                 "'class Foo:'", "nats/byte"):
        assert fact in card, fact
    assert m["checkpoint_bytes"] == (exp / "model.safetensors").stat().st_size


def test_triton_backend_on_the_cpu_needs_the_interpreter(tmp_path, monkeypatch):
    mod = _train_module()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(SystemExit, match=r"--attn-backend triton needs --device cuda"):
        mod.main(TINY + ["--attn-backend", "triton", "--data-root", str(_data(tmp_path)),
                         "--out", str(tmp_path / "o")])


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1",
                    reason="the Triton path at tiny size runs on the CPU interpreter (TRITON_INTERPRET=1, "
                           "no GPU); on a GPU the preset itself is the check")
@pytest.mark.slow
def test_triton_backend_trains_at_tiny_size_under_the_interpreter(tmp_path):
    """The script's Triton path end to end: loss falls, checkpoint loads, matches the chunk form."""
    mod = _train_module()
    out = tmp_path / "out"
    assert mod.main(TINY + ["--attn-backend", "triton", "--data-root", str(_data(tmp_path)),
                            "--out", str(out), "--steps", "6", "--lr", "1e-2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["attn_backend"] == "triton"
    assert m["train"][-1][1] < m["train"][0][1]  # it learns
    model = HLALanguageModel.load(out / "final").eval()
    ids = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, _ = model(ids, None)                                  # default backend (chunk on CPU)
        model_t = HLALanguageModel.load(out / "final", attn_backend="triton").eval()
        b, _ = model_t(ids, None)
    assert float((a - b).norm() / a.norm()) < 1e-4


# ---------------------------------------------------------------------------------- GPU-speed features, on the CPU
def _run(mod, tmp_path, extra, name="out"):
    out = tmp_path / name
    argv = TINY + ["--data-root", str(_data(tmp_path)), "--out", str(out)] + extra
    assert mod.main(argv) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_bf16_run_with_the_chunk_backend_and_the_profiler(tmp_path):
    """--precision bf16 on the CPU (chunk backend): recorded, the final held-out loss is a float32
    evaluation; --profile-steps 2 writes the table, the trace and a summary; wall and training time."""
    import gzip
    mod = _train_module()
    out, m = _run(mod, tmp_path, ["--precision", "bf16", "--attn-backend", "chunk", "--profile-steps", "2"])
    assert m["precision"] == "bf16" and m["attn_backend"] == "chunk"
    assert "float32 evaluation" in m["final_val_note"] and math.isfinite(m["final_val_loss"])
    assert m["profile"]["steps"] == 2 and m["profile"]["wall_ms_per_step"] > 0 and m["profile"]["top_ops"]
    assert "aten::" in (out / "profile" / "profile_table.txt").read_text()
    trace = json.loads(gzip.decompress((out / "profile" / "trace.json.gz").read_bytes()))
    assert trace["traceEvents"]
    t = m["timing"]
    assert t["wall_seconds"] >= m["train_seconds"] > 0 and t["step_seconds"] > 0
    assert t["wall_over_train"] == pytest.approx(t["wall_seconds"] / m["train_seconds"])
    card = (out / "TRAINING_RUN.md").read_text()
    for fact in ("bf16 autocast", "x the training time", "profile_table.txt"):
        assert fact in card, fact


def test_time_budget_sets_steps_from_the_warmup(tmp_path):
    mod = _train_module()
    _, m = _run(mod, tmp_path, ["--time-budget-min", "0.02", "--warmup", "8"])
    assert m["steps"] >= 8 and m["final_step"] == m["steps"] and not m["stopped_early"]
    assert "set from the run's own steps 2-8 for --time-budget-min 0.02" in m["steps_from"]
    assert m["timing"]["steady_window"] == "2-8" and m["timing"]["steady_tokens_per_s"] > 0


def test_time_budget_needs_timed_steps_inside_the_warmup(tmp_path):
    mod = _train_module()
    with pytest.raises(SystemExit, match=r"--warmup 4 leaves 1 \(need >= 2\)"):
        mod.main(TINY + ["--data-root", str(_data(tmp_path)), "--out", str(tmp_path / "o"),
                         "--time-budget-min", "1", "--warmup", "4", "--profile-steps", "2"])


def test_hard_stop_still_exports_and_reports(tmp_path):
    """A hard stop before the step count is known: the run stops, saves, exports, reports."""
    mod = _train_module()
    exp = tmp_path / "exp"
    _, m = _run(mod, tmp_path, ["--time-budget-min", "5", "--warmup", "8", "--hard-stop-min", "0.0001",
                                "--export-dir", str(exp)])
    assert m["stopped_early"] and m["final_step"] == m["steps"] == 1
    assert "(not reached)" in m["steps_from"]
    HLALanguageModel.load(exp)
    assert "(hard stop)" in (exp / "TRAINING_RUN.md").read_text()


def test_compiled_blocks_train_like_eager(tmp_path):
    """--compile on (aot_eager: dynamo + AOTAutograd, no code generation) traces the blocks around
    the HLA custom op, forward and backward, and trains as the eager run does."""
    mod = _train_module()
    _, eager_m = _run(mod, tmp_path, ["--compile", "off", "--seed", "4"], "eager")
    _, comp_m = _run(mod, tmp_path, ["--compile", "on", "--compile-backend", "aot_eager", "--seed", "4"], "comp")
    assert comp_m["compile"] == "blocks compiled (aot_eager)"
    for (s1, a), (s2, b) in zip(eager_m["train"], comp_m["train"]):
        assert s1 == s2 and a == pytest.approx(b, rel=1e-4)


def test_failed_compilation_falls_back_to_eager(tmp_path, monkeypatch):
    """A compiler that fails on the first step: the run says so, records it, and trains exactly as
    the eager run (the failed step is redone eagerly from the same weights and batch)."""
    from safetensors.torch import load_file
    mod = _train_module()
    real = mod.compile_blocks

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")
    monkeypatch.setattr(mod, "compile_blocks", lambda model, backend: real(model, broken_backend))
    out_f, m = _run(mod, tmp_path, ["--compile", "on", "--seed", "5"], "failed")
    assert m["compile"].startswith("failed (") and "trained eagerly" in m["compile"]
    out_e, _ = _run(mod, tmp_path, ["--compile", "off", "--seed", "5"], "eager")
    wf, we = (load_file(str(o / "final" / "model.safetensors")) for o in (out_f, out_e))
    assert all(torch.equal(wf[k], we[k]) for k in we)


def test_window_sampler():
    from hla_deploy.training import WindowSampler
    corpus = torch.arange(100, dtype=torch.uint8)
    a = WindowSampler(corpus, batch=3, seq_len=8, seed=1, device="cpu")
    x, y = a.next()
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.shape == y.shape == (3, 8)
    assert torch.equal(x[:, 1:].long(), y[:, :-1]) and torch.equal(y - x.long(), torch.ones(3, 8, dtype=torch.long))
    state = a.get_state()
    nxt = a.next()
    b = WindowSampler(corpus, batch=3, seq_len=8, seed=99, device="cpu")
    b.set_state(state)
    assert all(torch.equal(u, w) for u, w in zip(b.next(), nxt))
    with pytest.raises(TypeError, match="corpus must be a 1-D uint8 tensor"):
        WindowSampler(corpus.long(), 3, 8, 0, "cpu")
    with pytest.raises(ValueError, match="fewer than seq_len \\+ 2"):
        WindowSampler(corpus[:9], 3, 8, 0, "cpu")


def test_steps_for_budget():
    from hla_deploy.training import StepWindow, steps_for_budget
    w = StepWindow(start=5, end=25, t_start=10.0, t_end=12.0)          # 0.1 s per step
    # 60 s budget from t = 9: 57 s left at the window's end -> 570 more steps; 10% overhead -> 518
    assert steps_for_budget(60.0, w, train_t0=9.0) == 25 + 570
    assert steps_for_budget(60.0, w, train_t0=9.0, overhead=0.1) == 25 + 518
    assert steps_for_budget(1.0, w, train_t0=9.0) == 25                # over budget already: stop now
    assert StepWindow.for_run(100, 0, 5) == StepWindow(10, 100)
    assert StepWindow.for_run(100, 40, 0) == StepWindow(45, 140)       # a resumed run


def _ship_module():
    spec = importlib.util.spec_from_file_location("ship_demo_checkpoint", ROOT / "examples" / "ship_demo_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ship_a_run_into_the_package_layout(tmp_path, capsys):
    """What gpu_train_demo.sh returns (ckpt/ with SHA256SUMS, weights split in parts) is joined,
    checked, refused while a target is missed, shipped with --force (a card from the run's facts,
    the benchmarks section replaced, not appended twice), and a corrupt file is named."""
    import hashlib
    mod = _train_module()
    ship = _ship_module()
    run = tmp_path / "OUT"
    ck = run / "ckpt"
    _run(mod, tmp_path, ["--save-dtype", "fp16", "--export-dir", str(ck)])
    weights = (ck / "model.safetensors").read_bytes()
    sums = "".join(f"{hashlib.sha256((ck / n).read_bytes()).hexdigest()}  {n}\n"
                   for n in ("config.json", "model.safetensors"))
    (ck / "SHA256SUMS").write_text(sums)
    (ck / "model.safetensors").unlink()
    half = len(weights) // 2                                   # as `split -b ... -d` names them
    (ck / "model.safetensors.part-00").write_bytes(weights[:half])
    (ck / "model.safetensors.part-01").write_bytes(weights[half:])
    to, bench = tmp_path / "shipped", tmp_path / "BENCH.md"
    bench.write_text("# Benchmarks\n\nother text\n")
    assert ship.main([str(run), "--to", str(to), "--benchmarks", str(bench)]) == 1   # tiny run: targets missed
    assert not to.exists()
    assert "MISSED  held-out loss <= 0.80 nats/byte" in capsys.readouterr().out
    for _ in range(2):
        assert ship.main([str(run), "--to", str(to), "--benchmarks", str(bench), "--force"]) == 0
    assert (to / "model.safetensors").read_bytes() == weights
    HLALanguageModel.load(to)
    m = json.loads((to / "metrics.json").read_text())
    card = (to / "MODEL_CARD.md").read_text()
    for fact in (hashlib.sha256(weights).hexdigest(), "fp16 weights", "targets missed", "Every 2nd file",
                 " ".join(m["argv"]), "tokens/s", "## The run's own record", "'class Foo:'"):
        assert fact in card, fact
    text = bench.read_text()
    assert text.startswith("# Benchmarks\n\nother text\n") and text.count("<!-- section: train-demo -->") == 1
    (ck / "model.safetensors.part-01").write_bytes(weights[half:-1] + b"x")
    assert ship.main([str(run), "--to", str(tmp_path / "t2"), "--benchmarks", "", "--force"]) == 2
    assert "differs from" in capsys.readouterr().err and not (tmp_path / "t2").exists()


def test_a_profiler_that_fails_does_not_stop_training(tmp_path, monkeypatch):
    mod = _train_module()

    def broken(*args, **kwargs):
        raise RuntimeError("CUPTI unavailable")
    monkeypatch.setattr(torch.profiler, "profile", broken)
    out, m = _run(mod, tmp_path, ["--profile-steps", "1"])
    assert m["final_step"] == 4 and "CUPTI unavailable" in m["profile"]["error"]
    assert "| profile | not written: the profiler did not start" in (out / "TRAINING_RUN.md").read_text()
