"""Random training windows drawn on the training device: the corpus is copied there once.

    sampler = WindowSampler(corpus, batch=32, seq_len=512, seed=0, device="cuda")
    x, y = sampler.next()          # x [B, T] uint8 token ids, y [B, T] int64 next-token targets

Each window is seq_len + 1 consecutive bytes starting at a uniformly drawn offset; x is the first
seq_len, y the last seq_len. The offsets come from a torch.Generator on the device, so a step
launches three small kernels and copies nothing between host and device (no sync). x stays uint8:
HLALanguageModel takes uint8 ids without a range check (bytes are in range by their dtype).
The generator's state is part of a training checkpoint (get_state / set_state).
"""
from __future__ import annotations

from typing import Tuple

import torch


class WindowSampler:
    def __init__(self, corpus: torch.Tensor, batch: int, seq_len: int, seed: int, device):
        if not isinstance(corpus, torch.Tensor) or corpus.dtype != torch.uint8 or corpus.dim() != 1:
            got = f"{corpus.dtype} {tuple(corpus.shape)}" if isinstance(corpus, torch.Tensor) else type(corpus).__name__
            raise TypeError(f"WindowSampler: corpus must be a 1-D uint8 tensor of bytes, got {got}")
        for name, val in (("batch", batch), ("seq_len", seq_len)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"WindowSampler: {name} must be an int >= 1, got {val!r}")
        if corpus.numel() < seq_len + 2:
            raise ValueError(f"WindowSampler: the corpus has {corpus.numel()} bytes, fewer than seq_len + 2 = "
                             f"{seq_len + 2}: use a shorter --seq-len or more data")
        self.device = torch.device(device)
        self.batch, self.seq_len = batch, seq_len
        self.corpus = corpus.to(self.device)                                  # [N] uint8, copied once
        self.offsets = torch.arange(seq_len + 1, device=self.device)          # [T + 1]
        self.high = corpus.numel() - seq_len - 1                              # starts in [0, high)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def next(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(x [B, T] uint8, y [B, T] int64) on the device."""
        starts = torch.randint(0, self.high, (self.batch,), generator=self.generator, device=self.device)
        xy = self.corpus[starts[:, None] + self.offsets[None, :]]             # [B, T + 1] uint8
        return xy[:, :-1], xy[:, 1:].long()

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
