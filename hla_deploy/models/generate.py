"""Reference text generation with the torch model: one prefill, then one-token steps with state."""
from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sequence, Union

import torch


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> int:
    """Pick the next token from logits [V].

    temperature == 0: argmax (ties -> lowest id). Otherwise softmax(logits / temperature) in
    float64 on the CPU, restricted to the top_k largest logits when top_k is given, sampled with
    torch.multinomial using `generator`.
    """
    logits = logits.detach().to("cpu", torch.float64)
    if temperature == 0.0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(model, prompt_ids: Union[Sequence[int], torch.Tensor], max_new_tokens: int,
             temperature: float = 0.0, top_k: Optional[int] = None, seed: Optional[int] = None
             ) -> List[int]:
    """Generate `max_new_tokens` ids after `prompt_ids` (batch 1); returns ONLY the new ids.

    The prompt is run as one prefill; each new token is then fed as a one-token step with the
    carried state [L, 1, H, N]. temperature 0 is greedy (deterministic); temperature > 0 samples
    (optionally top_k), reproducibly for a given `seed`.
    """
    return list(generate_stream(model, prompt_ids, max_new_tokens, temperature, top_k, seed))


def generate_stream(model, prompt_ids: Union[Sequence[int], torch.Tensor], max_new_tokens: int,
                    temperature: float = 0.0, top_k: Optional[int] = None, seed: Optional[int] = None
                    ) -> Iterator[int]:
    """generate, one token at a time: yields each new id as soon as it is sampled. The arguments are
    checked here, before the first token."""
    if isinstance(prompt_ids, torch.Tensor):
        prompt_ids = prompt_ids.reshape(-1).tolist()
    prompt_ids = [int(t) for t in prompt_ids]
    if not prompt_ids:
        raise ValueError("generate: prompt_ids must hold at least one token")
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"generate: temperature must be a finite value >= 0, got {temperature}")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"generate: top_k must be an integer >= 1 or None, got {top_k}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed if seed is not None else torch.seed())
    return _stream(model, prompt_ids, int(max_new_tokens), temperature, top_k, gen)


def _stream(model, prompt_ids: List[int], max_new_tokens: int, temperature: float, top_k: Optional[int],
            gen: torch.Generator) -> Iterator[int]:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        if max_new_tokens == 0:
            return
        with torch.no_grad():
            ids = torch.tensor([prompt_ids], dtype=torch.int64, device=device)   # [1, T]
            logits, state = model(ids, None)                                    # prefill
        for i in range(max_new_tokens):
            nxt = sample_next(logits[0, -1], temperature, top_k, gen)
            yield nxt
            if i + 1 == max_new_tokens:
                break
            with torch.no_grad():
                step = torch.tensor([[nxt]], dtype=torch.int64, device=device)  # [1, 1]
                logits, state = model(step, state)                              # one-token step
    finally:
        model.train(was_training)
