"""serve-repo without a server: the onnxruntime / tensorrt / python configs parsed as Triton
ModelConfig protobufs (tritonclient's model_config_pb2) and checked field by field, batching
settings included; the batch-first state rewrite against the original graph; `hla-deploy serve`
started and stopped with SIGTERM, its exit codes and its temporary folder. (SequenceTable:
tests/test_serving_batch.py.)"""
import os
import re
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
                            instances=2, idle_timeout_s=7.5, op_library=ort_library, max_batch_size=8,
                            queue_delay_us=1500)
    cfg = parse(repo)
    assert cfg.name == "hla_lm" and cfg.backend == backend and cfg.max_batch_size == 8
    _check_io(cfg)
    sb = cfg.sequence_batching
    assert sb.max_sequence_idle_microseconds == 7_500_000
    assert sb.WhichOneof("strategy_choice") == "oldest" and sb.oldest.max_candidate_sequences == 12
    assert sb.oldest.max_queue_delay_microseconds == 1500
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
        assert f"--maxShapes=input_ids:8x2048,state:8x{L}x{H}x{N}" in readme  # the engine covers batch 8
        graph = repo / "hla_lm" / "model_batch_first.onnx"
    import onnx
    g = onnx.load(str(graph), load_external_data=False).graph
    sdims = [d.dim_value or d.dim_param for d in next(i for i in g.input if i.name == "state").type.tensor_type.shape.dim]
    assert sdims[1:] == [L, H, N]


def test_python_config(onnx_model, tmp_path):
    from hla_deploy.serving.model_config import DEFAULT_QUEUE_DELAY_US, spare_slots
    from hla_deploy.serving.repository import write_repository
    for strategy in ("oldest", "direct"):
        repo = write_repository(onnx_model, tmp_path / strategy, max_sequences=8, idle_timeout_s=3, strategy=strategy)
        cfg = parse(repo)
        assert cfg.backend == "python"
        _check_io(cfg)
        sb = cfg.sequence_batching
        assert sb.WhichOneof("strategy_choice") == strategy
        slots = 8 + spare_slots(8)
        if strategy == "oldest":  # batches of up to max_sequences requests of distinct sequences
            assert sb.oldest.max_candidate_sequences == slots and cfg.max_batch_size == 8
            assert sb.oldest.max_queue_delay_microseconds == DEFAULT_QUEUE_DELAY_US
        else:  # one batch slot per sequence
            assert cfg.max_batch_size == slots and sb.direct.max_queue_delay_microseconds == DEFAULT_QUEUE_DELAY_US
        kinds = {c.name: c.control[0].kind for c in sb.control_input}
        C = pb.ModelSequenceBatching.Control
        assert kinds == {"START": C.CONTROL_SEQUENCE_START, "END": C.CONTROL_SEQUENCE_END,
                         "READY": C.CONTROL_SEQUENCE_READY, "CORRID": C.CONTROL_SEQUENCE_CORRID}
        assert cfg.parameters["max_sequences"].string_value == "8"
        assert (repo / "hla_lm" / "1" / "model.py").is_file() and (repo / "hla_lm" / "1" / "model.onnx").is_file()
    cfg = parse(write_repository(onnx_model, tmp_path / "b", max_sequences=100, max_batch_size=32, queue_delay_us=0))
    assert cfg.max_batch_size == 32 and cfg.sequence_batching.oldest.max_queue_delay_microseconds == 0
    assert parse(write_repository(onnx_model, tmp_path / "c", max_sequences=100)).max_batch_size == 64


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
    with pytest.raises(ValueError, match=r"--max-batch-size must be in 1..--max-sequences \(4\), got 5"):
        write_repository(onnx_model, tmp_path / "r", max_sequences=4, max_batch_size=5)
    with pytest.raises(ValueError, match="--max-batch-size applies to --strategy oldest"):
        write_repository(onnx_model, tmp_path / "r", strategy="direct", max_batch_size=2)
    with pytest.raises(ValueError, match="--queue-delay-us must be an integer >= 0.*-1"):
        write_repository(onnx_model, tmp_path / "r", queue_delay_us=-1)
    with pytest.raises(ValueError, match="direct: python backend only"):
        write_repository(onnx_model, tmp_path / "r", backend="onnxruntime", strategy="direct")
    assert not (tmp_path / "r").exists() and [p.name for p in tmp_path.iterdir()] == ["full"]


