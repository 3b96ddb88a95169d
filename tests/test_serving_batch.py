"""SequenceTable.run_batch (hla_deploy.serving.sequences): the steps of many live sequences in one
runtime call, without a server. Reference: every sequence run alone through OrtHLASession
(reset(1), then prefill of each chunk), relative difference <= 1e-5; the table's counters show
how many runtime calls and state gathers it made. Also the table's rules with a fake session
whose 'state' is the running sum of its tokens (states are [L, B, H, N] numpy arrays)."""
import numpy as np
import pytest

from hla_deploy.serving.sequences import SequenceLimitError, SequenceTable, Step, UnknownSequenceError

RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def onnx_model(tiny_ckpt, tmp_path_factory):
    from hla_deploy.exporters import export_onnx
    return export_onnx(tiny_ckpt, None, tmp_path_factory.mktemp("batch") / "tiny.onnx", op="custom")


@pytest.fixture(scope="module")
def sessions(onnx_model, ort_library):
    from hla_deploy.runtime import OrtHLASession
    return (OrtHLASession(onnx_model, library=ort_library, intra_op_num_threads=1),
            OrtHLASession(onnx_model, library=ort_library, intra_op_num_threads=1))


class Script:
    """Runs batches through a table and records, per sequence, the chunks fed since its last START
    and the logits the table returned for them (failed steps are recorded apart)."""

    def __init__(self, table):
        self.table, self.chunks, self.got = table, {}, {}

    def batch(self, steps):
        steps = [Step(c, np.asarray(ids, np.int64), start, end) for c, ids, start, end in steps]
        res = self.table.run_batch(steps)
        for s, r in zip(steps, res):
            if isinstance(r, Exception):
                continue
            if s.start:
                self.chunks[s.corrid], self.got[s.corrid] = [], []
            self.chunks[s.corrid].append(list(s.ids))
            self.got[s.corrid].append(r)
        return res

    def check(self, ref):
        for c, chunks in self.chunks.items():
            ref.reset(1)
            for chunk, got in zip(chunks, self.got[c]):
                want = ref.prefill(np.asarray([chunk], np.int64))[0]  # [T, V]
                assert got.shape == want.shape and got.dtype == np.float32
                np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"sequence {c}")


def test_mixed_batches_equal_each_sequence_alone(sessions):
    """Prompts of equal and different lengths, starts and ends in the same batch, a sequence that
    ends while others go on, a restart of a live id, random subsets stepping."""
    sess, ref = sessions
    t = Script(SequenceTable(sess, max_sequences=8, idle_timeout_s=600))
    rng = np.random.default_rng(0)
    tok = lambda n: rng.integers(0, 256, n).tolist()  # noqa: E731
    t.batch([(1, tok(3), True, False), (2, tok(3), True, False), (3, tok(5), True, False), (4, tok(1), True, False)])
    assert t.table.runtime_calls == 3  # T = 3 (two prompts), 5 and 1: one call per length
    t.batch([(c, tok(1), False, False) for c in (1, 2, 3, 4)])
    calls = t.table.runtime_calls
    t.batch([(1, tok(1), False, False), (2, tok(1), False, True), (5, tok(1), True, False), (3, tok(1), False, False)])
    assert t.table.runtime_calls == calls + 1 and 2 not in t.table  # 2 ended, 5 started: one call
    t.batch([(4, tok(2), False, False), (1, tok(2), False, False), (6, tok(2), True, False)])
    t.batch([(3, tok(1), True, False), (4, tok(1), False, False), (5, tok(1), False, True), (1, tok(1), False, False)])
    for _ in range(3):  # random subsets of the live ones
        live = [c for c in t.table.live_ids() if rng.random() < 0.7]
        t.batch([(c, tok(1), False, False) for c in live])
    t.batch([(c, tok(1), False, True) for c in t.table.live_ids()])
    assert len(t.table) == 0
    t.check(ref)


