"""The stored expert-load table (catalog/expert_loads.py) rebuilt: the shipped workflows run with the table
off, and every busiest-die factor they sample is kept. ``cloudmatrix calibrate --write-expert-loads``."""

from __future__ import annotations

from typing import Any

from cloudmatrix.cost import expert_load
from cloudmatrix.sim.costs import KV_BUCKET_TOKENS, StepCosts
from cloudmatrix.sim.scenario import SCENARIO_DIR, Scenario, load_scenario

# What the table serves: the paper's rows and its ablations, the Hopper baselines, and `compare` and
# `report` with their defaults for the models people ask about first, `compare --sweep`'s default grid, and
# the batch shapes of the built-in `simulate` scenarios.
REFERENCE_SETS = ("cloudmatrix-infer", "hopper-baselines")
COMPARE_MODELS = ("deepseek-r1", "deepseek-v3.2")


def expert_load_table() -> dict[str, Any]:
    """Sample every factor of the shipped workflows afresh (stored entries ignored) and return the table."""
    from cloudmatrix.studies.ablate import ablate
    from cloudmatrix.studies.compare import Conditions, compare_dict
    from cloudmatrix.studies.compare_terms import system_list
    from cloudmatrix.studies.reproduce import reproduce
    from cloudmatrix.studies.sweep import SweepRequest, sweep
    from cloudmatrix.studies.tco import system_hardware
    from cloudmatrix.studies.verdict import DEFAULT_PAIR

    expert_load.sampled.clear()
    expert_load.use_stored = False
    expert_load.clear_cache()
    try:
        for set_id in REFERENCE_SETS:
            reproduce(set_id)
        ablate()
        for model in COMPARE_MODELS:
            compare_dict(system_list(None), Conditions(model=model, input_len=4096, output_len=256, tpot_slo_ms=50))
        sweep(SweepRequest(pair=DEFAULT_PAIR), {s: system_hardware(s, {}) for s in DEFAULT_PAIR})
        for path in sorted(SCENARIO_DIR.glob("*.yaml")):
            _scenario_shapes(load_scenario(str(path), []))
    finally:
        expert_load.use_stored = True
        expert_load.clear_cache()
    return {
        "about": "busiest-die factors (cost/experts.py, sampled) of the shapes the shipped workflows price; "
        "regenerate with `cloudmatrix calibrate --write-expert-loads`",
        "factors": dict(sorted(expert_load.sampled.items())),
    }


def _scenario_shapes(scenario: Scenario) -> None:
    """Price the shapes a run of the scenario prices, at any length: its pools as configured, a decode step
    at every count of sequences on the busiest die, and a prefill batch of every whole number of typical
    prompts (the expert-load factor depends on the batch, not on its KV context)."""
    costs = StepCosts(scenario)
    costs.check()
    d = scenario.aggregated or scenario.decode
    assert d is not None
    costs.kv_capacity_blocks(getattr(d, "kv_block_tokens", 128))
    typical = scenario.workload.input.typical
    kv_bucket = max(round(typical / KV_BUCKET_TOKENS), 1)
    for seqs in range(1, max(d.batch_per_chip * d.tp // costs.hw.chip.num_dies, 1) + 1):
        costs.decode_time_s(seqs, kv_bucket, 0)
    p = scenario.prefill
    if p is None:
        return
    for prompts in range(1, p.chips * p.tokens_per_chip // typical + 1):
        costs.prefill_batch_s(prompts * typical, typical)
