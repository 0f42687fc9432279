"""Expert load on the busiest die. The busiest die sets MoE time (design.md §3 rule 4)."""

from __future__ import annotations

import math

from cloudmatrix.deploy import Eplb


def busiest_load(mean_tokens: float, num_bins: int, bin_fraction: float, eplb: Eplb) -> float:
    """Tokens on the busiest of ``num_bins`` dies whose mean load is ``mean_tokens``.

    Perfect EPLB is the uniform case. Default EPLB balances expected load, so what remains is the sampling
    noise of top-k routing: each die's load is binomial (its share ``bin_fraction`` of all routed tokens);
    the expected maximum of n such loads is mean + sigma * sqrt(2 ln n) (Gaussian extreme value). Skewed
    expert popularity beyond this is a separate model (issue 5)."""
    if eplb == Eplb.PERFECT or num_bins <= 1 or mean_tokens <= 0:
        return mean_tokens
    sigma = math.sqrt(mean_tokens * max(1.0 - bin_fraction, 0.0))
    return mean_tokens + sigma * math.sqrt(2.0 * math.log(num_bins))
