"""The roofline is a lower bound: no predicted step beats it, on any system with a compare preset, in
either phase, at several batch sizes, with and without microbatching, in every place that shows one
(estimate's JSON and table, report's step breakdown)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.presets import presets
from cloudmatrix.cli.app import app
from cloudmatrix.cli.render import estimate_table
from cloudmatrix.cost.roofline import overlapped_bound_s, serial_bound_s
from cloudmatrix.deploy import Deployment, Eplb, Phase
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.estimate import Estimate, estimate
from cloudmatrix.report.data import breakdowns
from cloudmatrix.studies.compare import Conditions, SystemResult

SYSTEMS = list(presets())
DECODE_BATCHES = (1, 16, 96)
PREFILL_TOKENS = (2048, 16384)
MODELS = ("deepseek-r1", "deepseek-v3.2")
runner = CliRunner()


def _estimate(system: str, model: str, phase: str, size: float, microbatch: bool | None) -> Estimate | None:
    pre = presets()[system]
    d = pre[phase]
    size_kw = {"tokens_per_chip": int(size), "mtp": 0} if phase == "prefill" else {"batch_per_chip": size, "mtp": 1}
    if phase == "aggregated":
        size_kw["chunk_tokens_per_chip"] = 256
    try:
        return estimate(
            system,
            model,
            Deployment(
                phase=Phase(phase),
                num_chips=d["chips"],
                ep=d.get("ep"),
                precision=pre["precision"],
                eplb=Eplb.DEFAULT,
                microbatch=microbatch,
                stack=pre.get("stack"),
                **size_kw,
            ),
        )
    except InfeasibleDeploymentError:
        return None


def _assert_bounded(step_us: float, bound_us: float, ops_us: dict[str, float], sol_us: dict[str, float]) -> None:
    assert 0 < bound_us <= step_us * (1 + 1e-12)
    for op, light in sol_us.items():  # each op shown beside its own speed of light
        assert light <= ops_us[op] * (1 + 1e-12), op


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("system", SYSTEMS)
def test_no_prediction_beats_the_roofline(system: str, model: str) -> None:
    priced = 0
    for phase, sizes in (("decode", DECODE_BATCHES), ("prefill", PREFILL_TOKENS), ("aggregated", (8, 64))):
        for size in sizes:
            for microbatch in (True, False):
                e = _estimate(system, model, phase, size, microbatch)
                if e is None:
                    continue
                priced += 1
                s = e.step
                _assert_bounded(s.step_s * 1e6, s.roofline_step_s * 1e6, s.breakdown_us, s.roofline_us)
                assert s.roofline_us.keys() <= s.breakdown_us.keys()
    assert priced >= 4  # most shapes fit; an empty sweep would prove nothing


@settings(max_examples=40, deadline=None)
@given(
    system=st.sampled_from(["cloudmatrix384", "hgx-h800", "gb200-nvl72", "mi300x"]),
    phase=st.sampled_from(["decode", "prefill"]),
    size=st.floats(min_value=1, max_value=256),
    kv_len=st.integers(min_value=128, max_value=32768),
    microbatch=st.sampled_from([True, False, None]),
)
def test_no_shape_beats_the_roofline(
    system: str, phase: str, size: float, kv_len: int, microbatch: bool | None
) -> None:
    """Any batch and context on the preset shapes: the step never beats its bound."""
    pre = presets()[system]
    shape = pre[phase]
    kw = (
        {"tokens_per_chip": int(size) * 64, "mtp": 0}
        if phase == "prefill"
        else {"batch_per_chip": size, "kv_len": kv_len}
    )
    try:
        e = estimate(
            system,
            "deepseek-r1",
            Deployment(
                phase=Phase(phase),
                num_chips=shape["chips"],
                ep=shape.get("ep"),
                precision=pre["precision"],
                microbatch=microbatch,
                stack=pre.get("stack"),
                **kw,
            ),
        )
    except InfeasibleDeploymentError:
        return
    _assert_bounded(e.step.step_s * 1e6, e.step.roofline_step_s * 1e6, e.step.breakdown_us, e.step.roofline_us)


def test_serial_and_overlapped_bounds_in_closed_form() -> None:
    assert serial_bound_s([1.0, 2.0, 3.0]) == (6.0, "serial")
    compute = [("cores:attention", 1.0), ("cores:moe", 0.5), ("cores:moe", 1.0)]
    links = [("scale_up", 1.2), ("scale_out", 0.2), ("scale_up", 0.1)]
    # per microbatch: attention cores 1.0, MoE cores 1.5, HBM 1.4, scale-up 1.3: two microbatches double each
    assert overlapped_bound_s(compute, [0.4, 0.6, 0.4], links, copies=2) == (3.0, "cores:moe")
    assert overlapped_bound_s(compute, [2.0], links, copies=2) == (4.0, "hbm")
    assert overlapped_bound_s([], [0.0], links, copies=2) == (2.6, "link:scale_up")


@pytest.mark.parametrize("phase", ["decode", "prefill"])
@pytest.mark.parametrize("system", ["cloudmatrix384", "hgx-h800", "hgx-h100", "mi300x", "mi325x"])
def test_estimate_json_and_table_show_a_bound(system: str, phase: str) -> None:
    pre = presets()[system]
    shape = pre[phase]
    size = ["--tokens-per-chip", "16384", "--mtp", "0"] if phase == "prefill" else ["--batch-per-chip", "32"]
    args = ["estimate", "--system", system, "--phase", phase, "--chips", str(shape["chips"]), "--ep", str(shape["ep"])]
    args += ["--precision", pre["precision"], *size]
    for mb in ("--microbatch", "--no-microbatch"):
        res = runner.invoke(app, [*args, mb, "--json"])
        assert res.exit_code == 0, res.output
        d = json.loads(res.stdout)
        _assert_bounded(d["step_ms"] * 1e3, d["roofline_step_ms"] * 1e3, d["breakdown_us"], d["roofline_us"])
        head, _, step = estimate_table(d)
        shown = dict(zip(head.columns[0]._cells, head.columns[1]._cells, strict=True))
        assert float(shown["roofline_step_ms"].replace(",", "")) <= float(shown["step_ms"].replace(",", ""))
        for us, light in zip(step.columns[1]._cells, step.columns[2]._cells, strict=True):
            assert float(light.replace(",", "")) <= float(us.replace(",", ""))


def test_report_breakdown_never_beats_its_roofline() -> None:
    """report/data.py's step breakdowns, at several operating batches on every system with a preset."""
    c = Conditions(model="deepseek-r1", input_len=4096, output_len=256, tpot_slo_ms=50.0)
    results = [
        SystemResult(system=s, deployment="-", precision=presets()[s]["precision"], feasible=True, batch_per_chip=b)
        for s in SYSTEMS
        for b in (4.0, 32.0)
    ]
    shown = 0
    for r in results:
        try:
            out = breakdowns([r], c)
        except InfeasibleDeploymentError:
            continue
        for entry in out.values():
            shown += 1
            _assert_bounded(
                entry["step_ms"] * 1e3,
                entry["roofline_step_ms"] * 1e3,
                entry["ops_us"],
                {op: us for op, us in entry["roofline_us"].items() if op in entry["ops_us"]},
            )
    assert shown >= len(SYSTEMS)
