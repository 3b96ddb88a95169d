"""`hla-deploy serve-repo MODEL -o REPO [--backend python|onnxruntime|tensorrt] [--device cpu|cuda]
[--max-sequences N] [--instances K] [--idle-timeout S] [--strategy oldest|direct]
[--max-batch-size B] [--queue-delay-us D]`."""
from __future__ import annotations

import argparse
import sys

from .model_config import DEFAULT_QUEUE_DELAY_US


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported .onnx (or a TensorRT .plan for --backend python)")
    parser.add_argument("-o", "--out", required=True, help="model repository directory to write (new or empty)")
    parser.add_argument("--backend", choices=["python", "onnxruntime", "tensorrt"], default="python")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--max-sequences", type=int, default=64, help="live sequences per instance (default 64)")
    parser.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="seconds after which an idle sequence is reclaimed (default 60)")
    parser.add_argument("--strategy", choices=["oldest", "direct"], default="oldest",
                        help="sequence batching strategy of the python backend (default oldest: batches of "
                             "requests of distinct sequences; direct: one batch slot per sequence)")
    parser.add_argument("--max-batch-size", type=int, default=None, metavar="B",
                        help="most requests (each of a different live sequence, all of the same length) that "
                             "Triton hands the model in one batch, run as ONE runtime call; 1..--max-sequences "
                             "(default min(max-sequences, 64); oldest strategy; tensorrt: the engine's max batch)")
    parser.add_argument("--queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US, metavar="D",
                        help="microseconds Triton waits after the oldest request for a batch to fill before it "
                             f"runs a partial one (a full batch runs at once; 0: never wait; default "
                             f"{DEFAULT_QUEUE_DELAY_US}); longer: bigger batches, more latency per token")
    parser.add_argument("--library", default=None, help="ORT custom-op library (default: the built one)")


def run(args: argparse.Namespace) -> int:
    """Exit 0 written, 2 bad arguments or files, 3 an optional dependency missing (TensorRT for a
    .plan), 1 a failure while writing."""
    from hla_deploy.runtime.trt_plugin import TensorRTUnavailableError

    from .repository import write_repository
    try:
        repo = write_repository(args.model, args.out, backend=args.backend, device=args.device,
                                max_sequences=args.max_sequences, instances=args.instances,
                                idle_timeout_s=args.idle_timeout, strategy=args.strategy, op_library=args.library,
                                max_batch_size=args.max_batch_size, queue_delay_us=args.queue_delay_us)
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError) as e:
        print(f"serve-repo: error: {e}", file=sys.stderr)
        return 2
    except (TensorRTUnavailableError, ImportError) as e:
        print(f"serve-repo: error: {e}", file=sys.stderr)
        return 3
    except (OSError, RuntimeError) as e:
        print(f"serve-repo: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote model repository {repo} (model hla_lm, {args.backend} backend); see {repo}/README.md")
    return 0
