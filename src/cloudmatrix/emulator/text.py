"""Token counting and generated text. No tokenizer is downloaded: prompts are counted with the common
approximation of 4 characters per token (OpenAI's rule of thumb for English), at least 1 token, plus 3
tokens of framing per chat message and 3 for the reply priming (as OpenAI documents for chat formats).
Generated text is filler drawn from a seeded stream, one word per token, the same for the same request id."""

from __future__ import annotations

import hashlib
import math
import random

from cloudmatrix.serving.ems import chain_hashes

CHARS_PER_TOKEN = 4
CHAT_TOKENS_PER_MESSAGE = 3
CHAT_REPLY_PRIMING = 3
WORDS = (
    "the",
    "supernode",
    "serves",
    "tokens",
    "across",
    "dies",
    "with",
    "experts",
    "and",
    "a",
    "unified",
    "bus",
    "to",
    "decode",
    "prefill",
    "cache",
    "latency",
    "of",
    "each",
    "step",
    "under",
    "load",
    "in",
    "memory",
)


def count_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def count_chat_tokens(contents: list[str]) -> int:
    return sum(count_tokens(c) + CHAT_TOKENS_PER_MESSAGE for c in contents) + CHAT_REPLY_PRIMING


def prefix_block_hashes(text: str, block_tokens: int) -> list[int]:
    """The prompt's KV blocks as the EMS cache keys them: consecutive ``block_tokens``-token pieces of the
    text (at the same 4 characters per token), each keyed by its content and chained to the blocks before
    it, so two prompts share leading hashes exactly as far as they share whole leading blocks."""
    size = block_tokens * CHARS_PER_TOKEN
    keys = [
        int.from_bytes(hashlib.blake2b(text[i : i + size].encode(), digest_size=8).digest(), "little")
        for i in range(0, max(len(text), 1), size)
    ]
    return chain_hashes(keys)


def chat_text(roles_and_contents: list[tuple[str, str]]) -> str:
    """A chat rendered as one prompt for prefix hashing: the same messages give the same text."""
    return "".join(f"<{role}>{content}\n" for role, content in roles_and_contents)


class Filler:
    """Deterministic words for one request (a cheap per-request stream: this runs once per streamed chunk)."""

    def __init__(self, seed: int, rid: int) -> None:
        self.rng = random.Random(seed * 1_000_003 + rid)

    def words(self, n: int) -> str:
        return "".join(" " + w for w in self.rng.choices(WORDS, k=n))
