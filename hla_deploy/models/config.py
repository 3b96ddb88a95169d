"""HLAConfig: the hyper-parameters of an HLA byte-level language model (HLALanguageModel).

The config is stored as `config.json` beside `model.safetensors` in a checkpoint directory and
as the `hla_deploy.config` metadata entry of exported ONNX graphs; `to_dict()` / `from_dict()`
are its only (de)serialisers. `from_dict` validates every field and raises ValueError naming
the field and what was expected.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Union

from hla_deploy.ops.state import VARIANTS, state_size as _state_size

#: Bumped when the meaning of a field or of the model's forward changes.
CONFIG_FORMAT_VERSION = 1


def geometric_decay(n_heads: int, lo: float = 0.9, hi: float = 0.99) -> List[float]:
    """Per-head decays spaced geometrically in (1 - gamma) from `lo` (head 0) to `hi` (last head).

    With decay < 1 every part of the HLA state stays bounded (||S|| <= 1 / (1 - gamma) for
    unit-norm keys), which keeps a trained model finite on arbitrarily long sequences.
    """
    if n_heads == 1:
        return [float(hi)]
    a, b = math.log(1.0 - lo), math.log(1.0 - hi)
    return [round(1.0 - math.exp(a + (b - a) * h / (n_heads - 1)), 6) for h in range(n_heads)]


@dataclass
class HLAConfig:
    """Hyper-parameters of HLALanguageModel (see hla_deploy/models/model.py for the forward).

    vocab_size:     number of token ids (256 for the byte-level tokenizer)
    d_model:        residual stream width D
    n_layers:       number of blocks L
    n_heads:        HLA heads H per block
    head_dim:       query/key head dim d
    value_dim:      value head dim dv
    mlp_hidden:     SwiGLU hidden width F
    variant:        "hla2" | "ahla" | "hla3" (docs/OP_CONTRACT.md)
    decay:          gamma in (0, 1]: one float for all heads, or a list of n_heads floats
    normalize:      HLA normaliser (OP_CONTRACT `normalize`)
    eps:            HLA normaliser epsilon (OP_CONTRACT `eps`)
    ridge:          HLA ridge lambda >= 0 (hla2 only)
    tie_embeddings: output head reuses embed.weight (no lm_head.weight tensor)
    rms_eps:        epsilon of every RMSNorm (block norms, per-head output norm, final norm)
    """

    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 3
    head_dim: int = 64
    value_dim: int = 64
    mlp_hidden: int = 512
    vocab_size: int = 256
    variant: str = "hla2"
    decay: Union[float, List[float]] = 1.0
    normalize: bool = False
    eps: float = 1e-6
    ridge: float = 0.0
    tie_embeddings: bool = True
    rms_eps: float = 1e-6

    def __post_init__(self) -> None:
        if isinstance(self.decay, tuple):
            self.decay = list(self.decay)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "head_dim", "value_dim", "mlp_hidden"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"HLAConfig.{name} must be an int >= 1, got {val!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"HLAConfig.variant: unknown HLA variant {self.variant!r}; "
                             f"expected one of {', '.join(VARIANTS)}")
        for name in ("normalize", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"HLAConfig.{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("eps", "ridge", "rms_eps"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val) or val < 0:
                raise ValueError(f"HLAConfig.{name} must be a finite float >= 0, got {val!r}")
        if self.rms_eps <= 0:
            raise ValueError(f"HLAConfig.rms_eps must be > 0, got {self.rms_eps!r}")
        if self.ridge != 0 and self.variant != "hla2":
            raise ValueError(f"HLAConfig.ridge={self.ridge} is only defined for variant 'hla2', "
                             f"not {self.variant!r}")
        decays = self.decay_list()
        for g in decays:
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or not 0 < g <= 1:
                raise ValueError(f"HLAConfig.decay values must be finite floats in (0, 1], got {self.decay!r}")
        if self.variant == "hla3" and any(g != 1.0 for g in decays):
            raise ValueError(f"HLAConfig.decay must be 1.0 for variant 'hla3', got {self.decay!r}")

    def decay_list(self) -> List[float]:
        """The per-head decays as a list of n_heads floats."""
        if isinstance(self.decay, list):
            if len(self.decay) != self.n_heads:
                raise ValueError(f"HLAConfig.decay list has {len(self.decay)} values, expected "
                                 f"n_heads={self.n_heads} (or a single float)")
            return list(self.decay)
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)):
            raise ValueError(f"HLAConfig.decay must be a float or a list of n_heads floats, got {self.decay!r}")
        return [float(self.decay)] * self.n_heads

    # ------------------------------------------------------------------ derived sizes
    @property
    def state_size(self) -> int:
        """N, the per-head length of the float32 HLA state (docs/OP_CONTRACT.md, State layout)."""
        return _state_size(self.variant, self.head_dim, self.value_dim, self.normalize, self.ridge)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["decay"] = [float(g) for g in self.decay] if isinstance(self.decay, list) else float(self.decay)
        d["format_version"] = CONFIG_FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "HLAConfig":
        """Build and validate a config; unknown or missing keys raise ValueError naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"HLAConfig.from_dict expects a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("format_version", CONFIG_FORMAT_VERSION)
        if version != CONFIG_FORMAT_VERSION:
            raise ValueError(f"HLAConfig format_version {version!r} is not supported "
                             f"(this hla_deploy reads {CONFIG_FORMAT_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"HLAConfig: unknown key(s) {unknown}; expected keys from {sorted(known)}")
        required = {"d_model", "n_layers", "n_heads", "head_dim", "value_dim", "mlp_hidden", "variant"}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"HLAConfig: missing key(s) {missing}")
        # JSON has no int/float distinction for whole numbers: accept 1 for 1.0 in float fields.
        for name in ("eps", "ridge", "rms_eps"):
            if isinstance(d.get(name), int) and not isinstance(d.get(name), bool):
                d[name] = float(d[name])
        return cls(**d)
