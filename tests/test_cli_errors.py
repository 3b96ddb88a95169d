"""Bad input to every `hla-deploy` subcommand, as a new user would give it: each case must end
with a non-zero exit and ONE clear line on stderr naming the file or option (no traceback), must
fail before any long work, and must leave no output file or directory behind.

Driven in-process through hla_deploy.cli.main (an uncaught exception fails the test, which is
what a traceback would be); the tiny checkpoint is tests/conftest.py's `tiny_ckpt`.
"""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from hla_deploy.cli import main


def cli(capsys, *argv):
    """(exit status, stdout, stderr) of `hla-deploy ARGV`."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def one_error_line(err: str, *needles: str) -> str:
    """The single stderr line mentioning 'error'; it must contain every needle."""
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def not_hla_onnx(tmp_path):
    """A valid ONNX model that is not an hla-deploy export (one Identity node, no metadata)."""
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(g), str(path))
    return path


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("not a directory\n")
    return path


# ---- parity -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("tol, key", [("max_abs_err=-1", "max_abs_err"), ("rel_rms_err=nan", "rel_rms_err"),
                                      ("state_rel_err=inf", "state_rel_err"), ("min_cosine=2", "min_cosine"),
                                      ("token_agreement=1.5", "token_agreement")])
def test_parity_rejects_meaningless_tolerance(tiny_ckpt, capsys, tol, key):
    # before: -1 or nan made every backend FAIL, inf made the check always pass
    rc, out, err = cli(capsys, "parity", tiny_ckpt, "--backends", "torch", "--tol", tol)
    assert rc == 2 and out == ""
    one_error_line(err, "--tol", key)


def test_tolerance_resolve_rejects_meaningless_values():
    from hla_deploy.parity import tolerances
    with pytest.raises(ValueError, match="max_abs_err must be a finite number >= 0"):
        tolerances.resolve("fp32", {"max_abs_err": -1e-3})
    with pytest.raises(ValueError, match=r"min_cosine must be a finite number in \[-1, 1\]"):
        tolerances.resolve("fp32", {"min_cosine": float("nan")})
    assert tolerances.resolve("fp32", {"min_cosine": 0.5, "max_abs_err": 0.0}) == dict(
        tolerances.DEFAULT_TOLERANCES["fp32"], min_cosine=0.5, max_abs_err=0.0)


def test_parity_rejects_unwritable_json_and_report_before_running(tiny_ckpt, tmp_path, a_file, capsys,
                                                                 monkeypatch):
    import hla_deploy.parity as parity
    monkeypatch.setattr(parity, "run_parity", lambda *a, **k: pytest.fail("parity ran despite a bad output"))
    rc, _, err = cli(capsys, "parity", tiny_ckpt, "--backends", "torch", "--json", tmp_path)
    assert rc == 2
    one_error_line(err, "--json", str(tmp_path), "is a directory")
    rc, _, err = cli(capsys, "parity", tiny_ckpt, "--backends", "torch", "--report", a_file)
    assert rc == 2
    one_error_line(err, "--report", str(a_file), "not a directory")
    rc, _, err = cli(capsys, "parity", tiny_ckpt, "--backends", "torch", "--json", a_file / "sub" / "r.json")
    assert rc == 2
    one_error_line(err, "--json", "not a directory")


def test_parity_report_write_failure_is_one_line(tiny_ckpt, tmp_path, capsys, monkeypatch):
    from hla_deploy.parity import report
    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(report, "write_json", no_space)
    rc, out, err = cli(capsys, "parity", tiny_ckpt, "--backends", "torch", "--decode-steps", "1",
                       "--quiet", "--json", tmp_path / "r.json")
    assert rc == 2 and "PASS" in out  # the run itself passed; the report could not be written
    one_error_line(err, "cannot write the report", "No space left")
    assert list(tmp_path.iterdir()) == []
