"""The runtime path needs neither torch nor the exporter (issue 13, item 2).

Each check runs in a fresh interpreter where torch cannot be imported: a meta-path finder placed
first on sys.meta_path raises ImportError("import of torch blocked ...") for torch and every
torch.* module, before anything of hla_deploy is imported. What must work there:

- importing hla_deploy.runtime and its sessions, hla_deploy.state_layout, hla_deploy.tokenizer;
- OrtHLASession over a custom-op export (no explicit state shape in the graph, so state_size
  comes from the torch-free hla_deploy.state_layout): the greedy tokens equal the torch model's
  (computed in this, the parent, process);
- `hla-deploy generate model.onnx --json` through hla_deploy.cli.main (the console script's code);
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


def test_generate_cli_checkpoint_without_torch_is_a_clear_error(tiny_ckpt):
    proc = _run_without_torch(f"""
        from hla_deploy.cli import main
        sys.exit(main(["generate", {str(tiny_ckpt)!r}, "--max-new-tokens", "2"]))
    """)
    assert proc.returncode == 1
    assert "torch" in proc.stderr and "Traceback" not in proc.stderr
