"""Writes mooncake_sample.jsonl: a 300-request trace in the public Mooncake format (timestamp in ms,
input_length, output_length, hash_ids of 512-token prefix blocks), made up by this project with a fixed
seed: requests share a few system-prompt prefixes so cache-aware routing has something to find."""

import json
from pathlib import Path

import numpy as np


def main() -> None:
    rng = np.random.default_rng(7)
    t = 0.0
    lines = []
    next_block = 1000
    prefixes = [list(range(i * 10, i * 10 + rng.integers(2, 6))) for i in range(5)]
    for _ in range(300):
        t += rng.exponential(250.0)
        prefix = prefixes[rng.integers(0, len(prefixes))]
        own = int(rng.integers(1, 8))
        hashes = prefix + list(range(next_block, next_block + own))
        next_block += own
        input_len = len(hashes) * 512 - int(rng.integers(0, 512))
        lines.append(
            {
                "timestamp": int(t),
                "input_length": input_len,
                "output_length": int(rng.integers(16, 512)),
                "hash_ids": hashes,
            }
        )
    out = Path(__file__).with_name("mooncake_sample.jsonl")
    out.write_text("".join(json.dumps(rec) + "\n" for rec in lines))


if __name__ == "__main__":
    main()
