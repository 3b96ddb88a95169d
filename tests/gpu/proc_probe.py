"""Run a Python module or script so that HOW it ended is always visible (issue 12/19's silent exit).

    python3 -X faulthandler tests/gpu/proc_probe.py -m hla_deploy parity CKPT --backends ...
    python3 -X faulthandler tests/gpu/proc_probe.py path/to/script.py ARGS...

- faulthandler on for every thread: a SIGSEGV / SIGABRT / SIGBUS / SIGFPE / SIGILL prints the
  Python stack of each thread to stderr before the process dies;
- the target runs in this process (runpy), stdout and stderr line-buffered;
- at the end, and only when the Python code finished (normally, by an exception or sys.exit),
  prints to stderr the CUDA libraries this process mapped (from /proc/self/maps: which copy of
  libcudart / libcublas / cuDNN / the ORT CUDA provider / libhla_ort_op was loaded) and then the
  marker line ``[proc_probe] END rc=N``. A process killed by a signal, or ended from native code
  through exit() / _exit() (which skip Python's shutdown), never prints the marker: a caller
  that does not find it knows the end was not Python's.
"""
from __future__ import annotations

import faulthandler
import os
import runpy
import sys

MARKER = "[proc_probe] END rc="
_LIB_KEYS = ("libcudart", "libcublas", "libcudnn", "libcuda.so", "libnvrtc", "libcurand", "libcufft",
             "onnxruntime_providers", "libonnxruntime.so", "libhla_ort_op", "libhla_kernels_capi",
             "libtorch_cuda", "libnvJitLink")


def mapped_libraries(keys=_LIB_KEYS) -> list:
    """Sorted paths of the shared objects this process mapped whose name holds one of ``keys``."""
    seen = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and any(k in parts[-1] for k in keys):
                    seen.add(parts[-1])
    except OSError:
        return []
    return sorted(seen)


def main(argv) -> int:
    faulthandler.enable(all_threads=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except AttributeError:
            pass
    if not argv:
        print("usage: proc_probe.py -m MODULE [ARGS...] | SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    rc = 0
    try:
        if argv[0] == "-m":
            if len(argv) < 2:
                print("proc_probe.py: -m needs a module name", file=sys.stderr)
                return 2
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (reported, then the marker)
        import traceback
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    for lib in mapped_libraries():
        print(f"[proc_probe] mapped {lib}", file=sys.stderr)
    print(f"{MARKER}{rc} pid={os.getpid()}", file=sys.stderr, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
