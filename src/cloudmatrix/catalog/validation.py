"""The validation corpus: published serving measurements the twin is held against (``cloudmatrix validate``).
Each row is one measurement with the conditions it ran under, its measured metrics, its source and its role
(``fitted``: constants may be fitted on it; ``predicted``: never fitted). Rows come from YAML files in
``data/validation/`` (transcribed by hand) or from InferenceMAX CSVs (``catalog/inferencemax.py``)."""

from __future__ import annotations

import numbers
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AllowInfNan, BeforeValidator, Field, StrictBool, ValidationError, model_validator

from cloudmatrix.catalog.residuals import (  # noqa: F401 (re-exported: the corpus's metric ids and residuals)
    CONC_BANDS,
    E2E_METRICS,
    METRICS,
    RESIDUALS_PATH,
    STEADY_METRICS,
    VALIDATION_DIR,
    stored_residuals,
)
from cloudmatrix.catalog.sourced import read_yaml
from cloudmatrix.catalog.stacks import stack_ids
from cloudmatrix.catalog.strict import Frozen
from cloudmatrix.errors import ConfigError, UnknownIdError
from cloudmatrix.inputs import names_file, path_exists, read_yaml_file

ROLES_PATH = VALIDATION_DIR / "roles.yaml"
Metric = Literal[
    "output_tok_s_per_chip", "tok_s_per_chip", "tpot_ms", "ttft_ms", "p99_ttft_ms", "throughput_per_chip_tok_s"
]
Format = Literal["bf16", "fp8", "int8", "nvfp4", "mxfp4", "int4"]  # int4: W4A8 / W4A16 integer weights
ROLES = ("fitted", "predicted")
# Bounds that keep a row's run finite; the largest published run (NV-2) has 114,688 requests of 3K tokens.
MAX_REQUESTS = 1_000_000
MAX_TOKENS = 1_048_576
# The simulation's and the estimate's own bounds (sim/scenario.py, deployment.py): a row inside them runs.
MAX_CHIPS = 100_000  # chips per instance, and instances per role
MAX_RANKS = 1_000_000  # TP or EP ranks (dies); a row's run checks them against its role's dies
MAX_BATCH = 100_000  # sequences per chip
MAX_STEP_TOKENS = 10_000_000  # tokens per chip per step or batch
MAX_SIM_MTP = 4  # draft tokens the simulation runs (end-to-end rows); steady rows take the estimate's 8
MAX_RECV_INTERVAL = 10_000  # decode steps between a scheduler's intakes of new requests


def _number(value: Any) -> Any:
    """A number as written: true/false is not one (pydantic's lax mode reads it as 1/0). Text is read as a
    number where it is one (YAML 1.1 reads ``1e-3`` as text)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError("expected a number") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError("expected a number")
    return value


def _whole(value: Any) -> Any:
    """A whole number written as a float (1.0e+9) is that integer, however large: the bounds then say why."""
    value = _number(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _known_stack(value: str) -> str:
    """A row names a stack of the catalog (``data/stacks.yaml``): every one the catalog has, no other."""
    known = stack_ids()
    if value not in known:
        raise ValueError(f"expected a catalog stack, one of: {', '.join(known)}")
    return value


Count = Annotated[int, BeforeValidator(_whole)]  # a whole number (1.0e+9 is one; 1.5 is not)
Real = Annotated[float, BeforeValidator(_number), AllowInfNan(False)]  # finite
Stack = Annotated[str, AfterValidator(_known_stack)]  # a serving stack of the catalog, read from it


class AttentionDpBalance(Frozen):
    """TensorRT-LLM's attention-DP balance as launched (``attention_dp_config: enable_balance: true``): the
    scheduler holds new prompts until every DP rank has one, at most ``timeout_iters`` iterations, then for
    ``batching_wait_iters`` more while every rank decodes (_torch/pyexecutor ``_balance_adp_requests``)."""

    timeout_iters: Count = Field(ge=1, le=MAX_RECV_INTERVAL)
    batching_wait_iters: Count = Field(ge=0, le=MAX_RECV_INTERVAL)


class RoleLayout(Frozen):
    """One role's instances as published: chips per instance and the parallel layout inside one. TP and EP
    count ranks (dies); a row's run checks them against the dies of the chips it names."""

    instances: Count = Field(default=1, ge=1, le=MAX_CHIPS)
    chips: Count = Field(ge=1, le=MAX_CHIPS)  # per instance
    tp: Count = Field(default=1, ge=1, le=MAX_RANKS)
    ep: Count = Field(default=1, ge=1, le=MAX_RANKS)
    dp_attention: StrictBool = False
    # DP attention groups (SGLang --dp-size): each group's attention is TP over tp / dp dies (default tp: one
    # die per group)
    dp: Count | None = Field(default=None, ge=1, le=MAX_RANKS)
    # the engine's memory setting as launched (SGLang --mem-fraction-static, vLLM --gpu-memory-utilization)
    memory_fraction: Real | None = Field(default=None, gt=0, lt=1)
    # prefill context parallelism: ranks (dies) that split each prompt (SGLang's NSA prefill CP over its TP ranks)
    cp: Count = Field(default=1, ge=1, le=MAX_RANKS)
    # prompt tokens per step (chunked prefill): at least one a chip
    chunk_tokens_per_chip: Real | None = Field(default=None, ge=1, le=MAX_STEP_TOKENS)
    max_batch_per_chip: Count | None = Field(default=None, ge=1, le=MAX_BATCH)  # the stack's running-request cap
    # a prefill instance's running-request cap (SGLang --max-running-requests): prompts prefilled at once
    max_running: Count | None = Field(default=None, ge=1, le=MAX_BATCH)
    # decode steps between the scheduler's intakes of new requests (SGLang --scheduler-recv-interval)
    recv_interval: Count | None = Field(default=None, ge=1, le=MAX_RECV_INTERVAL)
    # two microbatches overlapped in each forward (SGLang --enable-two-batch-overlap, off by default): false where
    # the launch leaves it off; unset, the twin takes the faster of its serial and two-microbatch graphs
    microbatch: StrictBool | None = None
    # TensorRT-LLM's attention-DP balance (its DP attention ranks hold new prompts; None: off, its default)
    attention_dp_balance: AttentionDpBalance | None = None


