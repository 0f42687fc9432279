"""Token counting and generated text. Nothing is downloaded: by default prompts are counted with the common
approximation of 4 characters per token (OpenAI's rule of thumb for English), at least 1 token; with
``serve --tokenizer PATH`` a local Hugging Face ``tokenizer.json`` counts them as clients do. Chat adds 3
tokens of framing per message and 3 for the reply priming (as OpenAI documents for chat formats).
Generated text is filler drawn from a seeded stream, one word per token, the same for the same request id."""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import numpy as np

from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import read_text
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


class CharTokens:
    """Prompt tokens at 4 characters each; prefix blocks are slices of the text of that many characters."""

    name = "4 characters per token"

    def count(self, text: str) -> int:
        return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))

    def blocks(self, text: str, block_tokens: int) -> list[bytes]:
        size = block_tokens * CHARS_PER_TOKEN
        return [text[i : i + size].encode() for i in range(0, max(len(text), 1), size)]


class HFTokens:
    """A local Hugging Face ``tokenizer.json`` (the ``tokenizers`` library; never downloaded). Prefix blocks
    are runs of ``block_tokens`` token ids, as a serving engine's KV blocks are."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        text = read_text(path, "tokenizer file", max_bytes=64 * 1024 * 1024)
        try:
            self.tokenizer = Tokenizer.from_str(text)
        except Exception as e:  # the library raises a bare Exception for a malformed file
            raise ConfigError(f"{path}: not a Hugging Face tokenizer.json ({str(e).splitlines()[0][:200]})") from None
        self.name = f"tokenizer {path.name}"

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count(self, text: str) -> int:
        return max(1, len(self._ids(text)))

    def blocks(self, text: str, block_tokens: int) -> list[bytes]:
        ids = np.asarray(self._ids(text) or [0], dtype=np.int64)
        return [ids[i : i + block_tokens].tobytes() for i in range(0, len(ids), block_tokens)]


Tokens = CharTokens | HFTokens


def count_tokens(text: str, tokens: Tokens | None = None) -> int:
    return (tokens or CharTokens()).count(text)


def count_chat_tokens(contents: list[str], tokens: Tokens | None = None) -> int:
    return sum(count_tokens(c, tokens) + CHAT_TOKENS_PER_MESSAGE for c in contents) + CHAT_REPLY_PRIMING


def prefix_block_hashes(text: str, block_tokens: int, tokens: Tokens | None = None) -> list[int]:
    """The prompt's KV blocks as the EMS cache keys them: consecutive ``block_tokens``-token pieces of the
    prompt, each keyed by its content and chained to the blocks before it, so two prompts share leading
    hashes exactly as far as they share whole leading blocks."""
    keys = [
        int.from_bytes(hashlib.blake2b(piece, digest_size=8).digest(), "little")
        for piece in (tokens or CharTokens()).blocks(text, block_tokens)
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
