"""serve-repo without a server: the onnxruntime / tensorrt / python configs parsed as Triton
ModelConfig protobufs (tritonclient's model_config_pb2) and checked field by field; the
batch-first state rewrite against the original graph; SequenceTable rules; `hla-deploy serve`
started and stopped with SIGTERM."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient not installed (pip install '.[serve]')")
from google.protobuf import text_format  # noqa: E402


@pytest.fixture(scope="module")
def onnx_model(tiny_ckpt, tmp_path_factory):
    from hla_deploy.exporters import export_onnx
    return export_onnx(tiny_ckpt, None, tmp_path_factory.mktemp("serve") / "tiny.onnx", op="custom")


def parse(repo):
    return text_format.Parse((repo / "hla_lm" / "config.pbtxt").read_text(), pb.ModelConfig())


def _state_dims(onnx_model):
    from hla_deploy.runtime.onnx_file import read_export
    m, _ = read_export(onnx_model)
    d = [x.dim_value for x in next(i for i in m.graph.input if i.name == "state").type.tensor_type.shape.dim]
    return [d[0], d[2], d[3]]


def _check_io(cfg, vocab=256):
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("input_ids", pb.TYPE_INT64, [-1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("logits", pb.TYPE_FP32, [-1, vocab])]


@pytest.mark.parametrize("backend,device", [("onnxruntime", "cpu"), ("onnxruntime", "cuda"), ("tensorrt", "cuda")])
def test_implicit_state_configs(onnx_model, ort_library, tmp_path, backend, device):
    from hla_deploy.serving.repository import write_repository
    repo = write_repository(onnx_model, tmp_path / "repo", backend=backend, device=device, max_sequences=12,
                            instances=2, idle_timeout_s=7.5, op_library=ort_library)
    cfg = parse(repo)
    assert cfg.name == "hla_lm" and cfg.backend == backend and cfg.max_batch_size == 12
    _check_io(cfg)
    sb = cfg.sequence_batching
    assert sb.max_sequence_idle_microseconds == 7_500_000
    assert sb.WhichOneof("strategy_choice") == "oldest" and sb.oldest.max_candidate_sequences == 12
    assert len(sb.control_input) == 0  # the graph has no control inputs: Triton keeps the state
    (st,) = sb.state
    L, H, N = _state_dims(onnx_model)
    assert (st.input_name, st.output_name, st.data_type, list(st.dims)) == ("state", "state_out", pb.TYPE_FP32, [L, H, N])
    (init,) = st.initial_state
    assert init.zero_data and init.data_type == pb.TYPE_FP32 and list(init.dims) == [L, H, N]
    (ig,) = cfg.instance_group
    assert ig.count == 2 and ig.kind == (pb.ModelInstanceGroup.KIND_GPU if device == "cuda" else pb.ModelInstanceGroup.KIND_CPU)
    readme = (repo / "README.md").read_text()
    assert "onnxruntime" in readme and "python" in readme
    if backend == "onnxruntime":
        (lib,) = cfg.model_operations.op_library_filename
        assert os.path.isfile(lib) and lib.startswith(str(repo.absolute()))
        assert "ONNX Runtime >= 1.21" in readme
        graph = repo / "hla_lm" / "1" / "model.onnx"
    else:
        assert not cfg.model_operations.op_library_filename
        assert "trtexec" in readme and "--backend-config=tensorrt,plugins=" in readme
        graph = repo / "hla_lm" / "model_batch_first.onnx"
    import onnx
    g = onnx.load(str(graph), load_external_data=False).graph
    sdims = [d.dim_value or d.dim_param for d in next(i for i in g.input if i.name == "state").type.tensor_type.shape.dim]
    assert sdims[1:] == [L, H, N]


def test_python_config(onnx_model, tmp_path):
    from hla_deploy.serving.model_config import spare_slots
    from hla_deploy.serving.repository import write_repository
    for strategy in ("oldest", "direct"):
        repo = write_repository(onnx_model, tmp_path / strategy, max_sequences=8, idle_timeout_s=3, strategy=strategy)
        cfg = parse(repo)
        assert cfg.backend == "python"
        _check_io(cfg)
        sb = cfg.sequence_batching
        assert sb.WhichOneof("strategy_choice") == strategy
        slots = 8 + spare_slots(8)
        assert (sb.oldest.max_candidate_sequences if strategy == "oldest" else cfg.max_batch_size) == slots
        kinds = {c.name: c.control[0].kind for c in sb.control_input}
        C = pb.ModelSequenceBatching.Control
        assert kinds == {"START": C.CONTROL_SEQUENCE_START, "END": C.CONTROL_SEQUENCE_END,
                         "READY": C.CONTROL_SEQUENCE_READY, "CORRID": C.CONTROL_SEQUENCE_CORRID}
        assert cfg.parameters["max_sequences"].string_value == "8"
        assert (repo / "hla_lm" / "1" / "model.py").is_file() and (repo / "hla_lm" / "1" / "model.onnx").is_file()


def test_repository_errors(onnx_model, tmp_path):
    from hla_deploy.serving.repository import write_repository
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="full"):
        write_repository(onnx_model, tmp_path / "full")
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        write_repository(tmp_path / "nope.onnx", tmp_path / "r")
    with pytest.raises(ValueError, match="backend"):
        write_repository(onnx_model, tmp_path / "r", backend="tf")
    assert not (tmp_path / "r").exists() and [p.name for p in tmp_path.iterdir()] == ["full"]


def test_state_batch_first_matches_original(onnx_model, ort_library, tmp_path):
    import onnxruntime as ort
    from hla_deploy.exporters.state_batch_first import state_batch_first
    from hla_deploy.runtime import OrtHLASession
    out = state_batch_first(onnx_model, tmp_path / "bf.onnx")
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ort_library))
    bf = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    ref = OrtHLASession(onnx_model, library=ort_library)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 256, (3, 5))
    state = (0.1 * rng.standard_normal(ref.state_shape(3))).astype(np.float32)  # [L, B, H, N]
    l0, s0 = ref.run(ids, state)
    l1, s1 = bf.run(None, {"input_ids": ids, "state": np.ascontiguousarray(state.transpose(1, 0, 2, 3))})
    np.testing.assert_array_equal(l1, l0)
    np.testing.assert_array_equal(s1.transpose(1, 0, 2, 3), s0)
    with pytest.raises(ValueError, match="already batch-first"):
        state_batch_first(out, tmp_path / "bf2.onnx")


class _FakeSession:
    """Sum-of-tokens 'model': state += sum(ids); logits[t] = running state (checks isolation)."""
    vocab_size = 10

    def _check_ids(self, ids, name="input_ids"):
        ids = np.asarray(ids)
        if ids.max() >= self.vocab_size:
            raise ValueError(f"{name} has ids outside [0, 10)")
        return ids

    def _new_states(self, b):
        return [np.zeros(1), np.zeros(1)]

    def _forward(self, ids, states, cur):
        run = states[cur][0] + np.cumsum(ids[0])
        states[1 - cur][:] = run[-1]
        return np.repeat(run[None, :, None], self.vocab_size, axis=2).astype(np.float32), 1 - cur


def test_sequence_table_rules():
    from hla_deploy.serving.sequences import SequenceLimitError, SequenceTable, UnknownSequenceError
    now = [0.0]
    t = SequenceTable(_FakeSession(), max_sequences=2, idle_timeout_s=10, clock=lambda: now[0])
    assert t.run(1, [1, 2], start=True, end=False)[:, 0].tolist() == [1, 3]
    assert t.run(2, [5], start=True, end=False)[:, 0].tolist() == [5]
    assert t.run(1, [4], start=False, end=False)[:, 0].tolist() == [7]
    with pytest.raises(SequenceLimitError, match=r"correlation id 3.*max_sequences=2"):
        t.run(3, [1], start=True, end=False)
    with pytest.raises(ValueError, match="outside"):
        t.run(1, [99], start=False, end=False)
    assert t.run(1, [1], start=False, end=False)[:, 0].tolist() == [8]  # bad request changed nothing
    assert t.run(1, [2], start=True, end=False)[:, 0].tolist() == [2]  # START resets
    assert t.run(2, [1], start=False, end=True)[:, 0].tolist() == [6]
    with pytest.raises(UnknownSequenceError, match="correlation id 2"):
        t.run(2, [1], start=False, end=False)
    now[0] = 20.0  # sequence 1 idle > 10 s: reclaimed
    with pytest.raises(UnknownSequenceError, match="correlation id 1"):
        t.run(1, [1], start=False, end=False)
    assert len(t) == 0 and t.reclaimed == 1


def test_serve_cli_starts_and_stops_on_sigterm(onnx_model, ort_library, tmp_path):
    pytest.importorskip("pytriton", reason="nvidia-pytriton (tritonserver) not installed: pip install '.[serve]'")
    from hla_deploy.serving.repository import write_repository
    from hla_deploy.serving.server import free_port
    repo = write_repository(onnx_model, tmp_path / "repo", max_sequences=2, op_library=ort_library)
    g, h = free_port(), free_port()
    p = subprocess.Popen([sys.executable, "-m", "hla_deploy", "serve", str(repo), "--grpc-port", str(g),
                          "--http-port", str(h)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline()
        assert f"127.0.0.1:{g}" in line and f"127.0.0.1:{h}" in line, line
        import tritonclient.http as httpclient
        assert httpclient.InferenceServerClient(f"127.0.0.1:{h}").is_model_ready("hla_lm")
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
        assert "stopped (tritonserver exit 0)" in p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()
