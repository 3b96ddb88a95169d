"""Compile worker processes for the AOT kernels: ``python -m hla_deploy.native.aot_worker``.

    run_jobs(jobs, n) -> [result]   jobs = [(config json, Toolchain, source hash)], results in order:
                                    ("ok", entry, {path: cubin bytes}) or ("error", message)

Why plain subprocesses and not multiprocessing: spawned multiprocessing children re-run the caller's
main script (a user's script without an ``if __name__ == "__main__"`` guard would recurse), and
forked ones inherit the caller's imported Triton in interpreter mode (TRITON_INTERPRET=1, as in the
tests). Each worker here is a fresh interpreter started WITHOUT TRITON_INTERPRET, imports torch and
Triton once, then compiles the jobs it is handed one at a time (so the load balances). Messages on
its stdin/stdout are length-prefixed pickles; whatever Triton or ptxas print goes to stderr.
"""
from __future__ import annotations

import os
import pickle
import selectors
import struct
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

from .kernel_configs import KernelConfig


def _read(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    data = stream.read(size)
    return pickle.loads(data) if len(data) == size else None


def _write(stream, obj) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _worker_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = str(Path(__file__).resolve().parents[2])       # the folder holding the hla_deploy package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_jobs(jobs: Sequence[tuple], n: int) -> List[tuple]:
    results: List[tuple] = [("error", "not compiled: every compile worker exited")] * len(jobs)
    cmd = [sys.executable, "-m", "hla_deploy.native.aot_worker"]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_worker_env())
             for _ in range(max(1, min(n, len(jobs))))]
    todo = list(enumerate(jobs))[::-1]
    busy = {}
    sel = selectors.DefaultSelector()

    def feed(p) -> None:
        if todo:
            i, job = todo.pop()
            busy[p] = i
            _write(p.stdin, job)
        else:             # nothing left for it: let it exit, and stop listening to it
            p.stdin.close()
            sel.unregister(p.stdout)

    try:
        for p in procs:
            sel.register(p.stdout, selectors.EVENT_READ, p)
            feed(p)
        while busy:
            for key, _ in sel.select():
                p = key.data
                res = _read(p.stdout)
                i = busy.pop(p)
                if res is None:   # the worker died (killed, out of memory, a crash in Triton's C++)
                    results[i] = ("error", f"{KernelConfig.from_json(jobs[i][0]).name} for sm_{jobs[i][1].arch}: compile worker exited "
                                           f"with status {p.wait()} (its stderr is above)")
                    sel.unregister(p.stdout)
                    continue
                results[i] = res
                feed(p)
    finally:
        for p in procs:
            if p.stdin and not p.stdin.closed:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        sel.close()
    return results


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the build process dies (a killed build leaves no compilers)."""
    try:
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))   # PR_SET_PDEATHSIG
    except Exception:
        pass                                                               # elsewhere: stdin EOF ends it


def main() -> int:
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                        # prints of Triton / ptxas go to stderr, not into the protocol
    os.environ.pop("TRITON_INTERPRET", None)
    from .triton_aot import compile_in_worker
    while True:
        job = _read(sys.stdin.buffer)
        if job is None:
            return 0
        _write(out, compile_in_worker(*job))


if __name__ == "__main__":
    sys.exit(main())
