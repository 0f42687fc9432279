"""The EMS context cache of a simulated deployment: sized from the catalog (pooled CPU DRAM of the nodes,
an EVS SSD tier below), looked up when a prefill batch starts and filled when it ends (P3 §4.4.2)."""

from __future__ import annotations

from typing import Any

from cloudmatrix.catalog.hardware import Hardware, ems_pool_bytes
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.deploy import BYTES_PER_ELEMENT
from cloudmatrix.errors import ConfigError
from cloudmatrix.serving.ems import ContextCache, capacity_blocks, hit_tokens
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.units import GB_DECIMAL


class PrefixCache:
    def __init__(self, scenario: Scenario, hw: Hardware, model: ModelSpec, block_tokens: int) -> None:
        ems = hw.system.ems
        if ems is None:
            raise ConfigError(f"ems: system '{hw.system.id}' has no EMS pool in the catalog")
        cfg = scenario.ems
        assert cfg is not None
        chips = sum(p.instances * p.chips for p in (scenario.prefill, scenario.decode) if p is not None)
        self.nodes = cfg.nodes or -(-chips // int(hw.system.chips_per_node.value))
        self.block_tokens = block_tokens
        self.kv_bytes_per_token = model.kv_bytes_per_token(BYTES_PER_ELEMENT[scenario.kv_precision])
        per_block = block_tokens * self.kv_bytes_per_token
        ssd_bytes = self.nodes * ems.ssd_gb_per_node.value * GB_DECIMAL if cfg.ssd else 0.0
        self.cache = ContextCache(
            capacity_blocks(ems_pool_bytes(hw, self.nodes), block_tokens, self.kv_bytes_per_token),
            int(ssd_bytes // per_block),
        )
        # SSD-tier hits come up through the EVS links of the prefill instance's own nodes
        assert scenario.prefill is not None
        instance_nodes = max(-(-scenario.prefill.chips // int(hw.system.chips_per_node.value)), 1)
        self.ssd_bw_bytes_per_s = ems.ssd_bw_gb_s_per_node.value * GB_DECIMAL * instance_nodes
        self.prompt_tokens = self.cached_tokens = 0

    def lookup(self, hash_ids: list[int] | None, input_len: int) -> tuple[int, int]:
        """(cached tokens, of which read from the SSD tier) for one prompt."""
        self.prompt_tokens += input_len
        if not hash_ids:
            return 0, 0
        hit = self.cache.lookup(hash_ids)
        cached = hit_tokens(hit.blocks, self.block_tokens, input_len)
        ssd = min(hit.ssd_blocks * self.block_tokens, cached)
        self.cached_tokens += cached
        return cached, ssd

    def store(self, hash_ids: list[int] | None) -> None:
        if hash_ids:
            self.cache.store(hash_ids)

    def ssd_read_s(self, ssd_tokens: int) -> float:
        """SSD-tier hits are read up to DRAM before the UB read."""
        return ssd_tokens * self.kv_bytes_per_token / self.ssd_bw_bytes_per_s

    def stats(self) -> dict[str, Any]:
        st = self.cache.stats
        return {
            "nodes": self.nodes,
            "block_tokens": self.block_tokens,
            "dram_capacity_blocks": self.cache.dram_capacity_blocks,
            "ssd_capacity_blocks": self.cache.ssd_capacity_blocks,
            "token_hit_rate": self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0,
            "block_hit_rate": st.hit_rate,
            "dram_hit_blocks": st.dram_hit_blocks,
            "ssd_hit_blocks": st.ssd_hit_blocks,
            "evictions": st.evictions,
        }
