"""The byte-level tokenizer (token id = byte value), re-exported: it lives in hla_deploy/tokenizer.py
so that the runtime can use it without importing hla_deploy.models (torch)."""
from hla_deploy.tokenizer import VOCAB_SIZE, decode, encode

__all__ = ["VOCAB_SIZE", "encode", "decode"]
