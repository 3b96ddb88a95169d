"""The compact recurrent state of HLARecurrentStep: one float32 tensor [B, H, N] per layer.

The layout is defined in docs/OP_CONTRACT.md ("State layout"); this module is its single
Python implementation. Parts are row-major and concatenated in the order below
(d = key/query head dim, dv = value head dim):

    hla2: S (d, d), M (d, dv), [n (d) if normalize], [C (d, dv), [m (d) if normalize] if ridge != 0]
    ahla: P (d, dv), E (d, dv), [mK (d), n (d) if normalize]
    hla3: S (d, d), P (d, dv), F (d, dv), [mK (d), n (d) if normalize]

Meaning (per head, HLA_MATH.md): hla2 M = S C - G and n = S m - h (compact second-order state),
C = sum q v^T and m = sum q (only kept for the ridge output term); ahla P = sum k v^T,
E = sum k (q^T P), mK = sum k, n = sum k (q^T mK); hla3 S = sum k k^T, P = sum k v^T,
F = sum (S q)(q^T P), mK, n as for ahla.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from hla_deploy.state_layout import VARIANTS, _check_variant, state_parts, state_size  # noqa: F401  (torch-free, ONE copy)


def split_state(state: torch.Tensor, variant: str, d: int, dv: int, normalize: bool = False,
                ridge: float = 0.0) -> Dict[str, torch.Tensor]:
    """Split a state [..., N] into named views [..., *shape] (no copy)."""
    expected = state_size(variant, d, dv, normalize, ridge)
    if state.shape[-1] != expected:
        raise ValueError(f"state has last dim {state.shape[-1]}, expected N={expected} for "
                         f"variant={variant}, d={d}, dv={dv}, normalize={normalize}, ridge={ridge}")
    out, off = {}, 0
    for name, shape in state_parts(variant, d, dv, normalize, ridge):
        n = 1
        for s in shape:
            n *= s
        out[name] = state[..., off:off + n].unflatten(-1, shape) if len(shape) > 1 else state[..., off:off + n]
        off += n
    return out


def join_state(parts: Dict[str, torch.Tensor], variant: str, d: int, dv: int, normalize: bool = False,
               ridge: float = 0.0) -> torch.Tensor:
    """Inverse of split_state: named parts [..., *shape] -> state [..., N]."""
    flat = []
    for name, shape in state_parts(variant, d, dv, normalize, ridge):
        if name not in parts:
            raise ValueError(f"state part {name!r} missing for variant={variant}")
        t = parts[name]
        if tuple(t.shape[t.dim() - len(shape):]) != shape:
            raise ValueError(f"state part {name!r} has shape {tuple(t.shape)}, expected [..., {shape}]")
        flat.append(t.reshape(*t.shape[:t.dim() - len(shape)], -1))
    return torch.cat(flat, dim=-1)


def paper_state_to_compact(S: torch.Tensor, C: torch.Tensor, G: torch.Tensor, m: torch.Tensor = None,
                           h: torch.Tensor = None, *, normalize: bool = False,
                           ridge: float = 0.0) -> torch.Tensor:
    """Convert the paper's hla2 streaming state (S, C, m, G, h) to the compact layout.

    S: [..., d, d], C, G: [..., d, dv], m, h: [..., d] (needed when normalize).
    Returns [..., N] with M = S C - G, n = S m - h (and C, m kept when ridge != 0).
    """
    d, dv = C.shape[-2], C.shape[-1]
    parts = {"S": S, "M": S @ C - G}
    if normalize:
        if m is None or h is None:
            raise ValueError("normalize=True needs the paper's m and h")
        parts["n"] = (S @ m.unsqueeze(-1)).squeeze(-1) - h
        parts["m"] = m
    parts["C"] = C
    return join_state(parts, "hla2", d, dv, normalize, ridge)


# ---------------------------------------------------------------------------------------------
# Augmented-value form used by the chunk and naive forms.
#
# Every normaliser part is the value-side part run on a value column of ones:
#   hla2: n is M's ones column, m is C's;  ahla: mK is P's, n is E's;  hla3: mK is P's, n is F's.
# So the forms run on v_aug = [v, 1] (dv + 1 columns when normalize) and carry "augmented"
# parts with e = dv (+ 1) columns:
#   hla2: S (d, d), M (d, e), [C (d, e) if ridge != 0]
#   ahla: P (d, e), E (d, e)
#   hla3: S (d, d), P (d, e), F (d, e)
# ---------------------------------------------------------------------------------------------
_VALUE_PART_NORMALISER = {  # value-side part -> the normaliser part that is its ones column
    "hla2": {"M": "n", "C": "m"},
    "ahla": {"P": "mK", "E": "n"},
    "hla3": {"P": "mK", "F": "n"},
}


def augmented_parts(state: torch.Tensor, variant: str, d: int, dv: int, normalize: bool = False,
                    ridge: float = 0.0) -> Dict[str, torch.Tensor]:
    """Contract state [..., N] -> augmented parts (see above); copies only when normalize."""
    parts = split_state(state, variant, d, dv, normalize, ridge)
    out = {}
    for name, t in parts.items():
        if name in _VALUE_PART_NORMALISER[variant].values():
            continue
        norm_name = _VALUE_PART_NORMALISER[variant].get(name)
        if normalize and norm_name is not None:
            t = torch.cat([t, parts[norm_name].unsqueeze(-1)], dim=-1)
        out[name] = t
    return out


def state_from_augmented(aug: Dict[str, torch.Tensor], variant: str, d: int, dv: int,
                         normalize: bool = False, ridge: float = 0.0) -> torch.Tensor:
    """Inverse of augmented_parts: augmented parts -> contract state [..., N]."""
    parts = {}
    for name, t in aug.items():
        norm_name = _VALUE_PART_NORMALISER[variant].get(name)
        if normalize and norm_name is not None:
            parts[name], parts[norm_name] = t[..., :dv], t[..., dv]
        else:
            parts[name] = t
    return join_state(parts, variant, d, dv, normalize, ridge)
