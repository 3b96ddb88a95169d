"""`hla-deploy quickstart` end to end, as a user runs it (a subprocess, CPU only): the shipped
checkpoint is exported (custom op + standard ops), the ORT library is built or loaded, parity
passes on the CPU backends, and ONNX Runtime generates the same greedy text as the torch model."""
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs_out"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CUDA_VISIBLE_DEVICES"] = ""  # the quickstart is the CPU path
    proc = subprocess.run([sys.executable, "-m", "hla_deploy", "quickstart", "--out", str(out),
                           "--max-new-tokens", "32"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log

    custom, standard = out / "model.onnx", out / "model_standard.onnx"
    for p in (custom, standard, out / "parity" / "parity.json", out / "parity" / "PARITY_REPORT.md",
              out / "parity" / "parity_error_by_position.png", out / "generated.txt"):
        assert p.is_file() and p.stat().st_size > 0, f"missing artifact {p}\n{log}"
        assert str(p) in proc.stdout, f"quickstart did not print where {p.name} was written"

    # the two graphs really are what their names say
    c, s = onnx.load(str(custom)), onnx.load(str(standard))
    meta_c = {p.key: p.value for p in c.metadata_props}
    meta_s = {p.key: p.value for p in s.metadata_props}
    assert meta_c["hla_deploy.op"] == "custom" and meta_s["hla_deploy.op"] == "standard"
    n_layers = json.loads(meta_c["hla_deploy.config"])["n_layers"]
    assert sum(n.op_type == "HLARecurrentStep" for n in c.graph.node) == n_layers
    assert not any(n.domain == "hla_deploy" for n in s.graph.node)

    # parity on the CPU backends, against the shipped checkpoint, on the exported files
    rep = json.loads((out / "parity" / "parity.json").read_text())
    assert rep["summary"]["ok"] is True
    assert rep["summary"]["passed"] == ["torch", "ort-cpu", "onnx-standard"]
    assert rep["checkpoint"].endswith("tiny-pystdlib")
    assert rep["onnx"]["custom"] == str(custom) and rep["onnx"]["standard"] == str(standard)
    for b in rep["backends"]:
        assert b["metrics"]["rel_rms_err"] < 1e-4 and b["metrics"]["state_rel_err"] < 1e-4

    # generated text: prompt + 32 new bytes, identical greedy tokens in ORT and torch
    assert "identical to the torch model's" in proc.stdout
    text = (out / "generated.txt").read_bytes()
    assert text.startswith(b"def main(argv=None):\n    ")
    assert "quickstart PASS" in proc.stdout


def test_quickstart_bad_checkpoint_exit_2(tmp_path):
    import argparse
    from hla_deploy import quickstart
    parser = argparse.ArgumentParser()
    quickstart.add_arguments(parser)
    rc = quickstart.run(parser.parse_args(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]))
    assert rc == 2
    assert not (tmp_path / "o" / "model.onnx").exists()