def test_state_batch_first_matches_original(onnx_model, ort_library, tmp_path):
    import onnxruntime as ort
    from hla_deploy.serving.state_batch_first import state_batch_first
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


def _serve(repo, tmpdir, *args):
    """`hla-deploy serve REPO ARGS` with TMPDIR = tmpdir (where its temporary folder goes)."""
    tmpdir.mkdir(exist_ok=True)
    err = open(tmpdir.parent / f"{tmpdir.name}.stderr", "w+")
    p = subprocess.Popen([sys.executable, "-m", "hla_deploy", "serve", str(repo), *args], stdout=subprocess.PIPE,
                         stderr=err, text=True, env=dict(os.environ, TMPDIR=str(tmpdir)))
    return p, err


def _leftovers(tmpdir):
    return sorted(p.name for p in tmpdir.glob("hla_triton_*"))


def test_serve_cli_starts_and_stops_on_sigterm(onnx_model, ort_library, tmp_path):
    pytest.importorskip("pytriton", reason="nvidia-pytriton (tritonserver) not installed: pip install '.[serve]'")
    from hla_deploy.serving.repository import write_repository
    from hla_deploy.serving.server import free_port
    repo = write_repository(onnx_model, tmp_path / "repo", max_sequences=2, op_library=ort_library)
    g, h = free_port(), free_port()
    p, err = _serve(repo, tmp_path / "tmp", "--grpc-port", str(g), "--http-port", str(h))
    try:
        line = p.stdout.readline()
        assert f"127.0.0.1:{g}" in line and f"127.0.0.1:{h}" in line, line
        import tritonclient.http as httpclient
        assert httpclient.InferenceServerClient(f"127.0.0.1:{h}").is_model_ready("hla_lm")
        assert len(_leftovers(tmp_path / "tmp")) == 1  # its temporary folder, while it serves
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
        assert "stopped (tritonserver exit 0)" in p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()
    assert _leftovers(tmp_path / "tmp") == []
    err.seek(0)
    log = err.read()
    assert re.search(r"pinned_memory_pool_byte_size\s+\|\s+0\s", log), log[-3000:]  # the option reached it
    assert "CUDA driver version is insufficient" not in log  # KIND_CPU: no pinned pool, no CUDA call for it


def test_serve_cli_failed_start_exit_1_and_cleans_up(onnx_model, ort_library, tmp_path):
    pytest.importorskip("pytriton", reason="nvidia-pytriton (tritonserver) not installed: pip install '.[serve]'")
    import socket
    from hla_deploy.serving.repository import write_repository
    from hla_deploy.serving.server import free_port
    repo = write_repository(onnx_model, tmp_path / "repo", max_sequences=2, op_library=ort_library)
    with socket.socket() as busy:  # the gRPC port is taken: tritonserver exits before it is ready
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        p, err = _serve(repo, tmp_path / "tmp", "--grpc-port", str(busy.getsockname()[1]), "--http-port", str(free_port()))
        assert p.wait(120) == 1
    err.seek(0)
    assert "serve: error: tritonserver exited with code 1 before it was ready" in err.read()
    assert _leftovers(tmp_path / "tmp") == []


@pytest.mark.parametrize("flag,value", [("--grpc-port", "99999"), ("--http-port", "0"), ("--grpc-port", "x")])
def test_serve_cli_port_out_of_range_is_usage_error(tmp_path, flag, value):
    p = subprocess.run([sys.executable, "-m", "hla_deploy", "serve", str(tmp_path), flag, value],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert f"argument {flag}: must be a TCP port number in 1..65535, got {value}" in p.stderr


def test_serve_cli_not_a_repository_is_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "hla_deploy", "serve", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "nope is not a model repository" in p.stderr
