"""The custom-op export of HLALanguageModel (op="custom", traced by torch.onnx dynamo): one
hla_deploy::HLARecurrentStep node per layer, and the node's schema.

Running the custom node itself needs the ORT custom-op library (tests/test_export_any_model.py,
tests/test_ort_runtime.py). Here: graph structure, attributes, I/O names, dtypes and dynamic axes
(the interface the runtime, parity and the C++ runner read), onnx.checker full check with the
registered schema (and its rejection of bad attributes / state sizes), ONNX shape inference of the
node's outputs, metadata, and the graph's wiring: every custom node replaced by its standard-op
lowering (exporters/standard/lowering.py, lower_custom_nodes) must reproduce the torch model in stock ORT
(tolerance 1e-4 relative to max |logits|, as for the standard export; fp16 5e-2 relative RMS).
Exports are cached per session (conftest.lm_custom_export).
"""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import hla_deploy
from hla_deploy.exporters import export_onnx
from hla_deploy.exporters.standard.lowering import lower_custom_nodes
from hla_deploy.exporters.node.schema import register_hla_schema
from hla_deploy.models import HLAConfig, HLALanguageModel
from reference import rel_err, rel_rms

CONFIGS = {
    "hla2-perhead-decay-normalize-ridge": dict(variant="hla2", decay=[0.9, 0.97, 0.99], normalize=True, ridge=0.1),
    "hla2-default": dict(variant="hla2"),
    "ahla-decay": dict(variant="ahla", decay=0.95, normalize=True),
    "hla3": dict(variant="hla3", tie_embeddings=False),
}


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = HLAConfig(d_model=24, n_layers=3, n_heads=3, head_dim=4, value_dim=6, mlp_hidden=32, **kw)
    m = HLALanguageModel(cfg, attn_backend="recurrent").eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, 0.3 if name.startswith("embed") else 0.15)
    return m


def _hla_nodes(proto):
    return [n for n in proto.graph.node if n.op_type == "HLARecurrentStep"]


def _dims(vi):
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in vi.type.tensor_type.shape.dim]


def _ancestors(proto, name):
    producer = {o: n for n in proto.graph.node for o in n.output}
    seen, stack = set(), [name]
    while stack:
        v = stack.pop()
        if v not in seen:
            seen.add(v)
            stack.extend(producer[v].input if v in producer else [])
    return seen


@pytest.mark.parametrize("name, dtype", [(n, "fp32") for n in CONFIGS] + [("ahla-decay", "fp16")])
@pytest.mark.slow
def test_one_custom_node_per_layer_with_contract_attributes(name, dtype, lm_custom_export):
    model = _model(**CONFIGS[name])
    c = model.config
    proto = lm_custom_export(name, model, dtype)
    nodes = _hla_nodes(proto)
    assert len(nodes) == c.n_layers
    assert all(n.domain == "hla_deploy" for n in nodes)
    assert {n.domain for n in proto.graph.node} == {"", "hla_deploy"}
    assert {(o.domain, o.version) for o in proto.opset_import} == {("", 18), ("hla_deploy", 1)}
    want_decay = c.decay if isinstance(c.decay, list) else [c.decay]
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert set(attrs) == {"variant", "decay", "normalize", "eps", "ridge"}
        assert attrs["variant"] == c.variant.encode()
        assert attrs["decay"] == pytest.approx(want_decay, abs=1e-7)
        assert attrs["normalize"] == int(c.normalize)
        assert attrs["eps"] == pytest.approx(c.eps)
        assert attrs["ridge"] == pytest.approx(c.ridge)
        assert len(node.input) == 4 and len(node.output) == 2
    # each node's state comes from the graph input `state`; each state_out reaches `state_out`
    for node in nodes:
        assert "state" in _ancestors(proto, node.input[3])
        assert node.output[1] in _ancestors(proto, "state_out")
    # graph I/O: names, dtypes, dynamic batch / seq
    ins = {i.name: i for i in proto.graph.input}
    outs = {o.name: o for o in proto.graph.output}
    assert list(ins) == ["input_ids", "state"] and list(outs) == ["logits", "state_out"]
    assert ins["input_ids"].type.tensor_type.elem_type == TensorProto.INT64
    assert _dims(ins["input_ids"]) == ["batch", "seq"]
    assert ins["state"].type.tensor_type.elem_type == TensorProto.FLOAT
    assert _dims(ins["state"]) == [c.n_layers, "batch", c.n_heads, c.state_size]
    assert outs["logits"].type.tensor_type.elem_type == TensorProto.FLOAT
    assert _dims(outs["logits"]) == ["batch", "seq", c.vocab_size]
    assert outs["state_out"].type.tensor_type.elem_type == TensorProto.FLOAT
    assert _dims(outs["state_out"]) == [c.n_layers, "batch", c.n_heads, c.state_size]


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_checker_full_check_and_shape_inference_give_node_output_shapes(dtype, lm_custom_export):
    name = "hla2-perhead-decay-normalize-ridge" if dtype == "fp32" else "ahla-decay"
    model = _model(**CONFIGS[name])
    c = model.config
    register_hla_schema()
    assert register_hla_schema() is False  # idempotent
    proto = lm_custom_export(name, model, dtype)
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    vi = {v.name: v for v in inferred.graph.value_info}
    act = TensorProto.FLOAT16 if dtype == "fp16" else TensorProto.FLOAT
    for node in _hla_nodes(inferred):
        q, k, v, s = (vi[x] for x in node.input)
        assert _dims(q) == ["batch", "seq", c.n_heads, c.head_dim] == _dims(k)
        assert _dims(v) == ["batch", "seq", c.n_heads, c.value_dim]
        assert _dims(s) == ["batch", c.n_heads, c.state_size]
        o, so = vi[node.output[0]], vi[node.output[1]]
        assert o.type.tensor_type.elem_type == act and q.type.tensor_type.elem_type == act
        assert _dims(o) == ["batch", "seq", c.n_heads, c.value_dim]
        assert so.type.tensor_type.elem_type == TensorProto.FLOAT and s.type.tensor_type.elem_type == TensorProto.FLOAT
        assert _dims(so) == ["batch", c.n_heads, c.state_size]


