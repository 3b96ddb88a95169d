"""docs/verify_identities.py checks every claim of docs/HLA_MATH.md in float64 (the forms that must
agree to ~1e-13, and the paper's forms that must not); it exits 1 if any must-agree line is > 1e-9."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "verify_identities.py"


def test_hla_math_identities_hold():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    agree = [l for l in lines if l.startswith("agree")]
    differ = [l for l in lines if l.startswith("differ")]
    assert len(agree) >= 10 and all(float(l.split()[1]) < 1e-9 for l in agree)
    # the paper's decay and third-order forms really are wrong (large differences)
    assert len(differ) >= 3 and all(float(l.split()[1]) > 1e-3 for l in differ)
