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
