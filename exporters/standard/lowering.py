"""Lowering of one HLARecurrentStep node to standard ONNX ops (no custom library needed).

The T tokens of the call are computed as ONE chunk with T x T masked matrices and the carried
state folded in; the maths, its derivation and a numpy twin are in `standard_math.py` (checked in
float64 against the serial recurrence by tests/test_export_standard.py). It is exact in arithmetic
for any T >= 1 (decode T = 1 and prefills of thousands of tokens); memory and time grow as T^2, so
it is meant for moderate prefills, for runtimes without the custom op and as a benchmark baseline.

State is read and written in the contract layout (docs/OP_CONTRACT.md), always float32; fp16
activations are cast to float32 at the boundary and the output cast back, as the custom op does.

`emit_hla_standard(gb, q, k, v, state, ...)` appends the lowering to a GraphBuilder;
`standard_hla_graph(...)` makes a stand-alone graph with the same inputs, outputs and meaning as a
single HLARecurrentStep node (q, k, v, state -> o, state_out), for tests and benchmarks.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto

from .graph_builder import DTYPES, GraphBuilder
from ..node.attrs import check_hla_attributes, hla_state_parts

FLOAT = TensorProto.FLOAT


def _positions(gb: GraphBuilder, q: str):
    """From q [B, T, H, d]: posf [T] float (0..T-1), Tf [1] float, mask [T, T] bool (j <= t), Lf float."""
    T1 = gb.op("Shape", [q], start=1, end=2, hint="hla_T")                      # [1] int64
    T0 = gb.op("Squeeze", [T1, gb.const([0])], hint="hla_T_scalar")              # [] int64
    pos = gb.op("Range", [gb.const(0), T0, gb.const(1)], hint="hla_pos")       # [T] int64
    posf = gb.cast(pos, FLOAT, hint="hla_posf")
    Tf = gb.cast(T1, FLOAT, hint="hla_Tf")                                       # [1]
    diff = gb.op("Sub", [gb.unsqueeze(posf, [1]), gb.unsqueeze(posf, [0])], hint="hla_diff")  # [T, T] t - j
    mask = gb.op("GreaterOrEqual", [diff, gb.const(0.0, np.float32)], hint="hla_mask")     # [T, T]
    Lf = gb.cast(mask, FLOAT, hint="hla_L")
    return posf, Tf, diff, mask, Lf


def _decay_terms(gb: GraphBuilder, decay: Sequence[float], H: int, posf, Tf, diff, mask):
    """Dg [H,T,T], a [1,H,T,1], b [1,H,T,1], bT [1,H,1,T], gT [1,H,1,1] (see standard_math.py)."""
    g = np.asarray(decay, np.float32).reshape(-1)
    if g.size == 1:
        g = np.repeat(g, H)
    g3 = gb.const(g.reshape(H, 1, 1), np.float32, hint="hla_decay")
    g2 = gb.const(g.reshape(H, 1), np.float32, hint="hla_decay")
    one = gb.const(1.0, np.float32)
    zero = gb.const(0.0, np.float32)
    Dg = gb.op("Where", [mask, gb.op("Pow", [g3, gb.op("Relu", [diff])]), zero], hint="hla_Dg")  # [H, T, T]
    a = gb.op("Pow", [g2, gb.op("Add", [posf, one])], hint="hla_a")                              # [H, T]
    b = gb.op("Pow", [g2, gb.op("Sub", [gb.op("Sub", [Tf, one]), posf])], hint="hla_b")          # [H, T]
    gT = gb.op("Pow", [g2, Tf], hint="hla_gT")                                                    # [H, 1]
    return (Dg, gb.unsqueeze(a, [0, 3]), gb.unsqueeze(b, [0, 3]), gb.unsqueeze(b, [0, 2]),
            gb.unsqueeze(gT, [0, 3]))


def emit_hla_standard(gb: GraphBuilder, q: str, k: str, v: str, state: str, *, variant: str = "hla2",
                      decay: Union[float, Sequence[float]] = 1.0, normalize: int = 0, eps: float = 1e-6,
                      ridge: float = 0.0, H: int, d: int, dv: int, act_type: int = FLOAT) -> Tuple[str, str]:
    """Append the standard-op form of HLARecurrentStep. Returns (o, state_out) names.

    q, k: [B, T, H, d]; v: [B, T, H, dv] of act_type (float or float16); state: [B, H, N] float32.
    o: [B, T, H, dv] of act_type; state_out: [B, H, N] float32.
    """
    decay = check_hla_attributes(variant, decay, normalize, eps, ridge, H)
    normalize = int(normalize)
    if act_type != FLOAT:
        q, k, v = (gb.cast(x, FLOAT, hint=f"hla_{n}_f32") for x, n in ((q, "q"), (k, "k"), (v, "v")))
    Q = gb.transpose(q, [0, 2, 1, 3], hint="hla_Q")                                   # [B, H, T, d]
    K = gb.transpose(k, [0, 2, 1, 3], hint="hla_K")                                   # [B, H, T, d]
    V = gb.transpose(v, [0, 2, 1, 3], hint="hla_V")                                   # [B, H, T, dv]
    if normalize:  # V' = [V, 1]
        ones_shape = gb.op("Concat", [gb.op("Shape", [V], start=0, end=3), gb.const([1])], axis=0)
        ones = gb.op("Expand", [gb.const(np.ones((1, 1, 1, 1)), np.float32), ones_shape], hint="hla_ones")
        V = gb.op("Concat", [V, ones], axis=-1, hint="hla_Vaug")                     # [B, H, T, dv+1]
    posf, Tf, diff, mask, Lf = _positions(gb, q)
    decayed = any(g != 1.0 for g in decay)
    if decayed:
        Dg, a, b, bT, gT = _decay_terms(gb, decay, H, posf, Tf, diff, mask)
    else:
        Dg = Lf
    mm = lambda x, y, h="hla_mm": gb.op("MatMul", [x, y], hint=h)  # noqa: E731
    mul = lambda x, y, h="hla_mul": gb.op("Mul", [x, y], hint=h)  # noqa: E731
    add = lambda x, y, h="hla_add": gb.op("Add", [x, y], hint=h)  # noqa: E731
    Kt = gb.transpose(K, [0, 1, 3, 2], hint="hla_Kt")                                 # [B, H, d, T]
    Qt = gb.transpose(Q, [0, 1, 3, 2], hint="hla_Qt")                                 # [B, H, d, T]
    QK = mm(Q, Kt, "hla_QK")                                                          # [B, H, T, T]
    Wu = mul(Lf, QK, "hla_Wu")
    Wd = mul(Dg, QK, "hla_Wd") if decayed else Wu
    LT = gb.transpose(Lf, [1, 0], hint="hla_LT")
    KQ = gb.transpose(QK, [0, 1, 3, 2], hint="hla_KQ")                                # [B, H, T, T] k_i.q_j

    # ---- split the state [B, H, N] into its parts (contract layout)
    parts = hla_state_parts(variant, d, dv, normalize, ridge)
    st, off = {}, 0
    for name, shape in parts:
        size = int(np.prod(shape))
        piece = gb.slice(state, off, off + size, axis=2, hint=f"hla_state_{name}")
        st[name] = gb.reshape(piece, [0, 0] + list(shape) if len(shape) == 2 else [0, 0, size, 1],
                              hint=f"hla_{name}0")                                    # [B,H,r,c] / [B,H,d,1]
        off += size

    def aug(mat, vec):
        return gb.op("Concat", [st[mat], st[vec]], axis=-1, hint=f"hla_{mat}{vec}0") if normalize else st[mat]

    new = {}

    def unaug(x, mat, vec):
        if normalize:
            new[mat] = gb.slice(x, 0, dv, axis=3, hint=f"hla_{mat}1")
            new[vec] = gb.slice(x, dv, dv + 1, axis=3, hint=f"hla_{vec}1")
        else:
            new[mat] = x

    if variant == "hla2":
        S0, M0 = st["S"], aug("M", "n")
        QSQ = mm(mm(Q, S0), Qt, "hla_QSQ")
        inner = add(mul(a, QSQ) if decayed else QSQ, gb.matmul_t(Wd, Wu, "hla_WW"))
        out = mm(mul(Dg, inner, "hla_A"), V, "hla_AV")
        QM = mm(Q, M0, "hla_QM")
        out = add(mul(mul(a, a), QM) if decayed else QM, out, "hla_num")
        KQm = mul(LT, KQ, "hla_KQm")
        Vb = V
        if decayed:
            KQm = mul(mul(b, bT), KQm)
            Vb = mul(b, V, "hla_Vb")
        S0Qt = mm(S0, Qt, "hla_SQt")
        M1 = add(mm(S0Qt, mul(gT, Vb) if decayed else Vb), mm(Kt, mm(KQm, V)))
        M1 = add(mul(mul(gT, gT), M0) if decayed else M0, M1, "hla_M1")
        Kb = mul(b, K) if decayed else K
        new["S"] = add(mul(gT, S0) if decayed else S0, mm(Kt, Kb), "hla_S1")
        unaug(M1, "M", "n")
        if ridge != 0.0:
            C0 = aug("C", "m")
            QQ = mm(Q, Qt, "hla_QQ")
            QC = mm(Q, C0, "hla_QC")
            r = add(mul(a, QC) if decayed else QC, mm(mul(Dg, QQ), V))
            out = add(out, mul(gb.const(ridge, np.float32), r), "hla_num_ridge")
            unaug(add(mul(gT, C0) if decayed else C0, mm(Qt, Vb), "hla_C1"), "C", "m")
    elif variant == "ahla":
        P0, E0 = aug("P", "mK"), aug("E", "n")
        QP = mm(Q, P0, "hla_QP")
        R = add(mul(a, QP) if decayed else QP, mm(Wd, V), "hla_R")                 # row i = q_i^T P_i
        QE = mm(Q, E0, "hla_QE")
        out = add(mul(a, QE) if decayed else QE, mm(Wd, R), "hla_num")
        Vb, Rb = (mul(b, V), mul(b, R)) if decayed else (V, R)
        unaug(add(mul(gT, P0) if decayed else P0, mm(Kt, Vb), "hla_P1"), "P", "mK")
        unaug(add(mul(gT, E0) if decayed else E0, mm(Kt, Rb), "hla_E1"), "E", "n")
    else:  # hla3 (decay 1 checked above)
        S0, P0, F0 = st["S"], aug("P", "mK"), aug("F", "n")
        R = add(mm(Q, P0), mm(Wu, V), "hla_R")                                       # row b = q_b^T P_b
        QSQ = mm(mm(Q, S0), Qt, "hla_QSQ")
        A = mul(Lf, add(QSQ, gb.matmul_t(Wu, Wu, "hla_WW")), "hla_A")
        out = add(mm(Q, F0), mm(A, R), "hla_num")
        F1 = add(add(F0, mm(mm(S0, Qt), R)), mm(Kt, mm(mul(LT, KQ), R)), "hla_F1")
        new["S"] = add(S0, mm(Kt, K), "hla_S1")
        unaug(add(P0, mm(Kt, V), "hla_P1"), "P", "mK")
        unaug(F1, "F", "n")

    if normalize:
        num = gb.slice(out, 0, dv, axis=3, hint="hla_numv")
        den = add(gb.slice(out, dv, dv + 1, axis=3, hint="hla_den"), gb.const(eps, np.float32))
        out = gb.op("Div", [num, den], hint="hla_o_norm")
    o = gb.transpose(out, [0, 2, 1, 3], hint="hla_o")                                   # [B, T, H, dv]
    if act_type != FLOAT:
        o = gb.cast(o, act_type, hint="hla_o_cast")
    flat = [gb.reshape(new[name], [0, 0, -1], hint=f"hla_{name}_flat") for name, _ in parts]
    state_out = gb.op("Concat", flat, axis=2, hint="hla_state_out") if len(flat) > 1 else flat[0]
    return o, state_out


def standard_hla_graph(variant: str = "hla2", decay: Union[float, Sequence[float]] = 1.0, normalize: int = 0,
                       eps: float = 1e-6, ridge: float = 0.0, H: int = 2, d: int = 16, dv: int = 16,
                       dtype: str = "fp32") -> onnx.ModelProto:
    """A standard-op graph equivalent to ONE HLARecurrentStep node.

    Inputs q, k [B, T, H, d], v [B, T, H, dv] (float32 or float16 per dtype), state [B, H, N]
    float32; outputs o [B, T, H, dv] (activation dtype) and state_out [B, H, N] float32; B and T
    dynamic ("batch", "seq").
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    act = DTYPES[dtype][1]
    N = sum(int(np.prod(s)) for _, s in hla_state_parts(variant, d, dv, normalize, ridge))
    gb = GraphBuilder(f"hla_{variant}_standard")
    q = gb.input("q", act, ["batch", "seq", H, d])
    k = gb.input("k", act, ["batch", "seq", H, d])
    v = gb.input("v", act, ["batch", "seq", H, dv])
    state = gb.input("state", FLOAT, ["batch", H, N])
    o, st = emit_hla_standard(gb, q, k, v, state, variant=variant, decay=decay, normalize=normalize, eps=eps,
                              ridge=ridge, H=H, d=d, dv=dv, act_type=act)
    gb.op("Identity", [o], outputs=["o"])
    gb.op("Identity", [st], outputs=["state_out"])
    gb.output("o", act, ["batch", "seq", H, dv])
    gb.output("state_out", FLOAT, ["batch", H, N])
    return gb.make_model()


