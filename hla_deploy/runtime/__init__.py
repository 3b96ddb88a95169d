"""Runtimes for exported hla-deploy models (no torch needed at run time).

    OrtHLASession(onnx_path, device="cpu"|"cuda", library=None)   ONNX Runtime + custom op
    TrtHLASession(plan_path, plugin_path=None)                     TensorRT (hla_deploy.runtime.trt_session)
    sampling.sample_next / make_rng                                shared next-token sampler
    session_base.HLASessionBase                                    what both sessions share (checks, generate)

Both sessions offer run (stateless), reset / prefill / step (state kept on the device) and
generate. Imports are lazy: importing this package loads neither onnxruntime nor TensorRT.
"""
from __future__ import annotations

__all__ = ["OrtHLASession", "TrtHLASession"]


def __getattr__(name):
    if name == "OrtHLASession":
        from .ort_session import OrtHLASession
        return OrtHLASession
    if name == "TrtHLASession":
        from .trt_session import TrtHLASession
        return TrtHLASession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
