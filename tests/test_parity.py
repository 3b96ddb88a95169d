"""The parity harness: metrics against hand computations, honest exports pass, real artifact
faults (an edited decay attribute, a broken state hand-off) FAIL with the backend named, the
JSON schema is stable, skipped backends are listed with reasons and never counted as passed.

Uses a small random-weight model (2 layers, 2 heads, d = dv = 8, per-head decay) saved with
HLALanguageModel.save; every parity run here takes a few seconds on one CPU core.
"""
import argparse
import json
import math

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from hla_deploy.models import HLAConfig, HLALanguageModel
from hla_deploy.parity import DEFAULT_PROMPTS, SCHEMA_VERSION, run_parity
from hla_deploy.parity import cli as parity_cli
from hla_deploy.parity import metrics, tolerances
from hla_deploy.parity.report import JSON_NAME, MARKDOWN_NAME, PLOT_NAME

DECODE = 6
PROMPTS = ["def f(x):\n    return x + 1\n", "import os\nimport sys\npath = "]  # 2 batches (27, 28 tokens)
P0 = len(PROMPTS[0].encode())


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(7)
    cfg = HLAConfig(d_model=32, n_layers=2, n_heads=2, head_dim=8, value_dim=8, mlp_hidden=64,
                    variant="hla2", decay=[0.9, 0.97])
    model = HLALanguageModel(cfg)
    with torch.no_grad():  # larger logits than the N(0, 0.02) init, so greedy tokens are not near-ties
        model.embed.weight.mul_(20.0)
    return model.save(tmp_path_factory.mktemp("parity_ckpt") / "tiny")


@pytest.fixture(scope="module")
def onnx_files(ckpt, tmp_path_factory):
    from hla_deploy.exporters import export_onnx
    d = tmp_path_factory.mktemp("parity_onnx")
    return {"custom": export_onnx(ckpt, None, d / "custom.onnx", op="custom"),
            "standard": export_onnx(ckpt, None, d / "standard.onnx", op="standard")}


def cli(argv):
    parser = argparse.ArgumentParser()
    parity_cli.add_arguments(parser)
    return parity_cli.run(parser.parse_args([str(a) for a in argv]))


def entry(report, name):
    return next(b for b in report["backends"] if b["name"] == name)


# ---------------------------------------------------------------------------------- artifact faults
def alter_decay(src, dst, layer=0, new=(0.5, 0.5)):
    """Edit the decay attribute of layer `layer`'s HLARecurrentStep node after export."""
    model = onnx.load(str(src))
    nodes = [n for n in model.graph.node if n.op_type == "HLARecurrentStep"]
    assert len(nodes) >= 1, "custom-op graph has no HLARecurrentStep node"
    node = nodes[layer]
    for a in node.attribute:
        if a.name == "decay":
            del a.floats[:]
            a.floats.extend(new)
            break
    else:
        node.attribute.append(helper.make_attribute("decay", list(new)))
    onnx.save(model, str(dst))
    return dst


def zero_layer_state_out(src, dst, layer=0):
    """Break the state hand-off: the graph output `state_out` gets zeros for layer `layer`
    (its Concat input is multiplied by 0), so the next call starts that layer from scratch."""
    model = onnx.load(str(src))
    g = model.graph
    concat = next(n for n in g.node if "state_out" in n.output)
    assert concat.op_type == "Concat", f"state_out is produced by {concat.op_type}, expected Concat"
    src_name = concat.input[layer]
    zero = numpy_helper.from_array(np.zeros((), np.float32), "h8_fault_zero")
    g.initializer.append(zero)
    g.node.append(helper.make_node("Mul", [src_name, "h8_fault_zero"], ["h8_fault_zeroed"]))
    concat.input[layer] = "h8_fault_zeroed"
    # keep the node list topologically sorted: move the Concat after the new Mul
    nodes = list(g.node)
    nodes.remove(concat)
    nodes.append(concat)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(dst))
    return dst


