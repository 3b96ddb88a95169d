"""Example arguments and default dynamic shapes for export_onnx (any nn.Module).

Default when dynamic_shapes=None (what a user exporting a sequence model expects):
- every tensor argument's dim 0 is the shared dynamic "batch";
- every tensor argument of rank >= 2 that is not an HLA state has a dynamic dim 1, "seq";
- an HLA state argument is one the forward passes (or a view of which it passes) as the state of
  an HLA call (found by running the forward once on the example), or whose parameter name contains
  "state"; its batch dim is its first dim whose example size equals the batch of the other
  arguments (dim 0 of [B, H, N]; dim 1 of a stacked [L, B, H, N] when L != B), and it has no seq dim.
Anything else: pass dynamic_shapes as torch.export takes it (names as strings, or torch.export.Dim).
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Tuple

import torch


def positional_args(module, example_inputs) -> Tuple[Tuple[Any, ...], List[str]]:
    """(args tuple, forward parameter names for them). example_inputs: a tensor, a tuple/list of
    positional args, or a dict of keyword args (put in the forward's parameter order)."""
    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params]
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, dict):
        unknown = sorted(set(example_inputs) - set(names))
        if unknown:
            raise ValueError(f"example_inputs has keys {unknown} that are not positional parameters of "
                             f"{type(module).__name__}.forward {names}")
        last = max(names.index(k) for k in example_inputs) if example_inputs else -1
        args = []
        for p in params[:last + 1]:
            if p.name in example_inputs:
                args.append(example_inputs[p.name])
            elif p.default is not inspect.Parameter.empty:
                args.append(p.default)
            else:
                raise ValueError(f"example_inputs lacks {p.name!r}, a required argument of "
                                 f"{type(module).__name__}.forward")
        example_inputs = tuple(args)
    if not isinstance(example_inputs, (tuple, list)):
        raise TypeError(f"example_inputs must be a tensor, a tuple of positional arguments or a dict of "
                        f"keyword arguments, got {type(example_inputs).__name__}")
    args = tuple(example_inputs)
    arg_names = names[:len(args)] if len(names) >= len(args) else [f"arg{i}" for i in range(len(args))]
    return args, arg_names


def run_and_find_states(module, args):
    """(the module's outputs on args, set of storage pointers of the tensors passed as `state` to
    torch.ops.hla_deploy.hla_recurrent_step), from one forward under no_grad."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import hla_deploy.ops  # noqa: F401
    op = torch.ops.hla_deploy.hla_recurrent_step.default
    seen = set()

    class _Probe(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, a=(), kw=None):
            if func is op:
                seen.add(a[3].untyped_storage().data_ptr())
            return func(*a, **(kw or {}))

    with torch.no_grad(), _Probe():
        outputs = module(*args)
    return outputs, seen


def is_state(arg, name: str, state_storages=()) -> bool:
    return isinstance(arg, torch.Tensor) and ("state" in name.lower()
                                              or arg.untyped_storage().data_ptr() in state_storages)


def default_dynamic_shapes(args, names, state_storages=()) -> Dict[str, Optional[Dict[int, str]]]:
    """The default dynamic dims (module docstring), keyed by forward parameter name."""
    batch = next((a.shape[0] for a, n in zip(args, names) if isinstance(a, torch.Tensor) and a.dim() >= 1
                  and not is_state(a, n, state_storages)), None)
    out: Dict[str, Optional[Dict[int, str]]] = {}
    for a, n in zip(args, names):
        if not isinstance(a, torch.Tensor) or a.dim() == 0:
            out[n] = None
        elif is_state(a, n, state_storages):
            dims = [i for i, s in enumerate(a.shape) if batch is not None and s == batch]
            out[n] = {dims[0]: "batch"} if dims else None
        else:
            out[n] = {0: "batch", 1: "seq"} if a.dim() >= 2 else {0: "batch"}
    return out


def requested_dynamic_dims(dynamic_shapes, names) -> Dict[str, Dict[int, str]]:
    """{parameter name: {dim: label}} for a top-level dict (by name) or tuple (by position) of
    per-argument {dim: spec} dicts; labels are the strings or Dim names. Nested specs are skipped."""
    if dynamic_shapes is None:
        return {}
    if isinstance(dynamic_shapes, dict):
        items = [(n, dynamic_shapes.get(n)) for n in names]
    elif isinstance(dynamic_shapes, (tuple, list)):
        items = list(zip(names, dynamic_shapes))
    else:
        return {}
    out = {}
    for n, spec in items:
        if isinstance(spec, dict):
            out[n] = {int(i): (s if isinstance(s, str) else getattr(s, "__name__", str(s)))
                      for i, s in spec.items() if s is not None}
    return out
