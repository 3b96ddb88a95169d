"""The three halves of issue 18 together, no GPU: the launch plan, the AOT compiler and the C++ launcher.

A REAL kernel directory is built once (module fixture) with `build_kernels` (Triton here, the stub
driver, sm_90 and, where CUDA 12.6's ptxas can be had, sm_87). The launcher (the capi library
built with the mocked driver, as tests/test_aot_launcher.py) then runs against that directory
UNCHANGED: its manifest.json and its real cubins (sha256 checked by the launcher), which the mock
reads as the driver does (functions, EIATTR_KPARAM_INFO parameter sizes, static shared memory,
EIATTR_REQNTID, the cubin's SM: plugins/common/tests/fake_cuda_driver.cpp).

Every launch (function, grid, block, dynamic shared memory, every argument), the decay memsets,
the state copy and workspace_bytes are compared with values computed HERE from the launch plan
(`plan(...)`), not from the manifest: params in plan order, the workspace carve-up of
docs/AOT_KERNELS.md section 2 from the plan's buffers, ws_m bound to hla2's unused ws_c, hidden
parameters 0. The cubins' parameters are read a second, independent way (cuobjdump -elf of the
Triton wheel) and must be what the launcher passes. Last, the configuration the C++ side derives
from a node's attributes and shapes is the one the Python side names, and the build command its
warning suggests parses in the CLI and asks for exactly that configuration.
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from hla_deploy.ops.triton.launch_plan import config_name, dims_value, plan, sizes_of  # noqa: E402
from hla_deploy.native.kernel_configs import KernelConfig, kernel_configs_of_model  # noqa: E402
from test_aot_launcher import SM87_OPTIN, SM90_OPTIN, Fake  # noqa: E402
from test_native_kernels import load_capi_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "plugins" / "build-test" / "capi-aot-mock"
#: hla2 plain, hla2 normalize + ridge (has_c: its own ws_c), ahla normalize; fp16 and bf16; d = dv = 64
SM90_CONFIGS = [f"{c}-d64-dv64-{t}" for c in ("hla2-n0-c0", "hla2-n1-c1", "ahla-n1-c0") for t in ("fp16", "bf16")]
SM87_CONFIGS = ["hla2-n0-c0-d64-dv64-fp16", "hla2-n1-c1-d64-dv64-bf16", "ahla-n1-c0-d64-dv64-fp16"]
OPTIN = {"sm_90": SM90_OPTIN, "sm_87": SM87_OPTIN}
DTYPE_NAME = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
SIZES = {"ptr_fp32": 8, "ptr_fp16": 8, "ptr_bf16": 8, "hidden": 8, "i32": 4, "f32": 4}
# device addresses (16-byte aligned) of q, k, v, state_in, o, state_out, and an unaligned workspace
PTRS = (0x7f0000100000, 0x7f0000200000, 0x7f0000300000, 0x7f0000400000, 0x7f0000500000, 0x7f0000600000)
WS = 0x7f0010000010
B, T, H = 2, 130, 3            # NT = 3, the last chunk partial
DECAY = [0.9, 0.9, 0.5]        # per head: two memsets
EPS, RIDGE = 1e-5, 0.25


# ---- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """The real kernel directory: {"dir": Path, "archs": [...], "skipped": {arch: why}}.
    $HLA_DEPLOY_TEST_KERNEL_DIR keeps one between runs (its entries are reused like any cache)."""
    from hla_deploy.native.kernel_dir import build_kernels
    from hla_deploy.native.triton_aot import AOTCompileError, toolchain
    keep = os.environ.get("HLA_DEPLOY_TEST_KERNEL_DIR")
    kdir = Path(keep) if keep else tmp_path_factory.mktemp("aot-integration") / "kernels"
    archs, skipped = ["sm_90"], {}
    build_kernels(SM90_CONFIGS, [90], kdir, jobs=os.cpu_count(), verbose=False)
    try:
        toolchain(87)
    except AOTCompileError as e:
        skipped["sm_87"] = f"no CUDA 12.6 ptxas for sm_87 here: {e}"
    else:
        build_kernels(SM87_CONFIGS, [87], kdir, jobs=os.cpu_count(), verbose=False)
        archs.append("sm_87")
    return {"dir": kdir, "archs": archs, "skipped": skipped}


@pytest.fixture(scope="module")
def capi_fake():
    mod = load_capi_module()
    try:
        lib = mod.build(BUILD, cuda=False, fake_driver=True)
    except mod.CapiBuildError as e:
        pytest.fail(f"building plugins/common with the mocked driver failed: {e}")
    fake = mod.fake_driver_path(lib)
    os.environ["HLA_DEPLOY_CUDA_DRIVER"] = str(fake)  # read at the launcher's first driver call
    return mod.load(lib), Fake(fake)


@pytest.fixture
def launcher(capi_fake, kernel_dir, monkeypatch, tmp_path):
    """(capi, fake) with a fresh launcher state whose only kernel directory is the real one."""
    capi, fake = capi_fake
    monkeypatch.setenv("HLA_DEPLOY_KERNEL_DIR", str(kernel_dir["dir"]))
    monkeypatch.setenv("HLA_DEPLOY_CACHE", str(tmp_path / "cache"))
    capi.aot_reset()
    capi.capture_log(True)
    capi.take_log()
    fake.reset()
    fake.calls()
    yield capi, fake
    capi.capture_log(False)


def _entries(kernel_dir):
    man = json.loads((kernel_dir["dir"] / "manifest.json").read_text())
    return [e for e in man["entries"] if e["arch"] in kernel_dir["archs"]]


def _cases():
    return [(a, n) for a in ("sm_90", "sm_87") for n in (SM90_CONFIGS if a == "sm_90" else SM87_CONFIGS)]


@pytest.fixture(params=_cases(), ids=[f"{a}-{n}" for a, n in _cases()])
def entry(request, kernel_dir):
    arch, name = request.param
    if arch in kernel_dir["skipped"]:
        pytest.skip(kernel_dir["skipped"][arch])
    found = [e for e in _entries(kernel_dir) if e["arch"] == arch and KernelConfig.from_json(e["config"]).name == name]
    assert len(found) == 1, f"{name} {arch}: {len(found)} entries in {kernel_dir['dir']}"
    return found[0]


# ---- what the launcher must do, from the plan alone -----------------------------------------------

def _plan_of(e):
    c = e["config"]
    return plan(c["variant"], c["normalize"], c["has_c"], c["d"], c["dv"], c["dtype"])


def _align(x, a=256):
    return (x + a - 1) // a * a


def _f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _layout(p, b, t, h):
    """{slot: offset from the 256-aligned base}, total workspace bytes: the plan's buffers (float32)
    in plan order, then decay [H], then the state copy [B, H, N], each rounded up to 256."""
    sizes = sizes_of(p, b, t, h)
    offs, off = {}, 0
    for w in p.workspace:
        assert w.dtype == "fp32"
        offs[w.name] = off
        off += _align(dims_value(w.dims, sizes) * 4)
    offs["decay"] = off
    off += _align(h * 4)
    offs["state_copy"] = off
    off += _align(b * h * p.state_size * 4)
    return offs, 256 + off


def _expected_launches(p, n_hidden, b, t, h, ptrs, ws, lam, state_in=None):
    """[(function name, grid, block, args)] for each launch of the plan."""
    base = _align(ws)
    offs, _ = _layout(p, b, t, h)
    q, k, v, s_in, o, s_out = ptrs
    vals = {"q": q, "k": k, "v": v, "o": o, "state_in": s_in if state_in is None else state_in,
            "state_out": s_out, "decay": base + offs["decay"], "T": t, "H": h, "B": b,
            "eps": _f32_bits(EPS), "lam": _f32_bits(lam)}
    vals.update({w.name: base + offs[w.name] for w in p.workspace})
    sizes = sizes_of(p, b, t, h)
    out = []
    for launch in p.launches:
        args = [vals[prm.name] for prm in launch.params] + [0] * n_hidden
        grid = [dims_value(g, sizes) for g in launch.grid]
        out.append((launch.name, grid, [32 * launch.num_warps, 1, 1], args))
    return out


def _run(capi, e, ptrs=PTRS, ws=WS):
    c = e["config"]
    return capi.aot_prefill(c["variant"], B, T, H, c["d"], c["dv"], ptrs, ws, normalize=c["normalize"],
                            ridge=RIDGE if c["has_c"] else 0.0, dtype_name=DTYPE_NAME[c["dtype"]], eps=EPS,
                            decay=DECAY)


def _hidden(e):
    from hla_deploy.native.triton_aot import hidden_param_names
    return len(hidden_param_names(e["triton_version"]))


# ---- the compiler's manifest is the plan ---------------------------------------------------------------

def test_manifest_entry_is_the_plan(entry):
    p = _plan_of(entry)
    assert entry["chunk_size"] == p.chunk_size and entry["state_size"] == p.state_size
    assert entry["in_place"] == p.in_place
    assert entry["workspace"] == [{"name": w.name, "dtype": w.dtype, "dims": list(w.dims)} for w in p.workspace]
    assert len(entry["kernels"]) == len(p.launches)
    hidden = [{"name": n, "type": "hidden"} for n in ("global_scratch", "profile_scratch")][:_hidden(entry)]
    for k, launch in zip(entry["kernels"], p.launches):
        assert k["name"] == launch.name and k["num_warps"] == launch.num_warps
        assert k["num_stages"] == launch.num_stages and k["constexprs"] == dict(launch.constexprs)
        assert k["grid"] == [list(g) for g in launch.grid]
        assert k["params"] == [{"name": x.name, "type": x.type} for x in launch.params] + hidden
        assert k["cubin"].startswith(entry["arch"] + "/" + p.name + "." + launch.role + ".")


def _cuobjdump_params(cubin: Path, function: str):
    """(sizes by ordinal, reqntid) of `function` in the cubin, read with the Triton wheel's cuobjdump."""
    from hla_deploy.native.triton_aot import triton_tool
    out = subprocess.run([str(triton_tool("cuobjdump")), "-elf", str(cubin)], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"^\.nv\.info\.%s\n(.*?)(?=^\.|\Z)" % re.escape(function), out, re.S | re.M)
    assert m, f"{cubin}: no .nv.info.{function} in cuobjdump -elf"
    info = m.group(1)
    sizes = {int(o, 16): int(s, 16) for o, s in
             re.findall(r"EIATTR_KPARAM_INFO.*?Ordinal\s*:\s*(0x[0-9a-f]+).*?Size\s*:\s*(0x[0-9a-f]+)", info, re.S)}
    assert sorted(sizes) == list(range(len(sizes))), sizes
    req = re.search(r"EIATTR_REQNTID\s*\n\s*Format:\s*EIFMT_SVAL\s*\n\s*Value:\s*(0x\w+) (0x\w+) (0x\w+)", info)
    return [sizes[i] for i in range(len(sizes))], [int(x, 16) for x in req.groups()] if req else None


