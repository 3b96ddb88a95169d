"""hla-deploy serve-repo / serve against a real Triton Inference Server (the nvidia-pytriton wheel's
tritonserver, Python backend, CPU), driven by tritonclient over gRPC and HTTP; and the
onnxruntime / tensorrt repository configs parsed as Triton ModelConfig protobufs.

One server per module (started and stopped here, bound to 127.0.0.1 on free ports), and one
more for batches formed by Triton (a long queue delay, so that each batch is exactly the requests
sent together: Triton's statistics count the model's executions).
Reference: the same runtime (OrtHLASession) run alone on each sequence, prefill + steps.
"""
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

tritonclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient not installed (pip install '.[serve]')")
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_SEQ = 10
IDLE_S = 4.0


@pytest.fixture(scope="module")
def onnx_model(tiny_ckpt, tmp_path_factory):
    from hla_deploy.exporters import export_onnx
    return export_onnx(tiny_ckpt, None, tmp_path_factory.mktemp("serve") / "tiny.onnx", op="custom")


@pytest.fixture(scope="module")
def server(onnx_model, ort_library, tmp_path_factory):
    if importlib_util_find("pytriton") is None:
        pytest.skip("nvidia-pytriton (tritonserver) not installed: pip install '.[serve]'")
    from hla_deploy.serving.repository import write_repository
    from hla_deploy.serving.server import TritonServer
    repo = write_repository(onnx_model, tmp_path_factory.mktemp("repo") / "repo", backend="python",
                            max_sequences=MAX_SEQ, idle_timeout_s=IDLE_S, strategy="oldest", op_library=ort_library)
    srv = TritonServer(repo, address="127.0.0.1", ready_timeout_s=120)
    yield srv
    code = srv.stop()
    assert code == 0, f"tritonserver did not stop cleanly (exit {code}); log:\n{srv.log_text()[-3000:]}"


def importlib_util_find(name):
    import importlib.util
    return importlib.util.find_spec(name)


@pytest.fixture(scope="module")
def reference(onnx_model, ort_library):
    from hla_deploy.runtime import OrtHLASession
    return OrtHLASession(onnx_model, library=ort_library)


def ref_logits(sess, chunks):
    """Logits of a sequence fed as chunks, run alone through the runtime: list of [T, V]."""
    sess.reset(1)
    return [sess.prefill(np.asarray([c], np.int64))[0] for c in chunks]


def infer(client, mod, corrid, ids, start=False, end=False):
    inp = mod.InferInput("input_ids", [1, len(ids)], "INT64")
    inp.set_data_from_numpy(np.asarray([ids], np.int64))
    res = client.infer("hla_lm", [inp], sequence_id=corrid, sequence_start=start, sequence_end=end)
    return res.as_numpy("logits")[0]


def _plan(rng, n_seq, vocab=256):
    """Per sequence: a prompt (lengths differ) then single tokens."""
    return {100 + s: [list(rng.integers(0, vocab, 1 + 3 * s))] + [[int(rng.integers(0, vocab))] for _ in range(4)]
            for s in range(n_seq)}


@pytest.mark.parametrize("proto", ["grpc", "http"])
@pytest.mark.slow
def test_interleaved_sequences_equal_runtime_alone(server, reference, proto):
    mod = grpcclient if proto == "grpc" else httpclient
    client = mod.InferenceServerClient(server.grpc_url if proto == "grpc" else server.http_url)
    rng = np.random.default_rng(0 if proto == "grpc" else 1)
    plan = _plan(rng, 8)
    if proto == "http":
        plan = {k + 1000: v for k, v in plan.items()}
    got = {c: [] for c in plan}
    order = [c for c in plan]  # prompts first, interleaved
    for c in order:
        got[c].append(infer(client, mod, c, plan[c][0], start=True))
    steps = [(c, i) for c in plan for i in range(1, len(plan[c]))]
    pending = {c: 1 for c in plan}
    while steps:
        c = order[int(rng.integers(0, len(order)))]
        i = pending[c]
        if i >= len(plan[c]):
            order.remove(c)
            continue
        got[c].append(infer(client, mod, c, plan[c][i], end=(i == len(plan[c]) - 1)))
        pending[c] += 1
        steps.remove((c, i))
    for c, chunks in plan.items():
        want = ref_logits(reference, chunks)
        for g, w in zip(got[c], want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"sequence {c}")


