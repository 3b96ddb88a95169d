"""Float64 serial reference of the HLA operator, independent of ``hla_deploy.ops``.

    ref_hla(q, k, v, variant, decay, normalize, eps, ridge, initial_state=None) -> (o, state)

q, k: [B, T, H, d], v: [B, T, H, dv] (any float dtype; computed in float64);
decay: float or H floats; initial_state: [B, H, N] in the contract layout (docs/OP_CONTRACT.md)
or None. Returns o [B, T, H, dv] float64 and the final state [B, H, N] float64.

Written from HLA_MATH.md, not from the package: hla2 runs the paper's (S, C, m, G, h) serial
recurrence with the corrected decay of HLA_MATH.md §2 (G <- γ²G + γ k kᵀC_prev) and converts to
the compact state at the end (M = S C − G, n = S m − h); ahla and hla3 run their serial updates
(§3, §4). The state layout is packed here by hand. Loops over tokens, vectorised over (B, H).
``brute_force_hla`` is the definition as explicit nested sums (tiny sizes only); the tests check
``ref_hla`` against it, so both may be used as ground truth.
"""
from __future__ import annotations

import torch

f64 = torch.float64


def _layout(variant, d, dv, normalize, ridge):
    """(name, shape) parts of the contract state, in order (written independently of state.py)."""
    if variant == "hla2":
        parts = [("S", (d, d)), ("M", (d, dv))] + ([("n", (d,))] if normalize else [])
        if ridge != 0:
            parts += [("C", (d, dv))] + ([("m", (d,))] if normalize else [])
        return parts
    if variant == "ahla":
        return [("P", (d, dv)), ("E", (d, dv))] + ([("mK", (d,)), ("n", (d,))] if normalize else [])
    if variant == "hla3":
        return [("S", (d, d)), ("P", (d, dv)), ("F", (d, dv))] + \
            ([("mK", (d,)), ("n", (d,))] if normalize else [])
    raise ValueError(variant)


def ref_state_size(variant, d, dv, normalize, ridge):
    total = 0
    for _, shape in _layout(variant, d, dv, normalize, ridge):
        total += shape[0] * (shape[1] if len(shape) > 1 else 1)
    return total


def ref_unpack(state, variant, d, dv, normalize, ridge):
    """[B, H, N] -> dict of float64 [B, H, *shape] copies."""
    out, off = {}, 0
    for name, shape in _layout(variant, d, dv, normalize, ridge):
        n = shape[0] * (shape[1] if len(shape) > 1 else 1)
        out[name] = state[..., off:off + n].to(f64).reshape(*state.shape[:-1], *shape).clone()
        off += n
    assert off == state.shape[-1], (off, state.shape)
    return out


def ref_pack(parts, variant, d, dv, normalize, ridge):
    names = [name for name, _ in _layout(variant, d, dv, normalize, ridge)]
    B, H = parts[names[0]].shape[:2]
    return torch.cat([parts[n].reshape(B, H, -1) for n in names], dim=-1)


def _gammas(decay, H):
    g = torch.as_tensor(decay, dtype=f64).reshape(-1)
    return (g.expand(H) if g.numel() == 1 else g).clone()


