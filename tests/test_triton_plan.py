"""The launch plan of the Triton forward (hla_deploy/ops/triton/launch_plan.py, docs/AOT_KERNELS.md).

- The plan run under the JIT (`run_plan`, the same bindings as the C++ launcher) against the
  float64 serial reference (tests/reference.py): o and the final state, warm contract-layout state
  in and out, every variant/option (hla2: normalize, ridge, scalar / per-head decay; ahla), d in
  {16, 32, 64}, fp32 and fp16 (bf16 only on a GPU: the interpreter's bf16 tl.dot is wrong), every
  option meeting T in {1, 2, 63, 64, 65, 130}. Relative RMS bounds: float32 F32_TOL (measured
  <= 1e-6 on the interpreter), float16 FP16_TOL = 3e-3 (tests/test_triton_hla.py's bound).
- float16 with a state far beyond float16's range (the power-of-two rescale, operand.py), and the
  rescaled product itself on rows spanning 2^-60 .. 2^60.
- `hla_attention(..., backend="triton")`'s forward is exactly the plan: the same kernels, grids and
  constexprs in order, no torch op between them, bit-identical to run_plan.
- Plan metadata: parameter names in the vocabulary, types, grid factors, workspace dims, config
  name round-trip, chunk size independent of T, errors that name the argument.
On a GPU the same tests run (plus bf16) and test_gpu_realistic_forward at B=2, T up to 2048.
"""
from __future__ import annotations  # Triton reads the test kernel's "tl.constexpr" annotation as text

import json

import pytest
import torch

from hla_deploy.ops import hla_attention, state_size
from hla_deploy.ops import triton as hla_triton
from reference import make_qkv, ref_hla, rel_rms

pytestmark = pytest.mark.skipif(not hla_triton.is_available(),
                                reason="Triton cannot run here (no CUDA and TRITON_INTERPRET != 1)")
if hla_triton.is_available():
    import triton
    from hla_deploy.ops.triton import launch_plan as lp
    from hla_deploy.ops.triton.utils import decay_vector

DEV = "cuda" if torch.cuda.is_available() else "cpu"
F32_TOL, FP16_TOL, BF16_TOL = 2e-5, 3e-3, 2e-2
TOL = {torch.float32: F32_TOL, torch.float16: FP16_TOL, torch.bfloat16: BF16_TOL}
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEV == "cuda" else [])
DT_NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

# (variant, normalize, ridge, decay): every option; per-head decay in three of them
OPTIONS = [("hla2", False, 0.0, 1.0), ("hla2", True, 0.0, (0.95, 0.7)), ("hla2", False, 0.25, 0.9),
           ("hla2", True, 0.25, (0.99, 1.0)), ("ahla", False, 0.0, (0.95, 0.7)), ("ahla", True, 0.0, 1.0)]
TS = (1, 2, 63, 64, 65, 130)
CASES = []
for _oi, _opt in enumerate(OPTIONS):
    for _ci, (_d, _dt) in enumerate((d, dt) for d in (16, 32, 64) for dt in DTYPES):
        CASES.append((*_opt, _d, _dt, TS[(_ci + _oi) % len(TS)]))  # each option meets every T


def _case_id(case):
    variant, norm, ridge, dec, d, dt, T = case
    return f"{variant}-n{int(norm)}-r{ridge}-g{dec}-d{d}-{DT_NAME[dt]}-T{T}".replace(" ", "")