def test_cubin_parameters_are_what_the_launcher_passes(entry, kernel_dir):
    """cuobjdump's count and byte size of every parameter == the manifest's types as the launcher
    packs them (pointers and hidden 8, i32 / f32 4); the kernel's required block is 32 * num_warps;
    the cubin's SM is the entry's arch."""
    from hla_deploy.native.triton_aot import cubin_arch
    for k, launch in zip(entry["kernels"], _plan_of(entry).launches):
        cubin = kernel_dir["dir"] / k["cubin"]
        sizes, reqntid = _cuobjdump_params(cubin, k["function"])
        assert sizes == [SIZES[x["type"]] for x in k["params"]], k["name"]
        assert len(sizes) == len(launch.params) + _hidden(entry)
        assert reqntid == [32 * launch.num_warps, 1, 1]
        assert "sm_%d" % cubin_arch(cubin.read_bytes()) == entry["arch"]


# ---- the launcher on the real manifest ---------------------------------------------------------------

def _device(fake, e):
    fake.configure([(int(e["arch"][3:]), OPTIN[e["arch"]])])


def test_launches_are_the_plans(launcher, entry, kernel_dir):
    capi, fake = launcher
    _device(fake, entry)
    p = _plan_of(entry)
    c = p.config
    assert _run(capi, entry) == ("launched", "")
    calls = fake.calls()
    # loads: each real cubin once, read by the mock as cuobjdump reads it
    loads = [x for x in calls if x["call"] == "cuModuleLoadData"]
    assert [x["function"] for x in loads] == [k["function"] for k in entry["kernels"]]
    for x, k in zip(loads, entry["kernels"]):
        sizes, reqntid = _cuobjdump_params(kernel_dir["dir"] / k["cubin"], k["function"])
        assert (x["sm"], x["params"], x["reqntid"]) == (int(entry["arch"][3:]), sizes, reqntid)
        assert x["static_smem"] + k["shared_bytes"] <= OPTIN[entry["arch"]]
    # 48 KB per block without the opt-in, static and dynamic together; Triton's kernels have no static
    # shared memory (sm_90's 1 KB .nv.shared is the block's reserved shared memory, which the mock
    # discounts as the driver does)
    assert [x["static_smem"] for x in loads] == [0] * len(loads)
    big = [k for x, k in zip(loads, entry["kernels"]) if k["shared_bytes"] + x["static_smem"] > 48 * 1024]
    assert [x for x in calls if x["call"] == "cuFuncSetAttribute"] == [
        {"call": "cuFuncSetAttribute", "function": k["function"], "attr": 8, "value": k["shared_bytes"]} for k in big]
    # decay: one memset per run of equal values, into the decay slot
    offs, total = _layout(p, B, T, H)
    d0 = _align(WS) + offs["decay"]
    assert [(x["dst"], x["value"], x["count"]) for x in calls if x["call"] == "cuMemsetD32Async"] == [
        (d0, _f32_bits(0.9), 2), (d0 + 8, _f32_bits(0.5), 1)]
    assert not [x for x in calls if x["call"] == "cuMemcpyDtoDAsync"]  # distinct states: no copy
    launches = [x for x in calls if x["call"] == "cuLaunchKernel"]
    expected = _expected_launches(p, _hidden(entry), B, T, H, PTRS, WS, RIDGE if c.has_c else 0.0)
    assert len(launches) == len(expected)
    for x, k, (name, grid, block, args) in zip(launches, entry["kernels"], expected):
        assert x["function"] == k["function"] and k["name"] == name
        assert (x["grid"], x["block"], x["smem"]) == (grid, block, k["shared_bytes"]), name
        assert x["args"] == args, name
    if c.variant == "hla2" and not c.has_c:  # ws_m bound to the kernels' unused ws_c as well
        for x, launch in zip(launches, p.launches):
            args = [prm.arg for prm in launch.params]
            assert x["args"][args.index("ws_c")] == x["args"][args.index("ws_m")] == _align(WS) + offs["ws_m"]
    order = [x["call"] for x in calls if x["call"] in ("cuMemsetD32Async", "cuLaunchKernel")]
    assert order.index("cuLaunchKernel") == 2
    # the workspace the caller must give: the plan's buffers + decay + state copy, with the alignment
    assert capi.aot_workspace_bytes(c.variant, B, T, H, c.d, c.dv, c.normalize, RIDGE if c.has_c else 0.0,
                                    dtype_name=DTYPE_NAME[c.dtype], decay=DECAY) == total
    assert capi.take_log() == []