# ---------------------------------------------------------------------------------- metrics
def test_metrics_match_hand_computation():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 5, 7)).astype(np.float32)
    out = ref.copy()
    out[1, 3, 2] += 0.5                       # one element off
    out[0, 4] = -ref[0, 4]                    # one position flipped: cosine -1, argmax changes
    s_ref = rng.standard_normal((3, 2, 2, 4)).astype(np.float32)
    s_out = s_ref.copy()
    s_out[1] *= 0.0                           # layer 1 state lost
    acc = metrics.ParityAccumulator()
    acc.add(ref, out, s_ref, s_out)
    m = acc.result()
    d = out.astype(np.float64) - ref
    assert m["max_abs_err"] == pytest.approx(np.abs(d).max())
    assert m["rel_rms_err"] == pytest.approx(math.sqrt((d ** 2).sum() / (ref.astype(np.float64) ** 2).sum()))
    assert m["min_cosine"] == pytest.approx(-1.0)
    flips = (out.argmax(-1) != ref.argmax(-1))
    assert m["token_agreement"] == pytest.approx(1 - flips.mean())
    assert m["first_divergence"] == int(np.nonzero(flips.any(0))[0][0])
    assert m["state_rel_err_per_layer"] == pytest.approx([0.0, 1.0, 0.0])
    assert m["state_rel_err"] == pytest.approx(1.0)
    assert m["positions"] == 10 and m["finite"]
    out[0, 0, 0] = np.nan
    acc2 = metrics.ParityAccumulator()
    acc2.add(ref, out, s_ref, s_ref)
    bad = acc2.result()
    assert not bad["finite"]
    assert any("non-finite" in v for v in tolerances.check(bad, tolerances.default_tolerances("fp32")))


def test_tolerances_parse_and_check():
    tol = tolerances.resolve("fp16", tolerances.parse_overrides(["rel_rms_err=3e-2", "min_cosine=0.9"]))
    assert tol["rel_rms_err"] == 3e-2 and tol["min_cosine"] == 0.9
    assert tol["state_rel_err"] == tolerances.DEFAULT_TOLERANCES["fp16"]["state_rel_err"]
    for bad in (["nope=1"], ["rel_rms_err"], ["rel_rms_err=abc"]):
        with pytest.raises(ValueError, match="--tol"):
            tolerances.parse_overrides(bad)
    ok = {"max_abs_err": 0.0, "rel_rms_err": 0.0, "min_cosine": 1.0, "token_agreement": 1.0,
          "state_rel_err": 0.0, "finite": True}
    assert tolerances.check(ok, tol) == []
    v = tolerances.check(dict(ok, min_cosine=0.5, rel_rms_err=float("nan")), tol)
    assert len(v) == 2 and any(s.startswith("min_cosine") for s in v)
    # fp32 is the strictest dtype on every key
    f32, f16, b16 = (tolerances.DEFAULT_TOLERANCES[k] for k in ("fp32", "fp16", "bf16"))
    for k, kind in tolerances.TOLERANCE_KEYS.items():
        if kind == "max":
            assert f32[k] < f16[k] < b16[k]
        else:
            assert f32[k] > f16[k] > b16[k]


def test_default_prompts_form_one_batch():
    assert len({len(p.encode()) for p in DEFAULT_PROMPTS}) == 1 and len(DEFAULT_PROMPTS[0]) > 64


