"""EMS context cache (P3 §4.4.2): KV blocks keyed by a chained prefix hash, in a DRAM tier with LRU eviction
and an optional EVS SSD tier below it. Clock-free: the caller looks a prompt up before its prefill and
stores its blocks when the prefill completes (the real system stores them asynchronously).

A lookup counts the leading blocks of the prompt that are cached, because a block's KV is only valid after
the exact prefix before it; the first miss ends the hit. Blocks evicted from DRAM are demoted to the SSD
tier when there is one, and an SSD hit promotes the block back to DRAM (P3 §4.4.1: LRU in both tiers).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cloudmatrix.catalog.hardware import ems_pool_bytes

__all__ = [
    "CacheHit",
    "CacheStats",
    "ContextCache",
    "blocks_for_tokens",
    "capacity_blocks",
    "chain_hashes",
    "ems_pool_bytes",
    "hit_tokens",
]

MIN_BLOCK_TOKENS, MAX_BLOCK_TOKENS = 16, 4096


@dataclass(frozen=True)
class CacheHit:
    """Leading blocks of one prompt found in each tier; DRAM blocks come first in no particular order."""

    dram_blocks: int
    ssd_blocks: int

    @property
    def blocks(self) -> int:
        return self.dram_blocks + self.ssd_blocks


@dataclass(frozen=True, kw_only=True)
class CacheStats:
    lookups: int
    looked_up_blocks: int
    dram_hit_blocks: int
    ssd_hit_blocks: int
    stored_blocks: int  # blocks newly inserted by ``store`` (not already cached)
    demotions: int  # DRAM -> SSD
    evictions: int  # blocks that left the cache entirely

    @property
    def hit_blocks(self) -> int:
        return self.dram_hit_blocks + self.ssd_hit_blocks

    @property
    def hit_rate(self) -> float:
        """Hit blocks over looked-up blocks (0 before the first lookup)."""
        return self.hit_blocks / self.looked_up_blocks if self.looked_up_blocks else 0.0


class ContextCache:
    """Two-tier LRU prefix cache of KV blocks. Capacities are in blocks; 0 SSD blocks means no SSD tier."""

    def __init__(self, dram_blocks: int, ssd_blocks: int = 0) -> None:
        if dram_blocks < 0 or ssd_blocks < 0:
            raise ValueError(f"capacities must be >= 0 blocks (got dram {dram_blocks}, ssd {ssd_blocks})")
        self.dram_capacity_blocks = dram_blocks
        self.ssd_capacity_blocks = ssd_blocks
        # insertion order is recency: the first key is the least recently used (O(1) touch and evict)
        self._dram: OrderedDict[int, None] = OrderedDict()
        self._ssd: OrderedDict[int, None] = OrderedDict()
        self._lookups = self._looked_up = self._dram_hits = self._ssd_hits = 0
        self._stored = self._demotions = self._evictions = 0

    # ---- queries ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._dram) + len(self._ssd)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._dram or block_hash in self._ssd

    def contains(self, block_hash: int) -> bool:
        return block_hash in self

    def tier_of(self, block_hash: int) -> str | None:
        """``"dram"``, ``"ssd"`` or None."""
        if block_hash in self._dram:
            return "dram"
        return "ssd" if block_hash in self._ssd else None

    @property
    def dram_used_blocks(self) -> int:
        return len(self._dram)

    @property
    def ssd_used_blocks(self) -> int:
        return len(self._ssd)

    def dram_lru_order(self) -> list[int]:
        """DRAM blocks from least to most recently used (for tests and inspection)."""
        return list(self._dram)

    def ssd_lru_order(self) -> list[int]:
        return list(self._ssd)

    @property
    def stats(self) -> CacheStats:
        return CacheStats(
            lookups=self._lookups,
            looked_up_blocks=self._looked_up,
            dram_hit_blocks=self._dram_hits,
            ssd_hit_blocks=self._ssd_hits,
            stored_blocks=self._stored,
            demotions=self._demotions,
            evictions=self._evictions,
        )

    # ---- operations ---------------------------------------------------------------------------------
    def lookup(self, hash_ids: Sequence[int]) -> CacheHit:
        """Count the prompt's leading cached blocks per tier (classified before anything moves), then make
        them the most recently used in DRAM, promoting SSD hits."""
        dram = ssd = 0
        for h in hash_ids:
            if h in self._dram:
                dram += 1
            elif h in self._ssd:
                ssd += 1
            else:
                break
        self._lookups += 1
        self._looked_up += len(hash_ids)
        self._dram_hits += dram
        self._ssd_hits += ssd
        self._touch(hash_ids[: dram + ssd])
        return CacheHit(dram_blocks=dram, ssd_blocks=ssd)

    def store(self, hash_ids: Sequence[int]) -> None:
        """Insert a prompt's blocks into DRAM as the most recently used (already cached ones are touched)."""
        self._stored += sum(1 for h in set(hash_ids) if h not in self)
        self._touch(hash_ids)

    def drop_share(self, tier: str, share: float) -> int:
        """A node's part of a tier is lost (its CPU's DRAM or its SSD, a fault): every k-th block of the tier
        in LRU order (k = 1 / share) and that share of its capacity; returns the capacity taken."""
        store = self._dram if tier == "dram" else self._ssd
        k = max(round(1.0 / share), 1)
        for h in [h for i, h in enumerate(store) if i % k == 0]:
            del store[h]
        if tier == "dram":
            taken = self.dram_capacity_blocks // k
            self.dram_capacity_blocks -= taken
        else:
            taken = self.ssd_capacity_blocks // k
            self.ssd_capacity_blocks -= taken
        return taken

    def restore_capacity(self, tier: str, blocks: int) -> None:
        """The repaired node's share of the tier is back (empty)."""
        if tier == "dram":
            self.dram_capacity_blocks += blocks
        else:
            self.ssd_capacity_blocks += blocks

    def _touch(self, hash_ids: Sequence[int]) -> None:
        # Reverse prompt order leaves the prompt's first block the most recently used, so eviction takes a
        # prefix's tail first: a tail block without its head can never hit again (as vLLM frees blocks).
        for h in reversed(hash_ids):
            self._ssd.pop(h, None)
            self._dram[h] = None
            self._dram.move_to_end(h)
        self._shrink_dram()

    def _shrink_dram(self) -> None:
        while len(self._dram) > self.dram_capacity_blocks:
            victim, _ = self._dram.popitem(last=False)
            if self.ssd_capacity_blocks:
                self._ssd[victim] = None  # a demoted block is the SSD tier's most recent
                self._demotions += 1
                self._shrink_ssd()
            else:
                self._evictions += 1

    def _shrink_ssd(self) -> None:
        while len(self._ssd) > self.ssd_capacity_blocks:
            self._ssd.popitem(last=False)
            self._evictions += 1


