"""An attention kernel's loads and matmuls (``efficiency.attention_overlap``): the roofline's max where the
shorter term hides under the longer (1, and every chip that states nothing), their sum where nothing hides
(0: CANN's MLA on the 910C), and in between never below the max nor above the sum. Other op classes keep
the max."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.overrides import apply_hardware_overrides
from cloudmatrix.cost.ops import Op, OpClass, Stream
from cloudmatrix.cost.pricing import Pricer

CM = load_hardware("cloudmatrix384")


def _terms(p: Pricer, op: Op) -> tuple[float, float]:
    eff_c, eff_m = p.flat[op.op_class]
    return op.flops / (eff_c * p.peak(op.precision)), op.hbm_bytes / (eff_m * p.hbm_bw)


def _pricer(overlap: float | None) -> Pricer:
    hw = CM if overlap is None else apply_hardware_overrides(CM, [f"chip.efficiency.attention_overlap={overlap}"])
    return Pricer(hw, None)


@settings(max_examples=60, deadline=None)
@given(
    overlap=st.floats(0.0, 1.0),
    flops=st.floats(1e6, 1e13),
    nbytes=st.floats(1e3, 1e10),
    op_class=st.sampled_from([OpClass.ATTENTION, OpClass.GEMM, OpClass.VECTOR]),
)
def test_attention_time_lies_between_the_max_and_the_sum(
    overlap: float, flops: float, nbytes: float, op_class: OpClass
) -> None:
    op = Op(name="x", op_class=op_class, stream=Stream.ATTENTION, flops=flops, hbm_bytes=nbytes)
    p = _pricer(overlap)
    c, m = _terms(p, op)
    t = p.price(op).time_s
    if op_class is OpClass.ATTENTION:
        assert max(c, m) * (1 - 1e-9) <= t <= (c + m) * (1 + 1e-9)
        assert t == pytest.approx(max(c, m) + (1 - overlap) * min(c, m), rel=1e-12)
    elif op_class is OpClass.VECTOR:
        assert t >= 0  # vector ops keep their own roofline (separate vector engines)
    else:
        assert t >= m


def test_the_910c_mla_adds_its_terms_and_the_gpus_keep_the_max() -> None:
    op = Op(name="attention_core", op_class=OpClass.ATTENTION, stream=Stream.ATTENTION, flops=1e11, hbm_bytes=2e8)
    p = Pricer(CM, None)
    c, m = _terms(p, op)
    assert CM.chip.efficiency.attention_overlap is not None and CM.chip.efficiency.attention_overlap.value == 0
    assert p.price(op).time_s == pytest.approx(c + m, rel=1e-12)
    h = Pricer(load_hardware("hgx-h800"), None)
    assert h.price(op).time_s == pytest.approx(max(_terms(h, op)) + h.launch_us * 1e-6, rel=1e-12)
