"""The HLALanguageModel forward as an ONNX graph, op by op (see hla_deploy/models/model.py).

`build_lm_graph(config, weights, dtype, emit_hla)` builds the whole model; the HLA mixer of each
layer is delegated to `emit_hla(gb, q, k, v, state_i, layer, act_type) -> (o, state_out_i)`:
onnx_custom.py emits ONE HLARecurrentStep node, onnx_standard.py its standard-op lowering.

Graph interface (docs of the team brief, "Exported ONNX graph"):
    inputs   input_ids [batch, seq] int64,  state [L, batch, H, N] float32
    outputs  logits [batch, seq, V] float32, state_out [L, batch, H, N] float32

Mirrors the model exactly: rms(x, w) = x * 1/sqrt(mean(x*x) + rms_eps) * w, l2(x) =
x * 1/sqrt(sum(x*x) + QK_L2_EPS). In fp16 exports the weights and the residual stream are
float16, while the norms (rms, l2) are computed in float32 and cast back, as the torch model
does for half inputs; the HLA state stays float32 and the logits are cast to float32.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np
from onnx import TensorProto

from .graph_builder import DTYPES, GraphBuilder

FLOAT = TensorProto.FLOAT

#: emit_hla(gb, q, k, v, state_i, layer_index, act_type) -> (o, state_out_i)
HLAEmitter = Callable[[GraphBuilder, str, str, str, str, int, int], Tuple[str, str]]


def _qk_l2_eps() -> float:
    from hla_deploy.models.model import QK_L2_EPS
    return float(QK_L2_EPS)


class _LMBuilder:
    def __init__(self, config, weights: Dict[str, np.ndarray], dtype: str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.c = config
        self.w = weights
        self.np_dtype, self.act = DTYPES[dtype]
        self.gb = GraphBuilder("hla_language_model")

    def param(self, name: str, transpose: bool = False) -> str:
        """Initializer for parameter `name` (optionally transposed for x @ W^T) in the export dtype."""
        if name not in self.w:
            raise KeyError(f"model parameter {name!r} is missing from the state dict")
        arr = np.asarray(self.w[name], dtype=np.float32)
        if transpose:
            arr = arr.T
        arr = arr.astype(self.np_dtype)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"model parameter {name!r} is not finite in {np.dtype(self.np_dtype).name} "
                             f"(overflow when converting?)")
        return self.gb.weight(name + (".T" if transpose else ""), arr)

    def _to_f32(self, x: str) -> str:
        return x if self.act == FLOAT else self.gb.cast(x, FLOAT)

    def _from_f32(self, x: str) -> str:
        return x if self.act == FLOAT else self.gb.cast(x, self.act)

    def rms(self, x: str, weight_name: str, hint: str) -> str:
        """rms(x, w) over the last axis; float32 inside, result in the activation dtype."""
        gb = self.gb
        xf = self._to_f32(x)
        ms = gb.op("ReduceMean", [gb.op("Mul", [xf, xf])], axes=[-1], keepdims=1, hint=hint + "_ms")
        inv = gb.op("Reciprocal", [gb.op("Sqrt", [gb.op("Add", [ms, gb.const(self.c.rms_eps, np.float32)])])])
        w = self.gb.weight(weight_name, np.asarray(self.w[weight_name], np.float32).astype(self.np_dtype))
        y = gb.op("Mul", [gb.op("Mul", [xf, inv]), self._to_f32(w)], hint=hint)
        return self._from_f32(y)

    def l2(self, x: str, hint: str) -> str:
        """l2(x) over the last axis (head dim); float32 inside, result in the activation dtype."""
        gb = self.gb
        xf = self._to_f32(x)
        ss = gb.op("ReduceSum", [gb.op("Mul", [xf, xf]), gb.const([-1])], keepdims=1, hint=hint + "_ss")
        inv = gb.op("Reciprocal", [gb.op("Sqrt", [gb.op("Add", [ss, gb.const(_qk_l2_eps(), np.float32)])])])
        return self._from_f32(gb.op("Mul", [xf, inv], hint=hint))

    def linear(self, x: str, name: str) -> str:
        """x @ W^T for parameter `name` [out, in]."""
        return self.gb.op("MatMul", [x, self.param(name, transpose=True)], hint=name.replace(".weight", ""))

    def build(self, emit_hla: HLAEmitter):
        c, gb = self.c, self.gb
        H, d, dv, L, N, V = c.n_heads, c.head_dim, c.value_dim, c.n_layers, c.state_size, c.vocab_size
        ids = gb.input("input_ids", TensorProto.INT64, ["batch", "seq"])
        state = gb.input("state", FLOAT, [L, "batch", H, N])
        embed = self.param("embed.weight")                                       # [V, D]
        x = gb.op("Gather", [embed, ids], axis=0, hint="embed")                  # [B, T, D]
        states_out = []
        for i in range(L):
            p = f"blocks.{i}."
            h = self.rms(x, p + "attn_norm.weight", p + "attn_norm")
            q = self.l2(gb.reshape(self.linear(h, p + "attn.q_proj.weight"), [0, 0, H, d]), p + "attn.q")
            k = self.l2(gb.reshape(self.linear(h, p + "attn.k_proj.weight"), [0, 0, H, d]), p + "attn.k")
            v = gb.reshape(self.linear(h, p + "attn.v_proj.weight"), [0, 0, H, dv], hint=p + "attn.v")
            s_i = gb.op("Gather", [state, gb.const(i)], axis=0, hint=f"state_{i}")   # [B, H, N]
            o, s_out = emit_hla(gb, q, k, v, s_i, i, self.act)                    # [B, T, H, dv], [B, H, N]
            states_out.append(gb.unsqueeze(s_out, [0], hint=f"state_out_{i}"))
            o = self.rms(o, p + "attn.head_norm.weight", p + "attn.head_norm")
            o = gb.reshape(o, [0, 0, H * dv], hint=p + "attn.o_flat")
            x = gb.op("Add", [x, self.linear(o, p + "attn.o_proj.weight")], hint=p + "resid_attn")
            h = self.rms(x, p + "mlp_norm.weight", p + "mlp_norm")
            g = self.linear(h, p + "mlp.gate_proj.weight")
            silu = gb.op("Mul", [g, gb.op("Sigmoid", [g])], hint=p + "mlp.silu")
            up = self.linear(h, p + "mlp.up_proj.weight")
            x = gb.op("Add", [x, self.linear(gb.op("Mul", [silu, up]), p + "mlp.down_proj.weight")],
                      hint=p + "resid_mlp")
        x = self.rms(x, "norm.weight", "norm")
        # logits = x @ W^T with W = embed.weight (tied) or lm_head.weight, via Gemm(transB) on [B*T, D]
        head = embed if c.tie_embeddings else self.param("lm_head.weight")
        x2 = gb.reshape(x, [-1, c.d_model], hint="head_in")
        lg = gb.op("Gemm", [x2, head], transB=1, hint="lm_head")                  # [B*T, V]
        out_shape = gb.op("Concat", [gb.op("Shape", [ids]), gb.const([V])], axis=0, hint="logits_shape")
        lg = gb.op("Reshape", [lg, out_shape], hint="logits_act")
        if self.act != FLOAT:
            lg = gb.cast(lg, FLOAT, hint="logits_f32")
        gb.op("Identity", [lg], outputs=["logits"])
        gb.op("Concat", states_out, axis=0, outputs=["state_out"])
        gb.output("logits", FLOAT, ["batch", "seq", V])
        gb.output("state_out", FLOAT, [L, "batch", H, N])
        return gb


def build_lm_graph(config, weights: Dict[str, np.ndarray], dtype: str, emit_hla: HLAEmitter) -> GraphBuilder:
    """Build the language-model graph; returns the GraphBuilder (call .make_model(metadata))."""
    return _LMBuilder(config, weights, dtype).build(emit_hla)


def model_weights(model) -> Dict[str, np.ndarray]:
    """The model's state dict as float32 numpy arrays (names as in hla_deploy/models/model.py)."""
    return {name: t.detach().to("cpu").float().numpy() for name, t in model.state_dict().items()}