def test_steady_decoding_runs_the_pack_in_place(sessions):
    """The same sequences stepping together: one runtime call per batch and no state copied after
    the first; part of them stepping: gathered once (the rest compacted); one ending leaves the
    others running in place (its row ignored) until more than a quarter of the pack is dead, then
    the pack is compacted once."""
    sess, ref = sessions
    t = Script(SequenceTable(sess, max_sequences=8, idle_timeout_s=600))
    rng = np.random.default_rng(1)
    ids = list(range(10, 18))
    t.batch([(c, rng.integers(0, 256, 4).tolist(), True, False) for c in ids])
    gathers = t.table.gathers
    for _ in range(4):
        t.batch([(c, [int(rng.integers(0, 256))], False, False) for c in ids])
    assert t.table.gathers == gathers and t.table.runtime_calls == 5
    t.batch([(c, [int(rng.integers(0, 256))], False, False) for c in ids[:6]])  # 6 of 8: gathered, and the
    assert t.table.gathers == gathers + 2  # 8-row pack, 6 rows gone, compacted to its 2 live ones
    t.batch([(c, [int(rng.integers(0, 256))], False, False) for c in ids[6:]])  # that pack: in place
    assert t.table.gathers == gathers + 2
    for _ in range(2):
        t.batch([(c, [int(rng.integers(0, 256))], False, False) for c in ids])  # 2 packs: gathered once
    assert t.table.gathers == gathers + 3
    gathers += 3
    t.batch([(c, [int(rng.integers(0, 256))], False, c == 10) for c in ids])  # 10 ends: 1 of 8 dead
    ids.remove(10)
    t.batch([(c, [int(rng.integers(0, 256))], False, False) for c in ids])  # in place, its row ignored
    assert t.table.gathers == gathers
    t.batch([(c, [int(rng.integers(0, 256))], False, c in (11, 12)) for c in ids])  # 3 of 8 dead: compacted
    assert t.table.gathers == gathers + 1
    ids = ids[2:]
    for _ in range(2):
        t.batch([(c, [int(rng.integers(0, 256))], False, False) for c in ids])
    assert t.table.gathers == gathers + 1
    t.check(ref)


def test_malformed_request_fails_alone_and_changes_no_state(sessions):
    sess, ref = sessions
    t = Script(SequenceTable(sess, max_sequences=4, idle_timeout_s=600))
    t.batch([(c, [1, 2, 3], True, False) for c in (1, 2, 3)])
    res = t.batch([(1, [4], False, False), (2, [999], False, False), (3, [5], False, False),
                   (77, [1], False, False), (8, [1], True, False), (9, [1], True, False)])
    assert isinstance(res[0], np.ndarray) and isinstance(res[2], np.ndarray)
    with pytest.raises(ValueError, match=r"sequence 2.*outside \[0, 256\)"):
        raise res[1]
    assert isinstance(res[3], UnknownSequenceError) and "77" in str(res[3])
    assert isinstance(res[4], np.ndarray)  # the 4th live sequence fits
    assert isinstance(res[5], SequenceLimitError) and "correlation id 9" in str(res[5]) and "max_sequences=4" in str(res[5])
    res = t.table.run_batch([Step(2, np.array([[4, 5], [6, 7]]), False, False), Step(1, np.array([6.0]), False, False)])
    assert "correlation id 2" in str(res[0]) and "[2, 2]" in str(res[0])
    assert isinstance(res[1], TypeError) and "sequence 1" in str(res[1])
    t.batch([(c, [7], False, False) for c in (1, 2, 3, 8)])  # 2 goes on from its state before the bad step
    t.check(ref)


class _FailOn:
    """A session whose runtime call fails when a batch holds token `bad` (checks pass), after the
    real call has written its outputs: the failure the input checks cannot see."""

    def __init__(self, sess, bad):
        self._s, self.bad = sess, bad

    def __getattr__(self, name):
        return getattr(self._s, name)

    def _forward(self, ids, states, cur):
        out = self._s._forward(ids, states, cur)
        if (ids == self.bad).any():
            raise RuntimeError(f"runtime failure on token {self.bad}")
        return out


def test_runtime_failure_in_batch_is_rerun_one_by_one(sessions):
    sess, ref = sessions
    t = Script(SequenceTable(_FailOn(sess, bad=13), max_sequences=4, idle_timeout_s=600))
    t.batch([(c, [1, 2], True, False) for c in (1, 2, 3)])
    calls = t.table.runtime_calls
    res = t.batch([(1, [4], False, False), (2, [13], False, False), (3, [5], False, False)])
    assert isinstance(res[1], RuntimeError) and isinstance(res[0], np.ndarray) and isinstance(res[2], np.ndarray)
    assert t.table.runtime_calls == calls + 2  # the batch failed (not counted), then 1 and 3 alone
    t.batch([(c, [6], False, False) for c in (1, 2, 3)])
    res = t.batch([(1, [13], False, False), (2, [4], False, False), (3, [5], False, False)])  # in place
    assert isinstance(res[0], RuntimeError) and t.table.runtime_calls == calls + 5
    t.batch([(c, [6], False, False) for c in (1, 2, 3)])
    res = t.batch([(4, [13], True, False)])  # a failed START leaves no sequence behind
    assert isinstance(res[0], RuntimeError) and 4 not in t.table
    t.check(ref)


