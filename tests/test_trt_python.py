"""TensorRT Python side without TensorRT: profile shapes, trtexec command line, ONNX model info,
build-engine argument handling and its clear errors, TrtHLASession's clear errors, header
resolution of the plugin build, atomic plan writing.

TensorRT is made un-importable with sys.modules["tensorrt"] = None, so these tests behave the
same on machines that have it. No engine is built or run here (TensorRT is not available to
this project's CI).
"""
from __future__ import annotations

import argparse
import sys

import pytest

from hla_deploy.exporters.tensorrt import cli_build_engine
from hla_deploy.exporters.tensorrt.engine import (DEFAULT_OPT_SEQ, TensorRTUnavailableError, _write_atomic, build_engine,
                                       onnx_model_info, profile_shapes, trtexec_command)


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Tiny hla-deploy exports: custom op fp32 (L=2, H=2, d=dv=8 -> N=128), fp16, standard ops."""
    from hla_deploy.exporters import export_onnx
    from hla_deploy.models import HLAConfig, HLALanguageModel

    cfg = HLAConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=2, head_dim=8, value_dim=8, mlp_hidden=64,
                    variant="hla2", decay=[0.9, 0.95])
    model = HLALanguageModel(cfg)
    d = tmp_path_factory.mktemp("trt-exports")
    return {
        "fp32": export_onnx(model, None, d / "tiny.onnx"),
        "fp16": export_onnx(model, None, d / "tiny_fp16.onnx", dtype="fp16"),
        "standard": export_onnx(model, None, d / "tiny_std.onnx", op="standard"),
    }


# ---- profile shapes and trtexec ----------------------------------------------------------------

def test_profile_shapes():
    s = profile_shapes(4, 8, 8192, max_batch=2, max_seq=2048)
    assert s == {
        "input_ids": ((1, 1), (2, DEFAULT_OPT_SEQ), (2, 2048)),
        "state": ((4, 1, 8, 8192), (4, 2, 8, 8192), (4, 2, 8, 8192)),
    }
    assert profile_shapes(1, 1, 10, max_seq=16)["input_ids"] == ((1, 1), (1, 16), (1, 16))  # opt clipped
    assert profile_shapes(1, 1, 10, max_seq=64, opt_seq=1)["input_ids"][1] == (1, 1)


@pytest.mark.parametrize("kwargs, word", [
    (dict(max_batch=0), "max_batch"), (dict(max_seq=0), "max_seq"), (dict(max_seq=2.5), "max_seq"),
    (dict(max_batch=True), "max_batch"), (dict(max_seq=8, opt_seq=9), "opt_seq"),
])
def test_profile_shapes_rejects_bad_values(kwargs, word):
    with pytest.raises(ValueError, match=word):
        profile_shapes(2, 2, 128, **kwargs)
    with pytest.raises(ValueError, match="state_size"):
        profile_shapes(2, 2, 0)


def test_trtexec_command():
    shapes = profile_shapes(2, 2, 128, max_batch=4, max_seq=512)
    cmd = trtexec_command("m.onnx", "m.plan", shapes, "/p/libhla_trt_plugin.so")
    assert cmd == ("trtexec --onnx=m.onnx --saveEngine=m.plan --stronglyTyped "
                   "--dynamicPlugins=/p/libhla_trt_plugin.so "
                   "--minShapes=input_ids:1x1,state:2x1x2x128 "
                   "--optShapes=input_ids:4x128,state:2x4x2x128 "
                   "--maxShapes=input_ids:4x512,state:2x4x2x128")
    # No plugin for a standard-op export; paths with spaces are quoted for the shell.
    cmd = trtexec_command("my model.onnx", "out.plan", shapes, None)
    assert "--dynamicPlugins" not in cmd and "'--onnx=my model.onnx'" in cmd
    assert "--fp16" not in cmd  # strongly typed: precision comes from the ONNX graph


# ---- ONNX model info ----------------------------------------------------------------------------

def test_onnx_model_info(exports):
    assert tuple(onnx_model_info(exports["fp32"])) == (2, 2, 128, "fp32", "custom")
    assert tuple(onnx_model_info(exports["fp16"])) == (2, 2, 128, "fp16", "custom")
    assert onnx_model_info(exports["standard"]).op == "standard"


def test_onnx_model_info_errors(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    with pytest.raises(FileNotFoundError, match="nothere.onnx"):
        onnx_model_info(tmp_path / "nothere.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="could not read"):
        onnx_model_info(tmp_path / "junk.onnx")

    def model(state_dims):
        g = helper.make_graph(
            [helper.make_node("Identity", ["state"], ["state_out"]), helper.make_node("Cast", ["input_ids"], ["logits"], to=1)],
            "g",
            [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"]),
             helper.make_tensor_value_info("state", TensorProto.FLOAT, state_dims)],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T"]),
             helper.make_tensor_value_info("state_out", TensorProto.FLOAT, state_dims)])
        return helper.make_model(g)

    onnx.save(model([2, "B", "H", 128]), tmp_path / "dynh.onnx")
    with pytest.raises(ValueError, match="static L, H, N"):
        onnx_model_info(tmp_path / "dynh.onnx")
    m = model([2, "B", 2, 128])
    m.graph.input[0].name = "tokens"
    onnx.save(m, tmp_path / "names.onnx")
    with pytest.raises(ValueError, match="expected inputs"):
        onnx_model_info(tmp_path / "names.onnx")


# ---- build_engine without TensorRT ----------------------------------------------------------------

def test_build_engine_without_tensorrt(exports, tmp_path, no_tensorrt):
    plan = tmp_path / "tiny.plan"
    with pytest.raises(TensorRTUnavailableError) as ei:
        build_engine(exports["fp32"], plan, max_batch=2, max_seq=64, plugin_path="/x/libhla_trt_plugin.so")
    msg = str(ei.value)
    assert "import tensorrt" in msg and "trtexec" in msg
    assert "--dynamicPlugins=/x/libhla_trt_plugin.so" in msg and "--maxShapes=input_ids:2x64,state:2x2x2x128" in msg
    assert not plan.exists() and not list(tmp_path.glob(".tiny.plan.tmp*"))
    from hla_deploy.runtime import trt_session  # one error class: `except` either way catches both
    assert TensorRTUnavailableError is trt_session.TensorRTUnavailableError


def test_build_engine_fp16_must_match_export(exports, tmp_path, no_tensorrt):
    with pytest.raises(ValueError, match="fp16=True but .* fp32 export"):
        build_engine(exports["fp32"], tmp_path / "x.plan", fp16=True)
    with pytest.raises(TensorRTUnavailableError):  # an fp16 export passes the check
        build_engine(exports["fp16"], tmp_path / "x.plan", fp16=True)


def test_write_atomic(tmp_path):
    target = tmp_path / "m.plan"
    _write_atomic(target, b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(TypeError):
        _write_atomic(target, object())  # write() fails: old file kept, no temp left
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["m.plan"]


# ---- `hla-deploy build-engine` ----------------------------------------------------------------------

def _parse(argv):
    p = argparse.ArgumentParser()
    cli_build_engine.add_arguments(p)
    return p.parse_args(argv)


def test_cli_arguments():
    a = _parse(["m.onnx", "-o", "m.plan"])
    assert (a.onnx, a.output, a.fp16, a.max_batch, a.max_seq, a.plugin) == ("m.onnx", "m.plan", False, 1, 2048, None)
    a = _parse(["m.onnx", "--output", "m.plan", "--fp16", "--max-batch", "4", "--max-seq", "256", "--plugin", "p.so"])
    assert (a.fp16, a.max_batch, a.max_seq, a.plugin) == (True, 4, 256, "p.so")
    with pytest.raises(SystemExit):
        _parse(["m.onnx"])  # -o is required
    with pytest.raises(SystemExit):
        _parse(["m.onnx", "-o", "m.plan", "--max-batch", "two"])


def test_cli_without_tensorrt_prints_trtexec_and_fails(exports, tmp_path, capsys, no_tensorrt):
    from hla_deploy.cli import main

    plan = tmp_path / "tiny.plan"
    rc = main(["build-engine", str(exports["fp32"]), "-o", str(plan), "--max-batch", "3", "--max-seq", "100",
               "--plugin", "/opt/p/libhla_trt_plugin.so"])
    out, err = capsys.readouterr()
    assert rc == 3
    assert "trtexec --onnx=" in out and "--dynamicPlugins=/opt/p/libhla_trt_plugin.so" in out
    assert "--minShapes=input_ids:1x1,state:2x1x2x128" in out
    assert "--optShapes=input_ids:3x100,state:2x3x2x128" in out
    assert "--maxShapes=input_ids:3x100,state:2x3x2x128" in out
    assert "TensorRT's Python package is not installed" in err
    assert not plan.exists()


def test_cli_standard_export_needs_no_plugin(exports, tmp_path, capsys, no_tensorrt):
    rc = cli_build_engine.run(_parse([str(exports["standard"]), "-o", str(tmp_path / "s.plan")]))
    out, _ = capsys.readouterr()
    assert rc == 3 and "trtexec" in out and "--dynamicPlugins" not in out


@pytest.mark.parametrize("extra, message", [
    (["--fp16"], "fp32 export"), (["--max-seq", "0"], "max_seq"), (["--max-batch", "-1"], "max_batch"),
])
def test_cli_bad_arguments(exports, tmp_path, capsys, extra, message):
    rc = cli_build_engine.run(_parse([str(exports["fp32"]), "-o", str(tmp_path / "x.plan"), *extra]))
    _, err = capsys.readouterr()
    assert rc == 2 and message in err


def test_cli_missing_model(tmp_path, capsys):
    rc = cli_build_engine.run(_parse([str(tmp_path / "none.onnx"), "-o", str(tmp_path / "x.plan")]))
    assert rc == 2 and "ONNX model not found" in capsys.readouterr().err


# ---- TrtHLASession ------------------------------------------------------------------------------------

def test_trt_session_clear_errors(tmp_path, no_tensorrt):
    from hla_deploy.runtime import TrtHLASession
    from hla_deploy.runtime.trt_session import TensorRTUnavailableError as SessionError

    with pytest.raises(FileNotFoundError, match="TensorRT engine not found: .*missing.plan"):
        TrtHLASession(tmp_path / "missing.plan")
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"\0" * 16)
    with pytest.raises(SessionError, match="import tensorrt"):
        TrtHLASession(plan)


def test_trt_session_interface_matches_ort_session():
    import inspect

    from hla_deploy.runtime.ort_session import OrtHLASession
    from hla_deploy.runtime.trt_session import TrtHLASession

    for name in ("run", "reset", "prefill", "step", "generate", "init_state", "get_state", "state_shape"):
        trt_sig = inspect.signature(getattr(TrtHLASession, name))
        ort_sig = inspect.signature(getattr(OrtHLASession, name))
        assert list(trt_sig.parameters) == list(ort_sig.parameters), name
        assert [p.default for p in trt_sig.parameters.values()] == [p.default for p in ort_sig.parameters.values()]


# ---- plugin build: header resolution ------------------------------------------------------------------

def test_tensorrt_include_dir_from_env(tmp_path, monkeypatch):
    from hla_deploy.native import PluginBuildError
    from hla_deploy.native import trt_build

    monkeypatch.setenv("TENSORRT_INCLUDE_DIR", str(tmp_path))
    with pytest.raises(PluginBuildError, match="does not contain NvInferRuntime.h"):
        trt_build.tensorrt_include_dir(fetch=False)
    (tmp_path / "NvInferRuntime.h").write_text("// placeholder\n")
    assert trt_build.tensorrt_include_dir(fetch=False) == tmp_path.resolve()


def test_trt_plugin_path_without_build(tmp_path, monkeypatch):
    from hla_deploy.native import PluginBuildError, trt_plugin_path
    from hla_deploy.native import trt_build

    monkeypatch.setenv("HLA_DEPLOY_BUILD_DIR", str(tmp_path))
    assert trt_build.trt_plugin_file() == tmp_path.resolve() / "trt" / "lib" / "libhla_trt_plugin.so"
    with pytest.raises(PluginBuildError, match="TensorRT plugin library not found"):
        trt_plugin_path(build=False)
