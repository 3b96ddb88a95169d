"""config.pbtxt text of the `hla_lm` model for Triton's python / onnxruntime / tensorrt backends.

    python_config(vocab, max_sequences, instances, idle_us, strategy, device, params,
                  max_batch_size=None, queue_delay_us=DEFAULT_QUEUE_DELAY_US)               -> str
    implicit_state_config(backend, vocab, state_dims, max_sequences, instances, idle_us, device,
                          op_library, max_batch_size=None, queue_delay_us=DEFAULT_QUEUE_DELAY_US) -> str

Client interface of every variant (max_batch_size > 0, so a request is [1, T]):
input_ids INT64 [-1] -> logits FP32 [-1, vocab], with the sequence start / end flags and
correlation id of Triton's sequence batcher.

Batching (every backend, strategy `oldest`): Triton's sequence batcher puts requests of distinct
live sequences, of equal shape, into one batch of at most `max_batch_size` (default
min(max_sequences, 64)), waiting at most `queue_delay_us` microseconds after the oldest request
for the batch to fill (a full batch goes at once). The python backend runs each batch as one
runtime call; the onnxruntime / tensorrt backends run it as one call with Triton's implicit state
batched along dim 0. Strategy `direct` (python only) has one batch slot per sequence.
"""
from __future__ import annotations

import json
from typing import Dict, Optional, Sequence

MODEL_NAME = "hla_lm"
#: microseconds the batcher waits for a batch to fill (benchmarks/bench_serve.py, docs/SERVING.md)
DEFAULT_QUEUE_DELAY_US = 2000


def batch_size(max_sequences: int, max_batch_size: Optional[int]) -> int:
    """max_batch_size checked against max_sequences (default min(max_sequences, 64))."""
    if max_batch_size is None:
        return min(int(max_sequences), 64)
    if not 1 <= int(max_batch_size) <= int(max_sequences):
        raise ValueError(f"--max-batch-size must be in 1..--max-sequences ({max_sequences}), got {max_batch_size}")
    return int(max_batch_size)


def _delay(queue_delay_us: int) -> int:
    if int(queue_delay_us) < 0 or int(queue_delay_us) != queue_delay_us:
        raise ValueError(f"--queue-delay-us must be an integer >= 0 (microseconds), got {queue_delay_us}")
    return int(queue_delay_us)


def spare_slots(max_sequences: int) -> int:
    """Triton slots beyond max_sequences, so that the (max + 1)-th live sequence reaches the model
    and gets a named error instead of waiting in Triton's backlog."""
    return max(1, int(max_sequences) // 4)


def _io(vocab: int) -> str:
    return (f'input [ {{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }} ]\n'
            f'output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ -1, {int(vocab)} ] }} ]\n')


def _instances(instances: int, device: str) -> str:
    kind = "KIND_GPU" if device == "cuda" else "KIND_CPU"
    return f"instance_group [ {{ count: {int(instances)} kind: {kind} }} ]\n"


def python_config(vocab: int, max_sequences: int, instances: int, idle_us: int, strategy: str,
                  device: str, params: Dict[str, str], max_batch_size: Optional[int] = None,
                  queue_delay_us: int = DEFAULT_QUEUE_DELAY_US) -> str:
    slots = int(max_sequences) + spare_slots(max_sequences)
    delay = _delay(queue_delay_us)
    if strategy == "direct":
        if max_batch_size is not None:
            raise ValueError("--max-batch-size applies to --strategy oldest; direct has one batch slot per "
                             "sequence (max_batch_size = max_sequences + spare slots)")
        strat = f"  direct {{ max_queue_delay_microseconds: {delay} }}\n"
        mbs = slots  # direct: one batch slot per live sequence
    elif strategy == "oldest":
        strat = f"  oldest {{ max_candidate_sequences: {slots} max_queue_delay_microseconds: {delay} }}\n"
        mbs = batch_size(max_sequences, max_batch_size)
    else:
        raise ValueError(f"strategy must be 'direct' or 'oldest', got {strategy!r}")
    controls = "".join(
        f'    {{ name: "{name}" control [ {{ kind: {kind} {extra} }} ] }}{sep}\n'
        for name, kind, extra, sep in (
            ("START", "CONTROL_SEQUENCE_START", "int32_false_true: [ 0, 1 ]", ","),
            ("END", "CONTROL_SEQUENCE_END", "int32_false_true: [ 0, 1 ]", ","),
            ("READY", "CONTROL_SEQUENCE_READY", "int32_false_true: [ 0, 1 ]", ","),
            ("CORRID", "CONTROL_SEQUENCE_CORRID", "data_type: TYPE_UINT64", "")))
    ps = ",\n".join(f'  {{ key: {json.dumps(k)} value {{ string_value: {json.dumps(str(v))} }} }}'
                    for k, v in sorted(params.items()))
    return (f'name: "{MODEL_NAME}"\nbackend: "python"\nmax_batch_size: {mbs}\n' + _io(vocab)
            + "sequence_batching {\n"
            + f"  max_sequence_idle_microseconds: {int(idle_us)}\n" + strat
            + "  control_input [\n" + controls + "  ]\n}\n"
            + _instances(instances, device) + f"parameters [\n{ps}\n]\n")


def implicit_state_config(backend: str, vocab: int, state_dims: Sequence[int], max_sequences: int,
                          instances: int, idle_us: int, device: str,
                          op_library: Optional[str] = None, max_batch_size: Optional[int] = None,
                          queue_delay_us: int = DEFAULT_QUEUE_DELAY_US) -> str:
    """onnxruntime / tensorrt: Triton keeps the state (state_dims = [L, H, N], batch-first graph)."""
    if backend not in ("onnxruntime", "tensorrt"):
        raise ValueError(f"backend must be 'onnxruntime' or 'tensorrt', got {backend!r}")
    dims = ", ".join(str(int(d)) for d in state_dims)
    slots = int(max_sequences)
    mbs, delay = batch_size(max_sequences, max_batch_size), _delay(queue_delay_us)
    cfg = (f'name: "{MODEL_NAME}"\nbackend: "{backend}"\nmax_batch_size: {mbs}\n' + _io(vocab)
           + "sequence_batching {\n"
           + f"  max_sequence_idle_microseconds: {int(idle_us)}\n"
           + f"  oldest {{ max_candidate_sequences: {slots} max_queue_delay_microseconds: {delay} }}\n"
           + '  state [ { input_name: "state" output_name: "state_out" data_type: TYPE_FP32 '
           + f'dims: [ {dims} ] initial_state {{ data_type: TYPE_FP32 dims: [ {dims} ] zero_data: true '
           + 'name: "zero" } } ]\n}\n'
           + _instances(instances, device))
    if backend == "onnxruntime":
        if not op_library:
            raise ValueError("the onnxruntime backend needs the HLARecurrentStep op library path")
        cfg += f"model_operations {{ op_library_filename: [ {json.dumps(str(op_library))} ] }}\n"
    return cfg
