"""AOT compilation of the Triton forward kernels on a machine with no GPU (issue 18).

One kernel directory per test session (the session fixtures): a quick set (every variant/option at
d = dv = 64, bf16 and fp16, sm_87 and sm_90) unmarked, and the whole matrix (every variant/option,
d = dv in {32, 64, 128}, fp16 and bf16, sm_87 and sm_90; normalize stops at dv + 1 <= 128) under
@pytest.mark.slow, compiled into the SAME directory so the quick entries are reused. Every cubin is
checked with the cuobjdump the Triton wheel ships, independently of the compiler's own bookkeeping:
its ELF arch (sm_87 / sm_90a), the ptxas toolkit stamped in its header (126 for sm_87), its kernel
parameters (EIATTR_KPARAM_INFO: count and sizes == the manifest's params, hidden ones included) and
tensor-core instructions in its SASS (HMMA on sm_87, HGMMA on sm_90a). Then: the manifest schema of
docs/AOT_KERNELS.md §2, the JIT compiling the same cubin, cache reuse and invalidation, the merge
under the lock, and bad input.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("triton")

from hla_deploy.native.kernel_configs import MATRIX_CONFIGS, KernelConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = [c for c in MATRIX_CONFIGS if c.d == 64 and c.dtype in ("fp16", "bf16")]
MATRIX = [c for c in MATRIX_CONFIGS if c.dtype in ("fp16", "bf16")]
ARCHS = (87, 90)
TYPE_SIZES = {"ptr_fp32": 8, "ptr_fp16": 8, "ptr_bf16": 8, "hidden": 8, "i32": 4, "f32": 4}
SYMBOLS = {"B", "H", "T", "NT"}


def _build(configs, kdir, **kw):
    from hla_deploy.native.kernel_dir import build_kernels
    from hla_deploy.native.triton_aot import AOTCompileError
    try:
        return build_kernels(configs, ARCHS, kdir, jobs=os.cpu_count(), **kw)
    except AOTCompileError as e:
        if "could not be fetched" in str(e):   # ptxas 12.6 comes from PyPI (pip download)
            pytest.skip(f"CUDA 12.6's ptxas could not be downloaded (offline?): {e}")
        raise


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory):
    """A fresh kernel directory ($HLA_DEPLOY_TEST_KERNEL_DIR instead keeps one between runs, for
    working on these tests: its entries are reused like any cache)."""
    keep = os.environ.get("HLA_DEPLOY_TEST_KERNEL_DIR")
    return Path(keep) if keep else tmp_path_factory.mktemp("aot") / "kernels"


@pytest.fixture(scope="session")
def quick_build(kernel_dir):
    report = _build(QUICK, kernel_dir)
    print(f"\nAOT quick set: {len(report.compiled)} entries compiled in {report.seconds:.0f} s "
          f"({report.cpu_seconds:.0f} s CPU)")
    return report


@pytest.fixture(scope="session")
def matrix_build(kernel_dir, quick_build):
    report = _build(MATRIX, kernel_dir)
    print(f"\nAOT matrix: {len(report.compiled)} entries compiled, {len(report.reused)} reused in "
          f"{report.seconds:.0f} s ({report.cpu_seconds:.0f} s CPU)")
    return report


def _manifest(kdir: Path) -> dict:
    return json.loads((kdir / "manifest.json").read_text())


def _entries(kdir: Path, configs):
    names = {c.name for c in configs}
    return [e for e in _manifest(kdir)["entries"] if KernelConfig.from_json(e["config"]).name in names]


def _cuobjdump(*args) -> str:
    from hla_deploy.native.triton_aot import triton_tool
    proc = subprocess.run([str(triton_tool("cuobjdump")), *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# ---- the cubins themselves ----------------------------------------------------------------------

def _dumps(kdir: Path, entries) -> dict:
    """{cubin path: (cuobjdump -lelf, --dump-elf, --dump-sass)}, the cuobjdump runs in parallel."""
    from concurrent.futures import ThreadPoolExecutor
    cubins = [k["cubin"] for e in entries for k in e["kernels"]]
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        runs = {(c, o): pool.submit(_cuobjdump, o, kdir / c) for c in cubins for o in ("-lelf", "--dump-elf", "--dump-sass")}
        return {c: tuple(runs[(c, o)].result() for o in ("-lelf", "--dump-elf", "--dump-sass")) for c in cubins}


def check_entry(kdir: Path, e: dict, dumps: dict) -> list:
    """Everything checked about one manifest entry (``dumps``: _dumps); returns the problems found."""
    from hla_deploy.native.cuda126 import tool_version
    from hla_deploy.native.triton_aot import cubin_arch, hidden_param_names, triton_tool, triton_version
    bad = []
    cfg = KernelConfig.from_json(e["config"])
    arch = int(e["arch"][3:])
    tag = f"{cfg.name} {e['arch']}"
    want = {"config", "arch", "triton_version", "ptxas_version", "source_hash", "chunk_size", "state_size",
            "in_place", "workspace", "kernels"}
    if set(e) != want:
        bad.append(f"{tag}: entry fields {sorted(e)}")
    if e["triton_version"] != triton_version():
        bad.append(f"{tag}: triton_version {e['triton_version']}")
    ptxas = "12.6.85" if arch == 87 else tool_version(os.environ.get("TRITON_PTXAS_PATH") or triton_tool("ptxas"))
    if e["ptxas_version"] != ptxas:
        bad.append(f"{tag}: ptxas_version {e['ptxas_version']}, expected {ptxas}")
    from hla_deploy.state_layout import state_size
    if e["state_size"] != state_size(cfg.variant, cfg.d, cfg.dv, cfg.normalize, 1.0 if cfg.has_c else 0.0):
        bad.append(f"{tag}: state_size {e['state_size']}")
    if not (isinstance(e["chunk_size"], int) and e["chunk_size"] in (16, 32, 64, 128)):
        bad.append(f"{tag}: chunk_size {e['chunk_size']}")
    if not re.fullmatch(r"[0-9a-f]{64}", e["source_hash"]):
        bad.append(f"{tag}: source_hash {e['source_hash']}")
    for w in e["workspace"]:
        if set(w) != {"name", "dtype", "dims"} or w["dtype"] not in ("fp32", "fp16", "bf16") or not all(
                (isinstance(x, int) and x >= 1) or x in SYMBOLS for x in w["dims"]):
            bad.append(f"{tag}: workspace buffer {w}")
    hidden = hidden_param_names(e["triton_version"])
    tensor_core = "HGMMA" if arch == 90 else "HMMA"
    seen_tc = False
    for k in e["kernels"]:
        kt = f"{tag} {k['name']}"
        if set(k) != {"name", "cubin", "sha256", "function", "num_warps", "num_stages", "shared_bytes",
                      "constexprs", "grid", "params"}:
            bad.append(f"{kt}: kernel fields {sorted(k)}")
        if not k["cubin"].startswith(f"{e['arch']}/") or not k["cubin"].endswith(".cubin"):
            bad.append(f"{kt}: cubin path {k['cubin']}")
        data = (kdir / k["cubin"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != k["sha256"]:
            bad.append(f"{kt}: sha256 differs from the file")
        if cubin_arch(data) != arch:
            bad.append(f"{kt}: ELF e_flags say sm_{cubin_arch(data)}")
        lelf, elf, sass = dumps[k["cubin"]]
        if f".sm_{arch}{'a' if arch == 90 else ''}.cubin" not in lelf:
            bad.append(f"{kt}: cuobjdump -lelf: {lelf.strip()}")
        head = re.search(r"64-?bit (?:elf|ELF): .*?sm=(\d+)a?, toolkit=([\d.]+)", elf)
        if not head or int(head.group(1)) != arch:
            bad.append(f"{kt}: ELF header {head.group(0) if head else elf[:200]}")
        elif arch == 87 and e["ptxas_version"].startswith("12.6.") and head.group(2) != "126":
            bad.append(f"{kt}: toolkit={head.group(2)}, expected 126 (ptxas {e['ptxas_version']}, JetPack 6)")
        if f".text.{k['function']}" not in elf:
            bad.append(f"{kt}: no .text.{k['function']} in the cubin")
        sizes = {int(o, 16): int(s, 16) for o, s in re.findall(r"Ordinal\s*:\s*(0x[0-9a-f]+)\s+Offset\s*:\s*0x[0-9a-f]+"
                                                              r"\s+Size\s*:\s*(0x[0-9a-f]+)", elf)}
        types = [p["type"] for p in k["params"]]
        if [sizes.get(i) for i in range(len(types))] != [TYPE_SIZES[t] for t in types] or len(sizes) != len(types):
            bad.append(f"{kt}: cubin params (ordinal: size) {sizes} vs manifest {types}")
        if [p["name"] for p in k["params"] if p["type"] == "hidden"] != hidden or types[-len(hidden):] != ["hidden"] * len(hidden):
            bad.append(f"{kt}: hidden params {k['params'][-3:]}")
        for dim in k["grid"]:
            if not dim or not all((isinstance(f, int) and f >= 1) or f in SYMBOLS for f in dim):
                bad.append(f"{kt}: grid {k['grid']}")
        if len(k["grid"]) != 3:
            bad.append(f"{kt}: grid {k['grid']}")
        if not (0 <= k["shared_bytes"] <= (163 if arch == 87 else 227) * 1024) or k["num_warps"] not in (1, 2, 4, 8, 16):
            bad.append(f"{kt}: shared_bytes {k['shared_bytes']} num_warps {k['num_warps']}")
        seen_tc |= tensor_core in sass
        if not re.search(r"\bH(G)?MMA\.", sass):
            bad.append(f"{kt}: no tensor-core instruction (HMMA/HGMMA) in the SASS")
    if not seen_tc:
        bad.append(f"{tag}: no {tensor_core} in any of its kernels' SASS")
    return bad


def _check_all(kdir, configs):
    entries = _entries(kdir, configs)
    assert sorted((KernelConfig.from_json(e["config"]).name, e["arch"]) for e in entries) == sorted(
        (c.name, f"sm_{a}") for c in configs for a in ARCHS)
    dumps = _dumps(kdir, entries)
    bad = [p for e in entries for p in check_entry(kdir, e, dumps)]
    assert not bad, "\n".join(bad)


def test_quick_set_cubins(quick_build, kernel_dir):
    _check_all(kernel_dir, QUICK)


@pytest.mark.slow
def test_matrix_cubins(matrix_build, kernel_dir):
    assert {(c, a) for c, a in matrix_build.reused} >= {(c.name, f"sm_{a}") for c in QUICK for a in ARCHS}
    _check_all(kernel_dir, [c for c in MATRIX if c not in QUICK])


# ---- the JIT compiles the same cubin ---------------------------------------------------------------

JIT_SCRIPT = r"""
import hashlib, json, os, sys, tempfile
os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp()
import torch
from triton.runtime.jit import MockTensor   # what kernel.warmup passes for tensors: data_ptr() 0, aligned
from hla_deploy.ops.triton.launch_plan import plan
from hla_deploy.native.stub_driver import fixed_target_driver
cfg, arch, ptxas = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.environ["TRITON_PTXAS_PATH"] = ptxas
TORCH = {"ptr_fp32": torch.float32, "ptr_fp16": torch.float16, "ptr_bf16": torch.bfloat16}
p = plan(cfg["variant"], cfg["normalize"], cfg["has_c"], cfg["d"], cfg["dv"], cfg["dtype"])
out = []
with fixed_target_driver(arch):
    for launch in p.launches:
        args = {pp.arg: MockTensor(TORCH[pp.type]) if pp.type in TORCH else (1000 if pp.type == "i32" else 0.5)
                for pp in launch.params}
        k = launch.kernel.warmup(grid=(1,), num_warps=launch.num_warps, num_stages=launch.num_stages,
                                 **args, **launch.constexprs)
        out.append(hashlib.sha256(k.asm["cubin"]).hexdigest())