def test_same_sequence_twice_in_one_batch_runs_in_order(sessions):
    sess, ref = sessions
    table = SequenceTable(sess, max_sequences=4, idle_timeout_s=600)
    res = table.run_batch([Step(1, [1, 2], True), Step(2, [3], True), Step(1, [4]), Step(1, [5], end=True)])
    ref.reset(1)
    for got, chunk in zip([res[0], res[2], res[3]], [[1, 2], [4], [5]]):
        np.testing.assert_allclose(got, ref.prefill(np.asarray([chunk]))[0], rtol=RTOL, atol=ATOL)
    assert table.live_ids() == [2]


class _SumSession:
    """'Model': state [1, B, 1, 1] += each token; logits[t] = the running sum (checks isolation)."""
    vocab_size = 10

    def __init__(self):
        self.calls = []

    def _check_ids(self, ids, name="input_ids"):
        ids = np.asarray(ids)
        if ids.max() >= self.vocab_size:
            raise ValueError(f"{name} has ids outside [0, 10)")
        return ids

    def _new_states(self, b):
        return [np.zeros((1, b, 1, 1), np.float32), np.zeros((1, b, 1, 1), np.float32)]

    def _forward(self, ids, states, cur):
        self.calls.append(ids.shape)
        run = states[cur][0, :, 0, 0][:, None] + np.cumsum(ids, axis=1)  # [B, T]
        states[1 - cur][0, :, 0, 0] = run[:, -1]
        return np.repeat(run[:, :, None], self.vocab_size, axis=2).astype(np.float32), 1 - cur


def test_sequence_table_rules():
    now = [0.0]
    t = SequenceTable(_SumSession(), max_sequences=2, idle_timeout_s=10, clock=lambda: now[0])
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


def test_sequence_table_batch_rules_with_sums():
    s = _SumSession()
    t = SequenceTable(s, max_sequences=3, idle_timeout_s=10)
    res = t.run_batch([Step(1, [1], True), Step(2, [2], True), Step(3, [3, 3], True)])
    assert [r[:, 0].tolist() for r in res] == [[1], [2], [3, 6]] and s.calls == [(2, 1), (1, 2)]
    res = t.run_batch([Step(3, [1]), Step(1, [1]), Step(2, [1], True, True)])  # order is not the pack's
    assert [r[:, 0].tolist() for r in res] == [[7], [2], [1]] and s.calls[-1] == (3, 1)
    assert sorted(t.live_ids()) == [1, 3]
    assert t.gathers == 4  # 2 + 1 batches that built packs, then the 3-row pack with 1 dead row compacted to [3, 1]
    calls = len(s.calls)
    res = t.run_batch([Step(1, [2]), Step(3, [1])])  # not in the pack's row order: run in place, permuted
    assert [r[:, 0].tolist() for r in res] == [[4], [8]] and s.calls[calls:] == [(2, 1)] and t.gathers == 4
    assert t.drop(3) and not t.drop(3) and t.live_ids() == [1]
    assert t.run(1, [1], False, False)[:, 0].tolist() == [5]


def test_state_pool_reuses_host_memory_and_pairs_are_separate(sessions):
    from hla_deploy.serving.state_rows import StatePool, gather_rows, host_view
    sess, _ = sessions
    pool = StatePool(sess)
    (a, b), token = pool.pair(3)
    assert a.data_ptr() != b.data_ptr() and list(a.shape()) == list(sess.state_shape(3)) and pool.allocated == 2
    src = sess._new_states(2)[0]
    host_view(src)[:] = np.arange(host_view(src).size, dtype=np.float32).reshape(host_view(src).shape)
    gather_rows(sess, [(src, 1), None, (src, 0)], a)
    va, vs = host_view(a), host_view(src)
    assert np.array_equal(va[:, 0], vs[:, 1]) and not va[:, 1].any() and np.array_equal(va[:, 2], vs[:, 0])
    pool.give_back(token)
    (c, d), _ = pool.pair(4)  # capacity 4 (3 rounded up): the same memory, no new array
    assert pool.allocated == 2 and {c.data_ptr(), d.data_ptr()} == {a.data_ptr(), b.data_ptr()}
    pool.pair(2)
    assert pool.allocated == 4
