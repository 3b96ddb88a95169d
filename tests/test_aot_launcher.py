"""The AOT prefill launcher (plugins/common/hla_aot_launcher.h) against a MOCKED CUDA driver, no GPU.

plugins/common is built once (CPU only, with the mocked driver plugins/common/tests/
fake_cuda_driver.cpp) into plugins/build-test/capi-aot-mock; HLA_DEPLOY_CUDA_DRIVER points the
launcher's dlopen at the mock, which records every driver call (JSON lines) and never touches
memory. Each test writes its own kernel directory: a manifest.json (docs/AOT_KERNELS.md section 2)
and fake cubins (text the mock parses: the functions and their parameter sizes).

The happy path's launches (grid, block, dynamic shared memory, every argument: pointers into the
right workspace slots, T / H / B / eps / lam, hidden zeros), the decay memsets and the state copy
are checked against values computed here from the manifest; every error path returns a message
(never a crash); loads happen once per context with several threads; one warning per
(configuration, arch).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from test_native_kernels import load_capi_module

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "plugins" / "build-test" / "capi-aot-mock"
SM90_OPTIN = 232448   # H100/H200 opt-in shared memory per block
SM87_OPTIN = 166912   # Jetson Orin


# ---- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built():
    mod = load_capi_module()
    try:
        lib = mod.build(BUILD, cuda=False, fake_driver=True)
    except mod.CapiBuildError as e:
        pytest.fail(f"building plugins/common with the mocked driver failed: {e}")
    fake = mod.fake_driver_path(lib)
    assert fake.is_file(), fake
    # read once, at the launcher's first driver call (which happens in the tests below)
    os.environ["HLA_DEPLOY_CUDA_DRIVER"] = str(fake)
    return mod.load(lib), fake


class Fake:
    """ctypes handle on the mocked driver (the same library the launcher dlopen()s)."""

    def __init__(self, path: Path):
        import ctypes
        self.ct = ctypes
        self.lib = ctypes.CDLL(str(path))
        self.lib.fake_cuda_take_log.restype = ctypes.c_char_p
        self.lib.fake_cuda_context.restype = ctypes.c_void_p
        self.lib.fake_cuda_stream.restype = ctypes.c_void_p
        self.lib.fake_cuda_stream.argtypes = [ctypes.c_void_p]
        self.lib.fake_cuda_set_current.argtypes = [ctypes.c_void_p]
        self.lib.fake_cuda_fail.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.lib.fake_cuda_set_option.argtypes = [ctypes.c_char_p, ctypes.c_longlong]

    def reset(self):
        self.lib.fake_cuda_reset()
        self.lib.fake_cuda_set_current(self.context(0))

    def configure(self, devices):  # [(cc, optin)]
        n = len(devices)
        cc = (self.ct.c_int * n)(*[d[0] for d in devices])
        optin = (self.ct.c_int * n)(*[d[1] for d in devices])
        self.lib.fake_cuda_configure(n, cc, optin)

    def fail(self, name, code):
        self.lib.fake_cuda_fail(name.encode(), code)

    def option(self, name, value):
        self.lib.fake_cuda_set_option(name.encode(), value)

    def context(self, dev):
        return self.lib.fake_cuda_context(dev)

    def stream(self, ctx):
        return self.lib.fake_cuda_stream(ctx)

    def calls(self, name=None):
        lines = [json.loads(ln) for ln in self.lib.fake_cuda_take_log().decode().splitlines() if ln]
        return [c for c in lines if name is None or c["call"] == name]


@pytest.fixture
def env(built, monkeypatch, tmp_path):
    """(capi, fake, kdir): a fresh launcher state, a fresh mock, kernel dir tmp/kernels named by
    HLA_DEPLOY_KERNEL_DIR, the hla-deploy cache in tmp (so a real cache is never read)."""
    capi, fake_path = built
    fake = Fake(fake_path)
    kdir = tmp_path / "kernels"
    kdir.mkdir()
    monkeypatch.setenv("HLA_DEPLOY_KERNEL_DIR", str(kdir))
    monkeypatch.setenv("HLA_DEPLOY_CACHE", str(tmp_path / "cache"))
    capi.aot_reset()
    capi.capture_log(True)
    capi.take_log()
    fake.reset()
    fake.calls()
    yield capi, fake, kdir
    capi.capture_log(False)


# ---- manifests and fake cubins -----------------------------------------------------------------

SIZES = {"ptr_fp32": 8, "ptr_fp16": 8, "ptr_bf16": 8, "i32": 4, "f32": 4, "hidden": 8}
ACT = {"fp32": "ptr_fp32", "fp16": "ptr_fp16", "bf16": "ptr_bf16"}
DTYPE_NAME = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def state_n(variant, d, dv, normalize, has_c):
    if variant == "hla2":
        return d * d + d * dv + (d if normalize else 0) + ((d * dv + (d if normalize else 0)) if has_c else 0)
    return 2 * d * dv + (2 * d if normalize else 0)


def config_name(c):
    return f"{c['variant']}-n{int(c['normalize'])}-c{int(c['has_c'])}-d{c['d']}-dv{c['dv']}-{c['dtype']}"


def hla2_entry(dtype="bf16", arch="sm_90", normalize=True, has_c=False, d=64, dv=64, shared=(49152, 73728)):
    """An entry shaped like the doc's example: a state kernel and an output kernel."""
    cfg = {"variant": "hla2", "normalize": normalize, "has_c": has_c, "d": d, "dv": dv, "dtype": dtype}
    act = ACT[dtype]
    name = config_name(cfg)
    h_params = [("q", act), ("k", act), ("v", act), ("decay", "ptr_fp32"), ("state_in", "ptr_fp32"),
                ("ws_s", "ptr_fp32"), ("ws_m", "ptr_fp32"), ("T", "i32"), ("H", "i32"),
                ("global_scratch", "hidden"), ("profile_scratch", "hidden")]
    o_params = [("q", act), ("k", act), ("v", act), ("o", act), ("decay", "ptr_fp32"), ("ws_s", "ptr_fp32"),
                ("ws_m", "ptr_fp32"), ("state_out", "ptr_fp32"), ("T", "i32"), ("H", "i32"), ("B", "i32"),
                ("eps", "f32"), ("lam", "f32"), ("global_scratch", "hidden"), ("profile_scratch", "hidden")]
    return {
        "config": cfg, "arch": arch, "triton_version": "3.6.0", "ptxas_version": "12.8.93", "source_hash": "x",
        "chunk_size": 64, "state_size": state_n("hla2", d, dv, normalize, has_c),
        "workspace": [{"name": "ws_s", "dtype": "fp32", "dims": ["B", "H", "NT", d * d]},
                      {"name": "ws_m", "dtype": "fp32", "dims": ["B", "H", "NT", d * (dv + 1)]}],
        "kernels": [
            {"name": "chunk_hla2_fwd_h_kernel", "cubin": f"{arch}/{name}.fwd_h.cubin", "function": "fwd_h_" + dtype,
             "num_warps": 4, "num_stages": 2, "shared_bytes": shared[0], "constexprs": {"BT": 64},
             "grid": [[2], [3], ["B", "H"]], "params": [{"name": n, "type": t} for n, t in h_params]},
            {"name": "chunk_hla2_fwd_o_kernel", "cubin": f"{arch}/{name}.fwd_o.cubin", "function": "fwd_o_" + dtype,
             "num_warps": 8, "num_stages": 3, "shared_bytes": shared[1], "constexprs": {"BT": 64},
             "grid": [[1], ["NT"], ["B", "H"]], "params": [{"name": n, "type": t} for n, t in o_params]},
        ],
    }