def test_same_state_buffer_reads_a_copy(launcher, entry):
    """state_in == state_out (an in-place decode hand-off): the launcher copies state_in into the
    workspace and the kernels read the copy (required where the plan says in_place is False; the
    launcher does it for every plan, which docs/AOT_KERNELS.md allows)."""
    capi, fake = launcher
    _device(fake, entry)
    p = _plan_of(entry)
    ptrs = PTRS[:5] + (PTRS[3],)
    assert _run(capi, entry, ptrs=ptrs) == ("launched", "")
    calls = fake.calls()
    offs, _ = _layout(p, B, T, H)
    copy = _align(WS) + offs["state_copy"]
    assert [(x["dst"], x["src"], x["bytes"]) for x in calls if x["call"] == "cuMemcpyDtoDAsync"] == [
        (copy, PTRS[3], B * H * p.state_size * 4)]
    launches = [x for x in calls if x["call"] == "cuLaunchKernel"]
    lam = RIDGE if p.config.has_c else 0.0
    expected = _expected_launches(p, _hidden(entry), B, T, H, ptrs, WS, lam, state_in=copy)
    assert [x["args"] for x in launches] == [a for *_, a in expected]
    seq = [x["call"] for x in calls]
    assert seq.index("cuMemcpyDtoDAsync") < seq.index("cuLaunchKernel")