@pytest.mark.slow
def test_restart_with_start_flag_equals_fresh(server, reference):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    a, b = [5, 6, 7, 8], [9, 10]
    infer(client, grpcclient, 7, a, start=True)
    infer(client, grpcclient, 7, [11])
    restarted = infer(client, grpcclient, 7, b, start=True)
    fresh = infer(client, grpcclient, 8, b, start=True, end=True)
    np.testing.assert_allclose(restarted, fresh, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(restarted, ref_logits(reference, [b])[0], rtol=1e-5, atol=1e-5)
    after = infer(client, grpcclient, 7, [3], end=True)
    np.testing.assert_allclose(after, ref_logits(reference, [b, [3]])[1], rtol=1e-5, atol=1e-5)


def test_unknown_and_ended_sequence_is_named_error(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="4242"):
        infer(client, grpcclient, 4242, [1, 2])
    infer(client, grpcclient, 4343, [1, 2], start=True, end=True)
    with pytest.raises(InferenceServerException, match="4343"):
        infer(client, grpcclient, 4343, [3])


@pytest.mark.slow
def test_more_live_sequences_than_max_is_named_error(server, reference):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    ids = list(range(500, 500 + MAX_SEQ))
    for c in ids:
        infer(client, grpcclient, c, [1, 2, 3], start=True)
    with pytest.raises(InferenceServerException, match=rf"{500 + MAX_SEQ}.*max_sequences={MAX_SEQ}"):
        infer(client, grpcclient, 500 + MAX_SEQ, [4], start=True)
    # the live ones were not disturbed (no state mix), and ending them frees room
    for c in ids:
        got = infer(client, grpcclient, c, [9], end=True)
        np.testing.assert_allclose(got, ref_logits(reference, [[1, 2, 3], [9]])[1], rtol=1e-5, atol=1e-5)
    infer(client, grpcclient, 600, [4], start=True, end=True)


CLIENT_THAT_VANISHES = r"""
import sys, os, numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient(sys.argv[1])
x = g.InferInput("input_ids", [1, 3], "INT64"); x.set_data_from_numpy(np.array([[1, 2, 3]], np.int64))
c.infer("hla_lm", [x], sequence_id=int(sys.argv[2]), sequence_start=True)
os._exit(0)  # gone mid-sequence: no END, no goodbye
"""


@pytest.mark.slow
def test_server_survives_vanished_client_and_reclaims_it(server, reference):
    for c in range(700, 700 + MAX_SEQ):  # fill every slot with clients that vanish
        subprocess.run([sys.executable, "-c", CLIENT_THAT_VANISHES, server.grpc_url, str(c)], check=True, timeout=60)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_live() and server.alive()
    time.sleep(IDLE_S + 1.5)  # idle timeout: their states are reclaimed, a new sequence fits again
    got = infer(client, grpcclient, 800, [4, 5], start=True, end=True)
    np.testing.assert_allclose(got, ref_logits(reference, [[4, 5]])[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(InferenceServerException, match="700"):
        infer(client, grpcclient, 700, [1])


def test_bad_input_is_error_naming_sequence(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match=r"901.*outside"):
        infer(client, grpcclient, 901, [1, 999], start=True, end=True)


@pytest.mark.slow
def test_direct_strategy_interleaved(onnx_model, ort_library, reference, tmp_path):
    """The `direct` strategy (null requests with READY = 0 in its batches) on its own server."""
    from hla_deploy.serving.repository import write_repository
    from hla_deploy.serving.server import TritonServer
    repo = write_repository(onnx_model, tmp_path / "repo", max_sequences=4, idle_timeout_s=IDLE_S,
                            strategy="direct", op_library=ort_library)
    seqs = {1: [[1, 2, 3], [4], [5]], 2: [[7, 8], [9], [10]], 3: [[11], [12], [13]]}
    got = {k: [] for k in seqs}
    with TritonServer(repo) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        for i in range(3):
            for k in seqs:
                got[k].append(infer(client, grpcclient, k, seqs[k][i], start=i == 0, end=i == 2))
        with pytest.raises(InferenceServerException, match="sequence 99"):
            infer(client, grpcclient, 99, [1])
    for k, chunks in seqs.items():
        for g, w in zip(got[k], ref_logits(reference, chunks)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"sequence {k}")


BATCH = 4


@pytest.fixture(scope="module")
def batch_server(onnx_model, ort_library, tmp_path_factory):
    """max_batch_size 4 and a 5 s queue delay: a batch runs when 4 requests of distinct sequences
    are queued (each test sends exactly 4 at once), never earlier; every sequence is ended."""
    if importlib_util_find("pytriton") is None:
        pytest.skip("nvidia-pytriton (tritonserver) not installed: pip install '.[serve]'")
    from hla_deploy.serving.repository import write_repository
    from hla_deploy.serving.server import TritonServer
    repo = write_repository(onnx_model, tmp_path_factory.mktemp("brepo") / "repo", max_sequences=6,
                            max_batch_size=BATCH, queue_delay_us=5_000_000, idle_timeout_s=60, op_library=ort_library)
    srv = TritonServer(repo, address="127.0.0.1", ready_timeout_s=120)
    yield srv
    assert srv.stop() == 0, srv.log_text()[-3000:]


def infer_together(client, reqs, lead=0):
    """reqs [(corrid, ids, start, end)] sent at once (async gRPC); [logits [T, V] | exception].
    The first `lead` requests go 0.2 s before the others."""
    out, left, done, lock = [None] * len(reqs), [len(reqs)], threading.Event(), threading.Lock()

    def callback(k):
        def f(result, error):
            out[k] = error if error is not None else result.as_numpy("logits")[0]
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
        return f
    for k, (c, ids, start, end) in enumerate(reqs):
        if k == lead > 0:
            time.sleep(0.2)
        x = grpcclient.InferInput("input_ids", [1, len(ids)], "INT64")
        x.set_data_from_numpy(np.asarray([ids], np.int64))
        client.async_infer("hla_lm", [x], callback(k), sequence_id=c, sequence_start=start, sequence_end=end)
    assert done.wait(60), "no answer within 60 s"
    return out


def executions(client):
    st = client.get_inference_statistics("hla_lm", as_json=True)["model_stats"][0]
    return int(st.get("execution_count", 0)), int(st.get("inference_count", 0))


def test_batches_of_distinct_sequences_equal_each_alone(batch_server, reference):
    """Rounds of 4 requests sent together, each one Triton batch (one execute, one runtime call per
    length): equal prompts; a malformed request (id 999) that fails alone and leaves its sequence's
    state as it was; a sequence that ends while the others go on; starts and ends in one batch.
    A new sequence is sent first in its round: Triton frees the slot of an END request when it
    issues it, and a START arriving after that may get that slot and wait for the next batch."""
    client = grpcclient.InferenceServerClient(batch_server.grpc_url)
    rng = np.random.default_rng(5)
    tok = lambda n=1: rng.integers(0, 256, n).tolist()  # noqa: E731
    A, B, C, D, E, F, G = 201, 202, 203, 204, 205, 206, 207
    rounds = [
        [(A, tok(3), True, False), (B, tok(3), True, False), (C, tok(3), True, False), (D, tok(3), True, False)],
        [(A, tok(), False, False), (B, tok(), False, False), (C, [999], False, False), (D, tok(), False, False)],
        [(A, tok(), False, False), (B, tok(), False, True), (C, tok(), False, False), (D, tok(), False, False)],
        [(E, tok(), True, False), (A, tok(), False, False), (C, tok(), False, False), (D, tok(), False, True)],
        [(F, tok(), True, False), (A, tok(), False, True), (C, tok(), False, False), (E, tok(), False, False)],
        [(G, tok(), True, True), (C, tok(), False, True), (E, tok(), False, True), (F, tok(), False, True)],
    ]
    chunks, got = {}, {}
    ex0, inf0 = executions(client)
    t0 = time.monotonic()
    for r, reqs in enumerate(rounds):
        for (c, ids, start, end), res in zip(reqs, infer_together(client, reqs, lead=int(r > 0 and reqs[0][2]))):
            if c == C and ids == [999]:
                assert isinstance(res, InferenceServerException) and "203" in str(res) and "outside" in str(res)
                continue
            assert isinstance(res, np.ndarray), f"sequence {c}: {res}"
            if start:
                chunks[c], got[c] = [], []
            chunks[c].append(ids)
            got[c].append(res)
    assert time.monotonic() - t0 < 5, "a round waited for Triton's queue delay: it was not one batch"
    deadline = time.monotonic() + 10
    while executions(client)[1] - inf0 < 4 * len(rounds) and time.monotonic() < deadline:
        time.sleep(0.05)  # Triton updates its statistics after the responses
    ex1, inf1 = executions(client)
    assert inf1 - inf0 == 4 * len(rounds) and ex1 - ex0 == len(rounds), (ex1 - ex0, inf1 - inf0)
    for c in chunks:
        for g, w in zip(got[c], ref_logits(reference, chunks[c])):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"sequence {c}")

