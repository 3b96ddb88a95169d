"""The one list of parity backend names, imported by the harness (parity/__init__.py), the backends
and the CLI alike (its own module, so that none of them imports another back)."""

BACKEND_NAMES = ("torch", "triton", "ort-cpu", "ort-cuda", "onnx-standard", "trt")