def test_a_cubin_for_another_arch_is_not_loaded(launcher, kernel_dir):
    """The entry of the device's arch is chosen; the mock refuses a cubin for another SM as the
    driver does, so a wrong arch in a manifest would be a load error, not a launch."""
    if "sm_87" in kernel_dir["skipped"]:
        pytest.skip(kernel_dir["skipped"]["sm_87"])
    capi, fake = launcher
    e87 = next(e for e in _entries(kernel_dir) if e["arch"] == "sm_87")
    fake.configure([(90, SM90_OPTIN)])
    assert _run(capi, e87)[0] == "launched"   # sm_90's entry of the same configuration
    assert {x["sm"] for x in fake.calls("cuModuleLoadData")} == {90}


# ---- the configuration names of both sides and the suggested command ------------------------------------

NODES = [  # variant, normalize, ridge, d, dv, dtype
    ("hla2", 0, 0.0, 64, 64, "fp16"), ("hla2", 1, 0.0, 64, 64, "bf16"), ("hla2", 1, 0.25, 64, 64, "bf16"),
    ("hla2", 0, 1e-3, 32, 48, "fp32"), ("ahla", 1, 0.0, 64, 64, "fp16"), ("ahla", 0, 0.0, 128, 96, "bf16"),
]
ONNX_TYPES = {"fp32": 1, "fp16": 10, "bf16": 16}


