"""Build a TensorRT engine (.plan) from an exported hla-deploy ONNX model.

    build_engine("model.onnx", "model.plan", fp16=False, max_batch=1, max_seq=2048, plugin_path=None)
    profile_shapes(num_layers, num_heads, state_size, max_batch=1, max_seq=2048) -> {name: (min, opt, max)}
    trtexec_command("model.onnx", "model.plan", shapes, plugin_path) -> str   (the same build with trtexec)
    onnx_model_info("model.onnx") -> ModelInfo(num_layers, num_heads, state_size, dtype, op)

The network is STRONGLY TYPED (NetworkDefinitionCreationFlag.STRONGLY_TYPED): every tensor keeps
the dtype of the ONNX graph, so the engine's precision is the export's (``hla-deploy export
--dtype fp16`` gives fp16 activations; the state and logits stay float32). TensorRT forbids the
FP16 builder flag on strongly typed networks, so ``fp16=True`` does not set it: it asserts that
the ONNX model is an fp16 export and fails clearly otherwise.

Each ``hla_deploy::HLARecurrentStep`` node becomes our IPluginV3 plugin: the ONNX parser looks the
creator up by op_type (name ``HLARecurrentStep``, version "1", namespace ""), after the plugin
library is loaded with the plugin registry's ``load_library``.

One optimisation profile: input_ids [B, T] from (1, 1) through (max_batch, opt T) to
(max_batch, max_seq), state [L, B, H, N] with the same B range (L, H, N are static in the export).
T = 1 is the decode step, T > 1 a prefill; prompts longer than max_seq are fed in chunks by the
runtimes (the recurrence makes that exact).

TensorRT is imported only inside build_engine; without it, build_engine raises
TensorRTUnavailableError (with the equivalent trtexec command), and the pure functions still work.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Tuple, Union

from hla_deploy._atomic import atomic_write_bytes, check_output_path
# plugin loading and the "TensorRT missing" error belong to the runtime (one class for builder and runtime)
from hla_deploy.runtime.trt_plugin import (PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION,  # noqa: F401
                                          PluginLoadError, TensorRTUnavailableError, load_plugin_library)

__all__ = ["build_engine", "profile_shapes", "trtexec_command", "onnx_model_info", "ModelInfo",
           "load_plugin_library", "EngineBuildError", "PluginLoadError", "TensorRTUnavailableError"]

PathLike = Union[str, os.PathLike]
Shape = Tuple[int, ...]

#: Default T of the profile's "opt" shape (TensorRT tunes tactics for it).
DEFAULT_OPT_SEQ = 128


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the model or build the engine."""


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def profile_shapes(num_layers: int, num_heads: int, state_size: int, max_batch: int = 1,
                   max_seq: int = 2048, opt_seq: Optional[int] = None) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    """(min, opt, max) shapes of the engine inputs.

    input_ids [B, T]: (1, 1), (max_batch, opt_seq), (max_batch, max_seq);
    state [L, B, H, N]: (L, 1, H, N), (L, max_batch, H, N), (L, max_batch, H, N).
    opt_seq defaults to min(max_seq, DEFAULT_OPT_SEQ).
    """
    L = _positive_int("num_layers", num_layers)
    H = _positive_int("num_heads", num_heads)
    N = _positive_int("state_size", state_size)
    B = _positive_int("max_batch", max_batch)
    T = _positive_int("max_seq", max_seq)
    opt_t = min(T, DEFAULT_OPT_SEQ) if opt_seq is None else _positive_int("opt_seq", opt_seq)
    if opt_t > T:
        raise ValueError(f"opt_seq ({opt_t}) must be <= max_seq ({T})")
    return {
        "input_ids": ((1, 1), (B, opt_t), (B, T)),
        "state": ((L, 1, H, N), (L, B, H, N), (L, B, H, N)),
    }


def _shape_arg(shapes: Dict[str, Tuple[Shape, Shape, Shape]], which: int) -> str:
    return ",".join(f"{name}:" + "x".join(str(d) for d in s[which]) for name, s in shapes.items())


