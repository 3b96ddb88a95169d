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
    assert rc == 1 and "PASS" in out  # the run passed; writing the report failed while running
    one_error_line(err, "cannot write the report", "No space left")
    assert list(tmp_path.iterdir()) == []


def test_parity_rejects_onnx_that_is_not_an_hla_export(tiny_ckpt, not_hla_onnx, tmp_path, capsys):
    # before: taken as a "standard-op graph" and the ort-cpu backend reported as skipped
    rc, _, err = cli(capsys, "parity", tiny_ckpt, "--backends", "ort-cpu", "--onnx", not_hla_onnx)
    assert rc == 2
    one_error_line(err, str(not_hla_onnx), "expected inputs ('input_ids', 'state')", "hla-deploy export")
    rc, _, err = cli(capsys, "parity", tiny_ckpt, "--backends", "ort-cpu", "--onnx", tmp_path)
    assert rc == 2
    one_error_line(err, str(tmp_path), "is a directory")


# ---- build-engine -----------------------------------------------------------------------------------

def test_build_engine_checks_output_before_tensorrt(tiny_ckpt, tmp_path, a_file, capsys):
    from hla_deploy.exporters import export_onnx
    model = export_onnx(tiny_ckpt, None, tmp_path / "m.onnx")
    for bad, needle in ((tmp_path, "is a directory"), (a_file / "m.plan", "not a directory")):
        rc, out, err = cli(capsys, "build-engine", model, "-o", bad)
        assert rc == 2 and out == ""  # not even the trtexec line: nothing could be written anyway
        one_error_line(err, "engine file", needle)
    rc, _, err = cli(capsys, "build-engine", tmp_path, "-o", tmp_path / "m.plan")
    assert rc == 2
    one_error_line(err, "is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "plain.txt"]


# ---- generate ---------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CUDA-less error; this machine has CUDA")
def test_generate_checkpoint_on_cuda_without_cuda(tiny_ckpt, capsys):
    rc, out, err = cli(capsys, "generate", tiny_ckpt, "--device", "cuda", "--max-new-tokens", "2")
    assert rc == 1 and out == ""
    one_error_line(err, "--device cuda", "--device cpu")


@pytest.mark.parametrize("flags, needle", [(["--temperature", "nan"], "--temperature"),
                                           (["--temperature", "-1"], "--temperature"),
                                           (["--top-k", "0"], "--top-k")])
def test_generate_checkpoint_bad_sampling(tiny_ckpt, capsys, flags, needle):
    rc, out, err = cli(capsys, "generate", tiny_ckpt, "--max-new-tokens", "2", *flags)
    assert rc == 2 and out == ""  # a bad option: usage (hla_deploy/exit_codes.py)
    one_error_line(err, needle)


def test_generate_prompt_that_is_not_utf8(tiny_ckpt, capsys):
    # before: a non-UTF-8 byte in --prompt (a surrogate escape in argv) failed in encode, and the
    # print of the prompt could not have encoded it either
    rc, out, err = cli(capsys, "generate", tiny_ckpt, "--prompt", "x\udcff", "--max-new-tokens", "2", "--json")
    assert rc == 0, err
    assert json.loads(out)["prompt_ids"] == [0x78, 0xFF]
    rc, out, err = cli(capsys, "generate", tiny_ckpt, "--prompt", "x\udcff", "--max-new-tokens", "2")
    assert rc == 0 and out.startswith("x\ufffd")


@pytest.mark.parametrize("n", ["0", "-3"])
def test_generate_needs_at_least_one_new_token(tiny_ckpt, capsys, n):
    # before: 0 printed the prompt and exited 0 (quickstart and the C++ runner reject it)
    rc, out, err = cli(capsys, "generate", tiny_ckpt, "--max-new-tokens", n)
    assert rc == 2 and out == ""
    one_error_line(err, "--max-new-tokens must be between 1 and 1000000", n)


@pytest.mark.parametrize("command", [["export", "-o", "m.onnx"], ["parity", "--backends", "torch"]])
def test_checkpoint_that_is_a_file(a_file, tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(capsys, command[0], a_file, *command[1:])
    assert rc == 2
    one_error_line(err, str(a_file), "is a file; expected a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]


def test_generate_library_given_by_bare_file_name(tiny_ckpt, ort_library, tmp_path, capsys, monkeypatch):
    # before: ORT got "libhla_ort_op.so" as is, and dlopen searched the system library path
    from hla_deploy.exporters import export_onnx
    model = export_onnx(tiny_ckpt, None, tmp_path / "m.onnx")
    shutil.copy(ort_library, tmp_path / Path(ort_library).name)
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, "generate", "m.onnx", "--library", Path(ort_library).name,
                       "--max-new-tokens", "3", "--json")
    assert rc == 0, err
    got = json.loads(out)
    assert got["backend"] == "onnxruntime-cpu" and len(got["generated_ids"]) == 3
    from hla_deploy.models import HLALanguageModel, generate, tokenizer
    ref = generate(HLALanguageModel.load(tiny_ckpt), tokenizer.encode("def "), 3)
    assert got["generated_ids"] == ref
    (tmp_path / "junk.so").write_bytes(b"not a shared library")
    rc, _, err = cli(capsys, "generate", model, "--library", "junk.so", "--max-new-tokens", "1")
    assert rc == 2  # a file the user named
    one_error_line(err, str(tmp_path / "junk.so"))


# ---- export -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_write_failure_names_the_output(tiny_ckpt, tmp_path, capsys, monkeypatch):
    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(onnx, "save_model", no_space)
    out = tmp_path / "m.onnx"
    rc, _, err = cli(capsys, "export", tiny_ckpt, "-o", out)
    assert rc == 1
    one_error_line(err, f"cannot write output file '{out}'", "No space left")
    assert list(tmp_path.iterdir()) == []


def test_export_config_from_another_checkpoint(tiny_ckpt, tmp_path, capsys):
    # same tensor shapes, different model: before, it loaded silently with the wrong decay
    bad = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["decay"] = [0.5, 0.5]
    (bad / "config.json").write_text(json.dumps(cfg))
    rc, _, err = cli(capsys, "export", bad, "-o", tmp_path / "m.onnx")
    assert rc == 2  # a bad checkpoint
    one_error_line(err, "decay", "[0.5, 0.5]", "[0.9, 1.0]", "config.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


# ---- quickstart -------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, needle", [(["--decode-steps", "-1"], "--decode-steps"),
                                           (["--prompt", ""], "--prompt"),
                                           (["--checkpoint", "no/such/ckpt"], "no/such/ckpt")])
def test_quickstart_bad_option_fails_before_any_work(tmp_path, capsys, monkeypatch, flags, needle):
    import hla_deploy.exporters as exporters
    monkeypatch.setattr(exporters, "export_onnx", lambda *a, **k: pytest.fail("exported despite a bad option"))
    out = tmp_path / "qs"
    rc, stdout, err = cli(capsys, "quickstart", "--out", out, *flags)
    assert rc == 2 and stdout == ""
    one_error_line(err, needle)
    assert not out.exists()


# ---- build-plugins ----------------------------------------------------------------------------------

def test_build_plugins_build_dir_under_a_file(a_file, capsys, monkeypatch):
    # run() sets HLA_DEPLOY_BUILD_DIR in os.environ: set it here first, so monkeypatch restores it
    monkeypatch.setenv("HLA_DEPLOY_BUILD_DIR", str(a_file / "build"))
    rc, _, err = cli(capsys, "build-plugins", "--build-dir", a_file / "build", "--no-runner", "--quiet")
    assert rc == 2  # a bad argument
    one_error_line(err, "--build-dir", str(a_file), "is a file, not a directory")
