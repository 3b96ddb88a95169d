"""Configurations of the AOT prefill kernels: canonical names, the default set, a model's nodes.

    KernelConfig(variant, normalize, has_c, d, dv, dtype)   one configuration (docs/AOT_KERNELS.md §1)
    KernelConfig.parse("hla2-n1-c0-d64-dv64-bf16")          ValueError naming what is wrong
    config.name / config.to_json()                          canonical name / the manifest's "config"
    parse_arch("90") -> 90                                  "87", "sm_87", "90", "sm_90", "sm_90a"
    DEFAULT_CONFIGS                                         what `build-plugins` builds when none is asked
    MATRIX_CONFIGS / CONFIG_SETS                            d = dv in {32, 64, 128} too (`--config-set matrix`)
    kernel_configs_of_model("model.onnx")                   the configs of its HLARecurrentStep nodes
    ConfigError                                             a bad name / arch / model (a ValueError)

Torch-free and Triton-free (the CLI, the bundle and the runtime use it): it reads ONNX files with
the ``onnx`` package only. Limits follow the Triton kernels (hla_deploy.ops.triton.MAX_HEAD_DIM):
d <= 128 and dv + normalize <= 128; ahla has no ridge term (has_c is hla2's ridge != 0).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

VARIANTS = ("hla2", "ahla")
DTYPES = ("fp32", "fp16", "bf16")
#: Compute capabilities the AOT compiler targets (sm_87 Jetson Orin, sm_90 Hopper; Triton emits sm_90a).
ARCHS = (87, 90)
MAX_HEAD_DIM = 128   # = hla_deploy.ops.triton.MAX_HEAD_DIM (not imported: that package imports torch)
_NAME = re.compile(r"^(hla2|ahla)-n([01])-c([01])-d(\d+)-dv(\d+)-(fp32|fp16|bf16)$")
#: ONNX TensorProto element types of the activations -> our dtype names
_ONNX_DTYPES = {1: "fp32", 10: "fp16", 16: "bf16"}


class ConfigError(ValueError):
    """A kernel configuration, arch or model that cannot be built (the message says which and why)."""


@dataclass(frozen=True, order=True)
class KernelConfig:
    variant: str
    normalize: bool
    has_c: bool
    d: int
    dv: int
    dtype: str

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant {self.variant!r}: the AOT kernels implement {', '.join(VARIANTS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        for what, n in (("d", self.d), ("dv", self.dv)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError(f"{what} must be an integer >= 1, got {n!r}")
        if self.d > MAX_HEAD_DIM or self.dv + int(self.normalize) > MAX_HEAD_DIM:
            raise ConfigError(f"{self.name}: the Triton kernels take d <= {MAX_HEAD_DIM} and dv + normalize <= "
                              f"{MAX_HEAD_DIM}, got d={self.d}, dv={self.dv}, normalize={int(self.normalize)}")
        if self.has_c and self.variant != "hla2":
            raise ConfigError(f"{self.name}: has_c (ridge != 0) exists for hla2 only")

    @property
    def name(self) -> str:
        return (f"{self.variant}-n{int(self.normalize)}-c{int(self.has_c)}-d{self.d}-dv{self.dv}"
                f"-{self.dtype}")

    def __str__(self) -> str:
        return self.name

    def to_json(self) -> Dict[str, object]:
        return {"variant": self.variant, "normalize": bool(self.normalize), "has_c": bool(self.has_c),
                "d": self.d, "dv": self.dv, "dtype": self.dtype}

    @classmethod
    def from_json(cls, obj: Dict[str, object]) -> "KernelConfig":
        return cls(obj["variant"], bool(obj["normalize"]), bool(obj["has_c"]), int(obj["d"]), int(obj["dv"]),
                   obj["dtype"])

    @classmethod
    def parse(cls, name: str) -> "KernelConfig":
        m = _NAME.match(str(name).strip())
        if not m:
            raise ConfigError(f"{name!r} is not a configuration name: expected VARIANT-nN-cC-dD-dvDV-DTYPE "
                              f"(VARIANT {'/'.join(VARIANTS)}, N and C 0 or 1, DTYPE {'/'.join(DTYPES)}), "
                              f"e.g. hla2-n1-c0-d64-dv64-bf16")
        v, n, c, d, dv, dt = m.groups()
        return cls(v, n == "1", c == "1", int(d), int(dv), dt)


def parse_arch(text: Union[str, int]) -> int:
    """"87" / "sm_87" / 87 -> 87 (also "sm_90a" -> 90); ConfigError for any arch not in ARCHS."""
    s = str(text).strip().lower()
    m = re.match(r"^(?:sm_?)?(\d+)a?$", s)
    if not m or int(m.group(1)) not in ARCHS:
        raise ConfigError(f"unknown arch {text!r}: the AOT kernels are built for "
                          f"{', '.join(str(a) for a in ARCHS)} (sm_87 Jetson Orin, sm_90 Hopper)")
    return int(m.group(1))


def arch_dir(arch: int) -> str:
    """The manifest's arch name and the kernel directory's sub-folder: "sm_87", "sm_90"."""
    return f"sm_{int(arch)}"


def _default_configs() -> Tuple[KernelConfig, ...]:
    """Every variant/option at d = dv = 64 (which holds the shipped model's hla2-n0-c0-d64-dv64),
    in fp16, bf16 and fp32: 6 x 3 = 18 configurations."""
    opts = [("hla2", n, c) for n in (False, True) for c in (False, True)] + [("ahla", n, False) for n in (False, True)]
    return tuple(KernelConfig(v, n, c, 64, 64, dt) for dt in ("fp16", "bf16", "fp32") for v, n, c in opts)


def _matrix_configs() -> Tuple[KernelConfig, ...]:
    """Every variant/option at d = dv in {32, 64, 128}, in fp16, bf16 and fp32 (the CI compile matrix
    and the GPU tests' set): 6 x 3 x 3 = 54 less the 9 with normalize at d = dv = 128, whose value
    column of ones makes dv + 1 > MAX_HEAD_DIM (the kernels' limit): 45."""
    out = []
    for d in (32, 64, 128):
        for c in _default_configs():
            if d + int(c.normalize) <= MAX_HEAD_DIM or not c.normalize:
                out.append(KernelConfig(c.variant, c.normalize, c.has_c, d, d, c.dtype))
    return tuple(out)


DEFAULT_CONFIGS = _default_configs()
MATRIX_CONFIGS = _matrix_configs()
#: --config-set NAME -> configurations
CONFIG_SETS = {"default": DEFAULT_CONFIGS, "matrix": MATRIX_CONFIGS}


# ---- a model's configurations ----------------------------------------------------------------------

def _attr(node, name, default):
    import onnx
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _shapes(model) -> Dict[str, Tuple[int, Tuple]]:
    """{tensor name: (elem_type, dims)} from the graph's inputs, outputs and value_info."""
    out = {}
    for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = (t.elem_type, tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim))
    return out


def kernel_configs_of_model(path: Union[str, os.PathLike], skipped: Optional[List[str]] = None) -> List[KernelConfig]:
    """The distinct configurations of the model's ``hla_deploy::HLARecurrentStep`` nodes, in node
    order: variant, normalize and ridge (-> has_c) from the attributes, d and dv from the shapes of
    inputs q and v, dtype from q's element type. [] for a model without such nodes (e.g. a
    standard-op export). ConfigError naming the file and node when a node's shapes are unknown or
    its configuration has no Triton kernel (hla3, d > 128, ...); with a list ``skipped``, the
    latter are appended to it as messages instead (the node then runs token-serial)."""
    import onnx

    path = Path(path)
    if path.is_dir() or not path.is_file():
        raise ConfigError(f"--model {path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise ConfigError(f"--model {path}: not a readable ONNX model ({e})") from None
    nodes = [n for n in model.graph.node if n.op_type == "HLARecurrentStep"]
    if not nodes:
        return []
    shapes = _shapes(model)
    if any(n.input[0] not in shapes or n.input[2] not in shapes for n in nodes):
        try:
            from hla_deploy.exporters.node import schema  # noqa: F401  registers the op's shape inference
        except Exception:
            pass
        try:
            shapes = _shapes(onnx.shape_inference.infer_shapes(model))
        except Exception:
            pass
    found: List[KernelConfig] = []
    for node in nodes:
        label = f"--model {path}: node {node.name or node.output[0]!r}"
        variant = _attr(node, "variant", "hla2")
        normalize = bool(_attr(node, "normalize", 0))
        ridge = float(_attr(node, "ridge", 0.0))
        q, v = shapes.get(node.input[0]), shapes.get(node.input[2])
        if q is None or v is None or len(q[1]) != 4 or len(v[1]) != 4 or q[1][3] is None or v[1][3] is None:
            raise ConfigError(f"{label}: the head dims of inputs q/v are unknown (no shape information in the "
                              f"model); name the configuration with --config instead")
        dtype = _ONNX_DTYPES.get(q[0])
        if dtype is None:
            raise ConfigError(f"{label}: q has ONNX element type {q[0]}; expected float32, float16 or bfloat16")
        try:
            cfg = KernelConfig(variant, normalize, ridge != 0.0, int(q[1][3]), int(v[1][3]), dtype)
        except ConfigError as e:
            if skipped is None:
                raise ConfigError(f"{label}: {e}") from None
            if f"{label}: {e}" not in skipped:
                skipped.append(f"{label}: {e}")
            continue
        if cfg not in found:
            found.append(cfg)
    return found