class BenchWorkload(Frozen):
    """How the measurement drove the server. E2E rows: lengths (fixed, or uniform in [ratio x L, L]) and a
    closed loop of ``concurrency`` clients, an open-loop ``rate_per_s``, or both: the rate capped at that many
    requests in flight (``bench_serving --request-rate R --max-concurrency C``). Steady rows: the batch shape."""

    input_len: Count = Field(ge=1, le=MAX_TOKENS)
    output_len: Count = Field(ge=1, le=MAX_TOKENS)
    range_ratio: Real = Field(default=1.0, gt=0, le=1)
    concurrency: Count | None = Field(default=None, ge=1, le=MAX_REQUESTS // 10)
    rate_per_s: Real | None = Field(default=None, gt=0, le=MAX_REQUESTS)
    num_requests: Count | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    # steady decode: sequences per chip (the row checks the instance holds at least one)
    batch_per_chip: Real | None = Field(default=None, gt=0, le=MAX_BATCH)
    kv_len: Count | None = Field(default=None, ge=1, le=2 * MAX_TOKENS)  # steady decode: mean context
    tokens_per_chip: Count | None = Field(default=None, ge=1, le=MAX_STEP_TOKENS)  # steady prefill, per batch


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
    mtp: Count = Field(default=0, ge=0, le=8)
    mtp_acceptance: Real | None = Field(default=None, ge=0, le=1)
    # the published mean tokens accepted per verify step (SGLang's accept length); sets mtp_acceptance
    accept_length: Real | None = Field(default=None, ge=1, le=9)
    # the standard deviation across requests of each request's draft acceptance rate (e2e rows with MTP)
    mtp_spread: Real = Field(default=0.0, ge=0, le=0.5)
    # where the mtp draft tokens come from (deployment.Deployment.speculation); steady rows only
    speculation: Literal["mtp", "ngram", "eagle3"] = "mtp"
    # EAGLE-3 token trees (SGLang's --speculative-eagle-topk and --speculative-num-draft-tokens); steady rows
    draft_topk: Count = Field(default=1, ge=1, le=16)
    verify_tokens: Count | None = Field(default=None, ge=1, le=2049)
    kernels: list[str] = Field(default_factory=list)  # GEMM kernels the run used, where the source names them
    workload: BenchWorkload
    measured: dict[Metric, Annotated[Real, Field(gt=0)]]  # finite and positive
    series: str  # the deployment swept over concurrency; roles are given per series
    role: Literal["fitted", "predicted"] = "predicted"
    assumed: list[str] = Field(default_factory=list)  # conditions the source does not state
    note: str = ""

    @model_validator(mode="after")
    def _check(self) -> ValidationRow:
        if not self.measured:
            raise ValueError("a row needs at least one measured metric")
        if self.kind == "e2e":
            if self.mtp > MAX_SIM_MTP:
                raise ValueError(f"mtp: got {self.mtp}; expected at most {MAX_SIM_MTP} in an e2e row (simulated)")
            if (self.aggregated is None) == (self.prefill is None or self.decode is None):
                raise ValueError("an e2e row has either prefill and decode layouts, or an aggregated one")
            if self.workload.concurrency is None and self.workload.rate_per_s is None:
                raise ValueError("an e2e row needs workload.concurrency or workload.rate_per_s")
            if self.speculation != "mtp" or self.draft_topk > 1 or self.verify_tokens is not None:
                raise ValueError(
                    f"speculation: got {self.speculation!r} (draft_topk {self.draft_topk}); an e2e row is simulated, "
                    "which drafts chains with MTP layers only"
                )
        else:
            if getattr(self, self.kind) is None:
                raise ValueError(f"a {self.kind} row needs a '{self.kind}' layout")
            wrong = set(self.measured) - set(STEADY_METRICS)
            if wrong:
                raise ValueError(f"steady rows measure {', '.join(STEADY_METRICS)}, not {', '.join(sorted(wrong))}")
            self._check_holds_a_sequence()
        self._check_acceptance()
        return self

    def _check_acceptance(self) -> None:
        """Speculation needs its acceptance: per draft token, or as the published accept length, not both."""
        if self.accept_length is not None:
            if self.mtp_acceptance is not None:
                raise ValueError("give mtp_acceptance or accept_length, not both")
            if not 1 <= self.accept_length <= 1 + self.mtp:
                raise ValueError(
                    f"accept_length: got {self.accept_length:g}; expected 1 to 1 + mtp = {1 + self.mtp} tokens per step"
                )
        elif self.mtp and self.mtp_acceptance is None:
            raise ValueError("rows with MTP need mtp_acceptance or accept_length (mark it assumed where unpublished)")

    def _check_holds_a_sequence(self) -> None:
        """A steady decode row's batch puts at least one sequence on its instance (1e-300 per chip is none)."""
        layout, batch = self.decode, self.workload.batch_per_chip
        if self.kind != "decode" or layout is None or batch is None:
            return
        if batch * layout.chips < 1:
            raise ValueError(
                f"workload.batch_per_chip: got {batch:g}; expected at least one sequence on the {layout.chips} "
                f"chips of the decode instance (>= {1 / layout.chips:g} per chip)"
            )

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
    """A shipped corpus id, or a path to a CSV (InferenceMAX columns), a YAML row file, or a benchmark's JSON
    result with its sidecar (catalog/bench_result.py)."""
    for file in (f"{name}.csv", f"rows-{name}.yaml"):
        if names_file(VALIDATION_DIR, file):
            return VALIDATION_DIR / file
    path = Path(name)
    if path.suffix.lower() in (".csv", ".yaml", ".yml", ".json"):
        if not path_exists(path, "corpus"):
            raise ConfigError(f"corpus {name}: file not found")
        if not path.is_file():
            raise ConfigError(f"corpus {name}: not a regular file")
        return path
    raise UnknownIdError("validation corpus (or a .csv/.yaml/.json path)", name, shipped_corpora())


def load_yaml_rows(path: Path) -> list[ValidationRow]:
    """A YAML row file, read within the bounded YAML reader's limits (size, nesting, aliases)."""
    return yaml_rows(read_yaml_file(path, "corpus"), path.name)


def yaml_rows(data: Any, name: str) -> list[ValidationRow]:
    """The rows of a parsed YAML corpus; an error is one line naming the file, the row's id, the field, the
    value and what was expected."""
    try:
        return list(YamlCorpus.model_validate(data).rows)
    except ValidationError as e:
        raise ConfigError(f"{name}: {describe_row_error(e, data)}") from None


def describe_row_error(err: ValidationError, data: Any) -> str:
    """pydantic's first error as ``row 'ID' (rows.N): field.path: expectation (got value)``."""
    first = err.errors()[0]
    loc = list(first["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "rows" and isinstance(loc[1], int):
        rows = data.get("rows") if isinstance(data, dict) else None
        row = rows[loc[1]] if isinstance(rows, list) and loc[1] < len(rows) else None
        row_id = row.get("id") if isinstance(row, dict) else None
        where = f"row {row_id!r} (rows.{loc[1]})" if row_id is not None else f"rows.{loc[1]}"
        loc = loc[2:]
    field = ".".join(str(p) for p in loc)
    msg = " ".join(str(first["msg"]).removeprefix("Value error, ").split())
    got = first.get("input")
    shown = "" if isinstance(got, dict | list) or not field else f" (got {_shown(got)})"
    return ": ".join(p for p in (where, field, msg + shown) if p)


def _shown(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"{float(value):g}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@cache
def frozen_roles() -> dict[str, str]:
    """The roles of every shipped series as they landed (``roles.yaml``); later changes never move them."""
    data = (read_yaml(ROLES_PATH) or {}) if ROLES_PATH.exists() else {}
    roles = data.get("series", {})
    bad = {k: v for k, v in roles.items() if v not in ROLES}
    if bad:
        raise ConfigError(f"roles.yaml: series {next(iter(bad))!r} has role {next(iter(bad.values()))!r}")
    return dict(roles)
