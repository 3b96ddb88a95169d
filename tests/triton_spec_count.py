"""pytest plugin: counts the distinct Triton kernel specialisations a test run launches.

    PYTHONPATH=tests python -m pytest -p triton_spec_count tests/test_triton_hla.py

A Triton JIT kernel is compiled once per specialisation: its constexpr values, the dtype (and
16-byte alignment) of every pointer, the ==1 / %16 classes of every integer argument that is not
in ``do_not_specialize``, and the launch options (num_warps, num_stages). On a cold cache each
costs seconds on a GPU (the H200 measured ~6-17 s per hla2 test, every test compiling several),
so the number of distinct keys is what decides the GPU time of tests/test_triton_hla.py.

The plugin wraps ``run`` of Triton's JITFunction (GPU) and InterpretedFunction (CPU interpreter,
TRITON_INTERPRET=1), so it sees every launch, also through launch plans or autotuners, and
prints at the end: the distinct keys over the session, the keys each test adds first (file
order), and, on a GPU, the wall time of each key's first launch (compile + launch). With
HLA_TRITON_SPECS=path.json it also writes that as JSON; under pytest-xdist (-n) that variable
is needed (the workers write path.gwN.json, the controller adds them up). Counting only: it
changes no result.
"""
from __future__ import annotations

import inspect
import json
import os
import time
from collections import OrderedDict

_KEYS: "OrderedDict[tuple, dict]" = OrderedDict()   # key -> {"test": first test, "seconds": first launch}
_PER_TEST: "OrderedDict[str, list]" = OrderedDict()  # test id -> new keys
_STATE = {"test": None, "patched": []}
_LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


def _params(fn):
    """(names, constexpr names, do_not_specialize names, do_not_specialize_on_alignment names)."""
    cached = getattr(fn, "_hla_spec_params", None)
    if cached is not None:
        return cached
    py = getattr(fn, "fn", None)
    sig = inspect.signature(py)
    names = list(sig.parameters)
    const = {n for n, p in sig.parameters.items()
             if p.annotation is not inspect.Parameter.empty and "constexpr" in str(p.annotation)}
    kw = getattr(fn, "kwargs", None) or {}

    def as_names(v):
        return {names[x] if isinstance(x, int) else x for x in (v or ())}
    dns = as_names(getattr(fn, "do_not_specialize", None) or kw.get("do_not_specialize"))
    dnsa = as_names(getattr(fn, "do_not_specialize_on_alignment", None)
                    or kw.get("do_not_specialize_on_alignment"))
    out = (names, const, dns, dnsa)
    try:
        fn._hla_spec_params = out
    except AttributeError:
        pass
    return out


def _arg_key(name, value, const, dns, dnsa):
    if name in const:
        return (name, "const", repr(value))
    if value is None:
        return (name, "none")
    if hasattr(value, "data_ptr") and hasattr(value, "dtype"):
        aligned = None if name in dnsa else value.data_ptr() % 16 == 0
        return (name, "ptr", str(value.dtype), aligned)
    if isinstance(value, bool):
        return (name, "i1")
    if isinstance(value, int):
        if name in dns:
            return (name, "int")
        return (name, "int", value == 1, value % 16 == 0, -2**31 <= value < 2**31)
    if isinstance(value, float):
        return (name, "fp")
    return (name, type(value).__name__, repr(value))


def _key(fn, args, kwargs):
    names, const, dns, dnsa = _params(fn)
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    arg_keys = tuple(_arg_key(n, bound.get(n), const, dns, dnsa) for n in names if n in bound)
    opts = tuple((k, kwargs[k]) for k in _LAUNCH_OPTIONS if k in kwargs)
    py = getattr(fn, "fn", fn)
    return (f"{py.__module__}.{py.__name__}", arg_keys, opts)


def _wrap(cls):
    original = cls.run

    def run(self, *args, **kwargs):
        try:
            key = _key(self, args, kwargs)
        except Exception:  # never let counting break a launch
            key = None
        if key is None or key in _KEYS:
            return original(self, *args, **kwargs)
        t0 = time.perf_counter()
        out = original(self, *args, **kwargs)
        _KEYS[key] = {"test": _STATE["test"], "seconds": round(time.perf_counter() - t0, 3)}
        _PER_TEST.setdefault(_STATE["test"] or "<outside a test>", []).append(key)
        return out
    cls.run = run
    _STATE["patched"].append((cls, original))


def pytest_configure(config):
    from triton.runtime.jit import JITFunction
    _wrap(JITFunction)
    try:
        from triton.runtime.interpreter import InterpretedFunction
        _wrap(InterpretedFunction)
    except ImportError:
        pass


def pytest_runtest_setup(item):
    _STATE["test"] = item.nodeid


def pytest_runtest_teardown(item):
    _STATE["test"] = None


def _short(key):
    name, args, opts = key
    consts = ",".join(f"{a[0]}={a[2]}" for a in args if a[1] == "const")
    ptrs = ",".join(sorted({a[2].replace("torch.", "") for a in args if a[1] == "ptr"}))
    ints = ",".join(f"{a[0]}{'=1' if a[2] else ('%16' if a[3] else '')}" for a in args if a[1] == "int" and len(a) > 2)
    return f"{name.rsplit('.', 1)[-1]}[{consts}; {ptrs}; {ints}; {dict(opts)}]"


def _data():
    seconds = sum(v["seconds"] for v in _KEYS.values())
    return {"distinct": len(_KEYS), "first_launch_seconds": round(seconds, 3),
            "per_test": {t: len(k) for t, k in _PER_TEST.items()},
            "keys": [{"key": _short(k), "full": repr(k), **v} for k, v in _KEYS.items()]}


def pytest_sessionfinish(session):
    """Under pytest-xdist each worker counts its own launches: it writes PATH.<worker>.json, and
    the controller's summary adds them up (a key compiled by two workers counts twice there:
    that is what the GPU paid)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    path = os.environ.get("HLA_TRITON_SPECS")
    if worker and path:
        with open(f"{path}.{worker}.json", "w") as f:
            json.dump(_data(), f)


def pytest_terminal_summary(terminalreporter):
    import glob
    tr = terminalreporter
    path = os.environ.get("HLA_TRITON_SPECS")
    data = _data()
    parts = sorted(glob.glob(f"{path}.gw*.json")) if path else []
    if parts and not _KEYS:  # the xdist controller: the workers' files
        per_worker = [json.load(open(p)) for p in parts]
        keys = [k for w in per_worker for k in w["keys"]]
        data = {"distinct": len({k["full"] for k in keys}), "compiled": len(keys),
                "first_launch_seconds": round(sum(k["seconds"] for k in keys), 3),
                "per_worker": {p.rsplit(".", 2)[-2]: {"keys": w["distinct"], "seconds": w["first_launch_seconds"]}
                               for p, w in zip(parts, per_worker)},
                "per_test": {t: n for w in per_worker for t, n in w["per_test"].items()}, "keys": keys}
    tr.section("Triton specialisations (triton_spec_count)")
    tr.write_line(f"{data['distinct']} distinct kernel specialisations launched"
                  + (f" ({data['compiled']} first launches over the workers)" if "compiled" in data else "")
                  + f"; first launches took {data['first_launch_seconds']:.1f} s in all (on a GPU: compile "
                  f"+ launch; under the interpreter: run)")
    for w, v in data.get("per_worker", {}).items():
        tr.write_line(f"  worker {w}: {v['keys']} keys, {v['seconds']:.1f} s")
    for test, n in data["per_test"].items():
        tr.write_line(f"  {n:3d} new  {test}")
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=1)
        tr.write_line(f"written to {path}")
