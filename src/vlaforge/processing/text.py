"""Instruction text -> the hashed word and bigram ids of the tiny trainable language encoder (numpy-free,
torch-free: the exported policy computes the same ids on a robot without torch)."""

from __future__ import annotations

import re
import zlib

_WORD = re.compile(r"[a-z0-9]+")


def hash_tokens(sentence: str, buckets: int) -> list[int]:
    """Stable word and word-bigram hashes in [0, buckets)."""
    words = _WORD.findall(sentence.lower())
    grams = words + [a + " " + b for a, b in zip(words, words[1:])]
    return [zlib.crc32(g.encode()) % buckets for g in grams] or [0]
