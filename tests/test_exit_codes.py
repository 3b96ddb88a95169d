"""One exit-code convention for every `hla-deploy` subcommand (README, "Exit status";
hla_deploy/exit_codes.py): 0 success, 1 a failure while running, 2 usage or bad input (arguments,
files the user named, checkpoints), 3 an optional dependency missing, 130 interrupted.

One row per subcommand and kind of mistake, driven in-process through hla_deploy.cli.main (the
console script's code). Each row checks the status, that stderr says it in one line naming the
option / file / what to install (no traceback), and, where something would be written, that
nothing was. A missing dependency is simulated by making the module's spec lookup fail
(hla_deploy.extras._find_spec, or sys.modules[name] = None); a failure while running by making a
step raise; Ctrl-C by a step raising KeyboardInterrupt. The real absence of torch is
tests/test_runtime_without_torch.py and tests/test_packaging.py (a venv without torch).
"""
from __future__ import annotations

import errno
import importlib
import importlib.machinery
import shutil
import signal
import sys
import types
from pathlib import Path

import pytest

from hla_deploy.cli import main

USAGE, FAILURE, MISSING, INTERRUPTED = 2, 1, 3, 130


class Ctx:
    """What the rows refer to: a good checkpoint, a damaged one, a custom-op export, a plain file."""

    def __init__(self, tmp: Path, ckpt: Path, damaged: Path, onnx: Path):
        self.tmp, self.ckpt, self.damaged, self.onnx = tmp, ckpt, damaged, onnx
        self.a_file = tmp / "plain.txt"
        self.a_file.write_text("not a directory\n")
        self.not_elf = tmp / "junk.so"
        self.not_elf.write_bytes(b"not a shared library")


def flip_data_bytes(path: Path, count: int = 4) -> None:
    """Flip ``count`` bytes near the end of a safetensors file: tensor data, not the JSON header
    (the header is what safetensors itself notices); the floats stay finite, so only the digest
    tells."""
    data = bytearray(path.read_bytes())
    for i in range(1, count + 1):
        data[-8 * i] ^= 0x01   # lowest mantissa bit of a float32: finite before and after
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def base(tiny_ckpt, tmp_path_factory):
    from hla_deploy.exporters import export_onnx
    d = tmp_path_factory.mktemp("exit_codes")
    damaged = d / "damaged"
    shutil.copytree(tiny_ckpt, damaged)
    flip_data_bytes(damaged / "model.safetensors")
    onnx = export_onnx(tiny_ckpt, None, d / "m.onnx", op="custom")
    return tiny_ckpt, damaged, Path(onnx)


@pytest.fixture
def ctx(base, tmp_path):
    return Ctx(tmp_path, *base)


def no_module(*names):
    """patch: hla_deploy.extras sees ``names`` as not installed (require_extra raises)."""
    def patch(mp, c):
        import hla_deploy.extras as extras
        real = extras._find_spec
        mp.setattr(extras, "_find_spec", lambda n: None if n in names else real(n))
    return patch


def raising(target: str, exc):
    """patch: ``package.module.attr`` raises ``exc`` (an exception instance, or a class)."""
    def patch(mp, c):
        mod, attr = target.rsplit(".", 1)

        def boom(*a, **k):
            raise exc() if isinstance(exc, type) else exc
        mp.setattr(importlib.import_module(mod), attr, boom)
    return patch


def build_failure(mp, c):
    from hla_deploy import plugins
    raising("hla_deploy.native.cmake_build", plugins.PluginBuildError("simulated: the compiler failed"))(mp, c)


def fake_tensorrt(mp, c):
    """`import tensorrt` finds a spec (so build-engine goes on to build) and the build fails."""
    mod = types.ModuleType("tensorrt")
    mod.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    mp.setitem(sys.modules, "tensorrt", mod)
    from hla_deploy.exporters.tensorrt import engine as tensorrt_engine

    def fail(*a, **k):
        raise tensorrt_engine.EngineBuildError("simulated: the TensorRT parser rejected the network")
    mp.setattr(tensorrt_engine, "build_engine", fail)


def failing_stream(mp, c):
    """generate: the model opens, then the run fails after two tokens."""
    import hla_deploy.runtime.cli as gen_cli

    def stream(ids, n):
        yield 100
        yield 101
        raise RuntimeError("simulated: onnxruntime failed in the decode step")
    mp.setattr(gen_cli, "open_model", lambda args: ("fake", stream))


