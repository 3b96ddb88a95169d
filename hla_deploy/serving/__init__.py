"""Serving with NVIDIA Triton Inference Server (docs/SERVING.md).

    repository.write_repository(model, repo, backend=..., ...)   `hla-deploy serve-repo`
    server.TritonServer(repo, grpc_port=..., http_port=...)       `hla-deploy serve`
    sequences.SequenceTable                                       one device state per correlation id
    python_model.TritonPythonModel                                the Python-backend model (in the stub only)
"""