def fake_cubin(function, params, static_smem=0):
    sizes = ",".join(str(SIZES[p["type"]]) for p in params)
    return f"FAKECUBIN\nfunction {function} {sizes}\nstatic_smem {static_smem}\n".encode()


def write_dir(kdir: Path, entries, cubins=None, raw_manifest=None):
    """Writes manifest.json and a fake cubin per kernel (cubins: {relpath: bytes} overrides);
    fills in each kernel's sha256 from the bytes written."""
    kdir.mkdir(parents=True, exist_ok=True)
    cubins = dict(cubins or {})
    for e in entries:
        for k in e["kernels"]:
            data = cubins.get(k["cubin"], fake_cubin(k["function"], k["params"]))
            path = kdir / k["cubin"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            k.setdefault("sha256", hashlib.sha256(data).hexdigest())
    text = raw_manifest if raw_manifest is not None else json.dumps({"schema": 1, "entries": entries}, indent=1)
    (kdir / "manifest.json").write_text(text)


# ---- the values the launcher must produce, computed independently ---------------------------------

def align(x, a=256):
    return (x + a - 1) // a * a


def expected_layout(entry, B, T, H):
    """{slot name: offset from the aligned base}, total bytes (docs/AOT_KERNELS.md + hla_aot_launcher.h)."""
    NT = math.ceil(T / entry["chunk_size"])
    sym = {"B": B, "H": H, "T": T, "NT": NT}
    offs, off = {}, 0
    for b in entry["workspace"]:
        n = math.prod(sym.get(f, f) for f in b["dims"]) * (4 if b["dtype"] == "fp32" else 2)
        offs[b["name"]] = off
        off += align(n)
    offs["decay"] = off
    off += align(H * 4)
    offs["state_copy"] = off
    off += align(B * H * entry["state_size"] * 4)
    return offs, 256 + off


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def expected_args(kernel, ptrs, base, offs, B, T, H, eps, lam, state_in=None):
    vals = {"q": ptrs[0], "k": ptrs[1], "v": ptrs[2], "state_in": ptrs[3] if state_in is None else state_in,
            "o": ptrs[4], "state_out": ptrs[5], "decay": base + offs["decay"], "T": T, "H": H, "B": B,
            "eps": f32_bits(eps), "lam": f32_bits(lam)}
    out = []
    for p in kernel["params"]:
        if p["type"] == "hidden":
            out.append(0)
        elif p["name"] in vals:
            out.append(vals[p["name"]])
        else:
            out.append(base + offs[p["name"]])
    return out


PTRS = (0x7f0000100000, 0x7f0000200000, 0x7f0000300000, 0x7f0000400000, 0x7f0000500000, 0x7f0000600000)
WS = 0x7f0010000010  # deliberately not 256-byte aligned: the launcher aligns it up


def grid_of(k, B, T, H, chunk):
    sym = {"B": B, "H": H, "T": T, "NT": math.ceil(T / chunk)}
    return [math.prod(sym.get(f, f) for f in dim) for dim in k["grid"]]


# ---- tests: the happy path ---------------------------------------------------------------------

def test_sha256_matches_hashlib(built):
    capi, _ = built
    for n in (0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 4097):
        data = bytes((i * 131 + 7) % 256 for i in range(n))
        assert capi.sha256(data) == hashlib.sha256(data).hexdigest(), n


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_launches_match_the_manifest(env, dtype):
    capi, fake, kdir = env
    e = hla2_entry(dtype)
    write_dir(kdir, [e])
    B, T, H, eps = 2, 130, 3, 1e-5
    status, msg = capi.aot_prefill("hla2", B, T, H, 64, 64, PTRS, WS, stream=0, normalize=True,
                                   dtype_name=DTYPE_NAME[dtype], eps=eps, decay=[0.95])
    assert (status, msg) == ("launched", "")
    calls = fake.calls()
    offs, total = expected_layout(e, B, T, H)
    base = align(WS)
    assert capi.aot_workspace_bytes("hla2", B, T, H, 64, 64, True, dtype_name=DTYPE_NAME[dtype]) == total
    loads = [c for c in calls if c["call"] == "cuModuleLoadData"]
    assert [c["function"] for c in loads] == ["fwd_h_" + dtype, "fwd_o_" + dtype]
    # 72 KB > 48 KB: the output kernel's dynamic shared-memory limit is raised to what it needs
    attrs = [c for c in calls if c["call"] == "cuFuncSetAttribute"]
    assert attrs == [{"call": "cuFuncSetAttribute", "function": "fwd_o_" + dtype, "attr": 8, "value": 73728}]
    assert [c for c in calls if c["call"] == "cuFuncSetCacheConfig"] == [
        {"call": "cuFuncSetCacheConfig", "function": "fwd_o_" + dtype, "config": 1}]  # PREFER_SHARED, as Triton
    mem = [c for c in calls if c["call"] == "cuMemsetD32Async"]
    assert mem == [{"call": "cuMemsetD32Async", "dst": base + offs["decay"], "value": f32_bits(0.95), "count": H,
                    "stream": 0}]
    assert not [c for c in calls if c["call"] == "cuMemcpyDtoDAsync"]  # distinct states: no copy
    launches = [c for c in calls if c["call"] == "cuLaunchKernel"]
    assert [c["function"] for c in launches] == ["fwd_h_" + dtype, "fwd_o_" + dtype]
    for c, k in zip(launches, e["kernels"]):
        assert c["grid"] == grid_of(k, B, T, H, 64)
        assert c["block"] == [32 * k["num_warps"], 1, 1]
        assert c["smem"] == k["shared_bytes"]
        assert c["stream"] == 0
        assert c["args"] == expected_args(k, PTRS, base, offs, B, T, H, eps, 0.0), k["name"]
    assert launches[1]["grid"] == [1, 3, 6]  # NT = ceil(130 / 64) = 3, B * H = 6
    # the memset precedes the launches that read the decay slot
    order = [c["call"] for c in calls if c["call"] in ("cuMemsetD32Async", "cuLaunchKernel")]
    assert order == ["cuMemsetD32Async", "cuLaunchKernel", "cuLaunchKernel"]
    assert capi.take_log() == []  # no warning


def test_second_call_loads_nothing_and_ridge_binds_lam(env):
    capi, fake, kdir = env
    e = hla2_entry("fp16", has_c=True)
    write_dir(kdir, [e])
    kw = dict(normalize=True, ridge=0.25, dtype_name="float16")
    for _ in range(2):
        assert capi.aot_prefill("hla2", 1, 64, 2, 64, 64, PTRS, WS, **kw)[0] == "launched"
    calls = fake.calls()
    assert len([c for c in calls if c["call"] == "cuModuleLoadData"]) == 2  # two cubins, once each
    launches = [c for c in calls if c["call"] == "cuLaunchKernel"]
    assert len(launches) == 4
    offs, _ = expected_layout(e, 1, 64, 2)
    assert launches[3]["args"] == expected_args(e["kernels"][1], PTRS, align(WS), offs, 1, 64, 2, 1e-6, 0.25)


def test_static_shared_memory_counts_toward_the_48k_default(env):
    """48 KB of dynamic shared memory plus 1 KB of static exceed a block's default 48 KB (static and
    dynamic together): the launcher opts in (the mock, like the driver, refuses the launch otherwise)."""
    capi, fake, kdir = env
    e = hla2_entry(shared=(49152, 40960))
    k = e["kernels"][0]
    write_dir(kdir, [e], cubins={k["cubin"]: fake_cubin(k["function"], k["params"], static_smem=1024)})
    assert capi.aot_prefill("hla2", 1, 100, 2, 64, 64, PTRS, WS, normalize=True, dtype_name="bfloat16") == ("launched", "")
    calls = fake.calls()
    assert [c for c in calls if c["call"] == "cuFuncSetAttribute"] == [
        {"call": "cuFuncSetAttribute", "function": "fwd_h_bf16", "attr": 8, "value": 49152}]
    assert [c["function"] for c in calls if c["call"] == "cuLaunchKernel"] == ["fwd_h_bf16", "fwd_o_bf16"]


def test_per_head_decay_is_one_memset_per_run_of_equal_values(env):
    capi, fake, kdir = env
    e = hla2_entry()
    write_dir(kdir, [e])
    decay = [0.9, 0.9, 1.0, 0.5, 0.5, 0.5]
    assert capi.aot_prefill("hla2", 1, 100, 6, 64, 64, PTRS, WS, normalize=True, dtype_name="bfloat16",
                            decay=decay)[0] == "launched"
    offs, _ = expected_layout(e, 1, 100, 6)
    d0 = align(WS) + offs["decay"]
    mem = [(c["dst"], c["value"], c["count"]) for c in fake.calls("cuMemsetD32Async")]
    assert mem == [(d0, f32_bits(0.9), 2), (d0 + 8, f32_bits(1.0), 1), (d0 + 12, f32_bits(0.5), 3)]


def test_in_place_state_reads_a_copy_in_the_workspace(env):
    capi, fake, kdir = env
    e = hla2_entry()
    write_dir(kdir, [e])
    B, T, H = 2, 70, 4
    ptrs = PTRS[:5] + (PTRS[3],)  # state_out == state_in
    assert capi.aot_prefill("hla2", B, T, H, 64, 64, ptrs, WS, normalize=True, dtype_name="bfloat16")[0] == "launched"
    calls = fake.calls()
    offs, _ = expected_layout(e, B, T, H)
    copy = align(WS) + offs["state_copy"]
    cp = [c for c in calls if c["call"] == "cuMemcpyDtoDAsync"]
    assert cp == [{"call": "cuMemcpyDtoDAsync", "dst": copy, "src": PTRS[3], "bytes": B * H * e["state_size"] * 4,
                   "stream": 0}]
    launches = [c for c in calls if c["call"] == "cuLaunchKernel"]
    assert launches[0]["args"] == expected_args(e["kernels"][0], ptrs, align(WS), offs, B, T, H, 1e-6, 0.0, state_in=copy)
    assert launches[1]["args"] == expected_args(e["kernels"][1], ptrs, align(WS), offs, B, T, H, 1e-6, 0.0, state_in=copy)
    i = [c["call"] for c in calls].index
    assert i("cuMemcpyDtoDAsync") < i("cuLaunchKernel")


def test_workspace_grows_with_shapes_and_is_zero_where_it_does_not_apply(env):
    capi, fake, kdir = env
    write_dir(kdir, [hla2_entry("bf16")])
    kw = dict(normalize=True, dtype_name="bfloat16")
    small = capi.aot_workspace_bytes("hla2", 1, 65, 8, 64, 64, **kw)
    assert small > 0
    assert capi.aot_workspace_bytes("hla2", 1, 4096, 8, 64, 64, **kw) > small
    assert capi.aot_workspace_bytes("hla2", 8, 65, 8, 64, 64, **kw) > small
    assert capi.aot_workspace_bytes("hla2", 1, 1, 8, 64, 64, **kw) == 0          # decode: token-serial
    assert capi.aot_workspace_bytes("hla3", 1, 512, 8, 64, 64) == 0              # hla3: token-serial
    assert capi.aot_workspace_bytes("hla2", 1, 512, 8, 64, 64, False, dtype_name="bfloat16") == 0  # no entry


def test_streams_of_two_contexts_load_once_per_context_and_launch_in_their_own(env):
    capi, fake, kdir = env
    fake.configure([(90, SM90_OPTIN), (90, SM90_OPTIN)])
    write_dir(kdir, [hla2_entry()])
    s0, s1 = fake.stream(fake.context(0)), fake.stream(fake.context(1))
    kw = dict(normalize=True, dtype_name="bfloat16")
    for s in (s0, s1, s0, s1):
        assert capi.aot_prefill("hla2", 1, 100, 2, 64, 64, PTRS, WS, stream=s, **kw) == ("launched", "")
    calls = fake.calls()
    loads = sorted((c["ctx"], c["function"]) for c in calls if c["call"] == "cuModuleLoadData")
    assert loads == [(1000, "fwd_h_bf16"), (1000, "fwd_o_bf16"), (1001, "fwd_h_bf16"), (1001, "fwd_o_bf16")]
    launches = [(c["ctx"], c["stream"]) for c in calls if c["call"] == "cuLaunchKernel"]
    assert launches == [(1000, s0)] * 2 + [(1001, s1)] * 2 + [(1000, s0)] * 2 + [(1001, s1)] * 2
    # device 1's context is not current on this thread: pushed for its calls, popped after
    assert [c["ctx"] for c in calls if c["call"] == "cuCtxPushCurrent"] == [1001, 1001]


def test_concurrent_first_calls_load_each_cubin_once(env):
    capi, fake, kdir = env
    write_dir(kdir, [hla2_entry()])
    fake.option("load_delay_ms", 30)
    results = []

    def call():
        results.append(capi.aot_prefill("hla2", 1, 200, 2, 64, 64, PTRS, WS, normalize=True, dtype_name="bfloat16"))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [("launched", "")] * 8
    calls = fake.calls()
    assert len([c for c in calls if c["call"] == "cuModuleLoadData"]) == 2
    assert len([c for c in calls if c["call"] == "cuLaunchKernel"]) == 16


def test_first_directory_with_an_entry_wins_and_the_order_is_the_documented_one(env, tmp_path, monkeypatch):
    capi, fake, kdir = env
    other = tmp_path / "other"
    e1, e2 = hla2_entry(), hla2_entry()
    for k in e2["kernels"]:
        k["function"] = "second_" + k["function"]
    write_dir(kdir, [hla2_entry("fp16")])   # the first directory has no bf16 entry
    write_dir(other, [e1])
    cache_kernels = tmp_path / "cache" / "kernels"
    write_dir(cache_kernels, [e2])
    monkeypatch.setenv("HLA_DEPLOY_KERNEL_DIR", f"{kdir}:{other}")
    capi.aot_reset()
    dirs = capi.aot_search_dirs()
    assert dirs[0] == str(kdir) and dirs[1] == str(other)
    assert dirs[2].endswith("/hla_kernels") and Path(dirs[2]).parent == BUILD  # beside the library
    assert dirs[3] == str(cache_kernels)
    assert capi.aot_prefill("hla2", 1, 100, 2, 64, 64, PTRS, WS, normalize=True, dtype_name="bfloat16")[0] == "launched"
    assert [c["function"] for c in fake.calls("cuLaunchKernel")] == ["fwd_h_bf16", "fwd_o_bf16"]
    # without the env directories the cache's entry serves
    monkeypatch.delenv("HLA_DEPLOY_KERNEL_DIR")
    capi.aot_reset()
    assert capi.aot_prefill("hla2", 1, 100, 2, 64, 64, PTRS, WS, normalize=True, dtype_name="bfloat16")[0] == "launched"
    assert [c["function"] for c in fake.calls("cuLaunchKernel")] == ["second_fwd_h_bf16", "second_fwd_o_bf16"]


def test_param_info_unavailable_skips_the_count_check(env):
    capi, fake, kdir = env
    e = hla2_entry()
    write_dir(kdir, [e])
    fake.option("param_info", 0)
    assert capi.aot_prefill("hla2", 1, 100, 2, 64, 64, PTRS, WS, normalize=True, dtype_name="bfloat16")[0] == "launched"


# ---- tests: falling back to the token-serial kernel ------------------------------------------------

def test_no_entry_warns_once_per_configuration_and_arch(env):
    capi, fake, kdir = env
    write_dir(kdir, [hla2_entry("bf16", arch="sm_87")])  # an Orin entry only; the device is sm_90
    kw = dict(normalize=True, dtype_name="bfloat16")
    for _ in range(3):
        assert capi.aot_prefill("hla2", 1, 100, 2, 64, 64, PTRS, WS, **kw) == ("token-serial", "")
        assert capi.aot_workspace_bytes("hla2", 1, 100, 2, 64, 64, **kw) == 0
    log = capi.take_log()
    assert len(log) == 1, log
    level, msg = log[0]
    assert level == "W"
    for part in ("hla2-n1-c0-d64-dv64-bf16", "sm_90", str(kdir) + " (no entry)", "token-serial",
                 "hla-deploy build-plugins --arch 90 --config hla2-n1-c0-d64-dv64-bf16", "/hla_kernels"):
        assert part in msg, (part, msg)
    assert not fake.calls("cuLaunchKernel")
    # another configuration: its own warning
    assert capi.aot_prefill("ahla", 1, 100, 2, 64, 64, PTRS, WS, dtype_name="bfloat16")[0] == "token-serial"
    assert [m for _, m in capi.take_log()][0].count("ahla-n0-c0-d64-dv64-bf16") == 2  # config + command


def test_null_workspace_and_unaligned_tensors_take_the_token_serial_kernel(env):
    capi, fake, kdir = env
    write_dir(kdir, [hla2_entry()])
    kw = dict(normalize=True, dtype_name="bfloat16")
    assert capi.aot_prefill("hla2", 1, 100, 2, 64, 64, PTRS, 0, **kw) == ("token-serial", "")
    assert capi.take_log() == []
    bad = (PTRS[0] + 8,) + PTRS[1:]
    assert capi.aot_prefill("hla2", 1, 100, 2, 64, 64, bad, WS, **kw) == ("token-serial", "")
    (level, msg), = capi.take_log()
    assert level == "W" and "'q' is not 16-byte aligned" in msg
    assert not fake.calls("cuLaunchKernel")
    assert capi.aot_prefill("hla2", 1, 1, 2, 64, 64, PTRS, WS, **kw) == ("token-serial", "")  # decode


# ---- tests: errors with a message ----------------------------------------------------------------

def _err(capi, dtype="bfloat16", **kw):
    status, msg = capi.aot_prefill("hla2", 1, 100, 2, 64, 64, PTRS, WS, normalize=True, dtype_name=dtype, **kw)
    assert status == "error" and msg, (status, msg)
    return msg


def test_missing_cubin_file(env):
    capi, fake, kdir = env
    e = hla2_entry()
    write_dir(kdir, [e])
    (kdir / e["kernels"][1]["cubin"]).unlink()
    msg = _err(capi)
    assert "fwd_o.cubin" in msg and "cannot be read" in msg and "hla-deploy build-plugins" in msg
    assert not fake.calls("cuLaunchKernel")  # nothing launched when any kernel fails to load


def test_stale_cubin_sha256(env):
    capi, fake, kdir = env
    e = hla2_entry()
    write_dir(kdir, [e])
    (kdir / e["kernels"][0]["cubin"]).write_bytes(b"FAKECUBIN\nfunction fwd_h_bf16 8\n")
    msg = _err(capi)
    assert "sha256" in msg and "the manifest records " + e["kernels"][0]["sha256"] in msg


def test_failed_module_load(env):
    capi, fake, kdir = env
    write_dir(kdir, [hla2_entry()])
    fake.fail("cuModuleLoadData", 2)
    msg = _err(capi)
    assert "cuModuleLoadData" in msg and "CUDA_ERROR_OUT_OF_MEMORY" in msg
    fake.fail("cuModuleLoadData", 0)  # a transient failure is not cached
    assert capi.aot_prefill("hla2", 1, 100, 2, 64, 64, PTRS, WS, normalize=True, dtype_name="bfloat16")[0] == "launched"


def test_invalid_image(env):
    capi, fake, kdir = env
    e = hla2_entry()
    write_dir(kdir, [e], cubins={e["kernels"][0]["cubin"]: b"\x7fELF not for this driver"})
    msg = _err(capi)
    assert "CUDA_ERROR_INVALID_IMAGE" in msg and "device kernel image is invalid" in msg


def test_function_missing_from_cubin(env):
    capi, fake, kdir = env
    e = hla2_entry()
    write_dir(kdir, [e], cubins={e["kernels"][0]["cubin"]: fake_cubin("other_name", e["kernels"][0]["params"])})
    msg = _err(capi)
    assert "cuModuleGetFunction(fwd_h_bf16)" in msg and "CUDA_ERROR_NOT_FOUND" in msg


def test_wrong_parameter_count(env):
    capi, fake, kdir = env
    e = hla2_entry()
    k = e["kernels"][1]
    write_dir(kdir, [e], cubins={k["cubin"]: fake_cubin(k["function"], k["params"][:-1])})  # one hidden param fewer
    msg = _err(capi)
    assert f"takes {len(k['params']) - 1} parameters, the manifest lists {len(k['params'])}" in msg
    assert not fake.calls("cuLaunchKernel")


def test_wrong_parameter_size(env):
    capi, fake, kdir = env
    e = hla2_entry()
    k = e["kernels"][0]
    params = [dict(p) for p in k["params"]]
    params[7]["type"] = "ptr_fp32"  # the cubin has 8 bytes where the manifest says T: i32
    write_dir(kdir, [e], cubins={k["cubin"]: fake_cubin(k["function"], params)})
    msg = _err(capi)
    assert "parameter 7 ('T') is 8 bytes in the cubin" in msg


@pytest.mark.parametrize("where", ["dynamic", "dynamic+static"])
def test_shared_memory_above_the_devices_opt_in_limit(env, where):
    capi, fake, kdir = env
    fake.configure([(87, SM87_OPTIN)])
    if where == "dynamic":
        e = hla2_entry(arch="sm_87", shared=(49152, SM87_OPTIN + 1024))
        write_dir(kdir, [e])
    else:  # fits alone, not with the function's static shared memory
        e = hla2_entry(arch="sm_87", shared=(49152, SM87_OPTIN - 512))
        k = e["kernels"][1]
        write_dir(kdir, [e], cubins={k["cubin"]: fake_cubin(k["function"], k["params"], static_smem=1024)})
    msg = _err(capi)
    assert "shared memory" in msg and f"allows {SM87_OPTIN}" in msg and "sm_87" in msg
    assert not fake.calls("cuLaunchKernel")


def test_kernel_launch_failure(env):
    capi, fake, kdir = env
    write_dir(kdir, [hla2_entry()])
    fake.fail("cuLaunchKernel", 1)
    msg = _err(capi)
    assert "cuLaunchKernel of chunk_hla2_fwd_h_kernel" in msg and "CUDA_ERROR_INVALID_VALUE" in msg


def test_stream_of_an_unknown_context(env):
    capi, fake, kdir = env
    write_dir(kdir, [hla2_entry()])
    msg = _err(capi, stream=0xdead0)
    assert "cuStreamGetCtx" in msg and "CUDA_ERROR_INVALID_HANDLE" in msg


def test_no_current_context(env):
    capi, fake, kdir = env
    write_dir(kdir, [hla2_entry()])
    fake.lib.fake_cuda_set_current(None)
    try:
        msg = _err(capi)
    finally:
        fake.lib.fake_cuda_set_current(fake.context(0))
    assert "no CUDA context is current" in msg


def test_grid_beyond_cuda_limits(env):
    capi, fake, kdir = env
    write_dir(kdir, [hla2_entry()])
    status, msg = capi.aot_prefill("hla2", 300, 100, 256, 64, 64, PTRS, WS, normalize=True, dtype_name="bfloat16")
    assert status == "error" and "grid dim 2 exceeds the CUDA limit 65535" in msg


# ---- tests: manifests ------------------------------------------------------------------------------

MALFORMED = [
    ('{"schema": 1, "entries": [}', ":1:27: unexpected character '}'"),
    ('{"schema": 1, "entries": [],}', ":1:29: expected a string key"),
    ('{"schema": 1,\n "schema": 1, "entries": []}', ':2:2: duplicate key "schema"'),
    ('{"schema": 1, "entries": ["\\x"]}', ":1:29: invalid escape"),
    ('{"schema": 01, "entries": []}', ":1:13: invalid number (leading zero)"),
    ('{"schema": 1, "entries": []} x', ":1:30: unexpected text after the top-level value"),
    ('{"schema": 1, "entries": [', ":1:27: unexpected end of input"),
    ('', ":1:1: unexpected end of input"),
    ('{"schema": 2, "entries": []}', "schema: version 2 is not supported"),
    ('{"entries": []}', 'missing key "schema"'),
    ('{"schema": 1, "entries": {}}', "manifest.entries: expected an array, got an object"),
]


@pytest.mark.parametrize("text,expect", MALFORMED, ids=[f"m{i}" for i in range(len(MALFORMED))])
def test_malformed_manifest_names_file_and_position(env, text, expect):
    capi, fake, kdir = env
    write_dir(kdir, [], raw_manifest=text)
    msg = _err(capi)
    assert str(kdir / "manifest.json") in msg and expect in msg, msg


def _bad_entry(mutate):
    e = hla2_entry()
    mutate(e)
    return e


BAD_ENTRIES = [
    (lambda e: e["kernels"][0]["params"].append({"name": "gamma", "type": "ptr_fp32"}),
     "entries[0].kernels[0].params[11].name: \"gamma\" is not in the parameter vocabulary"),
    (lambda e: e["kernels"][0]["params"].__setitem__(0, {"name": "q", "type": "ptr_fp16"}),
     "entries[0].kernels[0].params[0].type: \"q\" must have type ptr_bf16 for hla2-n1-c0-d64-dv64-bf16, got ptr_fp16"),
    (lambda e: e["kernels"][0]["params"].__setitem__(7, {"name": "T", "type": "u32"}),
     "entries[0].kernels[0].params[7].type: expected ptr_fp32"),
    (lambda e: e["kernels"][1]["grid"].__setitem__(1, ["NC"]), 'unknown symbol "NC"'),
    (lambda e: e["kernels"][1].__setitem__("grid", [[1], ["NT"]]), "entries[0].kernels[1].grid: expected 3 dims"),
    (lambda e: e.__setitem__("state_size", 8192), "entries[0].state_size: 8192 but the op contract's N"),
    (lambda e: e["config"].__setitem__("variant", "hla3"), 'expected "hla2" or "ahla", got "hla3"'),
    (lambda e: e["kernels"][0].__setitem__("cubin", "/abs/x.cubin"), "expected a path relative to the kernel directory"),
    (lambda e: e["kernels"][0].pop("function"), 'entries[0].kernels[0]: missing key "function"'),
    (lambda e: e["kernels"][0].__setitem__("sha256", "ABC"), "sha256: expected 64 lowercase hex digits"),
    (lambda e: e["kernels"][0].__setitem__("num_warps", 4.5), "num_warps: expected an integer in [1, 32], got 4.5"),
    (lambda e: e.__setitem__("kernels", []), "entries[0].kernels: expected at least one kernel"),
    (lambda e: e.__setitem__("arch", "90"), 'entries[0].arch: expected "sm_<major><minor>"'),
    (lambda e: e["workspace"][0].__setitem__("dtype", "i64"), 'entries[0].workspace[0].dtype: expected "fp32"'),
    (lambda e: e["workspace"].append(dict(e["workspace"][0])), 'duplicate workspace buffer "ws_s"'),
]


@pytest.mark.parametrize("mutate,expect", BAD_ENTRIES, ids=[f"e{i}" for i in range(len(BAD_ENTRIES))])
def test_inconsistent_entry_is_an_error_naming_the_field(env, mutate, expect):
    capi, fake, kdir = env
    e = _bad_entry(lambda x: None)
    write_dir(kdir, [e])  # fills sha256 first, then the mutation may break it
    mutate(e)
    (kdir / "manifest.json").write_text(json.dumps({"schema": 1, "entries": [e]}, indent=1))
    msg = _err(capi)
    assert str(kdir / "manifest.json") in msg and expect in msg, msg


def test_kernel_dir_without_manifest_or_missing(env, tmp_path, monkeypatch):
    capi, fake, kdir = env
    msg = _err(capi)  # kdir exists but is empty
    assert f"HLA_DEPLOY_KERNEL_DIR names {kdir}, which has no manifest.json" in msg
    monkeypatch.setenv("HLA_DEPLOY_KERNEL_DIR", str(tmp_path / "nope"))
    capi.aot_reset()
    assert "which is not a directory" in _err(capi)
    # a default directory (cache, beside the library) without kernels is not an error: no entry
    monkeypatch.delenv("HLA_DEPLOY_KERNEL_DIR")
    capi.aot_reset()
    assert capi.aot_prefill("hla2", 1, 100, 2, 64, 64, PTRS, WS, normalize=True, dtype_name="bfloat16")[0] == "token-serial"
    (level, warn), = capi.take_log()
    assert "(absent)" in warn


def test_missing_driver_is_an_error_not_a_crash(built, tmp_path):
    """A separate process: the driver is loaded once per process."""
    capi, _ = built
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from test_native_kernels import load_capi_module\n"
        "capi = load_capi_module().load(%r)\n"
        "print(capi.aot_prefill('hla2', 1, 100, 2, 64, 64, (16,) * 6, 256, normalize=True, dtype_name='bfloat16'))\n"
        "print(capi.aot_workspace_bytes('hla2', 1, 100, 2, 64, 64, True, dtype_name='bfloat16'))\n"
    ) % (str(ROOT / "tests"), str(capi.path))
    env = dict(os.environ, HLA_DEPLOY_CUDA_DRIVER=str(tmp_path / "libcuda-missing.so.1"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()[-2:]
    assert "'error'" in first and "could not load the CUDA driver" in first and "libcuda-missing.so.1" in first
    assert second == "0"
