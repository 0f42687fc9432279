"""The validation corpus: published serving measurements the twin is held against (``cloudmatrix validate``).
Each row is one measurement with the conditions it ran under, its measured metrics, its source and its role
(``fitted``: constants may be fitted on it; ``predicted``: never fitted). Rows come from YAML files in
``data/validation/`` (transcribed by hand) or from InferenceMAX CSVs (``catalog/inferencemax.py``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cloudmatrix.catalog.residuals import (  # noqa: F401 (re-exported: the corpus's metric ids and residuals)
    CONC_BANDS,
    E2E_METRICS,
    METRICS,
    RESIDUALS_PATH,
    STEADY_METRICS,
    VALIDATION_DIR,
    stored_residuals,
)
from cloudmatrix.catalog.sourced import Frozen, parse, read_yaml
from cloudmatrix.errors import ConfigError, UnknownIdError
from cloudmatrix.inputs import names_file, path_exists

ROLES_PATH = VALIDATION_DIR / "roles.yaml"
# Serving stacks measured rows name (design.md §2; the fidelity issue turns each into a profile).
STACKS = (
    "cloudmatrix-infer", "deepseek", "sglang", "vllm", "trtllm", "dynamo-sglang", "dynamo-trtllm", "atom",
    "sglang-ascend",
)  # fmt: skip
Stack = Literal[
    "cloudmatrix-infer", "deepseek", "sglang", "vllm", "trtllm", "dynamo-sglang", "dynamo-trtllm", "atom",
    "sglang-ascend",
]  # fmt: skip
Metric = Literal[
    "output_tok_s_per_chip", "tok_s_per_chip", "tpot_ms", "ttft_ms", "p99_ttft_ms", "throughput_per_chip_tok_s"
]
Format = Literal["bf16", "fp8", "int8", "nvfp4", "mxfp4"]
ROLES = ("fitted", "predicted")
# Bounds that keep a row's run finite; the largest published run (NV-2) has 114,688 requests of 3K tokens.
MAX_REQUESTS = 1_000_000
MAX_TOKENS = 1_048_576


class RoleLayout(Frozen):
    """One role's instances as published: chips per instance and the parallel layout inside one."""

    instances: int = Field(default=1, ge=1)
    chips: int = Field(ge=1)  # per instance
    tp: int = Field(default=1, ge=1)
    ep: int = Field(default=1, ge=1)
    dp_attention: bool = False
    chunk_tokens_per_chip: float | None = Field(default=None, gt=0)  # prompt tokens per step (chunked prefill)
    max_batch_per_chip: float | None = Field(default=None, gt=0)  # the stack's running-request cap


