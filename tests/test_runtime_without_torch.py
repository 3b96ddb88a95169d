"""The runtime path needs neither torch nor the exporter (issue 13, item 2).

Each check runs in a fresh interpreter where torch cannot be imported: a meta-path finder placed
first on sys.meta_path raises ImportError("import of torch blocked ...") for torch and every
torch.* module, before anything of hla_deploy is imported. What must work there:

- importing hla_deploy.runtime and its sessions, hla_deploy.state_layout, hla_deploy.tokenizer;
- OrtHLASession over a custom-op export (no explicit state shape in the graph, so state_size
  comes from the torch-free hla_deploy.state_layout): the greedy tokens equal the torch model's
  (computed in this, the parent, process);
- `hla-deploy generate model.onnx --json` through hla_deploy.cli.main (the console script's code);
- `hla-deploy parity --onnx model.onnx --onnx model_standard.onnx` (parity between exported graphs);
- the commands that need torch (export, quickstart, bundle, generate / parity with a checkpoint) exit 3
  naming the [export] extra and the command that installs it;
- and neither torch nor hla_deploy.exporters nor hla_deploy.models nor hla_deploy.ops is loaded
  afterwards.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent("""
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"import of {name} blocked (test: the runtime must not need torch)")
            return None
    sys.meta_path.insert(0, _NoTorch())
    sys.path.insert(0, %r)
""") % str(ROOT)

LOADED_CHECK = textwrap.dedent("""
    heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "hla_deploy.exporters",
                   "hla_deploy.models", "hla_deploy.ops")))
    assert not heavy, f"the runtime loaded {heavy}"
""")


def _run_without_torch(code: str, check_loaded: bool = False, timeout: int = 120) -> subprocess.CompletedProcess:
    src = BLOCKER + textwrap.dedent(code) + (LOADED_CHECK if check_loaded else "")
    return subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_blocker_really_blocks_torch():
    proc = _run_without_torch("import torch\n")
    assert proc.returncode != 0 and "import of torch blocked" in proc.stderr


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory):
    """(custom-op fp32 export of tiny_ckpt, the torch model's greedy tokens for 'def ' x 12)."""
    from hla_deploy.exporters import export_onnx
    from hla_deploy.models import HLALanguageModel, generate, tokenizer
    path = export_onnx(tiny_ckpt, None, tmp_path_factory.mktemp("notorch") / "model.onnx", op="custom")
    model = HLALanguageModel.load(tiny_ckpt, map_location="cpu").eval()
    return path, generate(model, tokenizer.encode("def "), 12)


def test_runtime_imports_without_torch():
    proc = _run_without_torch("""
        import hla_deploy.runtime as rt
        from hla_deploy.runtime import OrtHLASession, TrtHLASession, sampling, session_base, trt_plugin
        from hla_deploy.runtime.onnx_file import read_export
        from hla_deploy.state_layout import state_size
        from hla_deploy import tokenizer
        assert state_size("hla2", 4, 4) == 32 and tokenizer.encode("ab") == [97, 98]
    """, check_loaded=True)
    assert proc.returncode == 0, proc.stderr


def test_ort_session_without_torch(exported, ort_library):
    path, want = exported
    proc = _run_without_torch(f"""
        import json
        from hla_deploy.runtime import OrtHLASession
        sess = OrtHLASession({str(path)!r}, library={str(ort_library)!r})
        print(json.dumps({{"ids": sess.generate([100, 101, 102, 32], 12), "N": sess.state_size}}))
    """, check_loaded=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["N"] == 32  # hla2, d = dv = 4: S (16) + M (16)
    assert out["ids"] == want


def test_generate_cli_without_torch(exported, ort_library):
    path, want = exported
    proc = _run_without_torch(f"""
        from hla_deploy.cli import main
        rc = main(["generate", {str(path)!r}, "--library", {str(ort_library)!r}, "--prompt", "def ",
                   "--max-new-tokens", "12", "--json"])
        assert rc == 0, rc
        heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not heavy, heavy
    """)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "onnxruntime-cpu" and out["generated_ids"] == want


@pytest.mark.parametrize("argv", [["generate", "{ckpt}", "--max-new-tokens", "2"],
                                  ["export", "{ckpt}", "-o", "{tmp}/m.onnx"],
                                  ["quickstart", "--out", "{tmp}/qs"],
                                  ["bundle", "{ckpt}", "-o", "{tmp}/b", "--target", "cpu"],
                                  ["parity", "{ckpt}", "--backends", "ort-cpu"]],
                         ids=lambda a: a[0])
def test_torch_commands_without_torch_say_what_to_install(tiny_ckpt, tmp_path, argv):
    argv = [a.format(ckpt=tiny_ckpt, tmp=tmp_path) for a in argv]
    proc = _run_without_torch(f"""
        from hla_deploy.cli import main
        sys.exit(main({argv!r}))
    """)
    assert proc.returncode == 3, proc.stderr  # an optional dependency missing (hla_deploy/exit_codes.py)
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "[export] extra" in lines[0] and "torch" in lines[0] and "pip install 'hla-deploy[export]'" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_parity_between_exported_graphs_without_torch(tiny_ckpt, exported, ort_library, tmp_path):
    """No checkpoint: the float32 standard-op graph is the reference, the custom-op graph on ort-cpu is
    checked against it; torch is never imported. The standard graph is exported here (parent process)."""
    from hla_deploy.exporters import export_onnx
    custom, _ = exported
    standard = export_onnx(tiny_ckpt, None, tmp_path / "model_standard.onnx", op="standard")
    report = tmp_path / "parity.json"
    proc = _run_without_torch(f"""
        from hla_deploy.cli import main
        rc = main(["parity", "--onnx", {str(custom)!r}, "--onnx", {str(standard)!r}, "--library",
                   {str(ort_library)!r}, "--decode-steps", "3", "--json", {str(report)!r}, "--quiet"])
        heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "hla_deploy.models")))
        assert not heavy, heavy
        sys.exit(rc)
    """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(report.read_text())
    by = {b["name"]: b for b in doc["backends"]}
    assert doc["checkpoint"] is None and doc["reference"]["form"] == "onnx-standard"
    assert by["ort-cpu"]["status"] == "pass" and by["ort-cpu"]["metrics"]["rel_rms_err"] < 1e-5
    assert by["torch"]["status"] == "skipped" and "checkpoint" in by["torch"]["reason"]
    assert doc["config"]["n_layers"] == 2 and doc["summary"]["ok"] is True
