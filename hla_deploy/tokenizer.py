"""Byte-level tokenizer: token id = byte value (vocab_size 256), UTF-8 text.

encode("é") == [195, 169]; decode() turns invalid UTF-8 (e.g. a sample cut inside a multi-byte
character) into U+FFFD (errors="replace"), so decode never raises on model output.
"""
from __future__ import annotations

from typing import Iterable, List

VOCAB_SIZE = 256


def encode(text: str) -> List[int]:
    """str -> list of byte values (UTF-8). Bytes that are not UTF-8, as Python hands them over from
    the command line (surrogate escapes U+DC80..U+DCFF), are encoded as those raw bytes."""
    if not isinstance(text, str):
        raise TypeError(f"encode expects str, got {type(text).__name__}")
    try:
        return list(text.encode("utf-8", errors="surrogateescape"))
    except UnicodeEncodeError as e:
        raise ValueError(f"encode: text holds {text[e.start:e.end]!r} at position {e.start}, a lone "
                         f"surrogate that is neither UTF-8 text nor an escaped byte") from None


def decode(ids: Iterable[int]) -> str:
    """list of byte values -> str (UTF-8, errors='replace'). Ids outside [0, 256) raise ValueError."""
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < VOCAB_SIZE]
    if bad:
        raise ValueError(f"decode: token ids must be in [0, {VOCAB_SIZE}), got {bad[:5]}")
    return bytes(ids).decode("utf-8", errors="replace")
