"""A simulation scenario from a system's deployment preset (catalog/data/presets/presets.yaml): the pools and
decode batch `compare` runs that system at for the model, workload and SLOs, as many instances as the
system holds, offered 90 % of what the binding pool serves, for long enough to reach a steady state. So
`simulate --system S --model M --workload W` needs no scenario file and simulates what `compare` prices."""

from __future__ import annotations

import math
from typing import Any

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.presets import presets
from cloudmatrix.deploy import stated_shared_dies
from cloudmatrix.errors import ConfigError, InfeasibleDeploymentError
from cloudmatrix.estimate import pool_req_s
from cloudmatrix.studies.compare import Conditions, SystemResult, compare_system
from cloudmatrix.workload.shape import shape_name

LOAD = 0.9  # the offered rate as a share of the binding pool's capacity (as cm384-paper and `plan --load`)
LIFETIMES = 3  # arrivals span this many request lifetimes, so the middle of the run is steady
MIN_REQUESTS, MAX_REQUESTS = 2_000, 20_000  # a run of seconds on a laptop, not minutes


def preset_scenario(system: str, c: Conditions) -> dict[str, Any]:
    """The scenario's fields (validated by the caller, after any ``--set``)."""
    preset = presets().get(system)
    if preset is None:
        raise ConfigError(f"no deployment preset for system '{system}'; presets exist for {', '.join(presets())}")
    try:
        r = compare_system(system, c)
    except InfeasibleDeploymentError as e:  # the decode side is refused in the result; this is prefill's
        raise InfeasibleDeploymentError(f"{system}: {_pool(preset, 'prefill')}: {e}") from None
    if not r.feasible:
        raise InfeasibleDeploymentError(f"{system}: {_pool(preset, 'decode')}: {r.reason}")
    pools, rate = (_aggregated if r.mode == "aggregated" else _disaggregated)(system, c, preset, r)
    lifetime_s = r.ttft_ms / 1e3 + max(c.output_len - 1, 1) * r.tpot_ms / 1e3
    requests = min(max(math.ceil(rate * LIFETIMES * lifetime_s), MIN_REQUESTS), MAX_REQUESTS)
    return {
        "name": f"{system}-{shape_name(c.input_len, c.output_len)}",
        "system": system,
        "model": c.model,
        "precision": preset["precision"],
        **({"stack": c.stack} if c.stack else {}),
        **pools,
        "workload": {
            "input": {"kind": "fixed", "value": c.input_len},
            "output": {"kind": "fixed", "value": c.output_len},
            "arrivals": {"kind": "poisson", "rate_per_s": round(rate, 3)},
        },
        "slo": {"tpot_ms": c.tpot_slo_ms, **({"ttft_ms": c.ttft_slo_ms} if c.ttft_slo_ms else {})},
        "requests": requests,
        "seed": 0,
    }


def _pool(preset: dict[str, Any], name: str) -> str:
    p = preset[name]
    ep = f" EP{p['ep']}" if p.get("ep") else ""
    return f"{name} pool ({p['chips']} chips{ep})"


def _decode_fields(c: Conditions, chips: int, ep: int | None, batch: float) -> dict[str, Any]:
    return {"chips": chips, "ep": ep, "batch_per_chip": int(batch), "mtp": c.mtp, "mtp_acceptance": c.mtp_acceptance}


def _disaggregated(system: str, c: Conditions, preset: dict[str, Any], r: SystemResult) -> tuple[dict[str, Any], float]:
    """Prefill and decode instance counts that fill the system and serve the most requests/s (the fewer
    chips on a tie), and the offered rate."""
    total = load_hardware(system).system.num_chips
    p, d = preset["prefill"], preset["decode"]
    mu_p = pool_req_s(r.prefill_tok_s_per_chip * p["chips"], c.input_len, "prefill")
    mu_d = pool_req_s(r.decode_tok_s_per_chip * d["chips"], c.output_len, "decode")
    best: tuple[float, int, int, int] | None = None  # (capacity, -chips, n_p, n_d)
    n_d = 1
    while n_d * d["chips"] + p["chips"] <= total:
        room = (total - n_d * d["chips"]) // p["chips"]
        n_p = min(room, max(math.ceil(n_d * mu_d / mu_p), 1))
        key = (min(n_p * mu_p, n_d * mu_d), -(n_p * p["chips"] + n_d * d["chips"]), n_p, n_d)
        best = key if best is None or key[:2] > best[:2] else best
        n_d += 1
    if best is None:
        raise ConfigError(f"{system}: one prefill and one decode instance need {p['chips'] + d['chips']} chips")
    capacity, _, n_p, n_d = best
    prefill = {k: p[k] for k in ("chips", "ep", "tokens_per_chip", "microbatch") if k in p}
    decode = _decode_fields(c, d["chips"], d.get("ep"), r.batch_per_chip)
    shared = stated_shared_dies(load_model(c.model), d.get("ep"), d.get("shared_dies"))
    if shared is not None:  # the preset's published layout (the paper's EP320: 32 shared-expert dies)
        decode["shared_dies"] = shared
    return {"prefill": {"instances": n_p, **prefill}, "decode": {"instances": n_d, **decode}}, LOAD * capacity


def _aggregated(system: str, c: Conditions, preset: dict[str, Any], r: SystemResult) -> tuple[dict[str, Any], float]:
    """As many co-located instances as the system holds, and the offered rate."""
    a = preset["aggregated"]
    n = load_hardware(system).system.num_chips // a["chips"]
    capacity = pool_req_s(r.output_tok_s_per_chip * a["chips"] * n, c.output_len, "aggregated")
    pool = {"instances": n, **_decode_fields(c, a["chips"], a.get("ep"), r.batch_per_chip)}
    return {"aggregated": pool}, LOAD * capacity
