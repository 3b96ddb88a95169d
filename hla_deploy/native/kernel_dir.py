"""Kernel directories: manifest.json + sm_XX/*.cubin (docs/AOT_KERNELS.md §2), built and cached.

    build_kernels(configs, archs=(87, 90), kernel_dir=None, jobs=None, force=False, verbose=True,
                  skip_unsupported=False) -> BuildReport
                                compile what is missing into the kernel directory; reuse the rest
    default_kernel_dir() -> Path                 <cache>/kernels (where the launcher looks last, §4)
    read_manifest(dir) -> dict                   {"schema": 1, "entries": [...]}; AOTCompileError if bad
    copy_kernels(src_dir, dest_dir, configs, archs) -> [entries]   a bundle's hla_kernels/

Cache rule: a directory holds at most one entry per (configuration, arch). An entry is reused only when
its (config, arch, Triton version, ptxas version, kernel-source hash) all equal this build's and every
cubin it names is there with its sha256; otherwise it is compiled again and replaces the old entry
(a changed version or source recompiles). Cubin file names carry 8 hex digits of that key, so a
process that read the old manifest never loads a new cubin under an old name.

Compiling happens in worker processes (hla_deploy.native.aot_worker: fresh interpreters without
TRITON_INTERPRET, so neither the interpreter mode nor the stub driver touches the caller; ``jobs``
of them, default min(cpu count, jobs to do)), one job per (configuration, arch), handed out as
workers become free. The results are merged under a file lock (``<dir>/.build.lock``) into the
manifest as it is on disk at that moment (another build may have added entries meanwhile), written
atomically (temp file + rename, cubins first), then cubins no entry names are deleted. Failures of
some configurations do not lose the others: those are merged, then AOTCompileError lists the failed.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .._atomic import atomic_write_bytes, atomic_write_text
from .cmake import build_lock
from .kernel_configs import KernelConfig, arch_dir, parse_arch
from .locations import cache_dir
from .triton_aot import AOTCompileError, Toolchain, kernel_source_hash, toolchain

MANIFEST = "manifest.json"
SCHEMA = 1


def default_kernel_dir() -> Path:
    return cache_dir() / "kernels"


@dataclass
class BuildReport:
    kernel_dir: Path
    compiled: List[Tuple[str, str]] = field(default_factory=list)   # (config name, "sm_90")
    reused: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)                 # skip_unsupported: why not built
    toolchains: Dict[int, Toolchain] = field(default_factory=dict)
    seconds: float = 0.0          # wall clock of build_kernels
    cpu_seconds: float = 0.0      # user + system time of the compile processes (and their ptxas)

    def summary(self, arch: int) -> str:
        a = arch_dir(arch)
        c = sum(1 for _, x in self.compiled if x == a)
        r = sum(1 for _, x in self.reused if x == a)
        tc = self.toolchains[arch]
        return (f"kernels {a}: {self.kernel_dir} ({c + r} configurations: {c} compiled, {r} reused; "
                f"Triton {tc.triton_version}, ptxas {tc.ptxas_version})")


# ---- manifest ------------------------------------------------------------------------------------

def read_manifest(kdir: Path) -> dict:
    """The directory's manifest ({"schema": 1, "entries": []} when it has none)."""
    path = Path(kdir) / MANIFEST
    if not path.exists():
        return {"schema": SCHEMA, "entries": []}
    try:
        man = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AOTCompileError(f"{path}: not a readable manifest ({e}); delete it (its kernels are rebuilt) "
                              f"or choose another kernel directory") from None
    if not isinstance(man, dict) or man.get("schema") != SCHEMA or not isinstance(man.get("entries"), list):
        raise AOTCompileError(f"{path}: not a schema-{SCHEMA} kernel manifest (docs/AOT_KERNELS.md); delete it "
                              f"or choose another kernel directory")
    return man


def _entry_id(entry: dict) -> Tuple[str, str]:
    return KernelConfig.from_json(entry["config"]).name, entry["arch"]


def _cubins_intact(kdir: Path, entry: dict) -> bool:
    import hashlib
    for k in entry.get("kernels", []):
        p = kdir / k["cubin"]
        try:
            if hashlib.sha256(p.read_bytes()).hexdigest() != k["sha256"]:
                return False
        except OSError:
            return False
    return bool(entry.get("kernels"))


def _reusable(kdir: Path, entry: Optional[dict], cfg: KernelConfig, tc: Toolchain, source_hash: str) -> bool:
    return (entry is not None and entry.get("triton_version") == tc.triton_version
            and entry.get("ptxas_version") == tc.ptxas_version and entry.get("source_hash") == source_hash
            and _cubins_intact(kdir, entry))


def _sorted_entries(entries: Iterable[dict]) -> List[dict]:
    return sorted(entries, key=lambda e: (e["arch"], _entry_id(e)[0]))


def _merge(kdir: Path, new_entries: List[dict], files: Dict[str, bytes]) -> None:
    """Under the lock: cubins into place, the manifest re-read, merged and replaced, stale cubins removed."""
    with build_lock(kdir):
        for rel, data in files.items():
            dest = kdir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest, data)
        man = read_manifest(kdir)
        by_id = {_entry_id(e): e for e in man["entries"]}
        for e in new_entries:
            by_id[_entry_id(e)] = e
        man = {"schema": SCHEMA, "entries": _sorted_entries(by_id.values())}
        atomic_write_text(kdir / MANIFEST, json.dumps(man, indent=1) + "\n")
        named = {k["cubin"] for e in man["entries"] for k in e["kernels"]}
        for p in kdir.glob("sm_*/*.cubin"):
            if p.relative_to(kdir).as_posix() not in named:
                p.unlink(missing_ok=True)