def interrupted_stream(mp, c):
    import hla_deploy.runtime.cli as gen_cli

    def stream(ids, n):
        yield 100
        raise KeyboardInterrupt
    mp.setattr(gen_cli, "open_model", lambda args: ("fake", stream))


def no_onnxruntime(mp, c):
    mp.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError


def no_cmake(mp, c):
    import hla_deploy.native.cmake as cmake
    real = cmake.shutil.which
    mp.setattr(cmake.shutil, "which", lambda n, *a, **k: None if n == "cmake" else real(n, *a, **k))


def reference_fails(mp, c):
    from hla_deploy.parity import backends

    def fail(self, batches, decode_steps):
        raise RuntimeError("simulated: the reference model failed")
    mp.setattr(backends.Reference, "run_batches", fail)



# (id, argv(ctx), patch(monkeypatch, ctx) or None, status, needle in the one error line, marks)
ROWS = [
    # quickstart -------------------------------------------------------------------------------
    ("quickstart-usage", lambda c: ["quickstart", "--no-such-flag"], None, USAGE, "--no-such-flag"),
    ("quickstart-bad-value", lambda c: ["quickstart", "--out", c.tmp / "o", "--max-new-tokens", "1000001"], None,
     USAGE, "--max-new-tokens"),
    ("quickstart-missing-checkpoint", lambda c: ["quickstart", "--out", c.tmp / "o", "--checkpoint", c.tmp / "nope"],
     None, USAGE, "nope"),
    ("quickstart-damaged-checkpoint", lambda c: ["quickstart", "--out", c.tmp / "o", "--checkpoint", c.damaged],
     None, USAGE, "SHA-256"),
    ("quickstart-out-under-a-file", lambda c: ["quickstart", "--out", c.a_file / "o"], None, USAGE,
     "is a file, not a directory"),
    ("quickstart-no-export-extra", lambda c: ["quickstart", "--out", c.tmp / "o"], no_module("torch"), MISSING,
     "pip install 'hla-deploy[export]'"),
    ("quickstart-failure", lambda c: ["quickstart", "--out", c.tmp / "o", "--checkpoint", c.ckpt],
     raising("hla_deploy.exporters.export_onnx", RuntimeError("simulated export failure")), FAILURE,
     "simulated export failure"),
    ("quickstart-interrupted", lambda c: ["quickstart", "--out", c.tmp / "o", "--checkpoint", c.ckpt],
     raising("hla_deploy.exporters.export_onnx", KeyboardInterrupt), INTERRUPTED, None),
    # export -----------------------------------------------------------------------------------
    ("export-usage", lambda c: ["export", c.ckpt], None, USAGE, "-o/--output"),
    ("export-missing-checkpoint", lambda c: ["export", c.tmp / "nope", "-o", c.tmp / "m.onnx"], None, USAGE,
     "does not exist"),
    ("export-checkpoint-is-a-file", lambda c: ["export", c.a_file, "-o", c.tmp / "m.onnx"], None, USAGE,
     "is a file; expected a directory"),
    ("export-damaged-checkpoint", lambda c: ["export", c.damaged, "-o", c.tmp / "m.onnx"], None, USAGE,
     "SHA-256"),
    ("export-output-under-a-file", lambda c: ["export", c.ckpt, "-o", c.a_file / "m.onnx"], None, USAGE,
     "is a file, not a directory"),
    ("export-no-export-extra", lambda c: ["export", c.ckpt, "-o", c.tmp / "m.onnx"], no_module("onnxscript"),
     MISSING, "onnxscript"),
    ("export-failure", lambda c: ["export", c.ckpt, "-o", c.tmp / "m.onnx"],
     raising("onnx.save_model", OSError(errno.ENOSPC, "No space left on device")), FAILURE, "No space left"),
    ("export-interrupted", lambda c: ["export", c.ckpt, "-o", c.tmp / "m.onnx"],
     raising("hla_deploy.exporters.onnx.export.build_onnx_model", KeyboardInterrupt), INTERRUPTED, None),
    # build-plugins ----------------------------------------------------------------------------
    ("build-plugins-usage", lambda c: ["build-plugins", "--with-cuda", "maybe"], None, USAGE, "--with-cuda"),
    ("build-plugins-build-dir-under-a-file", lambda c: ["build-plugins", "--build-dir", c.a_file / "b"], None,
     USAGE, "is a file, not a directory"),
    ("build-plugins-no-cmake", lambda c: ["build-plugins", "--build-dir", c.tmp / "b"], no_cmake, MISSING,
     "`cmake` not found"),
    ("build-plugins-failure", lambda c: ["build-plugins", "--build-dir", c.tmp / "b"], build_failure, FAILURE,
     "simulated: the compiler failed"),
    ("build-plugins-interrupted", lambda c: ["build-plugins", "--build-dir", c.tmp / "b"],
     raising("hla_deploy.native.cmake_build", KeyboardInterrupt), INTERRUPTED, None),
    # build-engine -----------------------------------------------------------------------------
    ("build-engine-usage", lambda c: ["build-engine", c.onnx], None, USAGE, "-o/--output"),
    ("build-engine-bad-model", lambda c: ["build-engine", c.a_file, "-o", c.tmp / "m.plan"], None, USAGE,
     "plain.txt"),
    ("build-engine-output-under-a-file", lambda c: ["build-engine", c.onnx, "-o", c.a_file / "m.plan"], None, USAGE,
     "is a file, not a directory"),
    ("build-engine-no-tensorrt", lambda c: ["build-engine", c.onnx, "-o", c.tmp / "m.plan"],
     lambda mp, c: mp.setitem(sys.modules, "tensorrt", None), MISSING, "TensorRT"),
    ("build-engine-failure", lambda c: ["build-engine", c.onnx, "-o", c.tmp / "m.plan"], fake_tensorrt, FAILURE,
     "simulated: the TensorRT parser"),
    # parity -----------------------------------------------------------------------------------
    ("parity-usage", lambda c: ["parity", c.ckpt, "--decode-steps", "many"], None, USAGE, "--decode-steps"),
    ("parity-missing-checkpoint", lambda c: ["parity", c.tmp / "nope", "--backends", "torch"], None, USAGE, "nope"),
    ("parity-damaged-checkpoint", lambda c: ["parity", c.damaged, "--backends", "torch"], None, USAGE, "SHA-256"),
    ("parity-graphs-without-reference", lambda c: ["parity", "--onnx", c.onnx, "--backends", "ort-cpu"], None,
     USAGE, "standard-op graph"),
    ("parity-no-export-extra", lambda c: ["parity", c.ckpt, "--backends", "torch"], no_module("torch"), MISSING,
     "pip install 'hla-deploy[export]'"),
    ("parity-reference-fails", lambda c: ["parity", c.ckpt, "--backends", "torch", "--decode-steps", "1"],
     reference_fails, FAILURE, "simulated: the reference model failed"),
    ("parity-interrupted", lambda c: ["parity", c.ckpt, "--backends", "torch"],
     raising("hla_deploy.parity.run_parity", KeyboardInterrupt), INTERRUPTED, None),
    # bundle -----------------------------------------------------------------------------------
    ("bundle-usage", lambda c: ["bundle", c.ckpt, "-o", c.tmp / "b"], None, USAGE, "--target"),
    ("bundle-missing-checkpoint", lambda c: ["bundle", c.tmp / "nope", "-o", c.tmp / "b", "--target", "cpu"], None,
     USAGE, "nope"),
    ("bundle-damaged-checkpoint", lambda c: ["bundle", c.damaged, "-o", c.tmp / "b", "--target", "cpu"], None, USAGE,
     "SHA-256"),
    ("bundle-output-under-a-file", lambda c: ["bundle", c.ckpt, "-o", c.a_file / "b", "--target", "cpu"], None,
     USAGE, "is a file, not a directory"),
    ("bundle-no-export-extra", lambda c: ["bundle", c.ckpt, "-o", c.tmp / "b", "--target", "cpu"],
     no_module("safetensors"), MISSING, "safetensors"),
    ("bundle-failure", lambda c: ["bundle", c.ckpt, "-o", c.tmp / "b", "--target", "cpu"],
     raising("hla_deploy.exporters.export_onnx", RuntimeError("simulated export failure")), FAILURE,
     "simulated export failure"),
    # generate ---------------------------------------------------------------------------------
    ("generate-usage", lambda c: ["generate", c.onnx, "--device", "tpu"], None, USAGE, "--device"),
    ("generate-max-new-tokens-too-many", lambda c: ["generate", c.onnx, "--max-new-tokens", "99999999999999999999"],
     None, USAGE, "--max-new-tokens must be between 1 and 1000000"),
    ("generate-temperature", lambda c: ["generate", c.onnx, "--temperature", "-1"], None, USAGE, "--temperature"),
    ("generate-top-k", lambda c: ["generate", c.onnx, "--top-k", "-3"], None, USAGE, "--top-k"),
    ("generate-empty-prompt", lambda c: ["generate", c.onnx, "--prompt", ""], None, USAGE, "--prompt"),
    ("generate-missing-model", lambda c: ["generate", c.tmp / "nope.onnx"], None, USAGE, "nope.onnx"),
    ("generate-not-an-hla-export", lambda c: ["generate", c.a_file.rename(c.tmp / "x.onnx")], None, USAGE, "x.onnx"),
    ("generate-unknown-model-kind", lambda c: ["generate", c.a_file], None, USAGE, "cannot tell the model kind"),
    ("generate-damaged-checkpoint", lambda c: ["generate", c.damaged, "--max-new-tokens", "2"], None, USAGE,
     "SHA-256"),
    ("generate-library-not-a-library", lambda c: ["generate", c.onnx, "--library", c.not_elf], None, USAGE,
     "junk.so"),
    ("generate-no-onnxruntime", lambda c: ["generate", c.onnx], no_onnxruntime, MISSING, "hla-deploy[cpu]"),
    ("generate-checkpoint-no-export-extra", lambda c: ["generate", c.ckpt], no_module("torch"), MISSING,
     "pip install 'hla-deploy[export]'"),
    ("generate-failure", lambda c: ["generate", c.onnx, "--max-new-tokens", "5"], failing_stream, FAILURE,
     "simulated: onnxruntime failed"),
    ("generate-interrupted", lambda c: ["generate", c.onnx, "--max-new-tokens", "5"], interrupted_stream,
     INTERRUPTED, None),
    # serve-repo / serve (hla_deploy/serving, the serve-batch branch) ----------------------------
    ("serve-repo-usage", lambda c: ["serve-repo", c.onnx], None, USAGE, "-o/--out"),
    ("serve-repo-missing-model", lambda c: ["serve-repo", c.tmp / "nope.onnx", "-o", c.tmp / "repo"], None, USAGE,
     "nope.onnx"),
    ("serve-usage", lambda c: ["serve", c.tmp, "--grpc-port", "abc"], None, USAGE, "--grpc-port"),
    ("serve-not-a-repository", lambda c: ["serve", c.tmp / "nope"], None, USAGE, "nope"),
]


