"""hla-deploy: take Higher-order Linear Attention (HLA) models from training to the edge."""

__version__ = "0.1.0"

#: Version of the HLARecurrentStep op contract (docs/OP_CONTRACT.md).
OP_CONTRACT_VERSION = 1
OP_TYPE = "HLARecurrentStep"
OP_DOMAIN = "hla_deploy"

# Both onnxruntime and onnxruntime-gpu installed? Say how to fix it (metadata only, no import).
from .ort_install import check_onnxruntime as _check_onnxruntime  # noqa: E402

_check_onnxruntime()