def ref_hla(q, k, v, variant, decay=1.0, normalize=False, eps=1e-6, ridge=0.0, initial_state=None):
    q, k, v = q.to(f64), k.to(f64), v.to(f64)
    B, T, H, d = q.shape
    dv = v.shape[-1]
    N = ref_state_size(variant, d, dv, normalize, ridge)
    if initial_state is None:
        initial_state = torch.zeros(B, H, N, dtype=f64)
    st = ref_unpack(initial_state, variant, d, dv, normalize, ridge)
    g = _gammas(decay, H).view(1, H, 1, 1)  # for [B, H, r, c]
    gv = g[..., 0]                           # for [B, H, r]
    mv = lambda A, x: torch.einsum("bhrc,bhc->bhr", A, x)   # noqa: E731
    vm = lambda x, A: torch.einsum("bhr,bhrc->bhc", x, A)   # noqa: E731
    outer = lambda x, y: torch.einsum("bhr,bhc->bhrc", x, y)  # noqa: E731
    dot = lambda x, y: (x * y).sum(-1, keepdim=True)        # noqa: E731
    outs = []
    if variant == "hla2":
        S = st["S"]
        C = st["C"] if ridge != 0 else torch.zeros(B, H, d, dv, dtype=f64)
        m = st["m"] if (ridge != 0 and normalize) else torch.zeros(B, H, d, dtype=f64)
        G = S @ C - st["M"]                         # M = S C - G
        h = mv(S, m) - (st["n"] if normalize else 0)  # n = S m - h
        for t in range(T):
            qt, kt, vt = q[:, t], k[:, t], v[:, t]
            G = g * g * G + g * outer(kt, vm(kt, C))   # uses C, m before the update
            h = gv * gv * h + gv * kt * dot(kt, m)
            S = g * S + outer(kt, kt)
            C = g * C + outer(qt, vt)
            m = gv * m + qt
            o = vm(qt, S @ C - G) + ridge * vm(qt, C)
            if normalize:
                o = o / (dot(qt, mv(S, m) - h) + ridge * dot(qt, m) + eps)
            outs.append(o)
        final = {"S": S, "M": S @ C - G, "n": mv(S, m) - h, "C": C, "m": m}
    elif variant == "ahla":
        P, E = st["P"], st["E"]
        mK = st["mK"] if normalize else torch.zeros(B, H, d, dtype=f64)
        n = st["n"] if normalize else torch.zeros(B, H, d, dtype=f64)
        for t in range(T):
            qt, kt, vt = q[:, t], k[:, t], v[:, t]
            P = g * P + outer(kt, vt)
            mK = gv * mK + kt
            E = g * E + outer(kt, vm(qt, P))
            n = gv * n + kt * dot(qt, mK)
            o = vm(qt, E)
            outs.append(o / (dot(qt, n) + eps) if normalize else o)
        final = {"P": P, "E": E, "mK": mK, "n": n}
    elif variant == "hla3":
        if bool((_gammas(decay, H) != 1).any()):
            raise ValueError("hla3 reference: decay must be 1")
        S, P, F = st["S"], st["P"], st["F"]
        mK = st["mK"] if normalize else torch.zeros(B, H, d, dtype=f64)
        n = st["n"] if normalize else torch.zeros(B, H, d, dtype=f64)
        for t in range(T):
            qt, kt, vt = q[:, t], k[:, t], v[:, t]
            S = S + outer(kt, kt)
            P = P + outer(kt, vt)
            mK = mK + kt
            u = mv(S, qt)
            F = F + outer(u, vm(qt, P))
            n = n + u * dot(qt, mK)
            o = vm(qt, F)
            outs.append(o / (dot(qt, n) + eps) if normalize else o)
        final = {"S": S, "P": P, "F": F, "mK": mK, "n": n}
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return torch.stack(outs, dim=1), ref_pack(final, variant, d, dv, normalize, ridge)