def _ids(rows):
    return [r.values[0] if hasattr(r, "values") else r[0] for r in rows]


@pytest.mark.parametrize("name, argv, patch, status, needle", ROWS, ids=_ids(ROWS))
def test_exit_status(ctx, monkeypatch, capsys, name, argv, patch, status, needle):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # `serve` installs its own
    monkeypatch.setenv("HLA_DEPLOY_CACHE", str(ctx.tmp / "cache"))  # a build, if one runs, goes here
    # build-plugins --build-dir / --with-cuda set these in os.environ: empty (= unset) and restored after
    for name in ("HLA_DEPLOY_BUILD_DIR", "HLA_DEPLOY_WITH_CUDA", "HLA_DEPLOY_DEBUG"):
        monkeypatch.setenv(name, "")
    args = [str(a) for a in argv(ctx)]
    if patch is not None:
        patch(monkeypatch, ctx)
    before = {p.name for p in ctx.tmp.iterdir()}
    try:
        rc = main(args)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert rc == status, f"{name}: exit {rc}, expected {status}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    if status == INTERRUPTED:
        assert "interrupted" in err
        return
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err
    assert needle in lines[0], (needle, lines[0])
    if status in (USAGE, MISSING):  # refused before any work: nothing written
        assert {p.name for p in ctx.tmp.iterdir()} - before <= {"cache"}, sorted(ctx.tmp.iterdir())


def test_every_subcommand_has_rows():
    from hla_deploy.cli import COMMANDS
    names = _ids(ROWS)
    for command, _, _ in COMMANDS:
        kinds = [n[len(command) + 1:] for n in names if n.startswith(command + "-")
                 and not any(n.startswith(other + "-") and len(other) > len(command) for other, _, _ in COMMANDS)]
        assert "usage" in kinds, (command, kinds)
        assert len(kinds) >= 2, (command, kinds)
