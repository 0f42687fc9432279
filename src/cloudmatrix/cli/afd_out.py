"""Tables of an attention-FFN disaggregated (AFD) decode estimate: the two pools, the ping-pong step, what
each resource is busy with, and the same dies run without AFD."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def afd_tables(d: dict[str, Any]) -> list[Table]:
    a = d["afd"]
    head = Table(
        title=f"{d['model']} decode on {d['system']}: AFD {a['attention_chips']} attention + {a['ffn_chips']} FFN "
        f"chips (EP{a['ffn_ep']}), {a['microbatches']} microbatches over {a['plane']}"
    )
    head.add_column("metric")
    head.add_column("AFD", justify="right")
    head.add_column("same dies, no AFD", justify="right")
    same = d.get("same_dies", {})
    for key in ("step_ms", "tpot_ms", "throughput_per_chip_tok_s"):
        other = same.get(key)
        head.add_row(key, f"{d[key]:,.2f}", "-" if other is None else f"{other:,.2f}")
    head.add_row("batch per attention chip", f"{d['batch_per_chip']:g}", "")
    for pool in ("attention", "ffn"):
        mem = d["memory_per_die_gb"][pool]
        head.add_row(
            f"{pool} die memory (GB)",
            f"{mem['total']:.1f} of {mem['capacity']:.0f} (weights {mem['weights']:.1f}, KV {mem['kv']:.1f})",
            "",
        )
    busy = Table(title="Share of the step each resource is busy (ping-pong schedule)")
    busy.add_column("resource")
    busy.add_column("busy", justify="right")
    for name, share in d["utilisation"].items():
        busy.add_row(name, f"{share:.0%}")
    step = Table(title="Attention pool's step (µs per step, sums to the step) and the FFN pool's ops")
    step.add_column("op")
    step.add_column("µs/step", justify="right")
    for op, us in sorted(d["breakdown_us"].items(), key=lambda kv: -kv[1]):
        step.add_row(op, f"{us:,.0f}")
    for op, us in sorted({**d["ffn_us"], **d["crossing_us"]}.items(), key=lambda kv: -kv[1]):
        step.add_row(f"[dim]{op} (FFN pool / crossing)[/dim]", f"[dim]{us:,.0f}[/dim]")
    return [head, busy, step]
