"""`generate` streams (issue 22): each token is produced, written and flushed before the next step
runs; Ctrl-C keeps what was printed and exits 130. The reference for the tokens is the torch
model's greedy generation (hla_deploy.models.generate)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hla_deploy import tokenizer
from hla_deploy.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "def "


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory):
    """(custom-op export of tiny_ckpt, the torch model's greedy tokens after PROMPT, 12 of them)."""
    from hla_deploy.exporters import export_onnx
    from hla_deploy.models import HLALanguageModel, generate
    path = export_onnx(tiny_ckpt, None, tmp_path_factory.mktemp("stream") / "model.onnx", op="custom")
    model = HLALanguageModel.load(tiny_ckpt).eval()
    return Path(path), generate(model, tokenizer.encode(PROMPT), 12)


class CountingSteps:
    """Wraps a session's step() to count the decode steps run so far."""

    def __init__(self, sess):
        self.calls, self._step = 0, sess.step

    def __call__(self, ids):
        self.calls += 1
        return self._step(ids)


def test_session_stream_yields_each_token_before_the_next_step(exported, ort_library):
    from hla_deploy.runtime import OrtHLASession
    path, want = exported
    sess = OrtHLASession(path, library=ort_library)
    counter = CountingSteps(sess)
    sess.step = counter
    stream = sess.generate_stream(tokenizer.encode(PROMPT), 12)
    assert counter.calls == 0                     # nothing runs before the first token is asked for
    got = [next(stream)]
    assert counter.calls == 0                     # the first token comes from the prefill alone
    got.append(next(stream))
    assert counter.calls == 1                     # one step per further token, no look-ahead
    got += list(stream)
    assert got == want and counter.calls == 11
    assert sess.generate(tokenizer.encode(PROMPT), 12) == want
    with pytest.raises(ValueError, match="max_new_tokens"):  # checked when called, not at the first next()
        sess.generate_stream([1], -1)


def test_torch_stream_equals_generate(tiny_ckpt):
    from hla_deploy.models import HLALanguageModel, generate, generate_stream
    model = HLALanguageModel.load(tiny_ckpt).eval()
    ids = tokenizer.encode(PROMPT)
    stream = generate_stream(model, ids, 6, temperature=0.8, seed=3)
    first = next(stream)
    assert [first, *stream] == generate(model, ids, 6, temperature=0.8, seed=3)
    with pytest.raises(ValueError, match="temperature"):
        generate_stream(model, ids, 2, temperature=-1.0)


def test_cli_text_is_the_decoded_prompt_and_tokens(exported, ort_library, capsys):
    path, want = exported
    rc = main(["generate", str(path), "--library", str(ort_library), "--prompt", PROMPT, "--max-new-tokens", "12"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out == tokenizer.decode(tokenizer.encode(PROMPT) + want) + "\n"
    assert "[onnxruntime-cpu] 12 tokens" in err
    rc = main(["generate", str(path), "--library", str(ort_library), "--max-new-tokens", "12", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["generated_ids"] == want and "interrupted" not in doc


def test_cli_decodes_a_character_split_across_tokens(monkeypatch, capsys, tiny_ckpt):
    """Tokens are bytes: a UTF-8 character arrives in pieces and is printed whole (as
    tokenizer.decode of the whole text would print it), an invalid byte as U+FFFD."""
    import hla_deploy.runtime.cli as gen_cli
    pieces = list("é€".encode()) + [0xFF] + list(b"ok")
    monkeypatch.setattr(gen_cli, "open_model", lambda args: ("fake", lambda ids, n: iter(pieces[:n])))
    rc = main(["generate", str(tiny_ckpt), "--prompt", "x", "--max-new-tokens", str(len(pieces))])
    out, _ = capsys.readouterr()
    assert rc == 0 and out == "xé€\ufffdok\n" == tokenizer.decode(list(b"x") + pieces) + "\n"


def test_cli_ctrl_c_keeps_the_text_json_too(monkeypatch, capsys, tiny_ckpt):
    import hla_deploy.runtime.cli as gen_cli

    def stream(ids, n):
        yield from b"abc"
        raise KeyboardInterrupt
    monkeypatch.setattr(gen_cli, "open_model", lambda args: ("fake", stream))
    assert main(["generate", str(tiny_ckpt), "--prompt", "x", "--max-new-tokens", "9"]) == 130
    out, err = capsys.readouterr()
    assert out == "xabc\n" and "interrupted after 3 of 9 tokens" in err
    assert main(["generate", str(tiny_ckpt), "--prompt", "x", "--max-new-tokens", "9", "--json"]) == 130
    doc = json.loads(capsys.readouterr().out)
    assert doc["generated_ids"] == list(b"abc") and doc["interrupted"] is True


def test_sigint_to_a_real_generate_keeps_the_streamed_text(exported, ort_library, tmp_path):
    """A real process writing to a pipe: text arrives while it still runs (flushed per token, else a
    pipe would hold it until the end), and SIGINT ends it with 130 keeping every byte written."""
    path, want = exported
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8", HLA_DEPLOY_DEBUG="")
    proc = subprocess.Popen([sys.executable, "-m", "hla_deploy", "generate", str(path), "--library",
                             str(ort_library), "--prompt", PROMPT, "--max-new-tokens", "1000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        got = b""
        deadline = time.monotonic() + 120
        while len(got) < len(PROMPT) + 40 and time.monotonic() < deadline:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            got += chunk
        assert proc.poll() is None, "generate ended before 40 of 1000000 tokens were read"
        assert got.startswith(tokenizer.decode(tokenizer.encode(PROMPT) + want).encode()[:len(PROMPT) + 12])
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert rest.endswith(b"\n") and (got + rest).decode().startswith(PROMPT)  # every byte read is kept
    assert "interrupted after" in err.decode() and "Traceback" not in err.decode()
