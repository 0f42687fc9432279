"""A query's interval draws on its own ecosystem's evidence (issue 22: stratify by chip family x stack): a GPU
answer never inherits an NPU's hold-out errors (the Ascend rows' 2-7x TTFT misses at 4K-64K, which set out-of-ISL
TTFT intervals of 620 % on GPU rows) while GPUs have rows for the step it takes, nor the reverse; and a class, ISL
or concurrency validated only on the other ecosystem's chips is a step outside the domain, named as such."""

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.hardware import system_vendor
from cloudmatrix.studies.interval_steps import STEP_KINDS, engine_vendors, step_error, step_spread
from cloudmatrix.studies.intervals import Query, index_residuals, query_interval

from .residual_rows import residual, spread_rows

# Per ecosystem, (system, stack) cells with rows of their own: three GPU families, one NPU family.
GPU_CELLS = (("hgx-h100", "vllm"), ("hgx-b200", "sglang"), ("mi300x", "sglang"))
NPU_CELLS = (("atlas-800t-a3", "sglang-ascend"), ("cloudmatrix384", "mindie"))


def _cell(
    kind: str, system: str, stack: str, ratio: float, spread: float, isl: int, n: int = 12, metric: str = "tpot_ms"
) -> list[dict]:
    """``n`` rows of one cell from four series at one ISL, measured / predicted spread about ``ratio``; the
    series hold-out's fitted, every other kind's priced without fitted host times."""
    band = "ISL 1K" if isl == 1024 else ("ISL 8K" if isl == 8192 else "ISL 64K")
    tag, place = f"{system}-{stack}-{isl}", {"isl": isl, "isl_band": band, "metric": metric}
    return spread_rows(kind, system, stack, ratio, spread, tag=tag, n=n, series=4, **place)


def _world(
    cells: tuple[tuple[str, str], ...], ratio: float, isls: tuple[int, ...], metric: str = "tpot_ms"
) -> list[dict]:
    return [
        r | {"metric": metric}
        for system, stack in cells
        for isl in isls
        for kind in ("series", *STEP_KINDS)
        for r in _cell(
            kind, system, stack, ratio if kind == "series" else ratio * 1.2, 0.3 if kind == "series" else 0.8, isl
        )
    ]


GPU_ROWS = _world(GPU_CELLS, 1.0, (1024, 8192))


def _npu_rows(ratio: float) -> list[dict]:
    return _world(NPU_CELLS, ratio, (4096, 65536))


QUERIES = st.builds(
    Query,
    system=st.sampled_from(["hgx-h100", "hgx-h200", "hgx-b200", "gb200-nvl72", "mi300x", "mi355x"]),
    stack=st.sampled_from(["vllm", "sglang", "trtllm"]),
    metric=st.just("tpot_ms"),
    model_class=st.sampled_from([None, "moe", "mla"]),
    isl=st.sampled_from([None, 1024, 4096, 8192, 65536]),
    band=st.sampled_from([None, "conc 1-8", "conc 65-256"]),
    host_times=st.sampled_from([None, "fitted", "unfitted"]),
)


@settings(max_examples=150, deadline=None)
@given(q=QUERIES, npu_ratio=st.floats(0.1, 10.0))
def test_a_gpu_answer_is_the_same_whatever_the_npu_rows_say(q: Query, npu_ratio: float) -> None:
    """Every condition a GPU query states, inside or outside the domain (a new family, stack, class, ISL or
    concurrency, either host-time basis): its interval is the one a table without any NPU row gives."""
    alone = query_interval(100.0, q, table=index_residuals(GPU_ROWS, "tpot_ms"))
    mixed = query_interval(100.0, q, table=index_residuals(GPU_ROWS + _npu_rows(npu_ratio), "tpot_ms"))
    assert (mixed.lo, mixed.hi) == (alone.lo, alone.hi)


@settings(max_examples=60, deadline=None)
@given(
    system=st.sampled_from(["atlas-800t-a3", "cloudmatrix384", "atlas950-superpod"]),
    stack=st.sampled_from(["sglang-ascend", "mindie", "vllm-ascend"]),
    isl=st.sampled_from([None, 4096, 65536, 1024]),
    gpu_ratio=st.floats(0.1, 10.0),
)
def test_an_npu_answer_is_the_same_whatever_the_gpu_rows_say(
    system: str, stack: str, isl: int | None, gpu_ratio: float
) -> None:
    npu = _npu_rows(2.0)
    gpu = [r | {"measured": r["measured"] * gpu_ratio} for r in GPU_ROWS]
    q = Query(system=system, stack=stack, metric="tpot_ms", isl=isl)
    alone = query_interval(100.0, q, table=index_residuals(npu, "tpot_ms"))
    mixed = query_interval(100.0, q, table=index_residuals(npu + gpu, "tpot_ms"))
    assert (mixed.lo, mixed.hi) == (alone.lo, alone.hi)


