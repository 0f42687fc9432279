"""One way to say a workload's shape on every command: ``ISL-OSL`` token lengths with an optional ``k``
(× 1,024) on each side (``2k-2k``, ``8k-1k``, ``128k-4k``; the paper's named shapes ``4k-256``, ``2k-256``,
``1k-1k`` are of this form) or ``INPUT/OUTPUT`` tokens (``2048/2048``). Kept free of numpy so every
command can parse its ``--workload`` before anything heavy loads."""

from __future__ import annotations

import re

from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import MAX_TOKENS

NAMED = ("4k-256", "2k-256", "1k-1k")  # the paper's shapes (P3 Table 4), listed in help and errors
EXPECTED = "ISL-OSL with k for 1,024 (e.g. 2k-2k, 8k-1k, 128k-4k, 4k-256) or INPUT/OUTPUT tokens (e.g. 2048/2048)"
_DASHED = re.compile(r"(\d{1,9})(k?)-(\d{1,9})(k?)", re.IGNORECASE)
_SLASHED = re.compile(r"(\d{1,9})/(\d{1,9})")


def _tokens(digits: str, k: str) -> int:
    return int(digits) * (1024 if k else 1)


def parse_shape(text: str) -> tuple[int, int] | None:
    """(input, output) tokens of ``text``, or None when it is not a shape (it may be a file)."""
    name = text.strip()
    if m := _DASHED.fullmatch(name):
        lengths = _tokens(m[1], m[2]), _tokens(m[3], m[4])
    elif m := _SLASHED.fullmatch(name):
        lengths = int(m[1]), int(m[2])
    else:
        return None
    for side, n in zip(("input", "output"), lengths, strict=True):
        if not 1 <= n <= MAX_TOKENS:
            raise ConfigError(f"workload {text!r}: {side} length {n:,} tokens; expected 1 to {MAX_TOKENS:,}")
    return lengths


def parse_workload(text: str) -> tuple[int, int]:
    """(input, output) tokens of a workload shape; anything else is refused naming the forms accepted."""
    lengths = parse_shape(text)
    if lengths is None:
        raise ConfigError(f"workload {text!r}: expected {EXPECTED}")
    return lengths


def shape_name(input_len: int, output_len: int) -> str:
    """The short ``ISL-OSL`` spelling of lengths (``2k-2k``; ``3000-1k`` where one is no multiple of 1,024)."""

    def side(n: int) -> str:
        return f"{n // 1024}k" if n % 1024 == 0 else str(n)

    return f"{side(input_len)}-{side(output_len)}"
