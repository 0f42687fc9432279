"""Expert-routing profiles: how unevenly a model's router spreads tokens over its routed experts.

A profile has two parts (docs/model.md, "Expert load"):
- the long-run popularity of the experts (``uniform``, ``zipf`` with an exponent, or a per-expert
  histogram file), which EPLB sees in its statistics and balances with redundant copies;
- ``request_concentration``: how far one request's own routing strays from that long-run mix. A request's
  expert mix is Dirichlet(c · popularity), so a batch of few long prompts (prefill) departs from the
  statistics EPLB placed for, while a batch of thousands of decode sequences does not.

Profiles live in ``data/routing.yaml`` per model; a user can override them per deployment with a spec
string (``uniform``, ``zipf:0.4``, ``zipf:0.4@c=30`` or a path to a histogram file)."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Literal

from cloudmatrix.catalog.object_cache import cached_object
from cloudmatrix.catalog.record import Record, check, field
from cloudmatrix.catalog.sourced import DATA_DIR, Sourced, parse, read_catalog_bytes, read_yaml
from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import MAX_YAML_BYTES, path_exists, read_text

ROUTING_FILE = DATA_DIR / "routing.yaml"
DEFAULT_PROFILE = "default"
MAX_ZIPF_EXPONENT = 100.0  # expert k's share ~ k**-s: 2**-100 is still a float; published skews are under 2
MAX_CONCENTRATION = 1e6  # a request's mix is Dirichlet(c * popularity): 1e6 is the long-run mix to 0.1 %


class RoutingProfile(Record):
    popularity: Literal["uniform", "zipf", "histogram"] = "uniform"
    zipf_exponent: Sourced | None = None
    histogram: tuple[float, ...] | None = None  # per-expert token counts or shares (any scale)
    request_concentration: Sourced | None = None  # None: requests route like the long-run mix
    source: str = field(default="", description="where the profile comes from")

    @staticmethod
    @check()
    def _check(p: RoutingProfile) -> None:
        if p.popularity == "zipf" and p.zipf_exponent is None:
            raise ValueError("a zipf profile needs zipf_exponent")
        if p.popularity == "histogram" and not p.histogram:
            raise ValueError("a histogram profile needs a non-empty histogram")
        if p.histogram and (min(p.histogram) < 0 or sum(p.histogram) <= 0):
            raise ValueError("histogram loads must be >= 0 and not all zero")
        # Bounded where the sampling stays finite: past them the tail shares underflow to zero (the exponent)
        # or the Dirichlet draws overflow (the concentration); both ends are far past any measured routing.
        if p.zipf_exponent is not None and not 0 <= p.zipf_exponent.value <= MAX_ZIPF_EXPONENT:
            raise ValueError(f"zipf_exponent must be >= 0 and <= {MAX_ZIPF_EXPONENT:g}")
        if p.request_concentration is not None and not 0 < p.request_concentration.value <= MAX_CONCENTRATION:
            raise ValueError(f"request_concentration must be > 0 and <= {MAX_CONCENTRATION:g}")

    @property
    def concentration(self) -> float:
        return math.inf if self.request_concentration is None else self.request_concentration.value

    @property
    def key(self) -> tuple[object, ...]:
        """Hashable identity for caches."""
        z = self.zipf_exponent.value if self.zipf_exponent else 0.0
        return (self.popularity, z, self.histogram, self.concentration)

    def describe(self) -> str:
        base = {"uniform": "uniform", "zipf": f"zipf:{self.zipf_exponent.value if self.zipf_exponent else 0:g}"}
        name = base.get(self.popularity, f"histogram({len(self.histogram or ())} experts)")
        return name if self.request_concentration is None else f"{name}@c={self.concentration:g}"


def _profiles() -> dict[str, dict[str, object]]:
    data = read_yaml(ROUTING_FILE)
    if not isinstance(data, dict) or DEFAULT_PROFILE not in data:
        raise ConfigError(f"{ROUTING_FILE.name}: expected a mapping of model ids with a '{DEFAULT_PROFILE}' entry")
    return data


@cache
def model_routing(model_id: str) -> RoutingProfile:
    """The catalog profile of a model (``default`` for models without their own)."""
    key = f"routing\0{model_id}\0".encode() + read_catalog_bytes(ROUTING_FILE)  # kept validated per content

    def validated() -> RoutingProfile:
        profiles = _profiles()
        entry = profiles.get(model_id, profiles[DEFAULT_PROFILE])
        return parse(RoutingProfile, entry, f"{ROUTING_FILE.name}: {model_id}")

    return cached_object(key, validated)


def _histogram_file(path: Path) -> tuple[float, ...]:
    """Per-expert loads: a JSON list, or text with one number per line or comma-separated."""
    text = read_text(path, "routing histogram", MAX_YAML_BYTES)
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else text.replace(",", " ").split()
        loads = tuple(float(v) for v in values)
    except (ValueError, TypeError, RecursionError):
        raise ConfigError(f"routing histogram {path}: expected numbers, one per expert") from None
    if not loads or not all(math.isfinite(v) and v >= 0 for v in loads) or sum(loads) <= 0:
        raise ConfigError(f"routing histogram {path}: expected finite non-negative loads, not all zero")
    return loads


def parse_routing(spec: str, base: RoutingProfile) -> RoutingProfile:
    """A user's override: ``uniform``, ``zipf:S``, either with ``@c=C`` (request concentration; without it
    the catalog's is kept), or a histogram file path."""
    what = f"routing '{spec}'"
    body, _, conc = spec.partition("@c=")
    fields: dict[str, object] = {"request_concentration": base.request_concentration, "source": f"user: {spec}"}
    if conc:
        try:
            fields["request_concentration"] = Sourced(value=float(conc), source=f"user: {spec}")
        except ValueError:
            raise ConfigError(f"{what}: concentration '{conc}' is not a number") from None
    if body == "uniform":
        fields["popularity"] = "uniform"
    elif body.startswith("zipf:"):
        try:
            fields.update(popularity="zipf", zipf_exponent=Sourced(value=float(body[5:]), source=f"user: {spec}"))
        except ValueError:
            raise ConfigError(f"{what}: exponent '{body[5:]}' is not a number") from None
    elif path_exists(Path(body), "routing histogram"):
        fields.update(popularity="histogram", histogram=_histogram_file(Path(body)))
    else:
        raise ConfigError(f"{what}: expected uniform, zipf:EXPONENT[@c=CONCENTRATION] or a histogram file path")
    return parse(RoutingProfile, fields, what)
