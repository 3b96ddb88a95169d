"""`hla-deploy serve REPO [--grpc-port P] [--http-port Q] [--address 127.0.0.1] [--tritonserver PATH]`:
runs Triton Inference Server on REPO until SIGINT / SIGTERM, then stops it cleanly.

Exit codes (every hla-deploy subcommand): 0 stopped cleanly (by SIGINT / SIGTERM once serving),
2 bad arguments or files (a port outside 1..65535, REPO not a model repository, --tritonserver
missing), 1 tritonserver failed to start or died, 3 no tritonserver (the [serve] extra is not
installed), 130 interrupted before the server was ready. The server's temporary folder is removed
in every case but SIGKILL.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading


def _port(flag: str):
    def parse(text: str) -> int:
        from .server import check_port
        try:
            return check_port(text, flag)
        except ValueError:  # argparse prefixes "argument --grpc-port:" and exits 2
            raise argparse.ArgumentTypeError(f"must be a TCP port number in 1..65535, got {text}") from None
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", help="model repository written by `hla-deploy serve-repo`")
    parser.add_argument("--grpc-port", type=_port("--grpc-port"), default=8001, help="1..65535 (default 8001)")
    parser.add_argument("--http-port", type=_port("--http-port"), default=8000, help="1..65535 (default 8000)")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--tritonserver", default=None,
                        help="tritonserver binary (default: the nvidia-pytriton wheel's, pip install 'hla-deploy[serve]')")
    parser.add_argument("--trt-plugin", default=None,
                        help="libhla_trt_plugin.so for a tensorrt-backend repository (--backend-config=tensorrt,plugins=...)")


def run(args: argparse.Namespace) -> int:
    from .server import ServerError, ServerInterrupted, ServerMissingError, TritonServer
    extra = [f"--backend-config=tensorrt,plugins={args.trt_plugin}"] if args.trt_plugin else []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        srv = TritonServer(args.repo, grpc_port=args.grpc_port, http_port=args.http_port, address=args.address,
                           tritonserver=args.tritonserver, extra_args=extra, log=sys.stderr.buffer, cancel=stop)
    except ServerInterrupted as e:
        print(f"serve: {e}", file=sys.stderr)
        return 130
    except ServerMissingError as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return 2
    except (OSError, ServerError) as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return 1
    print(f"serving hla_lm from {srv.repo}: gRPC {srv.grpc_url}, HTTP {srv.http_url} (Ctrl-C stops)", flush=True)
    try:
        while not stop.wait(0.5):
            if not srv.alive():
                print(f"serve: error: tritonserver exited with code {srv.proc.returncode}", file=sys.stderr)
                return 1
    finally:
        code = srv.stop()
    print(f"stopped (tritonserver exit {code})", flush=True)
    return 0 if code == 0 else 1
