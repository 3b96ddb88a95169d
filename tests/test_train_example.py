"""examples/train_tiny_lm.py: the demo-triton preset's size, the run facts it records for the
model card (TRAINING_RUN.md), and its Triton path at tiny size on the CPU interpreter."""
from __future__ import annotations

import importlib.util
import json
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
    data.mkdir()
    for f in sorted((ROOT / "hla_deploy" / "models").glob("*.py")):
        shutil.copyfile(f, data / f.name)
    return data


TINY = ["--device", "cpu", "--val-every", "2", "--steps", "4", "--ckpt-every", "4", "--eval-every", "2",
        "--eval-windows", "2", "--batch", "2", "--seq-len", "32", "--warmup", "1", "--log-every", "2",
        "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--head-dim", "16", "--value-dim", "16",
        "--mlp-hidden", "16", "--sample-tokens", "6"]


def test_demo_triton_preset_fits_25_mb(tmp_path):
    mod = _train_module()
    args = mod.parse_args(["--preset", "demo-triton"])
    assert (args.attn_backend, args.device, args.batch, args.seq_len) == ("triton", "cuda", 32, 512)
    assert mod.parse_args(["--preset", "demo-triton", "--batch", "8"]).batch == 8  # flags win
    model = HLALanguageModel(mod.build_config(args))
    path = model.save(tmp_path / "ck")
    size = (Path(path) / "model.safetensors").stat().st_size
    assert model.num_parameters() > 1_820_608  # larger than the shipped 1.8M model
    assert size <= 25 * 10**6, size
    from hla_deploy.ops import triton as hla_triton
    c = model.config
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
