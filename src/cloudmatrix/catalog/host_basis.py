"""How the host times a (stack, family) is priced with were obtained: fitted on its own measured rows, unfitted
(carried from other families or engines), or the engine's priors alone. The strongest predictor of a
prediction's error, so the intervals stratify on it (``studies/interval_pools.py``)."""

from __future__ import annotations

from cloudmatrix.catalog.stacks import DEFAULT_FAMILY, CostsLike, load_stack

HOST_FITTED = ("CALIB", "hold-out refit", "absorbed")  # sources of host times fitted on measured rows
# sources of host times no measured row of any engine informs: the engine's own priors where a hold-out left no
# engine a fit row (``studies/holdout_refit.py``), or the stack's own catalog assumption
HOST_PRIOR = ("priors alone", "assumed")


def host_times_basis(stack: str, family: str) -> str:
    """``fitted`` where the host times a (stack, family) is priced with (any refit in force included) were
    fitted on measured rows of that stack and family (a CALIB fit, a hold-out refit, or device constants
    fitted on the system's own step times); ``prior`` where no measured row of any engine informs them (the
    engine's own priors or assumption, whichever entry names them); else ``unfitted`` (a default pooled over
    other families, a ``like:`` reference to another family's fit, a law borrowed from other engines' rows):
    the strongest predictor of a prediction's error, so intervals stratify on it."""
    profile = load_stack(stack)
    while family not in profile.families and profile.base is not None:
        profile = load_stack(profile.base)
    source = profile.costs(family).step_overhead_us.source
    if source.startswith(HOST_PRIOR):
        return "prior"
    if isinstance(profile.families.get(family, profile.families.get(DEFAULT_FAMILY)), CostsLike):
        return "unfitted"
    if family not in profile.families and not source.startswith("absorbed"):
        return "unfitted"  # a pooled default is fitted on other families' rows (absorbed: on this system's own)
    return "fitted" if source.startswith(HOST_FITTED) else "unfitted"
