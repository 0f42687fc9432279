"""`cloudmatrix plan --afd`: the best attention:FFN split and microbatch count of an AFD decode instance
under the TPOT SLO (planner/afd.py), the same dies without AFD beside it, and rank 1 checked in simulation."""

from __future__ import annotations

from typing import Any

from cloudmatrix.cli import common as cli

AFD_CHECK_REQUESTS = 40_000  # enough for the decode pool to reach its steady batch at the planned rate


def plan_afd(
    system: str,
    model: str,
    workload: str,
    tpot_slo: float,
    mtp_acceptance: float,
    precision: str | None,
    stack: str | None,
    check: bool,
    top: int,
    as_json: bool,
    chips: int | None = None,
) -> None:
    from cloudmatrix.inputs import check_number
    from cloudmatrix.planner.afd import AfdJob, same_dies, search
    from cloudmatrix.planner.afd import check as simulate_choice
    from cloudmatrix.planner.inputs import parse_workload

    def run() -> dict[str, Any]:
        check_number("--tpot-slo (ms)", tpot_slo, lo=0, lo_open=True, hi=1e6)
        check_number("--mtp-acceptance", mtp_acceptance, lo=0, hi=1)
        check_number("--top", top, lo=1, hi=1000, integer=True)
        if chips is not None:
            check_number("--chips", chips, lo=1, hi=100_000, integer=True)
        w = parse_workload(workload)
        job = AfdJob(
            system=system,
            model=model,
            input_len=max(round(w.input_len), 1),
            output_len=max(round(w.output_len), 1),
            tpot_slo_ms=tpot_slo,
            mtp_acceptance=mtp_acceptance,
            precision=(precision or "int8").split(",")[0].strip(),
            stack=stack,
            budget_chips=chips,
        )
        ranked = search(job)
        d: dict[str, Any] = {
            "system": system,
            "model": model,
            "workload": {"input_len": job.input_len, "output_len": job.output_len},
            "tpot_slo_ms": tpot_slo,
            "ranked": [c.to_dict() | {"rank": i + 1} for i, c in enumerate(ranked[:top])],
        }
        if not ranked:
            d["reason"] = (
                f"no AFD split of the decode sizes within the chip budget meets the {tpot_slo:g} ms TPOT SLO at "
                "one sequence per die"
            )
            return d
        d["ranked"][0]["same_dies_without_afd"] = same_dies(job, ranked[0])
        if check:
            d["check"] = simulate_choice(job, ranked[0], AFD_CHECK_REQUESTS)
        return d

    d = cli._run(run)
    if as_json:
        cli._emit_json(d)
        return
    from rich.table import Table

    table = Table(title=f"plan --afd {d['model']} on {d['system']}: TPOT SLO {d['tpot_slo_ms']:g} ms")
    for col in ("#", "attention", "FFN", "mb", "batch/chip", "TPOT ms", "out tok/s/chip", "attn busy", "FFN busy"):
        table.add_column(col, justify="right")
    for r in d["ranked"]:
        u = r["utilisation"]
        table.add_row(
            str(r["rank"]),
            str(r["attention_chips"]),
            str(r["ffn_chips"]),
            str(r["microbatches"]),
            str(r["batch_per_chip"]),
            f"{r['tpot_ms']:.1f}",
            f"{r['decode_tok_s_per_chip']:,.0f}",
            f"{u['attention']:.0%}",
            f"{u['ffn']:.0%}",
        )
    cli.out.print(table)
    if "reason" in d:
        cli.out.print(d["reason"])
        return
    same = d["ranked"][0]["same_dies_without_afd"]
    if "refused" in same:
        cli.out.print(f"the same dies and sequences without AFD: refused ({same['refused']})")
    else:
        cli.out.print(
            f"the same dies and sequences without AFD: TPOT {same['tpot_ms']:.1f} ms, "
            f"{same['decode_tok_s_per_chip']:,.0f} out tok/s/chip"
        )
    if "check" in d:
        c = d["check"]
        cli.out.print(
            f"#1 simulated ({c['requests_done']:,} requests at 90% of the matched rate): TPOT p50 "
            f"{c['tpot_ms']['simulated_p50']:.1f} ms (analytic at the batch cap "
            f"{c['tpot_ms']['analytic_at_cap']:.1f}), "
            f"decode {c['decode_tok_s_per_chip']['simulated']:,.0f} out tok/s/chip over the run "
            f"(analytic at the cap {c['decode_tok_s_per_chip']['analytic_at_cap']:,.0f})"
        )
