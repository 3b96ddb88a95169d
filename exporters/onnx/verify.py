"""Run an exported graph at a second batch and length against the torch module (before writing).

For every symbolic dim of the graph inputs ("batch", "seq", ...) with example size s, the graph is
run at s + 1 and at 2 s + 1 (all symbolic dims together) in stock ONNX Runtime, custom nodes lowered
to standard ops (lower_custom_nodes of exporters/standard/lowering.py: no native library needed), and its
outputs are compared with the torch module's at the same inputs. On a failure each dim is tried
alone, and the error names the input(s) and dim(s) that break.

New inputs: an all-zero example (a fresh HLA state) stays zeros; integer tensors get seeded random
values in the example's range; floating tensors seeded normal values with the example's mean and
standard deviation.
Reference: the float32 module, also for dtype="fp16" (float16 activations are fed to it as
float32): the float16 torch module on the CPU is itself off by up to 8e-2 relative RMS on some
shapes, the float16 graph stays within 1e-2 of the float32 module.
Tolerance (outputs vs torch): fp32 max |a - b| <= 1e-3 max |b|; fp16 relative RMS <= 5e-2.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch
from torch.utils import _pytree as pytree

from .graph_checks import GraphCheckError, input_dims

FP32_TOL, FP16_TOL = 1e-3, 5e-2


def _new_tensor(example: torch.Tensor, shape, gen: torch.Generator) -> torch.Tensor:
    if not example.is_floating_point():
        if example.dtype == torch.bool:
            return torch.rand(shape, generator=gen) < 0.5
        lo, hi = (int(example.min()), int(example.max())) if example.numel() else (0, 1)
        return torch.randint(lo, hi + 1, tuple(shape), generator=gen, dtype=example.dtype)
    if not example.any():
        return torch.zeros(shape, dtype=example.dtype)
    e = example.detach().double()
    std = float(e.std()) if e.numel() > 1 else 1.0
    return (torch.randn(tuple(shape), generator=gen, dtype=torch.float64) * (std or 1.0)
            + float(e.mean())).to(example.dtype)


def _error(out: np.ndarray, ref: torch.Tensor, fp16: bool) -> float:
    a, b = torch.from_numpy(np.asarray(out)).double(), ref.detach().double()
    if fp16:
        return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30))
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _run_once(sess, module, args, leaves_idx, sizes: Dict[str, int], dims, names, fp16, gen):
    """None if graph == torch at these sizes, else a reason string."""
    flat, spec = pytree.tree_flatten(args)
    new_flat = list(flat)
    feeds = {}
    for j, leaf_i in enumerate(leaves_idx):
        ex = flat[leaf_i]
        shape = [sizes.get(d, ex.shape[i]) if isinstance(d, str) else ex.shape[i] for i, d in enumerate(dims[names[j]])]
        t = _new_tensor(ex, shape, gen)
        new_flat[leaf_i] = t
        feeds[names[j]] = t.numpy()
    if fp16:   # the reference is the float32 module: float16 activations go in as float32
        new_flat = [x.float() if isinstance(x, torch.Tensor) and x.dtype == torch.float16 else x for x in new_flat]
    new_args = pytree.tree_unflatten(new_flat, spec)
    try:
        with torch.no_grad():
            ref = [x for x in pytree.tree_leaves(module(*new_args)) if isinstance(x, torch.Tensor)]
    except Exception as e:  # the module itself does not run at this shape
        return (f"the torch module itself fails at these sizes ({type(e).__name__}: {str(e)[:300]}); "
                f"the dim is not dynamic in the model: pass dynamic_shapes to mark only the dynamic dims")
    try:
        outs = sess.run(None, feeds)
    except Exception as e:
        return f"ONNX Runtime fails ({type(e).__name__}: {str(e)[:400]})"
    if len(outs) != len(ref):
        return f"the graph has {len(outs)} outputs, the module returns {len(ref)} tensors"
    for o, r, vi in zip(outs, ref, sess.get_outputs()):
        if tuple(o.shape) != tuple(r.shape):
            return f"output {vi.name!r} has shape {tuple(o.shape)}, the torch module gives {tuple(r.shape)}"
        err = _error(o, r, fp16)
        if not np.isfinite(err) or err > (FP16_TOL if fp16 else FP32_TOL):
            return (f"output {vi.name!r} differs from the torch module: "
                    f"{'relative RMS' if fp16 else 'max |diff| / max |torch|'} = {err:.3g}")
    return None


def verify_against_module(proto, module, args, fp16: bool, what: str) -> List[Tuple[Dict[str, int], None]]:
    """Raise GraphCheckError naming the input/dim when the graph (run at new batch/length) differs
    from the module or fails; returns the size sets that passed."""
    import onnxruntime as ort

    from hla_deploy import OP_DOMAIN
    from ..standard.lowering import lower_custom_nodes

    runnable = lower_custom_nodes(proto) if any(n.domain == OP_DOMAIN for n in proto.graph.node) else proto
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(runnable.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    dims = input_dims(runnable)
    flat = pytree.tree_leaves(args)
    leaves_idx = [i for i, x in enumerate(flat) if isinstance(x, torch.Tensor)]
    if len(leaves_idx) != len(names):
        raise GraphCheckError(f"{what}: the graph has {len(names)} inputs but the example arguments hold "
                              f"{len(leaves_idx)} tensors; cannot check the export")
    example: Dict[str, int] = {}
    where: Dict[str, List[str]] = {}
    for j, n in enumerate(names):
        for i, d in enumerate(dims[n]):
            if isinstance(d, str):
                example.setdefault(d, int(flat[leaves_idx[j]].shape[i]))
                where.setdefault(d, []).append(f"input {n!r} dim {i}")
    passed = []
    gen = torch.Generator().manual_seed(1234)
    for grow in (lambda s: s + 1, lambda s: 2 * s + 1):
        sizes = {d: grow(s) for d, s in example.items()}
        reason = _run_once(sess, module, args, leaves_idx, sizes, dims, names, fp16, gen)
        if reason is None:
            passed.append(sizes)
            continue
        culprits = []
        for d, s in example.items():
            alone = _run_once(sess, module, args, leaves_idx, {d: sizes[d]}, dims, names, fp16, gen)
            if alone is not None:
                culprits.append(f"{', '.join(where[d])} ({d!r}: traced at {s}, run at {sizes[d]}): {alone}")
        if not culprits:
            culprits = [f"all dynamic dims together ({', '.join(f'{d}={v}' for d, v in sizes.items())}): {reason}"]
        raise GraphCheckError(f"{what}: the export is specialised or wrong at a second shape; not written. "
                              + " | ".join(culprits))
    return passed