# ---------------------------------------------------------------------------------- torch-only runs
def test_torch_backend_passes_and_json_schema(ckpt, tmp_path, capsys):
    out = tmp_path / "p.json"
    rc = cli([ckpt, "--backends", "torch,trt", "--decode-steps", DECODE, "--json", out,
              "--report", tmp_path / "rep"])
    text = capsys.readouterr().out
    assert rc == 0, text
    rep = json.loads(out.read_text())
    # top-level keys and types (docs/PARITY.md, schema_version 1)
    types = {"schema_version": int, "tool": str, "hla_deploy_version": str, "created": str,
             "checkpoint": str, "config": dict, "dtype": str, "decode_steps": int, "prompts": list,
             "batches": list, "reference": dict, "onnx": dict, "tolerances": dict, "backends": list,
             "summary": dict, "warnings": list}
    assert set(rep) == set(types)
    for k, t in types.items():
        assert isinstance(rep[k], t), k
    assert rep["schema_version"] == SCHEMA_VERSION == 1
    assert rep["reference"]["form"] in ("chunk", "triton") and rep["reference"]["dtype"] == "fp32"
    assert set(rep["reference"]) == {"form", "device", "dtype", "description", "seconds"}
    assert set(rep["onnx"]) == {"custom", "standard", "given"}
    assert set(rep["tolerances"]) == set(tolerances.TOLERANCE_KEYS)
    assert set(rep["summary"]) == {"passed", "failed", "errors", "skipped", "ok"}
    assert rep["batches"] == [{"batch_size": 4, "prompt_tokens": 72}]
    b_keys = {"name", "status", "reason", "description", "artifact", "metrics", "violations",
              "per_position_max_abs_err", "seconds", "note"}
    m_keys = {"max_abs_err", "rel_rms_err", "min_cosine", "token_agreement", "first_divergence",
              "state_rel_err", "state_rel_err_per_layer", "positions", "finite"}
    for b in rep["backends"]:
        assert set(b) == b_keys
        assert b["status"] in ("pass", "fail", "skipped", "error")
    torch_b = entry(rep, "torch")
    assert torch_b["status"] == "pass" and set(torch_b["metrics"]) == m_keys
    m = torch_b["metrics"]
    assert isinstance(m["positions"], int) and m["positions"] == 4 * (72 + DECODE)
    assert len(torch_b["per_position_max_abs_err"]) == 72 + DECODE
    assert len(m["state_rel_err_per_layer"]) == 2
    # the recurrent form agrees with the chunk (or Triton) reference to float32 rounding
    assert m["rel_rms_err"] < 1e-5 and m["state_rel_err"] < 1e-5 and m["token_agreement"] == 1.0
    assert m["first_divergence"] is None
    assert rep["summary"]["ok"] is True and rep["summary"]["passed"] == ["torch"]
    # report dir: the same JSON, a Markdown report and a PNG
    assert json.loads((tmp_path / "rep" / JSON_NAME).read_text())["backends"][0]["name"] == "torch"
    assert "| torch | PASS |" in (tmp_path / "rep" / MARKDOWN_NAME).read_text()
    assert (tmp_path / "rep" / PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "reference:" in text and "torch" in text


def test_skipped_backends_listed_not_passed(ckpt, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the test checks how GPU backends are skipped without it")
    rep = run_parity(ckpt, backends=["torch", "triton", "ort-cuda", "trt"], prompts=PROMPTS, decode_steps=2)
    assert rep["summary"]["passed"] == ["torch"]
    assert set(rep["summary"]["skipped"]) == {"triton", "ort-cuda", "trt"}
    for name in ("triton", "ort-cuda", "trt"):
        b = entry(rep, name)
        assert b["status"] == "skipped" and b["metrics"] is None
        assert isinstance(b["reason"], str) and len(b["reason"]) > 10
    assert "CUDA" in entry(rep, "triton")["reason"]
    assert rep["batches"] == [{"batch_size": 1, "prompt_tokens": 27}, {"batch_size": 1, "prompt_tokens": 28}]
    # only skipped backends: nothing was checked -> exit 2, never 0
    rc = cli([ckpt, "--backends", "triton,trt", "--json", tmp_path / "s.json"])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing was checked" in err
    s = json.loads((tmp_path / "s.json").read_text())["summary"]
    assert s["passed"] == [] and s["ok"] is False


def test_torch_fp16_within_fp16_tolerance(ckpt):
    rep = run_parity(ckpt, backends=["torch"], prompts=PROMPTS, decode_steps=DECODE, dtype="fp16")
    m = entry(rep, "torch")["metrics"]
    assert entry(rep, "torch")["status"] == "pass", entry(rep, "torch")["violations"]
    # the cast really happened: fp16 error is far above fp32 rounding, and within fp16 bounds
    assert 1e-5 < m["rel_rms_err"] < tolerances.DEFAULT_TOLERANCES["fp16"]["rel_rms_err"]


def test_bad_input_clear_errors(ckpt, tmp_path, capsys):
    assert cli([tmp_path / "missing", "--backends", "torch"]) == 2
    assert "missing" in capsys.readouterr().err
    assert cli([ckpt, "--backends", "torch,cuda-magic"]) == 2
    assert "unknown backend 'cuda-magic'" in capsys.readouterr().err
    assert cli([ckpt, "--backends", "torch", "--tol", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert cli([ckpt, "--backends", "torch", "--onnx", tmp_path / "nope.onnx"]) == 2
    assert "nope.onnx" in capsys.readouterr().err
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx file")
    assert cli([ckpt, "--backends", "torch", "--onnx", tmp_path / "junk.onnx"]) == 2
    assert "junk.onnx" in capsys.readouterr().err
    (tmp_path / "prompts.txt").write_text("\n\n")
    assert cli([ckpt, "--backends", "torch", "--prompts", tmp_path / "prompts.txt"]) == 2
    assert "no non-empty lines" in capsys.readouterr().err
    assert cli([ckpt, "--backends", "torch", "--decode-steps", "-1"]) == 2


# ---------------------------------------------------------------------------------- ONNX backends
@pytest.mark.slow
def test_honest_export_passes_all_cpu_backends(ckpt, onnx_files, ort_library, tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("\n".join(p.replace("\n", "\\n") for p in PROMPTS) + "\n")
    rc = cli([ckpt, "--onnx", onnx_files["custom"], "--onnx", onnx_files["standard"],
              "--backends", "torch,ort-cpu,onnx-standard", "--prompts", tmp_path / "prompts.txt",
              "--decode-steps", DECODE, "--json", tmp_path / "ok.json"])
    out = capsys.readouterr().out
    rep = json.loads((tmp_path / "ok.json").read_text())
    assert rc == 0, out
    assert rep["summary"]["passed"] == ["torch", "ort-cpu", "onnx-standard"]
    assert rep["onnx"] == {"custom": str(onnx_files["custom"].resolve()),
                           "standard": str(onnx_files["standard"].resolve()), "given": True}
    assert [p["text"] for p in rep["prompts"]] == PROMPTS
    for name in ("ort-cpu", "onnx-standard"):
        m = entry(rep, name)["metrics"]
        assert m["rel_rms_err"] < 1e-5 and m["state_rel_err"] < 1e-5 and m["token_agreement"] == 1.0


@pytest.mark.slow
def test_harness_exports_when_no_onnx_given(ckpt, onnx_files, tmp_path):
    rep = run_parity(ckpt, backends=["onnx-standard"], prompts=PROMPTS[:1], decode_steps=2)
    b = entry(rep, "onnx-standard")
    assert b["status"] == "pass", b
    assert rep["onnx"]["given"] is False and b["artifact"].endswith(".onnx")


def test_altered_decay_attribute_fails(ckpt, onnx_files, ort_library, tmp_path, capsys):
    bad = alter_decay(onnx_files["custom"], tmp_path / "altered_decay.onnx")
    rc = cli([ckpt, "--onnx", bad, "--backends", "torch,ort-cpu,onnx-standard", "--prompts",
              _prompt_file(tmp_path), "--decode-steps", DECODE, "--json", tmp_path / "bad.json"])
    out = capsys.readouterr().out
    assert rc == 1, out
    rep = json.loads((tmp_path / "bad.json").read_text())
    assert rep["summary"]["failed"] == ["ort-cpu"] and rep["summary"]["ok"] is False
    assert rep["summary"]["passed"] == ["torch"]
    # onnx-standard needs a standard-op graph, which --onnx did not give: skipped with that reason
    assert entry(rep, "onnx-standard")["status"] == "skipped"
    assert "standard-op" in entry(rep, "onnx-standard")["reason"]
    b = entry(rep, "ort-cpu")
    assert b["status"] == "fail" and b["artifact"] == str(bad.resolve())
    assert any(v.startswith("rel_rms_err") for v in b["violations"])
    assert b["metrics"]["rel_rms_err"] > 1e-3 and b["metrics"]["state_rel_err"] > 1e-2
    assert "ort-cpu: OUT OF TOLERANCE" in out and "FAIL" in out


def test_broken_state_handoff_fails(ckpt, onnx_files, ort_library, tmp_path, capsys):
    bad = zero_layer_state_out(onnx_files["custom"], tmp_path / "zeroed_state.onnx", layer=0)
    rc = cli([ckpt, "--onnx", bad, "--backends", "ort-cpu", "--prompts", _prompt_file(tmp_path),
              "--decode-steps", DECODE, "--json", tmp_path / "bad.json"])
    out = capsys.readouterr().out
    assert rc == 1, out
    rep = json.loads((tmp_path / "bad.json").read_text())
    b = entry(rep, "ort-cpu")
    assert rep["summary"]["failed"] == ["ort-cpu"] and b["status"] == "fail"
    _assert_state_fault_localised(b, prompt_len=P0)
    assert "ort-cpu: OUT OF TOLERANCE" in out


def test_broken_state_handoff_standard_graph_fails(ckpt, onnx_files, tmp_path):
    bad = zero_layer_state_out(onnx_files["standard"], tmp_path / "zeroed_state_std.onnx", layer=1)
    rep = run_parity(ckpt, onnx=bad, backends=["onnx-standard"], prompts=PROMPTS[:1], decode_steps=DECODE)
    b = entry(rep, "onnx-standard")
    assert rep["summary"]["failed"] == ["onnx-standard"] and b["status"] == "fail"
    per_layer = b["metrics"]["state_rel_err_per_layer"]
    assert per_layer[0] < 1e-5 and per_layer[1] == pytest.approx(1.0, abs=1e-6)
    # the prefill is right (state_out is only read by the next call), every decode step is not
    assert max(b["per_position_max_abs_err"][:P0]) < 1e-5
    assert min(b["per_position_max_abs_err"][P0:]) > 1e-4


def _assert_state_fault_localised(b, prompt_len):
    per_layer = b["metrics"]["state_rel_err_per_layer"]
    assert per_layer[0] == pytest.approx(1.0, abs=1e-6) and per_layer[1] > 1e-3
    assert any(v.startswith("state_rel_err") for v in b["violations"])
    assert max(b["per_position_max_abs_err"][:prompt_len]) < 1e-5
    assert min(b["per_position_max_abs_err"][prompt_len:]) > 1e-4
    assert b["metrics"]["first_divergence"] is None or b["metrics"]["first_divergence"] >= prompt_len


def _prompt_file(tmp_path):
    p = tmp_path / "prompts1.txt"
    p.write_text(PROMPTS[0].replace("\n", "\\n") + "\n")
    return p


@pytest.mark.parametrize("variant,normalize,ridge,decay", [
    ("ahla", True, 0.0, [0.95, 0.8]),
    ("hla3", True, 0.0, 1.0),
    ("hla2", True, 0.5, 0.9),
])
@pytest.mark.slow
def test_other_variants_pass_on_onnx_backends(variant, normalize, ridge, decay, tmp_path, ort_library):
    """Every variant's state layout survives export + hand-off in both ONNX backends."""
    torch.manual_seed(3)
    cfg = HLAConfig(d_model=16, n_layers=2, n_heads=2, head_dim=4, value_dim=8, mlp_hidden=32,
                    variant=variant, decay=decay, normalize=normalize, ridge=ridge)
    ckpt_dir = HLALanguageModel(cfg).save(tmp_path / f"ckpt_{variant}")
    rep = run_parity(ckpt_dir, backends=["torch", "ort-cpu", "onnx-standard"], prompts=PROMPTS[:1],
                     decode_steps=4)
    for b in rep["backends"]:
        assert b["status"] == "pass", (b["name"], b["reason"], b["violations"])
        assert b["metrics"]["state_rel_err"] < 1e-5
    assert rep["summary"]["ok"]


@pytest.mark.slow
def test_fp16_exports_within_fp16_tolerance_and_outside_fp32(ckpt, ort_library, tmp_path):
    """--dtype fp16 exports fp16 graphs: within the fp16 tolerances, and (being really fp16)
    outside the fp32 ones."""
    rep = run_parity(ckpt, backends=["ort-cpu", "onnx-standard"], prompts=PROMPTS[:1],
                     decode_steps=DECODE, dtype="fp16")
    assert rep["summary"]["passed"] == ["ort-cpu", "onnx-standard"], rep["backends"]
    for b in rep["backends"]:
        assert b["artifact"].endswith("_fp16.onnx")
        assert tolerances.check(b["metrics"], tolerances.default_tolerances("fp32")), b["metrics"]


def test_reference_falls_back_to_cpu_chunk_when_triton_fails(ckpt, monkeypatch):
    """A Triton reference that cannot run (here: told Triton is usable on a machine where it is
    not) falls back to the CPU chunk form and says why; the triton backend reports its error."""
    from hla_deploy.parity import backends as bk
    monkeypatch.setattr(bk, "_triton_status", lambda config: (True, ""))
    if torch.cuda.is_available():
        monkeypatch.setattr(bk._TorchModelRunner, "step",
                            lambda self, ids, state: (_ for _ in ()).throw(RuntimeError("boom")))
    rep = run_parity(ckpt, backends=["torch", "triton"], prompts=PROMPTS[:1], decode_steps=2)
    assert rep["reference"]["form"] == "chunk" and rep["reference"]["device"] == "cpu"
    assert "it failed" in rep["reference"]["description"]
    assert entry(rep, "triton")["status"] == "error" and entry(rep, "triton")["reason"]
    assert rep["summary"]["errors"] == ["triton"] and rep["summary"]["ok"] is False


def test_top_level_cli_wires_parity(ckpt, capsys):
    from hla_deploy.cli import main
    assert main(["parity", str(ckpt), "--backends", "torch", "--decode-steps", "2", "--quiet"]) == 0
    assert "PASS: passed 1 (torch)" in capsys.readouterr().out


def test_missing_runtime_is_skipped_but_broken_hla_deploy_import_is_an_error(ckpt, onnx_files, monkeypatch):
    """onnxruntime not installed: ort-cpu and onnx-standard are skipped with the reason. A failing
    import of hla-deploy's own runtime module is a bug: an error, never a skip."""
    import sys
    onnx_args = [onnx_files["custom"], onnx_files["standard"]]
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "onnxruntime", None)
        rep = run_parity(ckpt, onnx=onnx_args, backends=["torch", "ort-cpu", "onnx-standard"],
                         prompts=PROMPTS[:1], decode_steps=1)
    assert rep["summary"]["skipped"] == ["ort-cpu", "onnx-standard"] and rep["summary"]["passed"] == ["torch"]
    assert all("onnxruntime not importable" in entry(rep, n)["reason"] for n in ("ort-cpu", "onnx-standard"))
    monkeypatch.setitem(sys.modules, "hla_deploy.runtime.ort_session", None)
    rep = run_parity(ckpt, onnx=onnx_args, backends=["torch", "ort-cpu"], prompts=PROMPTS[:1], decode_steps=1)
    assert rep["summary"]["errors"] == ["ort-cpu"] and rep["summary"]["ok"] is False
    assert "hla_deploy.runtime.ort_session" in entry(rep, "ort-cpu")["reason"]