def _inputs(B, T, H, d, dv, variant, normalize, ridge, dec, dtype, seed, T0=9, scale=1.5):
    """q, k, v rounded through dtype (float64 on the CPU) and a warm contract-layout state: the
    reference's state after T0 earlier tokens, rounded to float32."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = make_qkv(B, T + T0, H, d, dv, generator=g, l2norm=True, scale=scale)
    if normalize:  # positive q, k keep the denominator away from 0
        q, k = q.abs(), k.abs()
    q, k, v = (x.to(dtype).to(torch.float64) for x in (q, k, v))
    _, s0 = ref_hla(q[:, :T0], k[:, :T0], v[:, :T0], variant, _decay(dec), normalize, 1e-6, ridge)
    return q[:, T0:], k[:, T0:], v[:, T0:], s0.to(torch.float32).to(torch.float64)


def _decay(dec):
    return list(dec) if isinstance(dec, tuple) else dec


def _run_plan(variant, normalize, ridge, dec, q, k, v, s0, dtype, eps=1e-6):
    """run_plan on device tensors -> (o, state_out) on the CPU."""
    B, T, H, d = q.shape
    dv = v.shape[-1]
    p = lp.plan(variant, normalize, ridge != 0.0, d, dv, dtype)
    qd, kd, vd = (x.to(DEV, dtype).contiguous() for x in (q, k, v))
    gam = decay_vector(_decay(dec) if isinstance(dec, tuple) else [dec] * H, qd.device)
    state_in = s0.to(DEV, torch.float32).contiguous()
    state_out = torch.full_like(state_in, float("nan"))            # every element must be written
    o = torch.full((B, T, H, dv), float("nan"), dtype=dtype, device=DEV)
    lp.run_plan(p, qd, kd, vd, gam, state_in, state_out, o, eps, ridge)
    return o.cpu(), state_out.cpu()


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_plan_forward_matches_reference(case):
    variant, norm, ridge, dec, d, dtype, T = case
    dv = d if d != 32 else 24      # one case per option with dv != d (and not a power of two)
    q, k, v, s0 = _inputs(1, T, 2, d, dv, variant, norm, ridge, dec, dtype, seed=d + T)
    ro, rs = ref_hla(q, k, v, variant, _decay(dec), norm, 1e-6, ridge, initial_state=s0)
    o, st = _run_plan(variant, norm, ridge, dec, q, k, v, s0, dtype)
    assert o.dtype == dtype and st.dtype == torch.float32
    assert st.shape == (1, 2, state_size(variant, d, dv, norm, ridge))
    assert torch.isfinite(o).all() and torch.isfinite(st).all()
    err = {"o": rel_rms(o, ro), "state": rel_rms(st, rs)}
    print(f"\n{_case_id(case)}: o={err['o']:.2e} state={err['state']:.2e}")
    assert max(err.values()) <= TOL[dtype], err


@pytest.mark.parametrize("variant,ridge", [("hla2", 0.0), ("hla2", 0.25), ("ahla", 0.0)])
def test_float16_warm_state_beyond_float16_range(variant, ridge):
    """A warm state of ~1.6e6 (25x float16's 65504) and decay 1, d = dv = 64, normalize: every
    product with the state goes through the power-of-two rescale; a plain float16 cast of the
    state tiles gives inf/NaN here. o and state within FP16_TOL of the float64 reference."""
    q, k, v, s0 = _inputs(1, 65, 2, 64, 64, variant, True, ridge, 1.0, torch.float16, seed=5)
    s0 = (s0 * 1e5).to(torch.float32).to(torch.float64)
    assert s0.abs().max() > 10 * 65504
    ro, rs = ref_hla(q, k, v, variant, 1.0, True, 1e-6, ridge, initial_state=s0)
    o, st = _run_plan(variant, True, ridge, 1.0, q, k, v, s0, torch.float16)
    assert torch.isfinite(o).all() and torch.isfinite(st).all()
    err = {"o": rel_rms(o, ro), "state": rel_rms(st, rs)}
    assert max(err.values()) <= FP16_TOL, err


if hla_triton.is_available():
    import triton.language as tl
    from hla_deploy.ops.triton.operand import dot_big_left, dot_big_right

    @triton.jit
    def _rescaled_products(a, b, out_l, out_r, M: tl.constexpr):
        r = tl.arange(0, M)
        a_t = tl.load(a + r[:, None] * M + r[None, :])                     # float32, huge/tiny rows
        b_t = tl.load(b + r[:, None] * M + r[None, :]).to(tl.float16)
        tl.store(out_l + r[:, None] * M + r[None, :], dot_big_left(a_t, b_t, 1, 0))
        at_t = tl.trans(a_t)                                                # huge/tiny columns
        tl.store(out_r + r[:, None] * M + r[None, :], dot_big_right(b_t, at_t, 1, 0))


def test_float16_rescale_keeps_every_row():
    """dot_big_left / dot_big_right with float16 operands on a float32 tile whose rows (columns)
    range over 2^-60 .. 2^60: each row of the result within float16 rounding (2^-11 per operand)
    of the float64 product. A plain float16 cast gives inf rows; one scale per tile, zero rows."""
    M = 16
    g = torch.Generator().manual_seed(0)
    a = torch.randn(M, M, generator=g, dtype=torch.float64) * (2.0 ** torch.linspace(-60, 60, M,
                                                                                    dtype=torch.float64))[:, None]
    b = torch.randn(M, M, generator=g, dtype=torch.float64).to(torch.float16)
    out_l = torch.empty(M, M, device=DEV)
    out_r = torch.empty(M, M, device=DEV)
    _rescaled_products[(1,)](a.float().to(DEV), b.float().to(DEV), out_l, out_r, M=M)
    ref_l = a.float().double() @ b.double()                                   # [M, M]
    ref_r = b.double() @ a.float().double().T
    row_err = ((out_l.cpu().double() - ref_l).norm(dim=1) / ref_l.norm(dim=1)).max()
    col_err = ((out_r.cpu().double() - ref_r).norm(dim=0) / ref_r.norm(dim=0)).max()
    assert row_err < 2e-3 and col_err < 2e-3, (float(row_err), float(col_err))


class _Recorder:
    """Records every Triton launch (kernel name, grid, constexprs) and every torch op run outside
    a launch, in order (under the interpreter a launch itself copies tensors: not recorded)."""

    def __init__(self):
        self.events, self.inside = [], False


def _record(monkeypatch):
    from torch.utils._python_dispatch import TorchDispatchMode
    from triton.runtime.jit import KernelInterface
    rec = _Recorder()
    original = KernelInterface.__getitem__

    def getitem(self, grid):
        launch = original(self, grid)

        def run(*args, **kwargs):
            consts = {k: v for k, v in kwargs.items() if k not in ("num_warps", "num_stages")}
            rec.events.append(("launch", self.__name__, tuple(grid), consts,
                               kwargs.get("num_warps"), kwargs.get("num_stages"), len(args)))
            rec.inside = True
            try:
                return launch(*args, **kwargs)
            finally:
                rec.inside = False
        return run

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not rec.inside:
                rec.events.append(("op", str(func)))
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(KernelInterface, "__getitem__", getitem)
    return rec, Ops


@pytest.mark.parametrize("variant,norm,ridge", [("hla2", True, 0.25), ("hla2", False, 0.0), ("ahla", True, 0.0)])
def test_jit_forward_is_the_plan(monkeypatch, variant, norm, ridge):
    """hla_attention(..., backend="triton") launches exactly the plan's kernels, in order, with the
    plan's grids, constexprs, warps and stages, runs no torch op between them, and gives o and
    state bit-identical to run_plan on the same inputs."""
    B, T, H, d, dv = 2, 70, 2, 16, 12
    q, k, v, s0 = _inputs(B, T, H, d, dv, variant, norm, ridge, (0.9, 1.0), torch.float16, seed=3)
    qd, kd, vd = (x.to(DEV, torch.float16) for x in (q, k, v))
    sd = s0.to(DEV, torch.float32)
    kw = dict(variant=variant, decay=[0.9, 1.0], normalize=norm, ridge=ridge, initial_state=sd,
              output_final_state=True)
    if variant == "ahla":  # not in GPU_VERIFIED_VARIANTS yet: hla_attention would refuse it
        monkeypatch.setattr(hla_triton, "GPU_VERIFIED_VARIANTS", ("hla2", "ahla"))
    rec, Ops = _record(monkeypatch)
    with Ops():
        o, st = hla_attention(qd, kd, vd, backend="triton", **kw)
    p = lp.plan(variant, norm, ridge != 0.0, d, dv, "fp16")
    sizes = lp.sizes_of(p, B, T, H)
    launches = [e for e in rec.events if e[0] == "launch"]
    expect = [("launch", x.name, tuple(lp.dims_value(g, sizes) for g in x.grid), dict(x.constexprs),
               x.num_warps, x.num_stages, len(x.params)) for x in p.launches]
    assert launches == expect
    first = rec.events.index(launches[0])
    last = rec.events.index(launches[-1])
    assert rec.events[first:last + 1] == launches, rec.events[first:last + 1]  # nothing in between
    o2 = torch.empty_like(o)
    st2 = torch.empty_like(st)
    lp.run_plan(p, qd, kd, vd, decay_vector([0.9, 1.0], qd.device), sd, st2, o2, 1e-6, ridge)
    assert torch.equal(o, o2) and torch.equal(st, st2)


def test_chunk_size_independent_of_T(monkeypatch):
    """The launched BT is the plan's chunk size for short and long T (no default by T any more)."""
    rec, _ = _record(monkeypatch)
    for T in (1, 5, 20, 40, 130):
        q = torch.randn(1, T, 2, 16, device=DEV)
        hla_triton.hla_attention_triton(q, q, q, "hla2", 0.9)
    bts = {e[3]["BT"] for e in rec.events if e[0] == "launch"}
    assert bts == {lp.DEFAULT_CHUNK_SIZE} == {lp.plan("hla2", False, False, 16, 16, "fp32").chunk_size}


PLAN_CONFIGS = [(v, n, c, d, dv, dt) for v, n, c in (("hla2", 0, 0), ("hla2", 1, 0), ("hla2", 0, 1), ("hla2", 1, 1),
                                                      ("ahla", 0, 0), ("ahla", 1, 0))
                for d, dv in ((16, 16), (32, 24), (64, 64), (128, 127)) for dt in ("fp32", "fp16", "bf16")
                if dv + n <= 128]


def _runtime_args(kernel):
    """(runtime parameter names, constexpr parameter names) of a Triton kernel, in order."""
    import inspect
    fn = getattr(kernel, "fn", kernel)
    names = list(inspect.signature(fn).parameters)
    ann = {n: str(p.annotation) for n, p in inspect.signature(fn).parameters.items()}
    const = [n for n in names if "constexpr" in ann[n]]
    return [n for n in names if n not in const], const


@pytest.mark.parametrize("cfg", PLAN_CONFIGS, ids=lambda c: lp.config_name(*c) if hla_triton.is_available() else str(c))
def test_plan_metadata(cfg):
    variant, n, c, d, dv, dt = cfg
    p = lp.plan(*cfg)
    assert p.name == lp.config_name(*cfg) == f"{variant}-n{n}-c{c}-d{d}-dv{dv}-{dt}"
    assert lp.parse_config_name(p.name) == p.config
    assert p.state_size == state_size(variant, d, dv, bool(n), 1.0 if c else 0.0)
    assert p.chunk_size == lp.DEFAULT_CHUNK_SIZE
    assert [x.role for x in p.launches] == ["fwd_h", "fwd_o"]
    vx = dv + n
    expect_ws = ({"ws_s": d * d, "ws_m": d * vx, **({"ws_c": d * vx} if c else {})} if variant == "hla2"
                 else {"ws_p": d * vx, "ws_e": d * vx})
    assert {w.name: w.dims for w in p.workspace} == {name: ("B", "H", "NT", size) for name, size in expect_ws.items()}
    assert all(w.dtype == "fp32" for w in p.workspace)
    names = set(lp.VOCABULARY) | set(expect_ws)
    bound = set()
    for x in p.launches:
        runtime, const = _runtime_args(x.kernel)
        assert [prm.arg for prm in x.params] == runtime, x.name       # every runtime parameter, in order
        assert set(x.constexprs) == set(const), x.name                 # every constexpr, nothing else
        assert all(isinstance(val, int) for val in x.constexprs.values())
        assert x.constexprs["BT"] == p.chunk_size
        assert x.constexprs["F16"] == int(dt == "fp16") and x.constexprs["IEEE"] == int(dt == "fp32")
        for prm in x.params:
            assert prm.name in names and prm.type in lp.PARAM_TYPES, prm
            want = {"q": f"ptr_{dt}", "k": f"ptr_{dt}", "v": f"ptr_{dt}", "o": f"ptr_{dt}", "T": "i32",
                    "H": "i32", "eps": "f32", "lam": "f32"}.get(prm.name, "ptr_fp32")
            assert prm.type == want, prm
            bound.add(prm.name)
        assert len(x.grid) == 3
        for dim in x.grid:
            assert dim and all((isinstance(f, int) and f >= 1) or f in lp.SYMBOLS for f in dim), x.grid
        sizes = lp.sizes_of(p, 3, 130, 5)
        assert lp.dims_value(x.grid[0], sizes) * lp.dims_value(x.grid[1], sizes) \
            * lp.dims_value(x.grid[2], sizes) >= 15          # at least one program per (b, h)
    assert set(expect_ws) <= bound and {"state_in", "state_out", "o", "decay"} <= bound
    assert "NT" in p.launches[1].grid[1]                   # output kernel: one program per chunk
    json.dumps(p.to_json())                                # JSON-able for manifest.json
    if variant == "ahla" or p.launches[0].grid[1] == (1,):
        assert p.in_place
    else:
        assert not p.in_place


def test_plan_errors():
    with pytest.raises(ValueError, match="variant must be one of hla2, ahla"):
        lp.plan("hla3", False, False, 16, 16, "fp32")
    with pytest.raises(ValueError, match="has_c"):
        lp.plan("ahla", False, True, 16, 16, "fp32")
    with pytest.raises(ValueError, match="d must be an int >= 1"):
        lp.plan("hla2", False, False, 0, 16, "fp32")
    with pytest.raises(ValueError, match="head dims up to 128"):
        lp.plan("hla2", True, False, 64, 128, "fp32")
    with pytest.raises(ValueError, match="dtype must be one of fp32, fp16, bf16"):
        lp.plan("hla2", False, False, 16, 16, "fp64")
    with pytest.raises(ValueError, match="chunk_size must be 16, 32 or 64"):
        lp.plan("hla2", False, False, 16, 16, "fp32", chunk_size=48)
    for bad in ("hla2-n1-c0-d64-dv64", "hla3-n0-c0-d64-dv64-bf16", "hla2-n2-c0-d64-dv64-bf16", 7):
        with pytest.raises(ValueError, match="config name"):
            lp.parse_config_name(bad)
    with pytest.raises(ValueError, match="not canonical"):
        lp.parse_config_name("hla2-n1-c0-d064-dv64-bf16")
    with pytest.raises(ValueError, match="has_c"):
        lp.parse_config_name("ahla-n0-c1-d64-dv64-bf16")


def test_run_plan_errors():
    p = lp.plan("hla2", True, False, 64, 64, "fp32")           # several value blocks: not in place
    assert not p.in_place
    B, T, H = 1, 3, 2
    q = torch.randn(B, T, H, 64, device=DEV)
    st = torch.zeros(B, H, p.state_size, device=DEV)
    gam = torch.ones(H, device=DEV)
    o = torch.empty_like(q)
    with pytest.raises(ValueError, match="state_out must not be state_in"):
        lp.run_plan(p, q, q, q, gam, st, st, o)
    with pytest.raises(TypeError, match="state_in has dtype torch.float64, expected torch.float32"):
        lp.run_plan(p, q, q, q, gam, st.double(), st.clone(), o)
    with pytest.raises(TypeError, match="q has dtype torch.float16"):
        lp.run_plan(p, q.half(), q, q, gam, st, st.clone(), o)
    with pytest.raises(ValueError, match=r"decay has shape \(3,\), expected \(2,\)"):
        lp.run_plan(p, q, q, q, torch.ones(3, device=DEV), st, st.clone(), o)
    with pytest.raises(ValueError, match="v has shape"):
        lp.run_plan(p, q, q, q[..., :32].contiguous(), gam, st, st.clone(), o)
    with pytest.raises(ValueError, match="o must be contiguous"):
        lp.run_plan(p, q, q, q, gam, st, st.clone(), torch.empty(B, H, T, 64, device=DEV).transpose(1, 2))


# realistic shapes: GPU only (the interpreter would take hours); float64 reference on the CPU
GPU_FWD = [(*opt, dt) for opt in OPTIONS for dt in (torch.float32, torch.float16, torch.bfloat16)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="realistic shapes need a CUDA GPU")
@pytest.mark.parametrize("variant,norm,ridge,dec,dtype", GPU_FWD,
                         ids=[_case_id((*c[:4], 64, c[4], 2048)) for c in GPU_FWD])
def test_gpu_realistic_forward(variant, norm, ridge, dec, dtype):
    """B = 2, T = 2048, H = 2, d = dv = 64, warm state: the plan's forward on the GPU."""
    q, k, v, s0 = _inputs(2, 2048, 2, 64, 64, variant, norm, ridge, dec, dtype, seed=11)
    ro, rs = ref_hla(q, k, v, variant, _decay(dec), norm, 1e-6, ridge, initial_state=s0)
    o, st = _run_plan(variant, norm, ridge, dec, q, k, v, s0, dtype)
    err = {"o": rel_rms(o, ro), "state": rel_rms(st, rs)}
    print(f"\nGPU {variant} n{int(norm)} r{ridge} g{dec} {dtype}: o={err['o']:.2e} state={err['state']:.2e}")
    bound = {torch.float32: 1e-4, torch.float16: FP16_TOL, torch.bfloat16: BF16_TOL}[dtype]
    assert torch.isfinite(o).all() and max(err.values()) <= bound, err
