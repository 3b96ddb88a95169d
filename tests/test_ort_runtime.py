"""OrtHLASession (hla_deploy.runtime) over exported models vs the torch model, on the CPU EP.

Full-model parity: HLALanguageModel -> exporters.export_onnx(op="custom") -> OrtHLASession; a
prefill of 12 tokens then 20 one-token decode steps with the state fed back, driven by the same
token sequence in both; logits and states must agree with the torch model within
    fp32 export: relative RMS <= 1e-5 and max |diff| <= 1e-4 (3e-7 .. 8e-7 relative measured)
    fp16 export: relative RMS <= 5e-3 (weights and activations fp16, state fp32; 0.9e-3 measured
                 on hla2, 0.8e-3 .. 1.8e-3 on the other variants)
The IOBinding path (.prefill / .step, state kept in OrtValues) must equal the stateless .run
bit for bit, and greedy .generate must give the torch reference generate's tokens.
"""
from __future__ import annotations

import argparse
import io
import json
import contextlib

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from hla_deploy.exporters import export_onnx  # noqa: E402
from hla_deploy.models import HLAConfig, HLALanguageModel, generate as torch_generate  # noqa: E402
from hla_deploy.runtime import sampling  # noqa: E402

CONFIGS = {
    "hla2-decay-normalize": dict(variant="hla2", decay=[0.9, 0.97], normalize=True),
    "hla2-ridge": dict(variant="hla2", decay=0.95, ridge=0.1),
    "ahla": dict(variant="ahla", decay=[0.92, 0.99], normalize=True),
    "hla3": dict(variant="hla3", decay=1.0),
}


