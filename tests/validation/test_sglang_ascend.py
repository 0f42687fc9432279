"""SGLang on Atlas A3: the published deployments run at their launched memory settings (SGLang's static
fraction bounds weights and the KV pool; activations live in the rest), DP attention groups of several dies
are the twin's attention groups, and the output projection is split over them."""

import dataclasses

import numpy as np
import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.validation import RoleLayout, ValidationRow, corpus_path, load_yaml_rows
from cloudmatrix.cost.memory import memory_use, reserve_bytes
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.inputs import InputError
from cloudmatrix.sim.engine import simulate
from cloudmatrix.studies.validate_run import attention_group, prefill_budget, run_row, scenario_for, twin_layout
from cloudmatrix.units import GB_DECIMAL

A3, R1 = load_hardware("atlas-800t-a3"), load_model("deepseek-r1")
ROWS = {r.id: r for r in load_yaml_rows(corpus_path("sglang-ascend"))}
R1_ROWS = sorted(i for i in ROWS if i.startswith("sga-r1-"))
PREFILL = Deployment(
    phase=Phase.PREFILL,
    num_chips=8,
    ep=16,
    tokens_per_chip=7170,
    input_len=3500,
    precision="int8",
    activation_precision="int8",
    attention_tp=8,
    redundant_experts=0,
    stack="sglang-ascend",
)


@pytest.mark.parametrize("row_id", R1_ROWS)
def test_every_deepseek_r1_row_runs_at_its_launched_memory_setting(row_id: str) -> None:
    """A deployment that ran is answered, and without the fall-back to the chip's bare reserve."""
    outcome = run_row(ROWS[row_id])
    assert outcome.status == "ok", outcome.reason
    assert "runtime reserve" not in outcome.note and "queue" not in outcome.note


@pytest.mark.parametrize("stack", ["sglang-ascend", "mindie"])
@pytest.mark.parametrize("reserve_gb", [None, 0.5, 12.0])
@pytest.mark.parametrize("tokens", [1024, 7170, 60000])
def test_a_weights_and_kv_fraction_keeps_buffers_inside_what_it_leaves(
    stack: str, reserve_gb: float | None, tokens: int
) -> None:
    """SGLang's fraction bounds weights and KV: the buffers take the room it leaves and only their excess
    adds; a stack whose fraction bounds everything adds buffers beside its reserve."""
    p = plan(dataclasses.replace(PREFILL, stack=stack, reserve_gb=reserve_gb, tokens_per_chip=tokens), A3, R1)
    mem = memory_use(p)
    kept = reserve_bytes(p, mem.weights_bytes + mem.buffers_bytes)  # what the setting leaves, no buffers inside
    if stack == "sglang-ascend":
        assert mem.buffers_bytes + mem.reserve_bytes == pytest.approx(max(kept, mem.buffers_bytes))
    else:
        assert mem.reserve_bytes == pytest.approx(kept)


def test_the_output_projection_is_split_over_sglangs_attention_group() -> None:
    """CloudMatrix-Infer's sequence-parallel o_proj is whole on every die; SGLang's is row-parallel."""
    a = R1.attention
    o_proj = a.num_heads * a.v_head_dim * R1.hidden
    sglang = memory_use(plan(PREFILL, A3, R1)).weights_bytes
    mindie = memory_use(plan(dataclasses.replace(PREFILL, stack="mindie"), A3, R1)).weights_bytes
    layers = R1.num_layers
    assert mindie - sglang == pytest.approx(layers * o_proj * (1 - 1 / 8) * 1.0, rel=1e-9)  # int8 weights
    assert sglang / GB_DECIMAL < 0.81 * 64  # the page's prefill fits its --mem-fraction-static 0.81


def _layout(**kw: object) -> RoleLayout:
    return RoleLayout.model_validate({"chips": 8, "tp": 16, "ep": 16, "dp_attention": True, **kw})


@pytest.mark.parametrize(("tp", "dp", "group"), [(16, 2, 8), (32, 16, 2), (32, 32, 1), (16, None, 1)])
def test_dp_attention_groups_are_tp_over_dp_dies(tp: int, dp: int | None, group: int) -> None:
    row = ValidationRow.model_validate(
        ROWS["sga-r1-w8a8-32c-pd-c832"].model_dump() | {"decode": _layout(tp=tp, dp=dp, chips=16).model_dump()}
    )
    assert attention_group(_layout(tp=tp, dp=dp), "decode") == group
    prefill = twin_layout(row, _layout(tp=16, dp=dp if dp and 16 % dp == 0 else None), R1, [], "prefill")
    decode = twin_layout(row, row.decode, R1, [], "decode")  # type: ignore[arg-type]
    assert decode["tp"] == group
    assert prefill["tp"] == 1 and prefill.get("attention_tp", 1) == attention_group(
        _layout(tp=16, dp=dp if dp and 16 % dp == 0 else None), "prefill"
    )


def test_a_dp_size_that_does_not_divide_tp_is_refused_by_field() -> None:
    with pytest.raises(InputError) as e:
        attention_group(_layout(tp=16, dp=3), "prefill")
    assert str(e.value) == "prefill.dp: got 3; expected a divisor of prefill.tp 16"


@pytest.mark.parametrize("budget", [None, 1000.0, 7170.0])
@pytest.mark.parametrize("running", [None, 1, 4, 64])
def test_a_prefill_running_request_cap_bounds_the_batch(budget: float | None, running: int | None) -> None:
    """A prefill instance prefills at most its running-request cap's prompts at once: the budget is the
    smaller of the published token budget and cap x prompt length over the chips, noted where the cap binds."""
    layout = _layout(chunk_tokens_per_chip=budget, max_running=running)
    notes: list[str] = []
    got = prefill_budget(layout, 3500, notes).get("tokens_per_chip")
    caps = [c for c in (budget, running * 3500 / 8 if running else None) if c is not None]
    assert got == (max(int(min(caps)), 1) if caps else None)
    binds = running is not None and (budget is None or running * 3500 / 8 < budget)
    assert bool(notes) == binds


# P99 and median TPOT as the low-latency runs' bench_serving printouts give them (SGL-ASCEND-BP)
PRINTED_TPOT = {
    "sga-r1-w8a8-32c-ll-6k1.6k": (23.74, 20.22),
    "sga-r1-w8a8-32c-ll-3.9k1k": (23.90, 19.68),
    "sga-r1-w8a8-32c-ll-3.5k1.5k": (24.64, 19.91),
    "sga-r1-w8a8-32c-ll-3.5k1k": (25.19, 19.82),
}


@pytest.mark.parametrize("row_id", sorted(PRINTED_TPOT))
def test_the_acceptance_spread_gives_the_printed_tpot_tail(row_id: str) -> None:
    """32 requests decode in lockstep (DP attention), so the slowest one's TPOT over the median is its accept
    length's shortfall: with the rows' spread the twin's P99/median TPOT is the printout's, without it far
    short (the 6K row is predicted: the spread was fitted on the other three and pd-c832)."""
    row = ROWS[row_id]
    p99, median = PRINTED_TPOT[row_id]

    def ratio(spread: float) -> float:
        scenario = scenario_for(row.model_copy(update={"mtp_spread": spread}), R1, [])
        tpot = simulate(scenario).tpot_s()
        return float(np.percentile(tpot, 99) / np.median(tpot))

    assert row.mtp_spread > 0
    assert abs(ratio(row.mtp_spread) - p99 / median) < 0.08
    assert ratio(0.0) < p99 / median - 0.1
