import os, torch  # noqa: E401  (keep these two lines first: Triton's CPU interpreter when no GPU)
if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")  # noqa: E701
"""Shared pytest set-up. Float64 references and input helpers live in tests/reference.py."""
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

_TESTS = Path(__file__).resolve().parent
for _p in (str(_TESTS.parent), str(_TESTS)):  # `import hla_deploy` and `import reference` without install
    if _p not in sys.path:
        sys.path.insert(0, _p)


@pytest.fixture
def gen():
    """A seeded CPU torch.Generator so every test draws the same inputs."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A random-weight checkpoint dir (HLALanguageModel.save): hla2, 2 layers, 2 heads,
    d = dv = 4, decay [0.9, 1.0], vocab 256; seconds to export or run on one CPU core."""
    from hla_deploy.models import HLAConfig, HLALanguageModel
    torch.manual_seed(0)
    cfg = HLAConfig(d_model=16, n_layers=2, n_heads=2, head_dim=4, value_dim=4, mlp_hidden=24,
                    variant="hla2", decay=[0.9, 1.0])
    return HLALanguageModel(cfg).save(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def ort_library():
    """Path of the ORT custom-op library, built on first use; a failed build fails the test."""
    from hla_deploy.native import PluginBuildError, ort_library_path
    try:
        return ort_library_path(build=True)
    except PluginBuildError as e:
        pytest.fail(f"building the ORT custom-op library failed: {e}")


@pytest.fixture(scope="session")
def lm_custom_export():
    """build(key, model, dtype="fp32") -> the op="custom" onnx.ModelProto of an HLALanguageModel,
    cached per (key, dtype) for the session: a torch.onnx dynamo export takes seconds, and the
    standard-op graph of a model is exactly lower_custom_nodes(that proto)."""
    cache = {}

    def build(key, model, dtype="fp32"):
        from hla_deploy.exporters.onnx.export import build_onnx_model
        if (key, dtype) not in cache:
            cache[(key, dtype)] = build_onnx_model(model, op="custom", dtype=dtype)
        return cache[(key, dtype)]
    return build