def _tiny_model(name, seed=0):
    torch.manual_seed(seed)
    cfg = HLAConfig(d_model=32, n_layers=2, n_heads=2, head_dim=16, value_dim=8, mlp_hidden=48,
                    **CONFIGS[name])
    return HLALanguageModel(cfg).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (torch model, path of its custom-op fp32 export)."""
    out = {}
    d = tmp_path_factory.mktemp("ort_runtime")
    for name in CONFIGS:
        model = _tiny_model(name)
        out[name] = (model, export_onnx(model, None, d / f"{name}.onnx", op="custom"))
    return out


def rel_rms(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2)) / (np.sqrt(np.mean(b ** 2)) + 1e-30))


def _torch_trace(model, ids, n_steps):
    """Logits of a prefill of ids[:, :T0] then one-token steps on the following ids."""
    T0 = ids.shape[1] - n_steps
    with torch.no_grad():
        logits, state = model(torch.from_numpy(ids[:, :T0]), None)
        steps = [logits[:, -1]]
        for t in range(T0, ids.shape[1]):
            logits, state = model(torch.from_numpy(ids[:, t:t + 1]), state)
            steps.append(logits[:, 0])
    return torch.stack(steps, 1).numpy(), state.numpy()


# ---- full model parity ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_prefill_and_decode_match_torch(exported, ort_library, name):
    from hla_deploy.runtime import OrtHLASession
    model, path = exported[name]
    sess = OrtHLASession(path, library=ort_library)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 256, (2, 12 + 20)).astype(np.int64)
    ref_steps, ref_state = _torch_trace(model, ids, 20)

    sess.reset(2)
    got = [sess.prefill(ids[:, :12])[:, -1]]
    for t in range(12, 32):
        got.append(sess.step(ids[:, t]))
    got = np.stack(got, 1)
    assert got.shape == ref_steps.shape == (2, 21, 256)
    assert rel_rms(got, ref_steps) <= 1e-5, rel_rms(got, ref_steps)
    assert np.abs(got - ref_steps).max() <= 1e-4
    assert rel_rms(sess.get_state(), ref_state) <= 1e-5


@pytest.mark.slow
def test_fp16_export_matches_torch(ort_library, tmp_path):
    from hla_deploy.runtime import OrtHLASession
    model = _tiny_model("hla2-decay-normalize")
    path = export_onnx(model, None, tmp_path / "m16.onnx", op="custom", dtype="fp16")
    sess = OrtHLASession(path, library=ort_library)
    assert sess.metadata["hla_deploy.dtype"] == "fp16"
    ids = np.random.default_rng(2).integers(0, 256, (1, 12 + 20)).astype(np.int64)
    ref_steps, _ = _torch_trace(model, ids, 20)
    sess.reset(1)
    got = [sess.prefill(ids[:, :12])[:, -1]] + [sess.step(ids[:, t]) for t in range(12, 32)]
    got = np.stack(got, 1)
    assert got.dtype == np.float32  # logits float32 even for fp16 exports
    err = rel_rms(got, ref_steps)
    assert 0 < err <= 5e-3, err


def test_cuda_ep_matches_cpu(exported, ort_library):
    from hla_deploy.runtime import OrtHLASession
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider here (CPU-only wheel): the CUDA-EP op "
                    "cannot run; its kernels are tested in plugins/common")
    _, path = exported["hla2-decay-normalize"]
    cpu = OrtHLASession(path, library=ort_library)
    gpu = OrtHLASession(path, device="cuda", library=ort_library, tf32=False)  # TF32 MatMul: ~1e-3 off
    ids = np.random.default_rng(4).integers(0, 256, (2, 20)).astype(np.int64)
    for s in (cpu, gpu):
        s.reset(2)
    a = [cpu.prefill(ids[:, :10])[:, -1]] + [cpu.step(ids[:, t]) for t in range(10, 20)]
    b = [gpu.prefill(ids[:, :10])[:, -1]] + [gpu.step(ids[:, t]) for t in range(10, 20)]
    assert rel_rms(np.stack(b), np.stack(a)) <= 1e-5
    assert rel_rms(gpu.get_state(), cpu.get_state()) <= 1e-5


def test_iobinding_equals_stateless_run(exported, ort_library):
    from hla_deploy.runtime import OrtHLASession
    _, path = exported["hla2-decay-normalize"]
    sess = OrtHLASession(path, library=ort_library)
    ids = np.random.default_rng(3).integers(0, 256, (3, 10)).astype(np.int64)
    # stateless chain: run(ids[:, :7]) then three one-token runs
    l0, s = sess.run(ids[:, :7], sess.init_state(3))
    ref = [l0]
    for t in range(7, 10):
        lt, s = sess.run(ids[:, t:t + 1], s)
        ref.append(lt)
    sess.reset(3)
    got = [sess.prefill(ids[:, :7])] + [sess.step(ids[:, t])[:, None] for t in range(7, 10)]
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sess.get_state(), s)
    # state None means zeros
    l1, s1 = sess.run(ids[:, :7])
    np.testing.assert_array_equal(l1, l0)


@pytest.mark.parametrize("name", ["hla2-decay-normalize", "ahla"])
def test_greedy_generate_matches_torch(exported, ort_library, name):
    from hla_deploy.runtime import OrtHLASession
    model, path = exported[name]
    sess = OrtHLASession(path, library=ort_library)
    prompt = [100, 101, 102, 32, 120]
    got = sess.generate(prompt, 20)
    with torch.no_grad():
        ref = torch_generate(model, prompt, 20)
    assert len(got) == 20
    if got != ref:  # only acceptable at a near-tie of the torch logits at the first divergence
        i = next(j for j, (a, b) in enumerate(zip(got, ref)) if a != b)
        with torch.no_grad():
            logits, _ = model(torch.tensor([prompt + ref[:i]]), None)
        margin = float(logits[0, -1, ref[i]] - logits[0, -1, got[i]])
        assert margin <= 1e-4, f"token {i}: ORT {got[i]} vs torch {ref[i]}, torch margin {margin}"


def test_generate_sampling_is_seeded(exported, ort_library):
    from hla_deploy.runtime import OrtHLASession
    _, path = exported["ahla"]
    sess = OrtHLASession(path, library=ort_library)
    a = sess.generate([1, 2, 3], 12, temperature=1.5, top_k=20, seed=7)
    b = sess.generate([1, 2, 3], 12, temperature=1.5, top_k=20, seed=7)
    assert a == b and len(a) == 12
    assert sess.generate([1, 2, 3], 8, temperature=1.0, top_k=1, seed=3) == sess.generate([1, 2, 3], 8)
    assert sess.generate([1, 2, 3], 0) == []


def test_generate_cli_matches_session(exported, ort_library):
    from hla_deploy.models import tokenizer
    from hla_deploy.runtime import OrtHLASession, cli
    _, path = exported["hla3"]
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([str(path), "--prompt", "def f(", "--max-new-tokens", "6", "--json",
                              "--library", str(ort_library)])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.run(args) == 0
    out = json.loads(buf.getvalue())
    assert out["prompt_ids"] == tokenizer.encode("def f(")
    assert out["generated_ids"] == OrtHLASession(path, library=ort_library).generate(tokenizer.encode("def f("), 6)


@pytest.mark.slow
def test_shipped_checkpoint_greedy_matches_torch(ort_library, tmp_path):
    from hla_deploy.models import default_checkpoint, tokenizer
    from hla_deploy.runtime import OrtHLASession
    try:
        ckpt = default_checkpoint()
    except FileNotFoundError as e:
        pytest.skip(f"shipped checkpoint not present: {e}")
    model = HLALanguageModel.load(ckpt).eval()
    sess = OrtHLASession(export_onnx(ckpt, None, tmp_path / "tiny.onnx"), library=ort_library)
    prompt = tokenizer.encode("import os\n\ndef ")
    got = sess.generate(prompt, 24)
    with torch.no_grad():
        ref = torch_generate(model, prompt, 24)
    assert got == ref, (tokenizer.decode(got), tokenizer.decode(ref))


# ---- errors -------------------------------------------------------------------------------------------

def test_missing_library_is_a_clear_error(tmp_path):
    from hla_deploy.runtime import OrtHLASession
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"custom-op library not found: .*nope\.so"):
        OrtHLASession(model, library=tmp_path / "nope.so")
    with pytest.raises(FileNotFoundError, match=r"ONNX model not found: .*absent\.onnx"):
        OrtHLASession(tmp_path / "absent.onnx", library=tmp_path / "nope.so")


def test_library_that_is_not_a_library(tmp_path, exported):
    from hla_deploy.runtime import OrtHLASession
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(RuntimeError, match=r"could not load the custom-op library .*libbogus\.so"):
        OrtHLASession(exported["hla3"][1], library=bogus)


def test_unknown_contract_version_and_missing_metadata_refused(exported, ort_library, tmp_path):
    import onnx
    from hla_deploy.runtime import OrtHLASession
    proto = onnx.load(str(exported["hla3"][1]))
    for prop in proto.metadata_props:
        if prop.key == "hla_deploy.op_contract_version":
            prop.value = "99"
    onnx.save(proto, str(tmp_path / "v99.onnx"))
    with pytest.raises(ValueError, match=r"op contract version 99; this runtime knows 1"):
        OrtHLASession(tmp_path / "v99.onnx", library=ort_library)
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "nometa.onnx"))
    with pytest.raises(ValueError, match=r"no 'hla_deploy.op_contract_version' metadata"):
        OrtHLASession(tmp_path / "nometa.onnx", library=ort_library)


def test_cuda_without_cuda_ep_is_a_clear_error(exported, ort_library):
    from hla_deploy.runtime import OrtHLASession
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP: the error path cannot be reached")
    with pytest.raises(RuntimeError, match=r"needs onnxruntime's CUDAExecutionProvider"):
        OrtHLASession(exported["hla3"][1], device="cuda", library=ort_library)
    with pytest.raises(ValueError, match=r"device must be 'cpu' or 'cuda'"):
        OrtHLASession(exported["hla3"][1], device="tpu", library=ort_library)


def test_bad_inputs_are_clear_errors(exported, ort_library):
    from hla_deploy.runtime import OrtHLASession
    sess = OrtHLASession(exported["hla2-ridge"][1], library=ort_library)
    L, H, N = sess.n_layers, sess.n_heads, sess.state_size
    ids = np.zeros((1, 4), np.int64)
    with pytest.raises(TypeError, match="input_ids must hold integer token ids"):
        sess.run(ids.astype(np.float32))
    with pytest.raises(ValueError, match=r"input_ids must have rank 2 \[B, T\]"):
        sess.run(ids[0])
    with pytest.raises(ValueError, match=r"ids outside \[0, 256\)"):
        sess.run(ids + 256)
    with pytest.raises(TypeError, match="state must be float32"):
        sess.run(ids, np.zeros((L, 1, H, N), np.float64))
    with pytest.raises(ValueError, match=rf"state has shape \({L}, 1, {H}, {N + 1}\)"):
        sess.run(ids, np.zeros((L, 1, H, N + 1), np.float32))
    sess.reset(2)
    with pytest.raises(ValueError, match=r"batch size 1 .* 2 rows; call reset\(1\)"):
        sess.step(np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="prompt_ids must hold at least one token"):
        sess.generate([], 3)


# ---- the shared sampler -------------------------------------------------------------------------------

def test_sampler_greedy_and_top_k():
    logits = np.array([0.5, 2.0, 2.0, -1.0])
    assert sampling.sample_next(logits) == 1  # ties -> lowest id
    np.testing.assert_array_equal(sampling.sample_next(np.stack([logits, -logits])), [1, 3])
    rng = sampling.make_rng(0)
    draws = {sampling.sample_next(logits, 5.0, top_k=2, rng=rng) for _ in range(200)}
    assert draws == {1, 2}  # only the two largest logits
    with pytest.raises(ValueError, match="temperature"):
        sampling.sample_next(logits, -1.0)
    with pytest.raises(ValueError, match="top_k"):
        sampling.sample_next(logits, 1.0, top_k=0)


def test_sampler_distribution_and_seed():
    p = np.array([0.1, 0.2, 0.7])
    logits = np.log(p)
    rng = sampling.make_rng(123)
    draws = np.array([sampling.sample_next(logits, 1.0, rng=rng) for _ in range(4000)])
    freq = np.bincount(draws, minlength=3) / draws.size
    np.testing.assert_allclose(freq, p, atol=0.03)
    a = [sampling.sample_next(logits, 1.0, rng=sampling.make_rng(9)) for _ in range(5)]
    assert len(set(a)) == 1  # same seed, same draw
