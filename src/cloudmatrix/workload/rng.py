"""Named, seeded random streams: each consumer draws from its own stream, so adding a draw in one place
never shifts the numbers another place sees."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])
