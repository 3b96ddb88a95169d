"""The launch plan of a forward prefill: which Triton kernels run, in what order, with what (issue 18).

    plan(variant, normalize, has_c, d, dv, dtype, *, chunk_size=None) -> Plan
    config_name(variant, normalize, has_c, d, dv, dtype) -> "hla2-n1-c0-d64-dv64-bf16"
    parse_config_name(name) -> Config
    run_plan(plan, q, k, v, decay, state_in, state_out, o, eps=1e-6, lam=0.0) -> workspace dict

One source of truth for the JIT path (`hla_attention(..., backend="triton")`'s forward runs
`run_plan`, nothing else) and the AOT compiler / C++ launcher (docs/AOT_KERNELS.md section 1):
both take the launches from here, so they run the same code with the same arguments.

A `Plan` (frozen dataclasses, `Plan.to_json()` for a manifest):
- `config` (Config: variant, normalize, has_c, d, dv, dtype in fp32/fp16/bf16), `name` (the
  canonical config name), `chunk_size` (BT tokens per chunk; from the configuration only, never
  from B or T), `state_size` (N of the [B, H, N] state), `in_place` (whether state_in may be
  state_out: False for hla2 with several value blocks in the state scan, where programs read S
  rows that another program writes; the launcher then copies state_in first).
- `workspace`: Workspace(name, dtype "fp32", dims): float32 buffers, dims a product of ints and
  the symbols B, H, T, NT (NT = ceil(T / chunk_size)); the kernels write them before reading.
- `launches`, in order on one stream: Launch(role, name, kernel, constexprs, num_warps,
  num_stages, params, grid). `kernel` is the bare triton.JITFunction (no autotune/heuristics; an
  InterpretedFunction under TRITON_INTERPRET=1); `constexprs` maps the kernel's constexpr
  parameter names to ints (bools as 0/1); `params` lists the kernel's runtime parameters in order
  as Param(arg, name, type): `arg` the Triton parameter name, `name` what the launcher binds
  (docs/AOT_KERNELS.md section 3: q, k, v, o, decay, state_in, state_out, T, H, eps, lam, a
  workspace buffer; one buffer may be bound to two parameters, e.g. ws_m for an unused ws_c),
  `type` ptr_fp32 / ptr_fp16 / ptr_bf16 / i32 / f32, WITHOUT Triton's hidden trailing
  parameters (the compiler adds those); `grid` three dims, each a tuple of factors (int or
  symbol B, H, T, NT).

Specialisation (what the AOT signature must say): every pointer 16-byte aligned (Triton's JIT
specialises on it: the launcher must check q, k, v, o, decay, state_in, state_out and the
workspace buffers and refuse an unaligned one); T and H runtime int32, not specialised
(`do_not_specialize`); eps, lam float32. Offsets are 64-bit per (batch row, head), 32-bit within
one; within a (b, h): T * H * max(d, dv) < 2^31.

Stable (aot-compile, aot-launcher may rely on it): the function names and signatures above; the
fields of Plan / Launch / Param / Workspace / Config and their meaning; the config name format;
the parameter names and types of each kernel; the roles "fwd_h" (state scan: state before every
chunk into the workspace, final state into state_out) then "fwd_o" (o in the activation dtype,
normalised). NOT stable: constexpr values, block sizes, num_warps / num_stages, chunk_size,
workspace sizes, and the number of launches (read them from the plan, never hard-code them).

Training (function.py) runs exactly this plan in its forward. Its backward recomputes the
chunk states with the plan's fwd_h launch and, with normalize, gets o in float32 and the
denominator from `training_output_launch(plan)` (fwd_o with the constexpr SAVE_DEN = 1 and o
float32 [B, T, H, dv + 1]; never part of a plan).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
import triton

from ...state_layout import state_parts, state_size
from .chunk_ahla import chunk_ahla_fwd_h_kernel, chunk_ahla_fwd_o_kernel
from .chunk_fwd import chunk_hla2_fwd_h_kernel, chunk_hla2_fwd_o_kernel

VARIANTS = ("hla2", "ahla")
DTYPES = ("fp32", "fp16", "bf16")
SYMBOLS = ("B", "H", "T", "NT")
PARAM_TYPES = ("ptr_fp32", "ptr_fp16", "ptr_bf16", "i32", "f32")
#: every name a Param may bind (docs/AOT_KERNELS.md section 3); workspace names are the plan's own
VOCABULARY = ("q", "k", "v", "o", "state_in", "state_out", "decay", "T", "H", "B", "eps", "lam")
MAX_HEAD_DIM = 128
DEFAULT_CHUNK_SIZE = 64
#: default (block_k, block_v, num_warps) of hla2's state scan (benchmarks/bench_prefill.py --sweep)
FWD_H_BLOCKS = (32, 32, 4)

_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_NAME_RE = re.compile(r"^(hla2|ahla)-n([01])-c([01])-d(\d+)-dv(\d+)-(fp32|fp16|bf16)$")

Factor = Union[int, str]


@dataclass(frozen=True)
class Config:
    variant: str
    normalize: bool
    has_c: bool
    d: int
    dv: int
    dtype: str

    @property
    def name(self) -> str:
        return (f"{self.variant}-n{int(self.normalize)}-c{int(self.has_c)}-d{self.d}-dv{self.dv}-"
                f"{self.dtype}")


@dataclass(frozen=True)
class Param:
    arg: str            # the kernel's parameter name
    name: str           # what the launcher binds (vocabulary or a workspace buffer)
    type: str           # ptr_fp32 | ptr_fp16 | ptr_bf16 | i32 | f32


@dataclass(frozen=True)
class Workspace:
    name: str
    dtype: str
    dims: Tuple[Factor, ...]


@dataclass(frozen=True)
class Launch:
    role: str
    name: str
    kernel: object
    constexprs: Mapping[str, int]
    num_warps: int
    num_stages: int
    params: Tuple[Param, ...]
    grid: Tuple[Tuple[Factor, ...], Tuple[Factor, ...], Tuple[Factor, ...]]

    def __post_init__(self):
        object.__setattr__(self, "constexprs", MappingProxyType(dict(self.constexprs)))

    def to_json(self) -> dict:
        return {"role": self.role, "name": self.name, "num_warps": self.num_warps,
                "num_stages": self.num_stages, "constexprs": dict(self.constexprs),
                "grid": [list(g) for g in self.grid],
                "params": [{"name": p.name, "type": p.type, "arg": p.arg} for p in self.params]}


@dataclass(frozen=True)
class Plan:
    config: Config
    name: str
    chunk_size: int
    state_size: int
    in_place: bool
    workspace: Tuple[Workspace, ...]
    launches: Tuple[Launch, ...]

    def to_json(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "name": self.name,
                "chunk_size": self.chunk_size, "state_size": self.state_size,
                "in_place": self.in_place,
                "workspace": [{"name": w.name, "dtype": w.dtype, "dims": list(w.dims)} for w in self.workspace],
                "kernels": [launch.to_json() for launch in self.launches]}


def _dtype_name(dtype) -> str:
    if isinstance(dtype, torch.dtype):
        for name, t in _TORCH_DTYPES.items():
            if t == dtype:
                return name
        raise ValueError(f"dtype {dtype} has no Triton plan; expected torch.float32, float16 or bfloat16")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (or the torch dtype), got {dtype!r}")
    return dtype


def make_config(variant: str, normalize: bool, has_c: bool, d: int, dv: int, dtype) -> Config:
    """Checked Config; errors name the argument and what was expected."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)} for a Triton plan, got {variant!r}")
    for name, x in (("normalize", normalize), ("has_c", has_c)):
        if not isinstance(x, (bool, int)) or x not in (0, 1):
            raise TypeError(f"{name} must be a bool, got {x!r}")
    if variant == "ahla" and has_c:
        raise ValueError("has_c (ridge != 0) is only defined for variant 'hla2', got variant 'ahla'")
    for name, x in (("d", d), ("dv", dv)):
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise ValueError(f"{name} must be an int >= 1, got {x!r}")
    if d > MAX_HEAD_DIM or dv + int(bool(normalize)) > MAX_HEAD_DIM:
        raise ValueError(f"head dims up to {MAX_HEAD_DIM} (d <= {MAX_HEAD_DIM}, dv + normalize <= "
                         f"{MAX_HEAD_DIM}), got d={d}, dv={dv}, normalize={bool(normalize)}")
    return Config(variant, bool(normalize), bool(has_c), int(d), int(dv), _dtype_name(dtype))


