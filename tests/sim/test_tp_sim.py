"""A dense model served with tensor parallelism: the simulation's decode ranks are TP groups, KV stays within
capacity, tokens are conserved, and the simulated TPOT stays within the estimate's range for the group."""

import numpy as np

from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.estimate import estimate
from cloudmatrix.serving.requests import State
from cloudmatrix.sim.engine import Simulation
from cloudmatrix.sim.scenario import load_scenario

LLAMA = [
    "model=llama-3.1-405b",
    "system=hgx-h200",
    "precision=fp8",
    "prefill.chips=8",
    "prefill.ep=null",
    "prefill.tp=8",
    "prefill.instances=2",
    "prefill.tokens_per_chip=8192",
    "decode.chips=8",
    "decode.ep=null",
    "decode.tp=8",
    "decode.batch_per_chip=16",
    "decode.mtp=0",
    "decode.mtp_acceptance=0",
    "workload.input.value=2048",
    "workload.output.value=256",
    "workload.arrivals.rate_per_s=1000",
    "requests=400",
]


def test_tp_groups_are_the_decode_ranks_and_invariants_hold() -> None:
    seen = []

    def check(sim: Simulation) -> None:
        for batch in sim.decodes:
            assert (batch.pools.used <= batch.pools.capacity).all()
            seen.append(int((batch.rid >= 0).sum()))

    sim = Simulation(load_scenario("cm384-paper", LLAMA), observer=check)
    assert [b.num_dies for b in sim.decodes] == [1] and sim.decodes[0].cap == 16 * 8  # one TP8 group
    d = sim.run().to_dict()
    t = sim.table
    done = t.state == State.DONE
    assert done.sum() == 400 and np.all(t.generated[done] == t.output_len[done])
    assert 32 < max(seen) <= 128  # more than one prefill batch in flight, never over the group's slots

    def tpot_ms(batch_per_chip: float) -> float:
        dep = Deployment(
            phase=Phase.DECODE,
            num_chips=8,
            batch_per_chip=batch_per_chip,
            input_len=2048,
            precision="fp8",
            tp=8,
            stack=sim.costs.stack,  # the same host time per step as the simulation's stack
        )
        return estimate("hgx-h200", "llama-3.1-405b", dep).tpot_s * 1e3

    # every simulated step is priced between the lightest and the fullest batch the group can hold
    assert tpot_ms(1 / 8) <= d["tpot_ms"]["p50"] <= tpot_ms(16)