def _onnx_node_model(path, variant, normalize, ridge, d, dv, dtype):
    import onnx
    from onnx import helper
    from hla_deploy.state_layout import state_size
    n = state_size(variant, d, dv, bool(normalize), ridge)
    t = ONNX_TYPES[dtype]
    inputs = [helper.make_tensor_value_info("q", t, [1, "T", 2, d]), helper.make_tensor_value_info("k", t, [1, "T", 2, d]),
              helper.make_tensor_value_info("v", t, [1, "T", 2, dv]),
              helper.make_tensor_value_info("state", 1, [1, 2, n])]
    outputs = [helper.make_tensor_value_info("o", t, [1, "T", 2, dv]),
               helper.make_tensor_value_info("state_out", 1, [1, 2, n])]
    node = helper.make_node("HLARecurrentStep", ["q", "k", "v", "state"], ["o", "state_out"], domain="hla_deploy",
                            name="hla0", variant=variant, normalize=normalize, ridge=ridge, decay=[0.9], eps=1e-6)
    graph = helper.make_graph([node], "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("hla_deploy", 1)])
    onnx.save(model, str(path))
    return path


def _warning(capi, fake, arch_cc, variant, normalize, ridge, d, dv, dtype):
    """The launcher's no-entry warning for this node: (configuration, cc, suggested command or None)."""
    fake.configure([(arch_cc, SM90_OPTIN)])
    status, msg = capi.aot_prefill(variant, 1, 100, 2, d, dv, PTRS, WS, normalize=bool(normalize), ridge=ridge,
                                   dtype_name=DTYPE_NAME[dtype], decay=[0.9])
    assert (status, msg) == ("token-serial", "")
    (level, text), = capi.take_log()
    assert level == "W"
    m = re.search(r"configuration (\S+) on sm_(\d+)", text)
    assert m, text
    cmd = re.search(r"Build them with: (hla-deploy build-plugins [^()]*?)\s*(?:\(|$)", text)
    return m.group(1), int(m.group(2)), (cmd.group(1) if cmd else None), text


@pytest.fixture
def no_kernels(capi_fake, monkeypatch, tmp_path):
    capi, fake = capi_fake
    kdir = tmp_path / "empty"
    kdir.mkdir()
    (kdir / "manifest.json").write_text('{"schema": 1, "entries": []}')
    monkeypatch.setenv("HLA_DEPLOY_KERNEL_DIR", str(kdir))
    monkeypatch.setenv("HLA_DEPLOY_CACHE", str(tmp_path / "cache"))
    capi.aot_reset()
    capi.capture_log(True)
    capi.take_log()
    fake.reset()
    yield capi, fake
    capi.capture_log(False)


@pytest.mark.parametrize("node", NODES, ids=[f"{v}-n{n}-r{r}-d{d}-dv{dv}-{t}" for v, n, r, d, dv, t in NODES])
def test_cpp_and_python_name_a_node_alike_and_the_command_builds_it(no_kernels, tmp_path, node):
    from hla_deploy.cli import build_parser
    from hla_deploy.native.cli_kernels import kernel_request
    capi, fake = no_kernels
    variant, normalize, ridge, d, dv, dtype = node
    py = kernel_configs_of_model(_onnx_node_model(tmp_path / "m.onnx", *node))
    assert len(py) == 1
    assert py[0].name == config_name(variant, bool(normalize), ridge != 0.0, d, dv, dtype)
    assert py[0].name == plan(variant, bool(normalize), ridge != 0.0, d, dv, dtype).name
    name, cc, cmd, text = _warning(capi, fake, 90, *node)
    assert (name, cc) == (py[0].name, 90)
    assert cmd is not None, text
    args = build_parser().parse_args(cmd.split()[1:])
    req = kernel_request(args)
    assert [c.name for c in req.configs] == [name] and req.archs == [90]
    assert args.kernels_only, f"{cmd}: builds the native libraries first (a failure there builds no kernels)"


def test_build_plugins_help_lists_the_kernel_options():
    proc = subprocess.run([sys.executable, "-m", "hla_deploy", "build-plugins", "--help"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for opt in ("--arch", "--config NAME", "--model MODEL.onnx", "--kernels-only", "--kernel-dir"):
        assert opt in proc.stdout, opt
    assert "87,90" in proc.stdout   # the default archs are said


@pytest.mark.parametrize("case", [
    ("hla2", 0, 0.0, 256, 64, "bf16", 90, "d <= 128"),       # beyond the Triton kernels' head dims
    ("hla2", 1, 0.0, 64, 128, "fp16", 90, "dv + normalize <= 128"),
    ("hla2", 0, 0.0, 64, 64, "bf16", 80, "sm_87 and sm_90"),  # an arch the compiler does not target
], ids=["d256", "dv128-normalize", "sm80"])
def test_no_build_command_is_suggested_that_cannot_build(no_kernels, case):
    """A configuration or arch the AOT compiler refuses: the warning says why, and suggests no
    command (`build-plugins` would refuse it)."""
    from hla_deploy.cli import build_parser
    from hla_deploy.native.cli_kernels import UsageError, kernel_request
    capi, fake = no_kernels
    *node, cc, why = case
    config = "{}-n{}-c{}-d{}-dv{}-{}".format(node[0], node[1], int(node[2] != 0), *node[3:])
    with pytest.raises(UsageError):   # what the old warning suggested
        kernel_request(build_parser().parse_args(["build-plugins", "--kernels-only", "--arch", str(cc),
                                                  "--config", config]))
    name, got_cc, cmd, text = _warning(capi, fake, cc, *node)
    assert (name, got_cc) == (config, cc)
    assert cmd is None and why in text, text


# ---- the launcher searches where build-plugins writes ------------------------------------------------

@pytest.mark.parametrize("env", ["absolute", "tilde", "relative", "xdg", "xdg-tilde", "home"])
def test_launcher_searches_the_directory_build_plugins_writes(capi_fake, monkeypatch, tmp_path, env):
    """The launcher's last search directory is `hla-deploy build-plugins`' default kernel directory
    (hla_deploy.native.kernel_dir.default_kernel_dir) for every way the cache can be named, also
    when the variable holds a literal ~ (a Dockerfile ENV, a systemd unit: no shell expanded it)."""
    from hla_deploy.native.kernel_dir import default_kernel_dir
    capi, _ = capi_fake
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HLA_DEPLOY_KERNEL_DIR", raising=False)
    for var in ("HLA_DEPLOY_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    if env == "absolute":
        monkeypatch.setenv("HLA_DEPLOY_CACHE", str(tmp_path / "c"))
    elif env == "tilde":
        monkeypatch.setenv("HLA_DEPLOY_CACHE", "~/hc")
    elif env == "relative":
        monkeypatch.setenv("HLA_DEPLOY_CACHE", "rel/cache")
    elif env == "xdg":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    elif env == "xdg-tilde":
        monkeypatch.setenv("XDG_CACHE_HOME", "~/xdg")
    capi.aot_reset()
    searched = capi.aot_search_dirs()[-1]
    assert os.path.isabs(searched), searched
    assert os.path.realpath(searched) == os.path.realpath(default_kernel_dir()), (env, searched)