def config_name(variant: str, normalize: bool, has_c: bool, d: int, dv: int, dtype) -> str:
    return make_config(variant, normalize, has_c, d, dv, dtype).name


def parse_config_name(name: str) -> Config:
    """Inverse of config_name: "hla2-n1-c0-d64-dv64-bf16" -> Config (checked)."""
    m = _NAME_RE.match(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(f"config name {name!r} is not <hla2|ahla>-n<0|1>-c<0|1>-d<int>-dv<int>-"
                         f"<fp32|fp16|bf16> (e.g. hla2-n1-c0-d64-dv64-bf16)")
    variant, n, c, d, dv, dtype = m.groups()
    cfg = make_config(variant, n == "1", c == "1", int(d), int(dv), dtype)
    if cfg.name != name:  # leading zeros in d/dv
        raise ValueError(f"config name {name!r} is not canonical; expected {cfg.name!r}")
    return cfg


def _pow2(x: int) -> int:
    return max(16, triton.next_power_of_2(x))


def _ptr(dtype: str) -> str:
    return "ptr_" + dtype


def _offsets(cfg: Config) -> Dict[str, int]:
    """Offset of each state part (contract layout, hla_deploy.state_layout) in the per-head vector."""
    ridge = 1.0 if cfg.has_c else 0.0
    off, out = 0, {}
    for part, shape in state_parts(cfg.variant, cfg.d, cfg.dv, cfg.normalize, ridge):
        out[part] = off
        n = 1
        for s in shape:
            n *= s
        off += n
    return out


def _hla2(cfg: Config, bt: int, blocks) -> Tuple[Tuple[Workspace, ...], Tuple[Launch, ...], bool]:
    d, dv, nx = cfg.d, cfg.dv, int(cfg.normalize)
    vx = dv + nx
    off = _offsets(cfg)
    bd = _pow2(d)
    bk, bv, warps = blocks or FWD_H_BLOCKS
    bk, bv = min(bd, bk), min(_pow2(vx), bv)
    bv_o = _pow2(dv)
    act, f32 = _ptr(cfg.dtype), "ptr_fp32"
    ws_c = "ws_c" if cfg.has_c else "ws_m"   # hla2 without ridge: the kernel's ws_c is unused
    flags = dict(F16=int(cfg.dtype == "fp16"), IEEE=int(cfg.dtype == "fp32"))
    shape = dict(K=d, DV=dv, NORM=nx, HAS_C=int(cfg.has_c))
    workspace = [Workspace("ws_s", "fp32", ("B", "H", "NT", d * d)),
                 Workspace("ws_m", "fp32", ("B", "H", "NT", d * vx))]
    if cfg.has_c:
        workspace.append(Workspace("ws_c", "fp32", ("B", "H", "NT", d * vx)))
    nk, nv = triton.cdiv(d, bk), triton.cdiv(vx, bv)
    fwd_h = Launch(
        "fwd_h", "chunk_hla2_fwd_h_kernel", chunk_hla2_fwd_h_kernel,
        dict(shape, N=state_size("hla2", d, dv, cfg.normalize, 1.0 if cfg.has_c else 0.0),
             OFF_M=off["M"], OFF_N=off.get("n", 0), OFF_C=off.get("C", 0), OFF_MC=off.get("m", 0),
             BT=bt, BK=bk, BD=bd, BV=bv, **flags),
        warps, 2,
        (Param("q", "q", act), Param("k", "k", act), Param("v", "v", act), Param("decay", "decay", f32),
         Param("state_in", "state_in", f32), Param("ws_s", "ws_s", f32), Param("ws_m", "ws_m", f32),
         Param("ws_c", ws_c, f32), Param("state_out", "state_out", f32),
         Param("T", "T", "i32"), Param("H", "H", "i32")),
        ((nk,), (nv,), ("B", "H")))
    fwd_o = Launch(
        "fwd_o", "chunk_hla2_fwd_o_kernel", chunk_hla2_fwd_o_kernel,
        dict(shape, BT=bt, BD=bd, BV=bv_o, SAVE_DEN=0, **flags),
        4, 2,
        (Param("q", "q", act), Param("k", "k", act), Param("v", "v", act), Param("decay", "decay", f32),
         Param("ws_s", "ws_s", f32), Param("ws_m", "ws_m", f32), Param("ws_c", ws_c, f32),
         Param("o", "o", act), Param("T", "T", "i32"), Param("H", "H", "i32"),
         Param("eps", "eps", "f32"), Param("lam", "lam", "f32")),
        ((triton.cdiv(dv, bv_o),), ("NT",), ("B", "H")))
    return tuple(workspace), (fwd_h, fwd_o), nv == 1


def _ahla(cfg: Config, bt: int) -> Tuple[Tuple[Workspace, ...], Tuple[Launch, ...], bool]:
    d, dv, nx = cfg.d, cfg.dv, int(cfg.normalize)
    vx = dv + nx
    off = _offsets(cfg)
    bd = _pow2(d)
    cap = 32 if cfg.dtype == "fp32" else 64
    bv_h, bv_o = min(_pow2(vx), cap), min(_pow2(dv), cap)
    act, f32 = _ptr(cfg.dtype), "ptr_fp32"
    flags = dict(F16=int(cfg.dtype == "fp16"), IEEE=int(cfg.dtype == "fp32"))
    workspace = (Workspace("ws_p", "fp32", ("B", "H", "NT", d * vx)),
                 Workspace("ws_e", "fp32", ("B", "H", "NT", d * vx)))
    fwd_h = Launch(
        "fwd_h", "chunk_ahla_fwd_h_kernel", chunk_ahla_fwd_h_kernel,
        dict(K=d, DV=dv, NORM=nx, N=state_size("ahla", d, dv, cfg.normalize),
             OFF_E=off["E"], OFF_MK=off.get("mK", 0), OFF_N=off.get("n", 0),
             BT=bt, BD=bd, BV=bv_h, **flags),
        4, 2,
        (Param("q", "q", act), Param("k", "k", act), Param("v", "v", act), Param("decay", "decay", f32),
         Param("state_in", "state_in", f32), Param("ws_p", "ws_p", f32), Param("ws_e", "ws_e", f32),
         Param("state_out", "state_out", f32), Param("T", "T", "i32"), Param("H", "H", "i32")),
        ((triton.cdiv(vx, bv_h),), ("B", "H"), (1,)))
    fwd_o = Launch(
        "fwd_o", "chunk_ahla_fwd_o_kernel", chunk_ahla_fwd_o_kernel,
        dict(K=d, DV=dv, NORM=nx, BT=bt, BD=bd, BV=bv_o, SAVE_DEN=0, **flags),
        4, 2,
        (Param("q", "q", act), Param("k", "k", act), Param("v", "v", act), Param("decay", "decay", f32),
         Param("ws_p", "ws_p", f32), Param("ws_e", "ws_e", f32), Param("o", "o", act),
         Param("T", "T", "i32"), Param("H", "H", "i32"), Param("eps", "eps", "f32")),
        ((triton.cdiv(dv, bv_o),), ("NT",), ("B", "H")))
    return workspace, (fwd_h, fwd_o), True   # each fwd_h program reads and writes only its own columns


@functools.lru_cache(maxsize=None)
def _plan(cfg: Config, chunk_size: int, blocks) -> Plan:
    if cfg.variant == "hla2":
        workspace, launches, in_place = _hla2(cfg, chunk_size, blocks)
    else:
        workspace, launches, in_place = _ahla(cfg, chunk_size)
    n = state_size(cfg.variant, cfg.d, cfg.dv, cfg.normalize, 1.0 if cfg.has_c else 0.0)
    return Plan(cfg, cfg.name, chunk_size, n, in_place, workspace, launches)


def plan(variant: str, normalize: bool, has_c: bool, d: int, dv: int, dtype, *,
         chunk_size: Optional[int] = None, blocks: Optional[Tuple[int, int, int]] = None) -> Plan:
    """The forward prefill of one configuration (dtype: "fp32"/"fp16"/"bf16" or the torch dtype).

    chunk_size (16, 32 or 64; default DEFAULT_CHUNK_SIZE) and blocks ((block_k, block_v,
    num_warps) of hla2's state scan, default FWD_H_BLOCKS) are overrides for tests and
    benchmarks of the JIT path only; deployment uses the defaults.
    """
    cfg = make_config(variant, normalize, has_c, d, dv, dtype)
    bt = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
    if bt not in (16, 32, 64):
        raise ValueError(f"chunk_size must be 16, 32 or 64, got {chunk_size!r}")
    if blocks is not None:
        blocks = tuple(int(b) for b in blocks)
        if len(blocks) != 3 or any(b not in (1, 2, 4, 8, 16, 32, 64, 128) for b in blocks) \
                or min(blocks[:2]) < 16:
            raise ValueError(f"blocks must be (block_k >= 16, block_v >= 16, num_warps), powers of 2, "
                             f"got {blocks!r}")
    return _plan(cfg, bt, blocks)


def training_output_launch(p: Plan) -> Launch:
    """fwd_o with SAVE_DEN = 1 for training's backward (normalize only): binds "o_train", a float32
    [B, T, H, dv + 1] buffer that gets o in float32 and, in column dv, the denominator (+ eps)."""
    if not p.config.normalize:
        raise ValueError(f"{p.name}: training_output_launch is for normalize=True plans")
    fwd_o = next(launch for launch in p.launches if launch.role == "fwd_o")
    params = tuple(Param(x.arg, "o_train", "ptr_fp32") if x.name == "o" else x for x in fwd_o.params)
    return dataclasses.replace(fwd_o, constexprs=dict(fwd_o.constexprs, SAVE_DEN=1), params=params)


def dims_value(dims, sizes: Mapping[str, int]) -> int:
    """Product of dims (ints and symbols B, H, T, NT) for the given sizes."""
    n = 1
    for f in dims:
        n *= sizes[f] if isinstance(f, str) else f
    return n


def sizes_of(p: Plan, B: int, T: int, H: int) -> Dict[str, int]:
    return {"B": B, "T": T, "H": H, "NT": triton.cdiv(T, p.chunk_size)}


def allocate_workspace(p: Plan, B: int, T: int, H: int, device) -> Dict[str, torch.Tensor]:
    """Fresh float32 workspace buffers of the plan, by name (flat: the kernels index them)."""
    sizes = sizes_of(p, B, T, H)
    return {w.name: torch.empty(dims_value(w.dims, sizes), dtype=torch.float32, device=device)
            for w in p.workspace}


def run_launch(launch: Launch, bindings: Mapping[str, object], sizes: Mapping[str, int]) -> None:
    """One kernel launch under the JIT: arguments bound by name, as the C++ launcher binds them."""
    args = []
    for prm in launch.params:
        if prm.name not in bindings:
            raise KeyError(f"{launch.name}: nothing bound to parameter {prm.arg!r} (name {prm.name!r})")
        args.append(bindings[prm.name])
    grid = tuple(dims_value(g, sizes) for g in launch.grid)
    launch.kernel[grid](*args, **launch.constexprs, num_warps=launch.num_warps, num_stages=launch.num_stages)


def _check(name: str, x, shape, dtype, device) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")
    if x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype}, expected {dtype}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device}, expected {device}")
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def run_plan(p: Plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor,
             state_in: torch.Tensor, state_out: torch.Tensor, o: torch.Tensor, eps: float = 1e-6,
             lam: float = 0.0, *, workspace: Optional[Dict[str, torch.Tensor]] = None
             ) -> Dict[str, torch.Tensor]:
    """Execute the plan under the JIT: q, k [B, T, H, d], v, o [B, T, H, dv] (the plan's dtype),
    decay [H] float32, state_in / state_out [B, H, N] float32 (distinct unless plan.in_place),
    all contiguous on one device. Writes o and state_out; returns the workspace (its buffers hold
    the state before every chunk). No torch op runs between the launches."""
    cfg = p.config
    act = _TORCH_DTYPES[cfg.dtype]
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        raise ValueError(f"q must be a rank-4 tensor [B, T, H, d={cfg.d}], got "
                         f"{tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__}")
    B, T, H = q.shape[:3]
    dev = q.device
    _check("q", q, (B, T, H, cfg.d), act, dev)
    _check("k", k, (B, T, H, cfg.d), act, dev)
    _check("v", v, (B, T, H, cfg.dv), act, dev)
    _check("o", o, (B, T, H, cfg.dv), act, dev)
    _check("decay", decay, (H,), torch.float32, dev)
    _check("state_in", state_in, (B, H, p.state_size), torch.float32, dev)
    _check("state_out", state_out, (B, H, p.state_size), torch.float32, dev)
    if T < 1:
        raise ValueError("q has T = 0 tokens; expected T >= 1")
    if state_in.data_ptr() == state_out.data_ptr() and not p.in_place:
        raise ValueError(f"{p.name}: state_out must not be state_in (the state scan reads S rows "
                         f"that another program writes); pass a separate state_out")
    sizes = sizes_of(p, B, T, H)
    if workspace is None:
        workspace = allocate_workspace(p, B, T, H, dev)
    bindings = dict(workspace, q=q, k=k, v=v, o=o, decay=decay, state_in=state_in,
                    state_out=state_out, T=T, H=H, B=B, eps=float(eps), lam=float(lam))
    for launch in p.launches:
        run_launch(launch, bindings, sizes)
    return workspace
