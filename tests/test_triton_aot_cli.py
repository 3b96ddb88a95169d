"""The AOT kernels' entry points without compiling much: build-plugins / export options and their errors,
Triton missing (exit 3), the configurations of a model's nodes, the stub driver, the ORT library
path needing no Triton. (The compiles themselves: tests/test_triton_aot.py.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hla_deploy.native.kernel_configs import ConfigError, KernelConfig, kernel_configs_of_model

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *argv):
    from hla_deploy.cli import main
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ---- usage errors name the flag, before any build ---------------------------------------------------

@pytest.mark.parametrize("flags, needles", [
    (["--config", "hla2-n0-c0-d256-dv64-bf16"], ["--config 'hla2-n0-c0-d256-dv64-bf16'", "d <= 128"]),
    (["--config", "hla2-n1-c0-d64-dv128-fp16"], ["--config", "dv + normalize <= 128"]),
    (["--config", "hla3-n0-c0-d64-dv64-fp16"], ["--config 'hla3-n0-c0-d64-dv64-fp16'", "not a configuration name"]),
    (["--config", "ahla-n0-c1-d64-dv64-fp16"], ["--config", "hla2 only"]),
    (["--arch", "80"], ["--arch '80'", "unknown arch"]),
    (["--arch", "87,sm_75"], ["--arch 'sm_75'", "87, 90"]),
    (["--model", "no/such/model.onnx"], ["--model no/such/model.onnx", "no such ONNX file"]),
    (["--no-kernels", "--config", "hla2-n0-c0-d64-dv64-fp16"], ["--no-kernels contradicts"]),
    (["--jobs", "0"], ["--jobs must be >= 1"]),
])
def test_build_plugins_usage_errors(capsys, monkeypatch, flags, needles):
    import hla_deploy.native as plugins
    monkeypatch.setattr(plugins, "_run_native", lambda args: pytest.fail("built despite a bad option"))
    rc, out, err = cli(capsys, "build-plugins", *flags)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("build-plugins: error: "), err
    assert all(n in lines[0] for n in needles), lines[0]


def test_help_says_the_default_archs_and_sets(capsys):
    rc, out, _ = cli(capsys, "build-plugins", "--help")   # cli.main returns argparse's status
    assert rc == 0
    text = " ".join(out.split())
    assert "default 87,90" in text and "sm_90a" in text and "CUDA 12.6's ptxas" in text
    assert "hla2-n0-c0-d64-dv64" in text and "18 configurations" in text


def _no_triton(monkeypatch):
    from hla_deploy.native import triton_aot

    def missing():
        raise triton_aot.TritonMissingError("building the AOT prefill kernels needs Triton, which is not installed "
                                            "here: `pip install 'hla-deploy[triton]'` (test)")
    monkeypatch.setattr(triton_aot, "triton_package_dir", missing)


@pytest.mark.parametrize("flags", [["--kernels-only"], ["--kernels-only", "--config", "hla2-n0-c0-d64-dv64-fp16"],
                                   ["--kernels-only", "--arch", "90"]])
def test_triton_missing_is_exit_3_naming_the_extra(capsys, monkeypatch, flags):
    _no_triton(monkeypatch)
    rc, out, err = cli(capsys, "build-plugins", *flags)
    assert rc == 3 and "[triton]" in err and err.startswith("build-plugins: error: "), err


def test_triton_missing_without_kernel_options_is_one_line(capsys, monkeypatch):
    """Plain `build-plugins` (the ORT library) does not need Triton: the default kernels are skipped."""
    import hla_deploy.native as plugins
    _no_triton(monkeypatch)
    monkeypatch.setattr(plugins, "_run_native", lambda args: 0)
    rc, out, err = cli(capsys, "build-plugins")
    assert rc == 0 and out.count("\n") == 1 and out.startswith("AOT kernels: not built:") and "[triton]" in out


def test_ort_library_path_needs_no_triton(tmp_path):
    code = ("import sys; sys.modules['triton'] = None\n"
            "import hla_deploy.native as p, hla_deploy.native.build as b\n"
            "print(b.build_dir()); p.add_arguments(__import__('argparse').ArgumentParser())\n"
            "assert 'torch' not in sys.modules, 'importing the plugins imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("flags, needle", [(["--kernels", "75"], "--kernels '75'"),
                                           (["--kernel-dir", "x"], "--kernel-dir needs --kernels"),
                                           (["--op", "standard", "--kernels"], "--kernels applies to --op custom")])
def test_export_kernel_options_checked_before_the_export(capsys, tmp_path, tiny_ckpt, flags, needle):
    out = tmp_path / "m.onnx"
    rc, _, err = cli(capsys, "export", tiny_ckpt, "-o", out, *flags)
    assert rc == 2 and needle in err and not out.exists(), err


def test_export_kernels_without_triton_is_exit_3_before_exporting(capsys, monkeypatch, tmp_path, tiny_ckpt):
    _no_triton(monkeypatch)
    out = tmp_path / "m.onnx"
    rc, _, err = cli(capsys, "export", tiny_ckpt, "-o", out, "--kernels", "90")
    assert rc == 3 and "[triton]" in err and not out.exists()


# ---- configurations --------------------------------------------------------------------------------------

def test_config_names_round_trip():
    from hla_deploy.native.kernel_configs import CONFIG_SETS, DEFAULT_CONFIGS
    for c in CONFIG_SETS["matrix"]:
        assert KernelConfig.parse(c.name) == c and KernelConfig.from_json(c.to_json()) == c
    assert len(DEFAULT_CONFIGS) == 18 and KernelConfig.parse("hla2-n0-c0-d64-dv64-fp16") in DEFAULT_CONFIGS
    assert {c.dtype for c in DEFAULT_CONFIGS} == {"fp16", "bf16", "fp32"}
    assert len({(c.variant, c.normalize, c.has_c) for c in DEFAULT_CONFIGS}) == 6


def _graph(path, nodes):
    """A model with one HLARecurrentStep per (attrs, dtype, d, dv) in nodes; q/v shapes in value_info."""
    import onnx
    from onnx import TensorProto, helper
    elem = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
    graph_nodes, inputs, outputs = [], [], []
    for i, (attrs, dtype, d, dv) in enumerate(nodes):
        names = [f"q{i}", f"k{i}", f"v{i}", f"s{i}"]
        dims = [["B", "T", 2, d], ["B", "T", 2, d], ["B", "T", 2, dv], ["B", 2, 100]]
        for n, shape, t in zip(names, dims, [elem[dtype]] * 3 + [TensorProto.FLOAT]):
            inputs.append(helper.make_tensor_value_info(n, t, shape))
        outputs += [helper.make_tensor_value_info(f"o{i}", elem[dtype], None),
                    helper.make_tensor_value_info(f"so{i}", TensorProto.FLOAT, None)]
        graph_nodes.append(helper.make_node("HLARecurrentStep", names, [f"o{i}", f"so{i}"], name=f"layer{i}",
                                            domain="hla_deploy", **attrs))
    model = helper.make_model(helper.make_graph(graph_nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("hla_deploy", 1)])
    onnx.save(model, str(path))
    return path


def test_kernel_configs_of_model(tmp_path):
    path = _graph(tmp_path / "m.onnx", [
        ({"variant": "hla2", "normalize": 1, "ridge": 0.5, "decay": [0.9]}, "bf16", 32, 16),
        ({"variant": "hla2", "normalize": 1, "ridge": 0.25}, "bf16", 32, 16),      # the same configuration
        ({"variant": "ahla"}, "fp16", 64, 64),
        ({}, "fp32", 8, 4),                                                         # defaults: hla2, n0, ridge 0
    ])
    assert [c.name for c in kernel_configs_of_model(path)] == [
        "hla2-n1-c1-d32-dv16-bf16", "ahla-n0-c0-d64-dv64-fp16", "hla2-n0-c0-d8-dv4-fp32"]


def test_kernel_configs_of_model_unsupported_nodes(tmp_path):
    path = _graph(tmp_path / "m.onnx", [({"variant": "hla3"}, "fp16", 16, 16), ({"variant": "ahla"}, "fp16", 16, 16),
                                        ({"variant": "hla2"}, "fp16", 256, 64)])
    with pytest.raises(ConfigError, match=r"m.onnx: node 'layer0': variant 'hla3'"):
        kernel_configs_of_model(path)
    skipped = []
    assert [c.name for c in kernel_configs_of_model(path, skipped=skipped)] == ["ahla-n0-c0-d16-dv16-fp16"]
    assert len(skipped) == 2 and "'layer0'" in skipped[0] and "hla3" in skipped[0] and "d <= 128" in skipped[1]


def test_kernel_configs_of_model_without_shapes_or_file(tmp_path):
    import onnx
    path = _graph(tmp_path / "m.onnx", [({"variant": "hla2"}, "fp16", 16, 16)])
    m = onnx.load(str(path))
    del m.graph.input[:]
    onnx.save(m, str(path))
    with pytest.raises(ConfigError, match=r"node 'layer0': the head dims of inputs q/v are unknown.*--config"):
        kernel_configs_of_model(path)
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match=r"--model .*bad.onnx: not a readable ONNX model"):
        kernel_configs_of_model(tmp_path / "bad.onnx")


def test_shipped_model_export_has_the_default_sets_configuration(tmp_path, lm_custom_export):
    import onnx
    from hla_deploy.models import HLALanguageModel, default_checkpoint
    from hla_deploy.native.kernel_configs import DEFAULT_CONFIGS
    model = HLALanguageModel.load(default_checkpoint())
    path = tmp_path / "shipped.onnx"
    onnx.save(lm_custom_export("shipped", model, "fp16"), str(path))
    (cfg,) = kernel_configs_of_model(path)
    assert cfg.name == "hla2-n0-c0-d64-dv64-fp16" and cfg in DEFAULT_CONFIGS


# ---- the stub driver -----------------------------------------------------------------------------------

def test_stub_driver_is_installed_and_restored():
    pytest.importorskip("triton")
    from triton.runtime import driver
    from hla_deploy.native.stub_driver import FixedTargetDriver, fixed_target_driver
    before = driver._active
    with fixed_target_driver(87) as d:
        assert driver.active is d and isinstance(d, FixedTargetDriver)
        t = d.get_current_target()
        assert (t.backend, t.arch, t.warp_size) == ("cuda", 87, 32) and d.map_python_to_cpp_type("*fp16") == "CUdeviceptr"
        with pytest.raises(RuntimeError, match="cannot run kernels"):
            d.get_benchmarker()
    assert driver._active is before


def test_default_set_without_ptxas_126_builds_sm90_only(capsys, monkeypatch):
    """A GPU machine without network access: plain `build-plugins` cannot fetch sm_87's ptxas 12.6;
    that is one line and sm_90 still builds (an explicit --arch 87 is an error instead)."""
    pytest.importorskip("triton")
    import hla_deploy.native as plugins
    from hla_deploy.native import kernel_dir, triton_aot
    real = triton_aot.toolchain

    def toolchain(arch):
        if arch == 87:
            raise triton_aot.AOTCompileError("sm_87 cubins are assembled with CUDA 12.6's ptxas, which could not "
                                             "be fetched: offline (test)")
        return real(arch)
    calls = []
    monkeypatch.setattr(triton_aot, "toolchain", toolchain)
    monkeypatch.setattr(kernel_dir, "build_kernels",
                        lambda configs, archs, *a, **k: calls.append(archs) or _fake_report(calls, configs, archs))
    monkeypatch.setattr(plugins, "_run_native", lambda args: 0)
    rc, out, err = cli(capsys, "build-plugins")
    assert rc == 0 and calls == [[90]], (out, err)
    assert out.splitlines()[0].startswith("AOT kernels sm_87: not built: sm_87 cubins") and "kernels sm_90:" in out


def _fake_report(calls, configs, archs):
    from hla_deploy.native.kernel_dir import BuildReport
    from hla_deploy.native.triton_aot import Toolchain
    r = BuildReport(Path("/nowhere"))
    r.toolchains = {a: Toolchain(a, "3.x", "ptxas", "12.x") for a in archs}
    r.compiled = [(c.name, f"sm_{a}") for c in configs for a in archs]
    return r
