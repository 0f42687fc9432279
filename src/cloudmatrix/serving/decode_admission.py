"""A decode batch's admission (``serving/decode.py``): the least-occupied die with a free slot and room for the
sequence's KV blocks (lowest number first), its lowest free slot and the blocks reserved, one request at a time
or a prefill batch's requests in FIFO order in one call (the same choices)."""

from __future__ import annotations

from heapq import heappop

import numpy as np

from cloudmatrix.serving.die_levels import LeastFirst
from cloudmatrix.serving.kv_pool import KvBlockPools

_FULL = np.iinfo(np.int64).max


class DieAdmission:
    """The admission half of ``DecodeBatch``: the state it reads and changes is the batch's."""

    num_dies: int
    cap: int
    pools: KvBlockPools
    free_slots: int
    used_blocks: int
    fenced: np.ndarray
    never_fenced: bool
    _least: LeastFirst
    _free: list[list[int]]  # per die, a heap of its free slots' places on it (k: slot ``die * cap + k``)
    _rid: list[int]
    _blocks: list[int]

    def choose_die(self, blocks: int) -> int | None:
        """The least-occupied die with a free slot and room for ``blocks`` (lowest number first); None when none
        fits. The least-occupied die overall usually has the room; only when it has not are all dies scanned."""
        if not self.free_slots:
            return None
        die = self._least.first()  # it has a free slot: some die has, and none has fewer occupied
        if self.pools.fits(die, blocks) and not self.fenced[die]:
            return die
        occupied = np.array(self._least.count, dtype=np.int64)
        load = np.where(
            (occupied < self.cap) & (self.pools.used <= self.pools.capacity - blocks) & ~self.fenced, occupied, _FULL
        )
        die = int(load.argmin())
        return None if load[die] == _FULL else die

    def admit(self, rid: int, tokens: int) -> int | None:
        """Reserve a slot and the KV blocks of a ``tokens``-long sequence on the die ``choose_die`` picks;
        the slot, or None when no die has room. One call per admission: the common case (the least-occupied
        die has the room) is taken here without the scan."""
        if not self.free_slots:
            return None
        pools = self.pools
        blocks = -(-tokens // pools.block_tokens)
        die = self._least.first()
        if pools.in_use[die] + blocks > pools.capacity or self.fenced[die]:
            found = self.choose_die(blocks)
            if found is None:
                return None
            die = found
        return self.reserve(rid, die, blocks)

    def admit_all(self, rids: list[int], tokens: list[int]) -> list[int]:
        """``admit`` for requests in FIFO order (``tokens``: each one's sequence length), stopping at the first
        that does not fit: the slots of those admitted, in order. One call for a group (a prefill batch's
        requests): the same choices as one ``admit`` after another."""
        if not self.never_fenced and np.count_nonzero(self.fenced):  # (``any``: several times slower here)
            slots = []
            for rid, length in zip(rids, tokens, strict=True):
                slot = self.admit(rid, length)
                if slot is None:
                    break
                slots.append(slot)
            return slots
        pools, least, free, rid_of, blocks_of = self.pools, self._least, self._free, self._rid, self._blocks
        cap = self.cap
        in_use, capacity, block_tokens = pools.in_use, pools.capacity, pools.block_tokens
        count, bits = least.count, least.bits
        slots = []
        held, room = 0, self.free_slots
        low, dies = least.low, bits.get(least.low, 0)  # the least-occupied dies, as bits (see ``LeastFirst``)
        moved = 0  # dies moved up from ``low`` whose bits are not written yet (written before ``least`` is read)
        if room < len(rids):  # no more than the free slots
            rids = rids[:room]
        for rid, length in zip(rids, tokens, strict=False):  # (``rids`` cut to the free slots)
            blocks = -(-length // block_tokens)
            if not dies:
                if moved:
                    bits[low], bits[low + 1], moved = dies, bits.get(low + 1, 0) | moved, 0
                least.first()  # moves ``low`` up to the next count with dies
                low = least.low
                dies = bits[low]
            bit = dies & -dies  # the lowest-numbered of them
            die = bit.bit_length() - 1
            if in_use[die] + blocks > capacity:  # no room there: the scan's choice, then back to the bits
                if moved:
                    bits[low], bits[low + 1], moved = dies, bits.get(low + 1, 0) | moved, 0
                found = self.choose_die(blocks)
                if found is None:
                    break
                die = found
                least.add(die, 1)
                low, dies = least.low, bits.get(least.low, 0)
            else:  # ``least.add(die, 1)``, written out: the die moves up a count
                dies ^= bit
                moved |= bit
                count[die] = low + 1
            in_use[die] += blocks
            slot = die * cap + heappop(free[die])
            rid_of[slot], blocks_of[slot] = rid, blocks
            held += blocks
            slots.append(slot)
        if moved:
            bits[low], bits[low + 1] = dies, bits.get(low + 1, 0) | moved
        self.free_slots -= len(slots)
        self.used_blocks += held
        return slots

    def reserve(self, rid: int, die: int, blocks: int) -> int:
        """Reserve a slot (the die's lowest free one) and the KV blocks on ``die``; returns the slot."""
        self.pools.allocate(die, blocks)
        slot = die * self.cap + heappop(self._free[die])
        self._rid[slot], self._blocks[slot] = rid, blocks
        self._least.add(die, 1)
        self.free_slots -= 1
        self.used_blocks += blocks
        return slot