def _single_node_model(N=36, **attrs):
    register_hla_schema()
    f = TensorProto.FLOAT
    node = helper.make_node("HLARecurrentStep", ["q", "k", "v", "state"], ["o", "state_out"], domain="hla_deploy",
                            **attrs)
    graph = helper.make_graph(
        [node], "one_hla",
        [helper.make_tensor_value_info("q", f, ["B", "T", 2, 4]), helper.make_tensor_value_info("k", f, ["B", "T", 2, 4]),
         helper.make_tensor_value_info("v", f, ["B", "T", 2, 5]), helper.make_tensor_value_info("state", f, ["B", 2, N])],
        [helper.make_tensor_value_info("o", f, [None] * 4), helper.make_tensor_value_info("state_out", f, [None] * 3)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("hla_deploy", 1)])
    m.ir_version = 9
    return m


def test_schema_defaults_and_single_node_shape_inference():
    m = _single_node_model()  # all attributes default: hla2, decay [1], no normalize, no ridge: N = 16 + 20
    onnx.checker.check_model(m, full_check=True)
    out = {v.name: v for v in onnx.shape_inference.infer_shapes(m, strict_mode=True).graph.output}
    assert _dims(out["o"]) == ["B", "T", 2, 5]
    assert _dims(out["state_out"]) == ["B", 2, 36]
    schema = onnx.defs.get_schema("HLARecurrentStep", 1, "hla_deploy")
    assert set(schema.attributes) == {"variant", "decay", "normalize", "eps", "ridge"}
    assert [i.name for i in schema.inputs] == ["q", "k", "v", "state"]


@pytest.mark.parametrize("attrs, N, match", [
    (dict(variant="hla9"), 36, "unknown HLA variant"),
    (dict(decay=[0.9, 0.8, 0.7]), 36, "decay"),
    (dict(decay=[1.5]), 36, "decay"),
    (dict(variant="hla3", decay=[0.9]), 56, "hla3"),
    (dict(ridge=0.1, variant="ahla"), 40, "ridge"),
    (dict(eps=-1.0), 36, "eps"),
    (dict(), 35, "state"),
    (dict(normalize=1), 36, "N=40"),
])
def test_checker_rejects_bad_attributes_and_state_size(attrs, N, match):
    with pytest.raises(Exception, match=match):
        onnx.checker.check_model(_single_node_model(N=N, **attrs), full_check=True)


def test_checker_rejects_wrong_attribute_type():
    with pytest.raises(onnx.checker.ValidationError, match="normalize"):
        onnx.checker.check_model(_single_node_model(normalize="yes"), full_check=True)


@pytest.mark.slow
def test_metadata_and_file_written(tmp_path):
    model = _model(**CONFIGS["ahla-decay"])
    out = export_onnx(model, None, tmp_path / "m.onnx", op="custom", dtype="fp16")
    assert out == tmp_path / "m.onnx" and out.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp file left
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["hla_deploy.config"]) == model.config.to_dict()
    assert HLAConfig.from_dict(json.loads(meta["hla_deploy.config"])) == model.config
    assert meta["hla_deploy.op_contract_version"] == str(hla_deploy.OP_CONTRACT_VERSION)
    assert meta["hla_deploy.version"] == hla_deploy.__version__
    assert meta["hla_deploy.op"] == "custom"
    assert meta["hla_deploy.dtype"] == "fp16"
    assert len(_hla_nodes(proto)) == model.config.n_layers


@pytest.mark.parametrize("name, dtype", [("hla2-perhead-decay-normalize-ridge", "fp32"), ("ahla-decay", "fp32"),
                                         ("hla3", "fp32"), ("ahla-decay", "fp16")])
def test_custom_graph_wiring_reproduces_torch_when_nodes_are_lowered(name, dtype, lm_custom_export):
    """Custom nodes -> standard lowering -> stock ORT == torch (prefill 9 tokens, then 5 decode steps)."""
    ort = pytest.importorskip("onnxruntime")
    model = _model(**CONFIGS[name])
    for tol in (1e-4 if dtype == "fp32" else 5e-2,):
        lowered = lower_custom_nodes(lm_custom_export(name, model, dtype))
        assert not _hla_nodes(lowered)
        onnx.checker.check_model(lowered, full_check=True)
        sess = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
        g = torch.Generator().manual_seed(5)
        ids = torch.randint(0, 256, (2, 9), generator=g)
        with torch.no_grad():
            lt, st = model(ids)
        lo, so = sess.run(None, {"input_ids": ids.numpy(), "state": np.zeros(tuple(st.shape), np.float32)})
        for step in range(6):
            err = rel_err if dtype == "fp32" else rel_rms
            assert err(torch.from_numpy(lo), lt) < tol, (dtype, step)
            assert err(torch.from_numpy(so), st) < tol, (dtype, step)
            tok = torch.randint(0, 256, (2, 1), generator=g)
            with torch.no_grad():
                lt, st = model(tok, st)
            lo, so = sess.run(None, {"input_ids": tok.numpy(), "state": so})