def trtexec_command(onnx_path: PathLike, plan_path: PathLike, shapes: Dict[str, Tuple[Shape, Shape, Shape]],
                    plugin_path: Optional[PathLike] = None, trtexec: str = "trtexec") -> str:
    """The trtexec command line that builds the same engine as build_engine (a pure function)."""
    parts = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={plan_path}", "--stronglyTyped"]
    if plugin_path is not None:
        parts.append(f"--dynamicPlugins={plugin_path}")
    parts += [f"--minShapes={_shape_arg(shapes, 0)}", f"--optShapes={_shape_arg(shapes, 1)}",
              f"--maxShapes={_shape_arg(shapes, 2)}"]
    return " ".join(shlex.quote(p) for p in parts)


class ModelInfo(NamedTuple):
    """What the engine build needs to know about an hla-deploy export."""
    num_layers: int   # L
    num_heads: int    # H
    state_size: int   # N
    dtype: str        # "fp32" | "fp16" (metadata hla_deploy.dtype)
    op: str           # "custom" (HLARecurrentStep nodes -> plugin) | "standard" (metadata hla_deploy.op)


def onnx_model_info(onnx_path: PathLike) -> ModelInfo:
    """Static dims of input `state` [L, B, H, N] and the dtype/op metadata of an hla-deploy export."""
    from hla_deploy.runtime.onnx_file import export_op, read_export

    path = Path(onnx_path)
    model, meta = read_export(path)  # FileNotFoundError / ValueError naming the file
    state = next(i for i in model.graph.input if i.name == "state")
    dims = state.type.tensor_type.shape.dim
    vals = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(vals) != 4 or None in (vals[0], vals[2], vals[3]):
        shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        raise ValueError(f"{path}: input 'state' must be [L, B, H, N] with static L, H, N, got {shown}")
    return ModelInfo(int(vals[0]), int(vals[2]), int(vals[3]), meta.get("hla_deploy.dtype", "fp32"),
                     export_op(model, meta))


def _import_tensorrt(hint: str = ""):
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailableError(
            f"TensorRT's Python package is not installed (`import tensorrt` failed: {e}). Install "
            f"TensorRT >= 10.3 (JetPack 6.1+ ships it; on x86 `pip install tensorrt`)"
            + (f", or build the engine with trtexec:\n  {hint}" if hint else "")) from e
    return trt


def _write_atomic(path: Path, data) -> None:
    """Create path's directory and write data there atomically (hla_deploy._atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def build_engine(onnx_path: PathLike, plan_path: PathLike, *, fp16: bool = False, max_batch: int = 1,
                 max_seq: int = 2048, plugin_path: Optional[PathLike] = None) -> Path:
    """Build a serialized TensorRT engine from an hla-deploy ONNX export; returns plan_path.

    plugin_path: libhla_trt_plugin.so (default: hla_deploy.native.trt_plugin_path(), built on
    first use); not needed for a standard-op export. The plan is written to a temporary file
    and renamed, never half-written.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    info = onnx_model_info(onnx_path)
    check_output_path(plan_path, "engine file")  # before a build that can take minutes
    shapes = profile_shapes(info.num_layers, info.num_heads, info.state_size, max_batch=max_batch, max_seq=max_seq)
    if fp16 and info.dtype != "fp16":
        raise ValueError(f"fp16=True but {onnx_path} is a {info.dtype} export; the network is strongly typed "
                         f"(precision follows the ONNX graph): re-export with `hla-deploy export --dtype fp16`")
    needs_plugin = info.op != "standard"
    shown_plugin = (plugin_path or "libhla_trt_plugin.so") if needs_plugin else None
    trt = _import_tensorrt(trtexec_command(onnx_path, plan_path, shapes, shown_plugin))

    if needs_plugin:
        if plugin_path is None:
            from hla_deploy.native import trt_plugin_path
            plugin_path = trt_plugin_path(build=True)
        plugin_path = Path(plugin_path)
        if not plugin_path.is_file():
            raise FileNotFoundError(f"TensorRT plugin library not found: {plugin_path} "
                                    f"(build it with `python -m hla_deploy.native.trt_build`)")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if needs_plugin:
        load_plugin_library(builder.get_plugin_registry(), plugin_path)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (mn, opt, mx) in shapes.items():
        profile.set_shape(name, mn, opt, mx)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT "
                               f"log above)")
    _write_atomic(plan_path, memoryview(serialized))
    return plan_path