print(json.dumps(out))
"""


@pytest.mark.parametrize("arch, name", [(90, "hla2-n1-c1-d64-dv64-bf16"), (87, "ahla-n1-c0-d64-dv64-fp16")])
def test_jit_compiles_the_same_cubin(quick_build, kernel_dir, arch, name):
    """kernel.warmup (the JIT's own binder and specialisation, no launch) under the stub driver, with
    16-byte-aligned mock tensors as on a GPU: each launch's cubin is byte-identical to the AOT one."""
    (entry,) = [e for e in _entries(kernel_dir, [KernelConfig.parse(name)]) if e["arch"] == f"sm_{arch}"]
    tc = quick_build.toolchains[arch]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", JIT_SCRIPT, json.dumps(entry["config"]), str(arch), tc.ptxas],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [k["sha256"] for k in entry["kernels"]]


# ---- cache -------------------------------------------------------------------------------------------

def test_second_build_compiles_nothing(quick_build, kernel_dir):
    before = (kernel_dir / "manifest.json").stat().st_mtime_ns
    report = _build(QUICK, kernel_dir)
    assert report.compiled == [] and sorted(report.reused) == sorted((c.name, f"sm_{a}") for c in QUICK for a in ARCHS)
    assert (kernel_dir / "manifest.json").stat().st_mtime_ns == before


def test_changed_key_recompiles(quick_build, kernel_dir, tmp_path):
    """Each part of the key (Triton version, ptxas version, source hash; the cubin's own bytes) forces
    a recompile of that entry only; the rest is reused; no stale cubin is left behind."""
    from hla_deploy.native.kernel_dir import copy_kernels
    names = ["hla2-n0-c0-d64-dv64-bf16", "hla2-n1-c0-d64-dv64-fp16", "ahla-n0-c0-d64-dv64-bf16",
             "hla2-n0-c1-d64-dv64-fp16", "ahla-n1-c0-d64-dv64-fp16"]
    kdir = tmp_path / "k"
    copy_kernels(kernel_dir, kdir, names, [90])
    man = _manifest(kdir)
    by = {KernelConfig.from_json(e["config"]).name: e for e in man["entries"]}
    by[names[0]]["triton_version"] = "3.0.0"
    by[names[1]]["ptxas_version"] = "12.0.1"
    by[names[2]]["source_hash"] = "0" * 64
    (kdir / "manifest.json").write_text(json.dumps(man))
    cubin = kdir / by[names[3]]["kernels"][0]["cubin"]
    data = cubin.read_bytes()
    cubin.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    stale = kdir / "sm_90" / "old.cubin"
    stale.write_bytes(b"x")
    from hla_deploy.native.kernel_dir import build_kernels
    report = build_kernels(names, [90], kdir, jobs=os.cpu_count(), verbose=False)
    assert sorted(report.compiled) == sorted((n, "sm_90") for n in names[:4])
    assert report.reused == [(names[4], "sm_90")]
    fresh = {KernelConfig.from_json(e["config"]).name: e for e in _manifest(kdir)["entries"]}
    orig = {KernelConfig.from_json(e["config"]).name: e for e in _entries(kernel_dir, map(KernelConfig.parse, names))
            if e["arch"] == "sm_90"}
    assert fresh == orig  # same toolchain and sources: the same entries and bytes again
    assert not stale.exists()
    assert sorted(p.relative_to(kdir).as_posix() for p in kdir.glob("sm_*/*")) == sorted(
        k["cubin"] for e in fresh.values() for k in e["kernels"])


def test_concurrent_merges_keep_every_entry(tmp_path):
    """Two builds finishing at once: each merge re-reads the manifest under the lock, so none is lost."""
    from hla_deploy.native import kernel_dir as kd
    names = [f"hla2-n0-c0-d{d}-dv{d}-fp16" for d in range(1, 41)]

    def fake(name):
        cfg = KernelConfig.parse(name)
        rel = f"sm_90/{name}.fwd_h.00000000.cubin"
        data = name.encode()
        return ({"config": cfg.to_json(), "arch": "sm_90", "kernels": [{"cubin": rel, "sha256": hashlib.sha256(data).hexdigest()}]},
                {rel: data})

    threads = [threading.Thread(target=kd._merge, args=(tmp_path, [fake(n)[0]], fake(n)[1])) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    man = _manifest(tmp_path)
    assert sorted(KernelConfig.from_json(e["config"]).name for e in man["entries"]) == sorted(names)
    assert len(list(tmp_path.glob("sm_90/*.cubin"))) == len(names)
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_bad_manifest_is_an_error_naming_it(tmp_path):
    from hla_deploy.native.kernel_dir import build_kernels
    from hla_deploy.native.triton_aot import AOTCompileError
    (tmp_path / "manifest.json").write_text('{"schema": 2, "entries": []}')
    with pytest.raises(AOTCompileError, match=r"manifest.json: not a schema-1 kernel manifest"):
        build_kernels(QUICK[:1], [90], tmp_path, verbose=False)
    (tmp_path / "manifest.json").write_text('{"schema": 1, "entr')
    with pytest.raises(AOTCompileError, match=r"manifest.json: not a readable manifest"):
        build_kernels(QUICK[:1], [90], tmp_path, verbose=False)


def test_refusals_name_what_the_launcher_lacks():
    """Kernels the C++ launcher could not run are build errors, never a manifest entry."""
    from types import SimpleNamespace
    from hla_deploy.native.triton_aot import AOTCompileError, _refuse_unsupported
    ok = dict(global_scratch_size=0, profile_scratch_size=0, tensordesc_meta=[], tmem_size=0, num_ctas=1,
              launch_cooperative_grid=False, launch_pdl=False, shared=1024)
    _refuse_unsupported(SimpleNamespace(**ok), "k", 90)
    for change, needle in [(dict(global_scratch_size=256), "global scratch memory (256 bytes)"),
                           (dict(profile_scratch_size=64), "profile scratch"),
                           (dict(tensordesc_meta=[{}, {}]), "tensor descriptors / TMA (2 of them)"),
                           (dict(num_ctas=2), "a cluster of 2 CTAs"), (dict(launch_pdl=True), "programmatic"),
                           (dict(shared=164 * 1024), "above sm_87's opt-in limit")]:
        with pytest.raises(AOTCompileError, match=re.escape(needle)):
            _refuse_unsupported(SimpleNamespace(**dict(ok, **change)), "k", 87)


def test_export_kernels_builds_exactly_the_graphs_configurations(tiny_ckpt, tmp_path, capsys):
    from hla_deploy.cli import main
    kdir = tmp_path / "kernels"
    rc = main(["export", str(tiny_ckpt), "-o", str(tmp_path / "m.onnx"), "--dtype", "fp16", "--kernels", "90",
               "--kernel-dir", str(kdir)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"kernels sm_90: {kdir.resolve()} (1 configurations: 1 compiled, 0 reused" in out
    assert [(KernelConfig.from_json(e["config"]).name, e["arch"]) for e in _manifest(kdir)["entries"]] == [
        ("hla2-n0-c0-d4-dv4-fp16", "sm_90")]
