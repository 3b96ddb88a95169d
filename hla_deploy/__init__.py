"""hla-deploy: take Higher-order Linear Attention (HLA) models from training to the edge."""

__version__ = "0.1.0"

#: Version of the HLARecurrentStep op contract (docs/OP_CONTRACT.md).
OP_CONTRACT_VERSION = 1
OP_TYPE = "HLARecurrentStep"
OP_DOMAIN = "hla_deploy"