def blocks_for_tokens(tokens: int, block_tokens: int) -> int:
    """Blocks a prompt of ``tokens`` tokens spans, its last block partial (as the Mooncake trace counts)."""
    _check_block(block_tokens)
    return -(-int(tokens) // block_tokens)


def hit_tokens(hit_blocks: int, block_tokens: int, input_len: int) -> int:
    """Prompt tokens a hit of ``hit_blocks`` leading blocks saves. At least one token is always computed,
    since the prefill must produce the logits of the last prompt token."""
    return max(0, min(hit_blocks * block_tokens, input_len - 1))


def capacity_blocks(capacity_bytes: float, block_tokens: int, kv_bytes_per_token: float) -> int:
    """Whole KV blocks that fit in ``capacity_bytes``."""
    _check_block(block_tokens)
    if kv_bytes_per_token <= 0:
        raise ValueError(f"kv_bytes_per_token must be > 0 (got {kv_bytes_per_token})")
    return max(0, int(capacity_bytes // (block_tokens * kv_bytes_per_token)))


def chain_hashes(block_keys: Iterable[int]) -> list[int]:
    """Content address of each block: a hash of the previous block's address and this block's key, so equal
    addresses mean equal prefixes (P3 §4.4.2: token-sequence hash + prefix hash). Keys are the per-block
    token hashes; blake2b keeps the result independent of the interpreter's hash seed."""
    out, prev = [], 0
    for key in block_keys:
        digest = hashlib.blake2b(f"{prev}:{key}".encode(), digest_size=8).digest()
        prev = int.from_bytes(digest, "little") >> 1  # non-negative 63-bit
        out.append(prev)
    return out


def _check_block(block_tokens: int) -> None:
    if not MIN_BLOCK_TOKENS <= block_tokens <= MAX_BLOCK_TOKENS:
        raise ValueError(f"block_tokens must be in {MIN_BLOCK_TOKENS}..{MAX_BLOCK_TOKENS} (got {block_tokens})")
