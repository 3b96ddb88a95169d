"""ONNX schema of the custom op HLARecurrentStep (domain `hla_deploy`, version 1).

`register_hla_schema()` registers an `onnx.defs.OpSchema` with onnx's schema registry, so that
`onnx.checker.check_model(model, full_check=True)` validates the node's inputs, outputs, types and
attribute types, and ONNX shape inference (`onnx.shape_inference.infer_shapes`) gives the
outputs' types and shapes:

    o         [B, T, H, dv]  dtype of q (float, float16 or bfloat16)
    state_out [B, H, N]      float32, N = state_size(variant, d, dv, normalize, ridge)

The inference function also checks the attribute VALUES and the input shapes against
docs/OP_CONTRACT.md (unknown variant, decay out of (0, 1] or of wrong length, state last dim != N,
...) and fails inference with a message naming the attribute or tensor. Registration is
idempotent. This schema is for onnx's checker and shape inference only: ONNX Runtime and TensorRT
get the op from our custom-op library / plugin.
"""
from __future__ import annotations

import threading

import onnx
from onnx import TensorProto, helper
from onnx.defs import OpSchema

from hla_deploy import OP_DOMAIN, OP_TYPE

from .attrs import check_hla_attributes, hla_state_size

SCHEMA_VERSION = 1
_lock = threading.Lock()

DOC = """HLARecurrentStep: one Higher-order Linear Attention mixer over T tokens with a carried
float32 state (docs/OP_CONTRACT.md of hla-deploy, contract version 1). T = 1 is a decode step,
T > 1 a prefill; state is the state after the tokens already seen, state_out after these T."""


def _attr(name, value, doc):
    return OpSchema.Attribute(name, helper.make_attribute(name, value), doc)


def _dims(type_proto):
    """Dims of a tensor TypeProto as a list of (int | str | None), or None if the rank is unknown."""
    t = type_proto.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for dim in t.shape.dim:
        if dim.HasField("dim_value"):
            out.append(dim.dim_value)
        elif dim.HasField("dim_param"):
            out.append(dim.dim_param)
        else:
            out.append(None)
    return out


def _get_attr(ctx, name, default):
    a = ctx.get_attribute(name)
    if a is None:
        return default
    return helper.get_attribute_value(a)


def _infer(ctx) -> None:
    """Type and shape inference (and contract checks) for one HLARecurrentStep node."""
    variant = _get_attr(ctx, "variant", b"hla2")
    variant = variant.decode() if isinstance(variant, bytes) else variant
    decay = list(_get_attr(ctx, "decay", [1.0]))
    normalize = int(_get_attr(ctx, "normalize", 0))
    eps = float(_get_attr(ctx, "eps", 1e-6))
    ridge = float(_get_attr(ctx, "ridge", 0.0))
    qt, kt, vt, st = (ctx.get_input_type(i) for i in range(4))
    q_elem = qt.tensor_type.elem_type
    for name, t in (("k", kt), ("v", vt)):
        if t.tensor_type.elem_type not in (0, q_elem):
            raise ValueError(f"HLARecurrentStep input '{name}' has dtype "
                             f"{TensorProto.DataType.Name(t.tensor_type.elem_type)}, expected q's dtype "
                             f"{TensorProto.DataType.Name(q_elem)}")
    if st.tensor_type.elem_type not in (0, TensorProto.FLOAT):
        raise ValueError("HLARecurrentStep input 'state' must be float32, got "
                         f"{TensorProto.DataType.Name(st.tensor_type.elem_type)}")
    q, k, v, s = _dims(qt), _dims(kt), _dims(vt), _dims(st)
    for name, dims, rank in (("q", q, 4), ("k", k, 4), ("v", v, 4), ("state", s, 3)):
        if dims is not None and len(dims) != rank:
            raise ValueError(f"HLARecurrentStep input '{name}' must have rank {rank}, got shape {dims}")
    H = q[2] if q is not None and isinstance(q[2], int) else None
    check_hla_attributes(variant, decay, normalize, eps, ridge, H)
    d = q[3] if q is not None and isinstance(q[3], int) else None
    if k is not None and d is not None and isinstance(k[3], int) and k[3] != d:
        raise ValueError(f"HLARecurrentStep input 'k' last dim {k[3]} != q's last dim {d}")
    dv = v[3] if v is not None and isinstance(v[3], int) else None
    N = hla_state_size(variant, d, dv, normalize, ridge) if d and dv else None
    if s is not None and N is not None and isinstance(s[2], int) and s[2] != N:
        raise ValueError(f"HLARecurrentStep input 'state' has last dim {s[2]}, expected N={N} for "
                         f"variant={variant}, d={d}, dv={dv}, normalize={normalize}, ridge={ridge}")

    def pick(*cands):
        ints = [c for c in cands if isinstance(c, int)]
        if ints:
            return ints[0]
        strs = [c for c in cands if isinstance(c, str)]
        return strs[0] if strs else None

    B = pick(*(x[0] for x in (q, k, v, s) if x is not None))
    T = pick(*(x[1] for x in (q, k, v) if x is not None))
    Hh = pick(*([x[2] for x in (q, k, v) if x is not None] + ([s[1]] if s is not None else [])))
    o_shape = [B, T, Hh, dv] if (q is not None or v is not None) else None
    s_shape = [B, Hh, N if N is not None else (s[2] if s is not None else None)]
    ctx.set_output_type(0, helper.make_tensor_type_proto(q_elem, o_shape))
    ctx.set_output_type(1, helper.make_tensor_type_proto(TensorProto.FLOAT, s_shape))


def build_hla_schema() -> OpSchema:
    """The OpSchema object (not registered)."""
    acts = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
    schema = OpSchema(
        OP_TYPE, OP_DOMAIN, SCHEMA_VERSION, DOC,
        inputs=[
            OpSchema.FormalParameter("q", "T", "queries [B, T, H, d]"),
            OpSchema.FormalParameter("k", "T", "keys [B, T, H, d]"),
            OpSchema.FormalParameter("v", "T", "values [B, T, H, dv]"),
            OpSchema.FormalParameter("state", "S", "float32 state [B, H, N] after the tokens already seen"),
        ],
        outputs=[
            OpSchema.FormalParameter("o", "T", "output [B, T, H, dv], dtype of q"),
            OpSchema.FormalParameter("state_out", "S", "float32 state [B, H, N] after these T tokens"),
        ],
        type_constraints=[("T", acts, "activation dtype"), ("S", ["tensor(float)"], "state is float32")],
        attributes=[
            _attr("variant", "hla2", "hla2 | ahla | hla3"),
            _attr("decay", [1.0], "gamma in (0, 1]: 1 value or H values"),
            _attr("normalize", 0, "1: divide the output by the normalizer"),
            _attr("eps", 1e-6, "added to the normalizer"),
            _attr("ridge", 0.0, "lambda >= 0, hla2 only"),
        ],
    )
    if hasattr(schema, "set_type_and_shape_inference_function"):  # onnx >= 1.16
        schema.set_type_and_shape_inference_function(_infer)
    return schema


def register_hla_schema() -> bool:
    """Register the HLARecurrentStep schema with onnx (idempotent). Returns True if newly registered."""
    with _lock:
        try:
            onnx.defs.get_schema(OP_TYPE, SCHEMA_VERSION, OP_DOMAIN)
            return False
        except onnx.defs.SchemaError:
            pass
        onnx.defs.register_schema(build_hla_schema())
        return True
