"""The C++ runner (plugins/ort_hla/hla_runner.cc), built by CMake and run on the CPU.

Its greedy tokens must equal Python's OrtHLASession.generate (same graph, same library, same
ONNX Runtime shared library: the runner links the PyPI wheel's libonnxruntime.so.1).
"""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from hla_deploy.native import PluginBuildError, ort_library_path, ort_runner_path  # noqa: E402

try:
    from hla_deploy.models import HLAConfig, HLALanguageModel, tokenizer
    from hla_deploy.exporters import export_onnx
    _IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover
    _IMPORT_ERROR = e


@pytest.fixture(scope="module")
def built():
    try:
        return ort_library_path(build=True), ort_runner_path(build=True)
    except PluginBuildError as e:
        pytest.fail(f"building the ORT library / C++ runner failed: {e}")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    if _IMPORT_ERROR is not None:
        pytest.skip(f"hla_deploy.models / exporters not importable: {_IMPORT_ERROR}")
    torch.manual_seed(5)
    cfg = HLAConfig(d_model=48, n_layers=2, n_heads=3, head_dim=16, value_dim=16, mlp_hidden=64,
                    variant="hla2", decay=[0.9, 0.95, 0.99], normalize=False, tie_embeddings=False)
    model = HLALanguageModel(cfg).eval()
    with torch.no_grad():  # larger weights: less flat logits, so greedy decoding does not repeat one token
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(2.0)
    return export_onnx(model, None, tmp_path_factory.mktemp("runner") / "m.onnx", op="custom")


def _run(exe, *args, timeout=120):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, errors="replace", timeout=timeout)


@pytest.mark.parametrize("prompt", ["def ", "import numpy as np\nx = np.zeros((3,"])
def test_runner_greedy_tokens_equal_python(built, model_path, prompt):
    from hla_deploy.runtime import OrtHLASession
    lib, exe = built
    proc = _run(exe, "--model", model_path, "--library", lib, "--prompt", prompt,
                "--max-new-tokens", 24, "--threads", 1, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    ids = tokenizer.encode(prompt)
    assert out["prompt_ids"] == ids
    expected = OrtHLASession(model_path, library=lib).generate(ids, 24)
    assert out["generated_ids"] == expected
    assert len(set(expected)) >= 4  # a varied sequence, not one repeated token
    assert out["decode_steps"] == 23 and out["decode_tokens_per_s"] > 0
    assert out["prefill_tokens"] == len(ids)


def test_runner_text_mode(built, model_path):
    lib, exe = built
    proc = _run(exe, "--model", model_path, "--library", lib, "--prompt", "x", "--max-new-tokens", 5)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("x")
    assert "tokens/s" in proc.stderr


def test_runner_errors(built, model_path, tmp_path):
    lib, exe = built
    proc = _run(exe, "--model", tmp_path / "absent.onnx", "--library", lib)
    assert proc.returncode == 1 and "model file not found" in proc.stderr and "absent.onnx" in proc.stderr
    proc = _run(exe, "--model", model_path, "--library", tmp_path / "nope.so")
    assert proc.returncode == 1 and "custom-op library not found" in proc.stderr and "nope.so" in proc.stderr
    proc = _run(exe, "--model", model_path)
    assert proc.returncode == 2 and "--library is required" in proc.stderr
    proc = _run(exe, "--model", model_path, "--library", lib, "--max-new-tokens", 0)
    assert proc.returncode == 2 and "--max-new-tokens must be >= 1" in proc.stderr
    # a model without hla-deploy metadata is refused
    import onnx
    proto = onnx.load(str(model_path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "nometa.onnx"))
    proc = _run(exe, "--model", tmp_path / "nometa.onnx", "--library", lib)
    assert proc.returncode == 1 and "op_contract_version" in proc.stderr


def _fake_export(path, logits_node, logits_type):
    """A graph with the exporter's I/O names and metadata but a `logits` output of another rank or
    dtype (input_ids [B, T] int64, state [1, B, 2, 4] float32 -> logits, state_out)."""
    import onnx
    from onnx import TensorProto, helper
    nodes = [*logits_node, helper.make_node("Identity", ["state"], ["state_out"])]
    graph = helper.make_graph(
        nodes, "fake",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, "B", 2, 4])],
        [helper.make_tensor_value_info("logits", logits_type, None),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, "B", 2, 4])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"hla_deploy.op_contract_version": "1"})
    onnx.save(model, str(path))
    return path


