"""Token counting and generated text. Nothing is downloaded: by default prompts are counted with the common
approximation of 4 characters per token (OpenAI's rule of thumb for English), at least 1 token; with
``serve --tokenizer PATH`` a local Hugging Face ``tokenizer.json`` counts them as clients do (the server runs
it in worker processes: tokenizer_worker). Chat adds 3 tokens of framing per message and 3 for the reply
priming (as OpenAI documents for chat formats).
Generated text is filler drawn from a seeded stream, one word per token, the same for the same request id."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
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

    async def measure(
        self, texts: list[str], block_text: str | None, block_tokens: int, with_ids: bool = False
    ) -> Measured:
        """In-process: a few string operations on a body already bounded by --max-body-bytes. There are no
        token ids to give (``with_ids`` leaves ``ids`` None): /tokenize simulates them."""
        return measure_texts(self, texts, block_text, block_tokens)

    def pieces(self, text: str) -> list[str]:
        """The 4-character pieces a prompt is counted as (one per token)."""
        return [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)] or [""]


class HFTokens:
    """A local Hugging Face ``tokenizer.json`` (the ``tokenizers`` library; never downloaded), with the file's
    truncation and padding switched off: they would cut or pad every prompt to a fixed length. Prefix blocks
    are runs of ``block_tokens`` token ids, as a serving engine's KV blocks are. Encoding can panic, raise or
    run long on a hostile file, so the server calls this only inside a worker process (tokenizer_worker)."""

    def __init__(self, path: Path, text: str | None = None) -> None:
        from tokenizers import Tokenizer

        if text is None:
            text = read_text(path, "tokenizer file", max_bytes=MAX_TOKENIZER_BYTES)
        try:
            self.tokenizer = Tokenizer.from_str(text)
        except Exception as e:  # the library raises a bare Exception for a malformed file
            raise ConfigError(f"{path}: not a Hugging Face tokenizer.json ({str(e).splitlines()[0][:200]})") from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.name = f"tokenizer {path.name}"
        self.last: tuple[str, list[int]] = ("", [])  # a completion's prompt is both counted and cut in blocks

    def _ids(self, text: str) -> list[int]:
        if text is not self.last[0]:
            self.last = (text, list(self.tokenizer.encode(text, add_special_tokens=False).ids))
        return self.last[1]

    def count(self, text: str) -> int:
        return max(1, len(self._ids(text)))

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    def blocks(self, text: str, block_tokens: int) -> list[bytes]:
        ids = np.asarray(self._ids(text) or [0], dtype=np.int64)
        return [ids[i : i + block_tokens].tobytes() for i in range(0, len(ids), block_tokens)]


MAX_TOKENIZER_BYTES = 64 * 1024 * 1024
Tokens = CharTokens | HFTokens


@dataclass(frozen=True)
class Measured:
    """What the server needs of one request's prompt: the tokens of each text (a completion's prompt, or each
    chat message) and the cache keys of the prompt's blocks (empty without an EMS cache)."""

    counts: list[int]
    block_keys: list[int]
    ids: list[int] | None = None  # the first text's token ids, when asked for (``/tokenize``)

    def prefix_hashes(self) -> list[int]:
        return chain_hashes(self.block_keys)


def measure_texts(
    tokens: Tokens, texts: list[str], block_text: str | None, block_tokens: int, with_ids: bool = False
) -> Measured:
    keys = [] if block_text is None else block_keys(tokens.blocks(block_text, block_tokens))
    ids = list(tokens._ids(texts[0])) if with_ids and isinstance(tokens, HFTokens) and texts else None
    measured = Measured([tokens.count(t) for t in texts], keys, ids)
    if isinstance(tokens, HFTokens):
        tokens.last = ("", [])  # a multi-megabyte prompt's ids are not kept until the next request
    return measured


def count_tokens(text: str, tokens: Tokens | None = None) -> int:
    return (tokens or CharTokens()).count(text)


def chat_prompt_tokens(counts: list[int]) -> int:
    """A chat's prompt tokens from its messages' own counts, with the framing chat formats add."""
    return sum(c + CHAT_TOKENS_PER_MESSAGE for c in counts) + CHAT_REPLY_PRIMING


def count_chat_tokens(contents: list[str], tokens: Tokens | None = None) -> int:
    return chat_prompt_tokens([count_tokens(c, tokens) for c in contents])


def block_keys(pieces: list[bytes]) -> list[int]:
    """Each block's key by its content alone (``prefix_block_hashes`` chains them)."""
    return [int.from_bytes(hashlib.blake2b(piece, digest_size=8).digest(), "little") for piece in pieces]


def prefix_block_hashes(text: str, block_tokens: int, tokens: Tokens | None = None) -> list[int]:
    """The prompt's KV blocks as the EMS cache keys them: consecutive ``block_tokens``-token pieces of the
    prompt, each keyed by its content and chained to the blocks before it, so two prompts share leading
    hashes exactly as far as they share whole leading blocks."""
    return chain_hashes(block_keys((tokens or CharTokens()).blocks(text, block_tokens)))


def chat_text(roles_and_contents: list[tuple[str, str]]) -> str:
    """A chat rendered as one prompt for prefix hashing: the same messages give the same text."""
    return "".join(f"<{role}>{content}\n" for role, content in roles_and_contents)


class Filler:
    """Deterministic words for one request (a cheap per-request stream: this runs once per streamed chunk)."""

    def __init__(self, seed: int, rid: int) -> None:
        self.rng = random.Random(seed * 1_000_003 + rid)

    def words(self, n: int) -> str:
        return "".join(" " + w for w in self.rng.choices(WORDS, k=n))


def openai_usage(prompt: int, generated: int, cached: int) -> dict[str, object]:
    """OpenAI's usage: the prompt once, the completions of every choice, the tokens the cache supplied."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": generated,
        "total_tokens": prompt + generated,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
