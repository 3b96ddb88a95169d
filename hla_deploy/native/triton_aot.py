"""Compile the Triton forward kernels ahead of time (cubins for sm_87 and sm_90) on a machine with no GPU.

    compile_entry(config, arch, ptxas=None) -> (entry, {file name: cubin bytes})
                                     one configuration's launches (in this process; see below)
    toolchain(arch) -> Toolchain     Triton version, ptxas path and version used for ``arch``
    kernel_source_hash() -> str      sha256 of the kernel sources (and of this compiler)
    AOTCompileError                  a kernel that cannot be compiled or served by the C++ launcher
    TritonMissingError               Triton is not installed (the ``[triton]`` extra)

Each launch of ``hla_deploy.ops.triton.launch_plan.plan(...)`` (docs/AOT_KERNELS.md §1) becomes
``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
options={num_warps, num_stages})`` under a fixed-target stub driver (hla_deploy.native.stub_driver),
specialised exactly as the JIT specialises it on a GPU: pointers 16-byte aligned (``tt.divisibility``
16, unless the kernel lists them in ``do_not_specialize_on_alignment``), integer scalars not at all
(the kernels list them in ``do_not_specialize``; a kernel that does not is refused, because the JIT
would then compile other code than the cubin), float scalars as fp32, constexprs the plan's values
and exactly the kernel's ``tl.constexpr`` parameters. The same Triton and ptxas thus give the cubin
the JIT runs (tests/test_triton_aot.py compares both on the CPU).

From the compiled kernel: the entry symbol, shared bytes and num_warps (metadata), and the REAL
parameter list counted from the PTX ``.entry`` (each ``.param`` checked against the plan's type);
the trailing ones the plan lacks are Triton's hidden scratch pointers (3.3+: global_scratch,
3.5+: profile_scratch) and become ``{"type": "hidden"}``. Refused with a clear error: global or
profile scratch (size > 0), tensor descriptors (TMA), clusters (num_ctas > 1), cooperative or PDL
launches, and shared memory above the arch's opt-in limit.

ptxas: sm_87 uses CUDA 12.6's (PyPI nvidia-cuda-nvcc-cu12, hla_deploy.native.cuda126; or
``$HLA_DEPLOY_PTXAS_SM87``) so that JetPack 6's driver loads the cubins; sm_90 uses what the JIT
uses (``$TRITON_PTXAS_PATH``, else the wheel's). Both go through ``TRITON_PTXAS_PATH``, checked to
be the one Triton then runs. Building a kernel directory from these entries (cache, manifest,
parallel workers) is hla_deploy.native.kernel_dir.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .kernel_configs import KernelConfig, arch_dir
from .locations import PluginBuildError

#: Plan parameter type -> Triton signature type, and the PTX .param types each may compile to.
SIGNATURE_TYPES = {"ptr_fp32": "*fp32", "ptr_fp16": "*fp16", "ptr_bf16": "*bf16", "i32": "i32", "f32": "fp32"}
PTX_TYPES = {"ptr_fp32": ("u64",), "ptr_fp16": ("u64",), "ptr_bf16": ("u64",), "i32": ("u32", "b32", "s32"),
             "f32": ("f32", "b32"), "hidden": ("u64",)}
GRID_SYMBOLS = ("B", "H", "T", "NT")
#: Largest dynamic shared memory per block with the opt-in (CUDA programming guide, compute capabilities).
MAX_SHARED_OPTIN = {87: 163 * 1024, 90: 227 * 1024}
#: Environment variable naming a ptxas for sm_87 (default: CUDA 12.6's from PyPI).
PTXAS_SM87_ENV = "HLA_DEPLOY_PTXAS_SM87"
_PACKAGE = Path(__file__).resolve().parents[1]            # .../hla_deploy


class AOTCompileError(PluginBuildError):
    """A kernel cannot be compiled ahead of time, or the C++ launcher could not run it (the message names
    the configuration, kernel and arch)."""


class UnsupportedConfigError(AOTCompileError):
    """The launch plan has no kernels for this configuration (the node runs token-serial)."""


class TritonMissingError(AOTCompileError):
    """Triton is not importable: the AOT kernels need the ``[triton]`` extra where they are built."""


# ---- versions and sources ------------------------------------------------------------------------

def triton_package_dir() -> Path:
    spec = importlib.util.find_spec("triton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonMissingError("building the AOT prefill kernels needs Triton, which is not installed here: "
                                 "`pip install 'hla-deploy[triton]'` (or skip the kernels with --no-kernels; "
                                 "Triton is needed only where kernels are built, never where they run)")
    return Path(list(spec.submodule_search_locations)[0])


def triton_version() -> str:
    import triton
    return triton.__version__


def triton_tool(name: str) -> Path:
    """A binary the Triton wheel ships: ``ptxas``, ``cuobjdump``, ``nvdisasm``."""
    path = triton_package_dir() / "backends" / "nvidia" / "bin" / name
    if not path.is_file():
        raise AOTCompileError(f"the Triton wheel at {triton_package_dir()} has no {path.name} ({path})")
    return path


def hidden_param_names(version: str) -> List[str]:
    """Triton's hidden trailing kernel parameters: none before 3.3, global_scratch from 3.3,
    profile_scratch too from 3.5 (TRITON_AOT.md, "Versions")."""
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", version).groups())
    names = []
    if (major, minor) >= (3, 3):
        names.append("global_scratch")
    if (major, minor) >= (3, 5):
        names.append("profile_scratch")
    return names


def kernel_source_files() -> List[Path]:
    """What a cubin is made from here: the Triton kernels and their plan (hla_deploy/ops/triton/*.py),
    the state layout they take offsets from, and this compiler (signature, specialisation)."""
    files = sorted((_PACKAGE / "ops" / "triton").glob("*.py"))
    files += [_PACKAGE / "state_layout.py", Path(__file__).resolve(), Path(__file__).with_name("stub_driver.py")]
    return files


def kernel_source_hash() -> str:
    h = hashlib.sha256()
    for p in kernel_source_files():
        h.update(p.relative_to(_PACKAGE).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Toolchain:
    arch: int
    triton_version: str
    ptxas: str              # the ptxas binary Triton is pointed at (TRITON_PTXAS_PATH)
    ptxas_version: str      # "12.6.85"


def toolchain(arch: int) -> Toolchain:
    """Triton and ptxas for ``arch`` (see the module docstring). sm_87 may download ptxas 12.6 (pip)."""
    from .cuda126 import CudaFetchError, ptxas_126, tool_version
    triton_package_dir()
    if arch == 87:
        override = os.environ.get(PTXAS_SM87_ENV)
        if override:
            ptxas = Path(override)
            if not ptxas.is_file():
                raise AOTCompileError(f"${PTXAS_SM87_ENV}={override}: no such file (a CUDA 12.6 ptxas expected)")
        else:
            try:
                ptxas = ptxas_126(verbose=True)
            except CudaFetchError as e:
                raise AOTCompileError(f"sm_87 cubins are assembled with CUDA 12.6's ptxas (JetPack 6's driver), "
                                      f"which could not be fetched: {e}\nSet ${PTXAS_SM87_ENV} to a CUDA 12.6 "
                                      f"ptxas, or build --arch 90 only") from e
    else:
        env = os.environ.get("TRITON_PTXAS_PATH")
        ptxas = Path(env) if env else triton_tool("ptxas")
    return Toolchain(arch, triton_version(), str(ptxas), tool_version(ptxas))


# ---- one launch ----------------------------------------------------------------------------------

def _json_value(v):
    """A constexpr as JSON: bools, ints, floats and strings as they are, Triton dtypes by name."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def _signature(fn, launch, label: str):
    """(signature, constexprs, attrs) for ASTSource, specialised as the JIT does (module docstring)."""
    consts = dict(launch.constexprs)
    declared = [p.name for p in fn.params if p.is_constexpr]
    if set(consts) != set(declared):
        raise AOTCompileError(f"{label}: the plan's constexprs {sorted(consts)} are not the kernel's tl.constexpr "
                              f"parameters {sorted(declared)}")
    runtime = [p.name for p in fn.params if not p.is_constexpr]
    params = list(launch.params)
    if runtime != [p.arg for p in params]:
        raise AOTCompileError(f"{label}: the plan's parameters ({', '.join(p.arg for p in params)}) are not the "
                              f"kernel's runtime parameters in order ({', '.join(runtime)})")
    signature, attrs = {}, {}
    by_name = {p.arg: p for p in params}
    for kp in fn.params:
        if kp.is_constexpr:
            signature[kp.name] = "constexpr"
            continue
        pp = by_name[kp.name]
        if pp.type not in SIGNATURE_TYPES:
            raise AOTCompileError(f"{label}: parameter {pp.arg!r} has type {pp.type!r}; expected one of "
                                  f"{', '.join(SIGNATURE_TYPES)}")
        signature[kp.name] = SIGNATURE_TYPES[pp.type]
        if pp.type.startswith("ptr_"):
            if not kp.do_not_specialize_on_alignment:
                attrs[(kp.num,)] = [["tt.divisibility", 16]]
        elif pp.type == "i32" and not kp.do_not_specialize:
            raise AOTCompileError(f"{label}: integer parameter {kp.name!r} is specialised by Triton's JIT (value "
                                  f"% 16, == 1), so the JIT would not run this cubin's code; list it in the "
                                  f"kernel's do_not_specialize")
    return signature, consts, attrs


def _ptx_params(ptx: str, entry: str, label: str) -> List[str]:
    """The .param types ("u64", "u32", "f32", ...) of the PTX .entry ``entry``, in order."""
    m = re.search(r"\.visible\s+\.entry\s+(\w+)\s*\(([^)]*)\)", ptx)
    if not m or m.group(1) != entry:
        raise AOTCompileError(f"{label}: no .entry {entry} in the PTX")
    return re.findall(r"\.param\s+\.(\w+)", m.group(2))


def _refuse_unsupported(md, label: str, arch: int) -> None:
    num_ctas = int(getattr(md, "num_ctas", 1) or 1)
    needs = [
        (getattr(md, "global_scratch_size", 0) or 0, "global scratch memory ({} bytes)"),
        (getattr(md, "profile_scratch_size", 0) or 0, "profile scratch memory ({} bytes)"),
        (len(getattr(md, "tensordesc_meta", None) or ()), "tensor descriptors / TMA ({} of them)"),
        (getattr(md, "tmem_size", 0) or 0, "tensor memory ({} bytes)"),
        (num_ctas if num_ctas > 1 else 0, "a cluster of {} CTAs"),
        (int(bool(getattr(md, "launch_cooperative_grid", False))), "a cooperative launch"),
        (int(bool(getattr(md, "launch_pdl", False))), "programmatic dependent launch"),
    ]
    for value, what in needs:
        if value:
            raise AOTCompileError(f"{label}: the kernel needs {what.format(value)}, which the AOT launcher does not "
                                  f"provide (it passes 0 for the hidden pointers and launches plainly); change the "
                                  f"kernel or its plan")
    if md.shared > MAX_SHARED_OPTIN[arch]:
        raise AOTCompileError(f"{label}: {md.shared} bytes of shared memory, above sm_{arch}'s opt-in limit of "
                              f"{MAX_SHARED_OPTIN[arch]}; use smaller blocks or fewer stages in the plan")


def _check_grid(grid, label: str):
    if len(grid) != 3:
        raise AOTCompileError(f"{label}: grid has {len(grid)} dims, expected 3")
    out = []
    for dim in grid:
        factors = list(dim)
        for f in factors:
            if not ((isinstance(f, int) and not isinstance(f, bool) and f >= 1) or f in GRID_SYMBOLS):
                raise AOTCompileError(f"{label}: grid factor {f!r} is neither an integer >= 1 nor one of "
                                      f"{', '.join(GRID_SYMBOLS)}")
        out.append(factors)
    return out


def _compile_launch(launch, index: int, cfg: KernelConfig, tc: Toolchain, hidden: List[str]):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = launch.kernel
    label = f"{cfg.name} launch {index} ({launch.name}) for sm_{tc.arch}"
    if not isinstance(fn, triton.runtime.JITFunction):
        raise AOTCompileError(f"{label}: the plan's kernel is a {type(fn).__name__}, not a bare triton.JITFunction "
                              f"(autotune/heuristics wrappers, or TRITON_INTERPRET=1 in the compiling process)")
    signature, consts, attrs = _signature(fn, launch, label)
    grid = _check_grid(launch.grid, label)
    target = GPUTarget("cuda", tc.arch, 32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")  # 3.9: same default as the JIT
        try:
            ck = triton.compile(ASTSource(fn, signature, consts, attrs), target=target,
                                options={"num_warps": int(launch.num_warps), "num_stages": int(launch.num_stages)})
        except Exception as e:
            raise AOTCompileError(f"{label}: Triton failed: {type(e).__name__}: {e}") from None
    md = ck.metadata
    _refuse_unsupported(md, label, tc.arch)
    ptx_types = _ptx_params(ck.asm["ptx"], md.name, label)
    params = [{"name": p.name, "type": p.type} for p in launch.params]
    if len(ptx_types) != len(params) + len(hidden):
        raise AOTCompileError(f"{label}: the PTX entry has {len(ptx_types)} parameters; the plan's {len(params)} "
                              f"plus Triton {tc.triton_version}'s hidden {hidden} make {len(params) + len(hidden)}")
    params += [{"name": n, "type": "hidden"} for n in hidden]
    for p, t in zip(params, ptx_types):
        if t not in PTX_TYPES[p["type"]]:
            raise AOTCompileError(f"{label}: parameter {p['name']!r} ({p['type']}) is .{t} in the PTX")
    kernel = {"name": launch.name, "function": md.name, "num_warps": int(md.num_warps),
              "num_stages": int(launch.num_stages), "shared_bytes": int(md.shared),
              "constexprs": {k: _json_value(v) for k, v in consts.items()}, "grid": grid, "params": params}
    return kernel, ck.asm["cubin"]


def compile_entry(cfg: KernelConfig, tc: Toolchain, source_hash: str) -> Tuple[dict, Dict[str, bytes]]:
    """Compile every launch of ``cfg``'s plan for ``tc.arch``; returns the manifest entry (cubin paths
    relative to the kernel directory, sha256 filled in) and {relative path: cubin bytes}.

    Runs in THIS process: it installs the stub driver for the duration, points TRITON_PTXAS_PATH at
    ``tc.ptxas`` and Triton's cache at a temporary folder (removed after), and needs a process where
    TRITON_INTERPRET is not set when the kernels are first imported (kernel_dir runs it in fresh
    worker processes: hla_deploy.native.aot_worker)."""
    from .stub_driver import fixed_target_driver

    saved = {k: os.environ.get(k) for k in ("TRITON_PTXAS_PATH", "TRITON_CACHE_DIR")}
    with tempfile.TemporaryDirectory(prefix="hla-triton-cache-") as cache:
        os.environ["TRITON_PTXAS_PATH"] = tc.ptxas
        os.environ["TRITON_CACHE_DIR"] = cache
        try:
            with fixed_target_driver(tc.arch):
                return _compile_entry(cfg, tc, source_hash)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _compile_entry(cfg: KernelConfig, tc: Toolchain, source_hash: str):
    import triton
    from triton import knobs

    if triton.__version__ != tc.triton_version:
        raise AOTCompileError(f"Triton {triton.__version__} imported, the build expected {tc.triton_version}")
    used = knobs.nvidia.ptxas.path   # Triton silently falls back to its own ptxas when the path fails
    if os.path.realpath(used) != os.path.realpath(tc.ptxas):
        raise AOTCompileError(f"sm_{tc.arch}: Triton would run {used}, not the ptxas {tc.ptxas} ({tc.ptxas_version})")
    from hla_deploy.ops.triton.launch_plan import plan

    try:
        p = plan(cfg.variant, cfg.normalize, cfg.has_c, cfg.d, cfg.dv, cfg.dtype)
    except (ValueError, TypeError) as e:
        raise UnsupportedConfigError(f"{cfg.name}: the Triton kernels have no launch plan for it: {e}") from None
    if p.name != cfg.name:
        raise AOTCompileError(f"the launch plan names {cfg.name} {p.name!r}")
    hidden = hidden_param_names(tc.triton_version)
    key8 = entry_key(cfg, tc, source_hash)[:8]
    kernels, files, roles = [], {}, set()
    for i, launch in enumerate(p.launches):
        kernel, cubin = _compile_launch(launch, i, cfg, tc, hidden)
        role = re.sub(r"[^A-Za-z0-9_]", "_", launch.role)
        if role in roles:
            role = f"{role}{i}"
        roles.add(role)
        rel = f"{arch_dir(tc.arch)}/{cfg.name}.{role}.{key8}.cubin"
        files[rel] = cubin
        kernels.append({"name": kernel.pop("name"), "cubin": rel, "sha256": hashlib.sha256(cubin).hexdigest(),
                        **kernel})
    entry = {"config": cfg.to_json(), "arch": arch_dir(tc.arch), "triton_version": tc.triton_version,
             "ptxas_version": tc.ptxas_version, "source_hash": source_hash, "chunk_size": int(p.chunk_size),
             "state_size": int(p.state_size), "in_place": bool(p.in_place),
             "workspace": [{"name": w.name, "dtype": w.dtype, "dims": list(w.dims)} for w in p.workspace],
             "kernels": kernels}
    return entry, files


def entry_key(cfg: KernelConfig, tc: Toolchain, source_hash: str) -> str:
    """What an entry is reused for: (config, arch, Triton version, ptxas version, kernel-source hash)."""
    parts = [cfg.name, arch_dir(tc.arch), tc.triton_version, tc.ptxas_version, source_hash]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def compile_in_worker(cfg_json: dict, tc: Toolchain, source_hash: str):
    """Worker entry point (hla_deploy.native.aot_worker): ("ok", entry, files), ("unsupported", message)
    or ("error", message) (Triton's exceptions do not always pickle)."""
    try:
        entry, files = compile_entry(KernelConfig.from_json(cfg_json), tc, source_hash)
        return "ok", entry, files
    except UnsupportedConfigError as e:
        return "unsupported", str(e)
    except AOTCompileError as e:
        return "error", str(e)
    except Exception as e:  # a bug or an unexpected Triton failure: still one line per configuration
        return "error", f"{KernelConfig.from_json(cfg_json).name} for sm_{tc.arch}: {type(e).__name__}: {e}"


def cubin_arch(cubin: bytes) -> Optional[int]:
    """The SM version in a cubin's ELF header, None when not an ELF: e_flags bits 0-7 in the ABI-7
    format (ptxas <= 12.8), bits 8-15 in the ABI-8 one (ptxas 12.9+)."""
    import struct
    if cubin[:4] != b"\x7fELF" or len(cubin) < 52:
        return None
    flags = struct.unpack_from("<I", cubin, 48)[0]
    return (flags >> 8) & 0xFF if cubin[8] >= 8 else flags & 0xFF