# ---- build -----------------------------------------------------------------------------------------

def _normalise(configs: Iterable, archs: Iterable) -> Tuple[List[KernelConfig], List[int]]:
    cfgs: List[KernelConfig] = []
    for c in configs:
        c = c if isinstance(c, KernelConfig) else KernelConfig.parse(c)
        if c not in cfgs:
            cfgs.append(c)
    arch_list: List[int] = []
    for a in archs:
        a = parse_arch(a)
        if a not in arch_list:
            arch_list.append(a)
    return cfgs, arch_list


def build_kernels(configs: Iterable, archs: Iterable = (87, 90), kernel_dir=None, *, jobs: Optional[int] = None,
                  force: bool = False, verbose: bool = True, skip_unsupported: bool = False) -> BuildReport:
    """Make ``kernel_dir`` (default: default_kernel_dir()) hold an entry for every (config, arch);
    see the module docstring. ``configs``: KernelConfig or canonical names; ``archs``: 87, "90", "sm_90".
    A configuration the launch plan refuses is an error, or with ``skip_unsupported`` a line in
    ``report.skipped`` (exports and bundles: that node runs the token-serial kernel)."""
    t0 = time.time()
    cfgs, arch_list = _normalise(configs, archs)
    kdir = Path(kernel_dir) if kernel_dir is not None else default_kernel_dir()
    try:
        kdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AOTCompileError(f"cannot create the kernel directory {kdir} ({e}); choose a writable one "
                              f"(--kernel-dir, or HLA_DEPLOY_CACHE)") from e
    report = BuildReport(kdir.resolve())
    source_hash = kernel_source_hash()
    for a in arch_list:
        report.toolchains[a] = toolchain(a)
    existing = {_entry_id(e): e for e in read_manifest(kdir)["entries"]}
    todo = []
    for a in arch_list:
        tc = report.toolchains[a]
        for c in cfgs:
            if not force and _reusable(kdir, existing.get((c.name, arch_dir(a))), c, tc, source_hash):
                report.reused.append((c.name, arch_dir(a)))
            else:
                todo.append((c, tc))
    if todo:
        n = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
        if verbose:
            print(f"[hla-deploy] compiling {len(todo)} kernel configuration(s) "
                  f"({', '.join(sorted({arch_dir(tc.arch) for _, tc in todo}))}, Triton "
                  f"{todo[0][1].triton_version}) in {n} process(es) into {report.kernel_dir}", file=sys.stderr, flush=True)
        cpu0 = _children_cpu()
        results = _run_jobs(todo, source_hash, n)
        report.cpu_seconds = _children_cpu() - cpu0
        entries, files, errors = [], {}, []
        for (c, tc), res in zip(todo, results):
            if res[0] == "ok":
                entries.append(res[1])
                files.update(res[2])
                report.compiled.append((c.name, arch_dir(tc.arch)))
            elif res[0] == "unsupported" and skip_unsupported:
                report.skipped.append(res[1])
            else:
                errors.append(res[1])
        if entries:
            _merge(kdir, entries, files)
        if errors:
            raise AOTCompileError(f"{len(errors)} of {len(todo)} kernel configuration(s) failed to compile "
                                  f"({len(entries)} written to {kdir}):\n  " + "\n  ".join(errors))
    report.seconds = time.time() - t0
    if verbose and todo:
        print(f"[hla-deploy] compiled {len(report.compiled)} kernel configuration(s) in {report.seconds:.0f} s "
              f"({report.cpu_seconds:.0f} s CPU)", file=sys.stderr, flush=True)
    return report


def _children_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run_jobs(todo, source_hash: str, n: int):
    from .aot_worker import run_jobs
    return run_jobs([(c.to_json(), tc, source_hash) for c, tc in todo], n)


# ---- copies (bundles) --------------------------------------------------------------------------------

def copy_kernels(src_dir, dest_dir, configs: Sequence, archs: Sequence) -> List[dict]:
    """Copy the entries for ``configs`` x ``archs`` (and their cubins) from ``src_dir`` into a fresh
    kernel directory ``dest_dir`` with its own manifest.json; returns the entries copied.
    AOTCompileError when one is missing or its cubin does not match its sha256."""
    import shutil
    cfgs, arch_list = _normalise(configs, archs)
    src, dest = Path(src_dir), Path(dest_dir)
    by_id = {_entry_id(e): e for e in read_manifest(src)["entries"]}
    chosen = []
    for a in arch_list:
        for c in cfgs:
            e = by_id.get((c.name, arch_dir(a)))
            if e is None or not _cubins_intact(src, e):
                raise AOTCompileError(f"{src}: no intact entry for {c.name} on {arch_dir(a)} "
                                      f"(run `hla-deploy build-plugins --arch {a} --config {c.name} --kernels-only`)")
            chosen.append(e)
    for e in chosen:
        for k in e["kernels"]:
            (dest / k["cubin"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / k["cubin"], dest / k["cubin"])
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST).write_text(json.dumps({"schema": SCHEMA, "entries": _sorted_entries(chosen)}, indent=1) + "\n")
    return chosen
