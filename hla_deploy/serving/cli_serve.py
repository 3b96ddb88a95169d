"""`hla-deploy serve REPO [--grpc-port P] [--http-port Q] [--address 127.0.0.1] [--tritonserver PATH]`:
runs Triton Inference Server on REPO until SIGINT / SIGTERM, then stops it cleanly."""
from __future__ import annotations

import argparse
import signal
import sys
import threading


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", help="model repository written by `hla-deploy serve-repo`")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--tritonserver", default=None,
                        help="tritonserver binary (default: the nvidia-pytriton wheel's, pip install 'hla-deploy[serve]')")
    parser.add_argument("--trt-plugin", default=None,
                        help="libhla_trt_plugin.so for a tensorrt-backend repository (--backend-config=tensorrt,plugins=...)")


def run(args: argparse.Namespace) -> int:
    from .server import ServerError, TritonServer
    extra = [f"--backend-config=tensorrt,plugins={args.trt_plugin}"] if args.trt_plugin else []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        srv = TritonServer(args.repo, grpc_port=args.grpc_port, http_port=args.http_port, address=args.address,
                           tritonserver=args.tritonserver, extra_args=extra, log=sys.stderr.buffer)
    except (OSError, ServerError) as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return 1
    print(f"serving hla_lm from {srv.repo}: gRPC {srv.grpc_url}, HTTP {srv.http_url} (Ctrl-C stops)", flush=True)
    while not stop.wait(0.5):
        if not srv.alive():
            print(f"serve: error: tritonserver exited with code {srv.proc.returncode}", file=sys.stderr)
            return 1
    code = srv.stop()
    print(f"stopped (tritonserver exit {code})", flush=True)
    return 0 if code == 0 else 1