class BenchWorkload(Frozen):
    """How the measurement drove the server. E2E rows: lengths (fixed, or uniform in [ratio x L, L]) and a
    closed loop of ``concurrency`` clients or an open-loop ``rate_per_s``. Steady rows: the batch shape."""

    input_len: int = Field(ge=1, le=MAX_TOKENS)
    output_len: int = Field(ge=1, le=MAX_TOKENS)
    range_ratio: float = Field(default=1.0, gt=0, le=1)
    concurrency: int | None = Field(default=None, ge=1, le=MAX_REQUESTS // 10)
    rate_per_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    num_requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    batch_per_chip: float | None = Field(default=None, gt=0)  # steady decode: sequences per chip
    kv_len: int | None = Field(default=None, ge=1)  # steady decode: mean context
    tokens_per_chip: int | None = Field(default=None, ge=1)  # steady prefill: tokens per chip per batch


class ValidationRow(Frozen):
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    system: str
    model: str
    stack: Stack
    kind: Literal["e2e", "decode", "prefill"]  # e2e rows run through simulate, steady rows through estimate
    weights: Format
    activations: Format
    kv: Format
    prefill: RoleLayout | None = None
    decode: RoleLayout | None = None
    aggregated: RoleLayout | None = None
    eplb: Literal["perfect", "default", "none"] = "none"  # expert placement the measured stack ran
    mtp: int = Field(default=0, ge=0)
    mtp_acceptance: float | None = Field(default=None, ge=0, le=1)
    workload: BenchWorkload
    measured: dict[Metric, float]
    series: str  # the deployment swept over concurrency; roles are given per series
    role: Literal["fitted", "predicted"] = "predicted"
    assumed: list[str] = Field(default_factory=list)  # conditions the source does not state
    note: str = ""

    @model_validator(mode="after")
    def _check(self) -> ValidationRow:
        if not self.measured:
            raise ValueError("a row needs at least one measured metric")
        if any(v <= 0 for v in self.measured.values()):
            raise ValueError("measured values must be positive")
        if self.kind == "e2e":
            if (self.aggregated is None) == (self.prefill is None or self.decode is None):
                raise ValueError("an e2e row has either prefill and decode layouts, or an aggregated one")
            if self.workload.concurrency is None and self.workload.rate_per_s is None:
                raise ValueError("an e2e row needs workload.concurrency or workload.rate_per_s")
        else:
            if getattr(self, self.kind) is None:
                raise ValueError(f"a {self.kind} row needs a '{self.kind}' layout")
            wrong = set(self.measured) - set(STEADY_METRICS)
            if wrong:
                raise ValueError(f"steady rows measure {', '.join(STEADY_METRICS)}, not {', '.join(sorted(wrong))}")
        if self.mtp and self.mtp_acceptance is None:
            raise ValueError("rows with MTP need mtp_acceptance (mark it assumed where unpublished)")
        return self

    @property
    def disaggregated(self) -> bool:
        return self.aggregated is None and self.kind == "e2e"

    @property
    def concurrency_band(self) -> str:
        """The summary's concurrency bands; steady rows are one band of their own."""
        c = self.workload.concurrency
        if self.kind != "e2e" or c is None:
            return "steady" if self.kind != "e2e" else "open-loop"
        return next(label for top, label in BANDS if c <= top)


BANDS = CONC_BANDS


class YamlCorpus(Frozen):
    id: str
    title: str
    rows: list[ValidationRow]


def shipped_corpora() -> list[str]:
    """Corpus ids shipped in the catalog: each YAML row file and each InferenceMAX CSV."""
    names = {p.stem for p in VALIDATION_DIR.glob("*.csv")}
    names |= {p.stem.removeprefix("rows-") for p in VALIDATION_DIR.glob("rows-*.yaml")}
    return sorted(names)


def corpus_path(name: str) -> Path:
    """A shipped corpus id, or a path to a CSV (InferenceMAX columns) or YAML row file."""
    for file in (f"{name}.csv", f"rows-{name}.yaml"):
        if names_file(VALIDATION_DIR, file):
            return VALIDATION_DIR / file
    path = Path(name)
    if path.suffix.lower() in (".csv", ".yaml", ".yml"):
        if not path_exists(path, "corpus"):
            raise ConfigError(f"corpus {name}: file not found")
        if not path.is_file():
            raise ConfigError(f"corpus {name}: not a regular file")
        return path
    raise UnknownIdError("validation corpus (or a .csv/.yaml path)", name, shipped_corpora())


def load_yaml_rows(path: Path) -> list[ValidationRow]:
    corpus = parse(YamlCorpus, read_yaml(path), path.name)
    return list(corpus.rows)


@cache
def frozen_roles() -> dict[str, str]:
    """The roles of every shipped series as they landed (``roles.yaml``); later changes never move them."""
    data = (read_yaml(ROLES_PATH) or {}) if ROLES_PATH.exists() else {}
    roles = data.get("series", {})
    bad = {k: v for k, v in roles.items() if v not in ROLES}
    if bad:
        raise ConfigError(f"roles.yaml: series {next(iter(bad))!r} has role {next(iter(bad.values()))!r}")
    return dict(roles)
