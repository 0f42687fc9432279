"""Golden estimate rows: step time and throughput of every system's preset shapes (prefill, decode and
co-located steps, a small and a large batch, microbatch on, off and chosen), stored from the model before
the pricing refactor. Restructuring the cost model must leave every figure identical to the last digit;
a change to the model itself regenerates them (and says why in its commit)."""

import json
from pathlib import Path

import pytest

from cloudmatrix.catalog.presets import presets
from cloudmatrix.deploy import Deployment, Eplb, Phase
from cloudmatrix.estimate import estimate

ROWS = json.loads((Path(__file__).parent / "estimate_rows.json").read_text())["rows"]


def _deployment(row: dict) -> Deployment:
    pre = presets()[row["system"]]
    shape = pre[row["phase"]]
    size = (
        {"tokens_per_chip": int(row["size"]), "mtp": 0}
        if row["phase"] == "prefill"
        else {"batch_per_chip": row["size"], "mtp": 1, "mtp_acceptance": 0.7}
    )
    return Deployment(
        phase=Phase(row["phase"]),
        num_chips=shape["chips"],
        ep=shape.get("ep"),
        input_len=4096,
        output_len=256,
        precision=pre["precision"],
        eplb=Eplb.DEFAULT,
        microbatch=row["microbatch"],
        stack=pre.get("stack"),
        **size,
    )


def test_rows_cover_every_preset_system_and_phase() -> None:
    assert {(r["system"], r["phase"]) for r in ROWS} >= {(s, p) for s in presets() for p in ("prefill", "decode")}


@pytest.mark.parametrize(
    "row", ROWS, ids=lambda r: f"{r['system']}-{r['model']}-{r['phase']}-{r['size']:g}-{r['microbatch']}"
)
def test_prediction_is_unchanged(row: dict) -> None:
    e = estimate(row["system"], row["model"], _deployment(row))
    d = e.to_dict()
    assert (d["step_ms"], d["throughput_per_chip_tok_s"], d["microbatch"]) == (
        row["step_ms"],
        row["throughput_per_chip_tok_s"],
        row["chose_microbatch"],
    )


def _regenerate(source: str) -> None:
    """Rewrite the stored figures from today's model (a deliberate model change only; say why in the commit)."""
    path = Path(__file__).parent / "estimate_rows.json"
    for row in ROWS:
        d = estimate(row["system"], row["model"], _deployment(row)).to_dict()
        row.update(
            step_ms=d["step_ms"],
            throughput_per_chip_tok_s=d["throughput_per_chip_tok_s"],
            chose_microbatch=d["microbatch"],
        )
    lines = ",\n".join("  " + json.dumps(r) for r in ROWS)
    path.write_text(f'{{"source": {json.dumps(source)},\n "rows": [\n{lines}\n]}}\n')


if __name__ == "__main__":  # python tests/golden/test_estimate_rows.py "why the model changed"
    import sys

    _regenerate(sys.argv[1] if len(sys.argv) > 1 else "regenerated")
