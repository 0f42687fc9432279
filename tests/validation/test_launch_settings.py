"""The server launch settings an InferenceMAX row carries (data/validation/inferencemax.yaml, from the
benchmark's scripts): SGLang's memory fraction and scheduler receive interval, on every row they apply to and
on no other."""

from cloudmatrix.catalog.corpus import load_corpora
from cloudmatrix.catalog.inferencemax import mapping


def _imx_rows():
    return [r for r in load_corpora(["inferencemax-public", "inferencemax-more"]) if r.aggregated is not None]


def test_sglang_b200_rows_poll_every_10_steps_below_16_clients_and_every_30_from_16() -> None:
    rows = _imx_rows()
    b200 = [r for r in rows if r.stack == "sglang" and r.system == "hgx-b200"]
    assert b200
    for r in b200:
        conc = r.workload.concurrency or 1
        assert r.aggregated is not None and r.aggregated.recv_interval == (30 if conc >= 16 else 10), r.id
    others = [r for r in rows if not (r.stack == "sglang" and r.system == "hgx-b200")]
    assert all(r.aggregated is not None and r.aggregated.recv_interval is None for r in others)


def test_sglang_rows_carry_their_scripts_memory_fraction_and_no_other_stack_does() -> None:
    expected = {("hgx-b200", "fp4"): 0.85, ("hgx-b200", "fp8"): 0.82, ("hgx-h200", "fp8"): 0.82}
    for r in _imx_rows():
        assert r.aggregated is not None
        if r.stack != "sglang":
            assert r.aggregated.memory_fraction is None, r.id
        elif r.system in ("mi300x", "mi325x", "mi355x"):
            assert r.aggregated.memory_fraction == 0.8, r.id
        else:
            precision = "fp4" if r.weights == "nvfp4" else "fp8"
            assert r.aggregated.memory_fraction == expected[(r.system, precision)], r.id


def test_every_launch_rule_names_its_source() -> None:
    for table in ("memory_fraction", "recv_interval"):
        assert mapping()[table]
        assert all(rule["source"].startswith("SA-IMX") for rule in mapping()[table])