def test_runner_rejects_logits_of_wrong_rank_or_dtype(built, tmp_path):
    """The runner indexes the logits buffer as [1, T, V] float32: anything else must be refused,
    not read out of bounds."""
    from onnx import TensorProto, helper
    lib, exe = built
    rank2 = _fake_export(tmp_path / "rank2.onnx",  # logits [B, T]
                         [helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)],
                         TensorProto.FLOAT)
    proc = _run(exe, "--model", rank2, "--library", lib, "--prompt", "def ", "--max-new-tokens", 2)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "'logits'" in proc.stderr and "[1, 4]" in proc.stderr and "[B, T, V]" in proc.stderr, proc.stderr
    fp16 = _fake_export(tmp_path / "fp16.onnx",  # logits [B, T, 1] float16
                        [helper.make_node("Unsqueeze", ["input_ids", "axes"], ["ids3"]),
                         helper.make_node("Cast", ["ids3"], ["logits"], to=TensorProto.FLOAT16)],
                        TensorProto.FLOAT16)
    proc = _run(exe, "--model", fp16, "--library", lib, "--prompt", "def ", "--max-new-tokens", 2)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "'logits'" in proc.stderr and "float32" in proc.stderr, proc.stderr


# ---- the build machinery (hla_deploy.native) ------------------------------------------------------

def test_build_plugins_cli(built, capsys):
    import argparse
    import hla_deploy.native as plugins
    parser = argparse.ArgumentParser()
    plugins.add_arguments(parser)
    assert plugins.run(parser.parse_args(["--quiet", "--no-kernels"])) == 0  # the AOT kernels: test_triton_aot*.py
    out = capsys.readouterr().out
    assert f"custom-op library: {built[0]}" in out and f"C++ runner: {built[1]}" in out


def test_missing_headers_is_a_plugin_build_error(tmp_path, monkeypatch):
    from hla_deploy.native import build
    empty = tmp_path / "no_headers"
    empty.mkdir()
    monkeypatch.setenv("HLA_DEPLOY_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("ONNXRUNTIME_INCLUDE_DIR", str(empty))
    with pytest.raises(PluginBuildError, match=r"no_headers does not contain onnxruntime_cxx_api.h"):
        build.ort_library_path(build=True, verbose=False)
    with pytest.raises(PluginBuildError, match=r"custom-op library not found at .*libhla_ort_op.so"):
        build.ort_library_path(build=False)


def test_apt_sources_parsing():
    """The headers fetch reuses the Debian archive named by the machine's apt sources."""
    from hla_deploy.native import ort_headers as oh
    deb822 = ("Types: deb\nURIs: file:///srv/mirror/debian\nSuites: bookworm bookworm-updates\n"
              "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
              "Types: deb\nURIs: file:///srv/mirror/debian-security\nSuites: bookworm-security\n"
              "Components: main\n\n"
              "Types: deb-src\nURIs: file:///srv/src\nSuites: bookworm\nComponents: main\n")
    assert oh._parse_deb822(deb822) == [
        ("file:///srv/mirror/debian", ["bookworm", "bookworm-updates"],
         "/usr/share/keyrings/debian-archive-keyring.gpg"),
        ("file:///srv/mirror/debian-security", ["bookworm-security"], "")]
    one_line = ("# comment\ndeb [arch=amd64 signed-by=/k.gpg] file:///srv/mirror/debian trixie main\n"
                "deb-src file:///srv/src bookworm main\ndeb file:///srv/other stable main contrib\n")
    assert oh._parse_one_line_list(one_line) == [("file:///srv/mirror/debian", ["trixie"], "/k.gpg"),
                                                  ("file:///srv/other", ["stable"], "")]


def test_trt_plugin_path_is_reexported_lazily():
    import hla_deploy.native as plugins
    assert callable(plugins.trt_plugin_path)
    assert "trt_plugin_path" in plugins.__all__