def brute_force_hla(q, k, v, variant, decay=1.0, normalize=False, eps=1e-6, ridge=0.0):
    """The definitions of HLA_MATH.md as explicit nested sums (python floats; tiny T only).

    hla2: o_t = Σ_{j≤t} Σ_{i≤j} γ^{(t-i)+(t-j)} (q_t·k_i)(k_i·q_j) v_j  [+ λ Σ_{j≤t} γ^{t-j} (q_t·q_j) v_j]
    ahla: o_t = Σ_{j≤t} Σ_{j≤i≤t} γ^{t-j} (q_t·k_i)(q_i·k_j) v_j
    hla3: o_t = Σ_{b≤t} Σ_{a≤b} (q_t·k_a)(k_a·q_b) Σ_{c≤b} (q_b·k_c) v_c
    normalize: numerator / (the same sum with v ≡ 1, + eps).
    """
    q, k, v = q.to(f64), k.to(f64), v.to(f64)
    B, T, H, d = q.shape
    dv = v.shape[-1]
    gam = _gammas(decay, H).tolist()
    out = torch.zeros(B, T, H, dv, dtype=f64)
    for b in range(B):
        for hh in range(H):
            g = gam[hh]
            Q, K, V = q[b, :, hh].tolist(), k[b, :, hh].tolist(), v[b, :, hh].tolist()
            dt = lambda x, y: sum(xi * yi for xi, yi in zip(x, y))  # noqa: E731
            for t in range(T):
                num, den = [0.0] * dv, 0.0
                def add(w, j):
                    nonlocal den
                    for c in range(dv):
                        num[c] += w * V[j][c]
                    den += w
                if variant == "hla2":
                    for j in range(t + 1):
                        for i in range(j + 1):
                            add(g ** ((t - i) + (t - j)) * dt(Q[t], K[i]) * dt(K[i], Q[j]), j)
                        if ridge != 0:
                            add(ridge * g ** (t - j) * dt(Q[t], Q[j]), j)
                elif variant == "ahla":
                    for j in range(t + 1):
                        for i in range(j, t + 1):
                            add(g ** (t - j) * dt(Q[t], K[i]) * dt(Q[i], K[j]), j)
                else:
                    assert g == 1.0
                    for bb in range(t + 1):
                        for a in range(bb + 1):
                            w_ab = dt(Q[t], K[a]) * dt(K[a], Q[bb])
                            for c in range(bb + 1):
                                add(w_ab * dt(Q[bb], K[c]), c)
                for c in range(dv):
                    out[b, t, hh, c] = num[c] / (den + eps) if normalize else num[c]
    return out


def paper_hla2_serial(q, k, v, decay=1.0):
    """The paper's hla2 streaming state (S, C, m, G, h) after all tokens, with HLA_MATH.md §2 decay.

    Returns S [B, H, d, d], C [B, H, d, dv], m [B, H, d], G [B, H, d, dv], h [B, H, d] (float64),
    one token at a time, plain loops over (b, h) — for checking paper_state_to_compact.
    """
    q, k, v = q.to(f64), k.to(f64), v.to(f64)
    B, T, H, d = q.shape
    dv = v.shape[-1]
    gam = _gammas(decay, H).tolist()
    S = torch.zeros(B, H, d, d, dtype=f64)
    C = torch.zeros(B, H, d, dv, dtype=f64)
    G = torch.zeros(B, H, d, dv, dtype=f64)
    m = torch.zeros(B, H, d, dtype=f64)
    h = torch.zeros(B, H, d, dtype=f64)
    for b in range(B):
        for hh in range(H):
            g = gam[hh]
            for t in range(T):
                qt, kt, vt = q[b, t, hh], k[b, t, hh], v[b, t, hh]
                G[b, hh] = g * g * G[b, hh] + g * torch.outer(kt, kt @ C[b, hh])
                h[b, hh] = g * g * h[b, hh] + g * kt * (kt @ m[b, hh])
                S[b, hh] = g * S[b, hh] + torch.outer(kt, kt)
                C[b, hh] = g * C[b, hh] + torch.outer(qt, vt)
                m[b, hh] = g * m[b, hh] + qt
    return S, C, m, G, h


def make_qkv(B, T, H, d, dv, *, dtype=torch.float64, generator=None, l2norm=False, scale=1.0):
    """Random q, k [B, T, H, d], v [B, T, H, dv] on CPU, drawn in float64 then cast to dtype.

    l2norm: unit-norm q, k rows (as a model feeds them); scale multiplies q and k.
    """
    q = torch.randn(B, T, H, d, dtype=f64, generator=generator)
    k = torch.randn(B, T, H, d, dtype=f64, generator=generator)
    v = torch.randn(B, T, H, dv, dtype=f64, generator=generator)
    if l2norm:
        q = q / q.norm(dim=-1, keepdim=True)
        k = k / k.norm(dim=-1, keepdim=True)
    return (q * scale).to(dtype), (k * scale).to(dtype), v.to(dtype)


def rel_err(a, b):
    """max |a - b| / max |b| (float64)."""
    a, b = a.to(f64), b.to(f64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def rel_rms(a, b):
    """||a - b||_2 / ||b||_2 (float64): the relative RMS error."""
    a, b = a.to(f64), b.to(f64)
    return float((a - b).norm() / b.norm().clamp_min(1e-300))