def test_a_gpu_step_takes_the_gpus_rows_as_priced_before_an_npus_on_its_basis() -> None:
    """The out-of-ISL case: a GPU query priced without fitted host times whose ISL step has rows of its basis
    only on NPUs takes the GPUs' ISL hold-out rows as the series hold-out predicted them."""
    gpu = [r | {"host_times": "fitted"} for r in GPU_ROWS if r["kind"] in ("series", "isl")]
    table = index_residuals(gpu + _npu_rows(7.0), "tpot_ms")
    for system in ("hgx-h100", "hgx-b200", "mi300x"):
        rows = step_error("isl", table.pools["unfitted"], table, system, "vllm")
        assert rows and {system_vendor(r["system"]) for r in rows} <= {"nvidia", "amd"}, system
    # ... and with no GPU row of the kind at all, the NPUs' stand in (no basis is not an answer)
    npu_only = index_residuals([r for r in gpu if r["kind"] == "series"] + _npu_rows(7.0), "tpot_ms")
    rows = step_error("isl", npu_only.pools["unfitted"], npu_only, "hgx-h100", "vllm")
    assert {system_vendor(r["system"]) for r in rows} == {"huawei"}


def test_a_length_measured_only_on_the_other_ecosystem_is_a_step_outside() -> None:
    table = index_residuals(GPU_ROWS + _npu_rows(2.0), "tpot_ms")
    q = Query(system="hgx-b200", stack="sglang", metric="tpot_ms", isl=65536)
    iv = query_interval(100.0, q, table=table)
    assert iv.extrapolating == ("ISL 65,536 beyond the validated 1,024-8,192 on amd or nvidia chips",)
    inside = query_interval(100.0, replace(q, isl=8192), table=table)
    assert iv.lo is not None and iv.hi is not None and inside.lo is not None and inside.hi is not None
    assert iv.hi / iv.lo >= inside.hi / inside.lo
    npu = query_interval(100.0, replace(q, system="atlas-800t-a3", stack="sglang-ascend", isl=1024), table=table)
    assert npu.extrapolating[-1] == "ISL 1,024 beyond the validated 4,096-65,536 on huawei chips"


def test_the_ecosystems_follow_the_engines_builds() -> None:
    """NVIDIA's and AMD's chips share vLLM and SGLang builds; Ascend's engines run on Ascend alone."""
    assert engine_vendors("nvidia") == engine_vendors("amd") == {"nvidia", "amd"}
    assert engine_vendors("huawei") == {"huawei"}
    assert system_vendor("no-such-system") == "unknown" and engine_vendors("unknown") == {"unknown"}


# Per vendor: the system its few family hold-out rows were measured on, its stack there, and the systems and
# stacks of the queries; the other chips' rows are NVIDIA's, many and narrow.
VENDORS = {
    "huawei": (
        "atlas-800t-a3",
        "sglang-ascend",
        ["atlas-800t-a3", "cloudmatrix384", "atlas950-superpod"],
        ["sglang-ascend", "mindie", "vllm-ascend", "cloudmatrix-infer"],
    ),
    "amd": ("mi300x", "sglang", ["mi300x", "mi325x", "mi355x"], ["sglang", "atom", "mori-sglang", "vllm"]),
}


@settings(max_examples=150, deadline=None)
@given(
    maker=st.sampled_from(sorted(VENDORS)),
    data=st.data(),
    metric=st.sampled_from(["throughput_per_chip_tok_s", "output_tok_s_per_chip"]),
    missed=st.lists(st.floats(0.25, 4.0), min_size=1, max_size=7),
)
def test_an_answer_is_never_narrower_than_its_vendors_own_step_error(
    maker: str, data: st.DataObject, metric: str, missed: list[float]
) -> None:
    """However few the rows of its vendor's own family hold-out (too few for a stratum, so the step's error
    stands on other chips' rows), an answer on that vendor's chips that takes the family step is at least as
    wide as what the twin missed by there: Ascend's or CDNA's measured / predicted held out (their end-to-end
    throughput's, for the steady per-chip throughput an estimate reports)."""
    measured_on, its_stack, systems, stacks = VENDORS[maker]
    nvidia = [
        r
        for m in ("throughput_per_chip_tok_s", "output_tok_s_per_chip")
        for r in _world(GPU_CELLS[:2], 1.0, (1024,), m)
    ]
    own = [
        residual(
            measured_on,
            ratio,
            kind="family",
            id=f"{maker}-{i}",
            series=f"{maker}-s{i}",
            stack=its_stack,
            metric="output_tok_s_per_chip",
            host_times="unfitted",
        )
        for i, ratio in enumerate(missed)
    ]
    q = Query(system=data.draw(st.sampled_from(systems)), stack=data.draw(st.sampled_from(stacks)), metric=metric)
    iv = query_interval(100.0, q, table=index_residuals(nvidia + own, metric))
    assert any(r.startswith("chip family") for r in iv.extrapolating)
    assert iv.lo is not None and iv.hi is not None
    spread = step_spread(own, 0.8)
    assert iv.lo <= 100.0 * math.exp(-spread) * (1 + 1e-9) and iv.hi >= 100.0 * math.exp(spread) * (1 - 1e-9)
