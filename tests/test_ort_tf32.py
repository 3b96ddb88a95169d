"""The TF32 switch of OrtHLASession, checked on the CPU with a mocked CUDA EP.

onnxruntime-gpu's CUDA EP runs MatMul in TF32 unless the provider option ``use_tf32`` is "0"
(measured on the H200: logits 9.1e-4 relative RMS off the CPU EP with TF32, 5.7e-7 without).
Here onnxruntime.get_available_providers / InferenceSession are replaced by recorders that run
the real CPU EP underneath, so the test sees exactly which provider options the session asks
onnxruntime for: use_tf32 "0" by default and from parity's ort-cuda backend, "1" only when
tf32=True (``hla-deploy generate --device cuda --tf32``).
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from hla_deploy.runtime import ort_session  # noqa: E402
from hla_deploy.runtime.ort_session import OrtHLASession, cuda_provider_options  # noqa: E402


@pytest.fixture(scope="module")
def tiny_onnx(tiny_ckpt, tmp_path_factory):
    from hla_deploy.exporters import export_onnx
    return export_onnx(tiny_ckpt, None, tmp_path_factory.mktemp("tf32") / "tiny.onnx", op="custom")


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend onnxruntime has the CUDA EP; record the providers each session asks for and run
    it on the real CPU EP. Yields the list of recorded `providers` arguments."""
    calls = []
    real_session = ort.InferenceSession

    class RecordingSession:
        def __init__(self, path, sess_options=None, providers=None, **kw):
            calls.append(providers)
            self._real = real_session(path, sess_options, providers=["CPUExecutionProvider"])

        def get_providers(self):
            names = [p[0] if isinstance(p, tuple) else p for p in calls[-1]]
            return names

        def __getattr__(self, name):
            return getattr(self._real, name)

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", RecordingSession)
    return calls


def _cuda_options(providers):
    assert providers[0][0] == "CUDAExecutionProvider", providers
    assert providers[-1] == "CPUExecutionProvider", providers
    return providers[0][1]


def test_provider_options_helper():
    assert cuda_provider_options() == {"device_id": "0", "use_tf32": "0"}
    assert cuda_provider_options(3, tf32=True) == {"device_id": "3", "use_tf32": "1"}


def test_cuda_session_tf32_off_by_default(fake_cuda, tiny_onnx, ort_library):
    sess = OrtHLASession(tiny_onnx, device="cuda", library=ort_library)
    assert sess.tf32 is False
    assert _cuda_options(fake_cuda[-1]) == {"device_id": "0", "use_tf32": "0"}
    # the session still runs (on the real CPU EP underneath): the options did not break it
    logits, state = sess.run(np.array([[1, 2, 3]], np.int64))
    assert logits.shape == (1, 3, 256) and np.isfinite(logits).all()


def test_cuda_session_tf32_on_when_asked(fake_cuda, tiny_onnx, ort_library):
    sess = OrtHLASession(tiny_onnx, device="cuda", library=ort_library, device_id=1, tf32=True)
    assert sess.tf32 is True
    assert _cuda_options(fake_cuda[-1]) == {"device_id": "1", "use_tf32": "1"}


def test_cpu_session_has_no_cuda_options(fake_cuda, tiny_onnx, ort_library):
    OrtHLASession(tiny_onnx, device="cpu", library=ort_library)
    assert fake_cuda[-1] == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match=r"tf32=True applies only to device='cuda'"):
        OrtHLASession(tiny_onnx, device="cpu", library=ort_library, tf32=True)
    with pytest.raises(TypeError, match=r"tf32 must be True or False"):
        OrtHLASession(tiny_onnx, device="cuda", library=ort_library, tf32="yes")


def test_parity_ort_cuda_backend_turns_tf32_off(fake_cuda, tiny_ckpt, tiny_onnx, ort_library, monkeypatch):
    from hla_deploy.parity.backends import OrtBackend

    class Ctx:  # the two things OrtBackend.prepare asks of the parity context before prepare_common
        def onnx_path(self, kind):
            assert kind == "custom"
            return tiny_onnx

        def ort_library(self):
            return ort_library

    backend = OrtBackend("cuda")
    monkeypatch.setattr(OrtBackend, "prepare_common", lambda self, ctx: None)
    backend.prepare(Ctx())
    assert _cuda_options(fake_cuda[-1])["use_tf32"] == "0"
    assert "tf32=False" in backend.description


def test_generate_cli_passes_tf32(monkeypatch, tiny_onnx, tmp_path):
    from hla_deploy.runtime import cli
    seen = {}

    class FakeSession:
        def __init__(self, path, device="cpu", library=None, **kw):
            seen.update(device=device, **kw)

        def generate_stream(self, ids, n, **kw):
            return iter([65] * n)

    monkeypatch.setattr(ort_session, "OrtHLASession", FakeSession)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args([str(tiny_onnx), "--device", "cuda", "--tf32", "--max-new-tokens", "2"])) == 0
    assert seen == {"device": "cuda", "tf32": True}
    assert cli.run(parser.parse_args([str(tiny_onnx), "--device", "cuda", "--max-new-tokens", "2"])) == 0
    assert seen == {"device": "cuda", "tf32": False}


def test_generate_cli_tf32_without_cuda_is_an_error(tiny_onnx, capsys):
    from hla_deploy.runtime import cli
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    from hla_deploy.exit_codes import UsageError
    with pytest.raises(UsageError, match="--tf32 applies only to an .onnx model with --device cuda"):
        cli.run(parser.parse_args([str(tiny_onnx), "--tf32", "--max-new-tokens", "2"]))
    from hla_deploy.cli import main
    assert main(["generate", str(tiny_onnx), "--tf32", "--max-new-tokens", "2"]) == 2  # usage
    assert "--tf32 applies only to an .onnx model with --device cuda" in capsys.readouterr().err