def lower_custom_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every hla_deploy::HLARecurrentStep node of `model` by its standard-op lowering.

    Turns a custom-op export into a graph any ONNX Runtime can run (same inputs, outputs and
    meaning). H, d and dv are read from the node inputs' shapes (ONNX shape inference with the
    registered schema), so they must be static. Returns a new ModelProto.
    """
    from onnx import helper

    from hla_deploy import OP_DOMAIN, OP_TYPE
    from ..node.schema import register_hla_schema

    register_hla_schema()
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {vi.name: vi.type.tensor_type for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
             + list(inferred.graph.output)}

    def static_dims(name):
        t = types.get(name)
        dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in t.shape.dim] if t else None
        if not dims or dims[2] is None or dims[3] is None:
            raise ValueError(f"HLARecurrentStep input {name!r}: shape inference did not give static H and "
                             f"head dims (got {dims}); cannot lower to standard ops")
        return t.elem_type, dims

    out = onnx.ModelProto()
    out.CopyFrom(model)
    new_nodes, extra_inits = [], []
    for idx, node in enumerate(model.graph.node):
        if not (node.op_type == OP_TYPE and node.domain == OP_DOMAIN):
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        variant = attrs.get("variant", b"hla2")
        act, qd = static_dims(node.input[0])
        _, vd = static_dims(node.input[2])
        gb = GraphBuilder(prefix=f"{node.name or 'HLARecurrentStep'}#{idx}/")   # names unique in the graph
        o, st = emit_hla_standard(
            gb, *node.input, variant=variant.decode() if isinstance(variant, bytes) else variant,
            decay=list(attrs.get("decay", [1.0])), normalize=int(attrs.get("normalize", 0)),
            eps=float(attrs.get("eps", 1e-6)), ridge=float(attrs.get("ridge", 0.0)),
            H=qd[2], d=qd[3], dv=vd[3], act_type=act)
        gb.op("Identity", [o], outputs=[node.output[0]])
        gb.op("Identity", [st], outputs=[node.output[1]])
        new_nodes.extend(gb.nodes)
        extra_inits.extend(gb.initializers)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    out.graph.initializer.extend(extra_inits)
    if not any(n.domain == OP_DOMAIN for n in new_nodes):
        keep = [o for o in out.opset_import if o.domain != OP_DOMAIN]
        del out.opset_import[:]
        out.opset_import.extend(keep)
    for prop in out.metadata_props:
        if prop.key == "hla_deploy.op":
            prop.value = "standard"
    return out
