"""Loading validation corpora with their roles: shipped corpora by id, or any InferenceMAX CSV or YAML row file
by path. Series in ``roles.yaml`` keep the role they landed with; series no fit has seen are ``predicted``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cloudmatrix.catalog.bench_result import read_bench_result
from cloudmatrix.catalog.hardware import chip_family, load_hardware  # noqa: F401 (chip_family: re-exported)
from cloudmatrix.catalog.inferencemax import MAX_CSV_ROWS, read_inferencemax
from cloudmatrix.catalog.split import SeriesInfo, assign_roles
from cloudmatrix.catalog.validation import (
    ValidationRow,
    corpus_path,
    frozen_roles,
    shipped_corpora,
    yaml_rows,
)
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.inputs import InputError, read_yaml_file

PUBLIC_CORPUS = "inferencemax-public"  # the first InferenceMAX corpus shipped
MAX_ROWS = MAX_CSV_ROWS  # rows one validation run may load, over all its corpora


def _read(path: Path) -> list[ValidationRow]:
    if path.suffix.lower() == ".csv":
        return read_inferencemax(path, chip_family)
    if path.suffix.lower() == ".json":
        return read_bench_result(path)
    data = read_yaml_file(path, "corpus")  # bounded: size, nesting, aliases
    rows = data.get("rows") if isinstance(data, dict) else None
    if isinstance(rows, list) and len(rows) > MAX_ROWS:
        raise InputError(f"{path.name}: {len(rows):,} rows; expected at most {MAX_ROWS:,} (split the file)")
    return yaml_rows(data, path.name)


def load_rows(name: str, roles: dict[str, str] | None = None) -> list[ValidationRow]:
    """One corpus (shipped id or path) with every row's role set from ``roles`` (default: the frozen table)."""
    table = frozen_roles() if roles is None else roles
    return [r.model_copy(update={"role": table.get(r.series, "predicted")}) for r in _read(corpus_path(name))]


def load_corpora(names: list[str] | None = None) -> list[ValidationRow]:
    """Rows of several corpora (default: every shipped one; a name given twice is read once), in order; row
    ids must be unique and there are at most ``MAX_ROWS`` of them (checked as each corpus is read, before any
    row runs)."""
    rows: list[ValidationRow] = []
    for name in dict.fromkeys(names or shipped_corpora()):
        rows += load_rows(name)
        if len(rows) > MAX_ROWS:
            raise InputError(f"the corpora hold more than {MAX_ROWS:,} rows; expected at most {MAX_ROWS:,}")
    dup = [i for i, n in Counter(r.id for r in rows).items() if n > 1]
    if dup:
        raise CloudMatrixError(f"validation row id {dup[0]!r} appears more than once")
    return rows


def shipped_series() -> list[SeriesInfo]:
    """Every series of the shipped corpora, grouped by (stack, chip family), for the split rule; rule 3
    counts the rows of every shipped InferenceMAX CSV."""
    rows: dict[str, list[ValidationRow]] = {}
    public: Counter[str] = Counter()
    for name in shipped_corpora():
        inferencemax = corpus_path(name).suffix == ".csv"
        for r in load_rows(name, roles={}):
            rows.setdefault(r.series, []).append(r)
            if inferencemax:
                public[r.series] += 1
    return [
        SeriesInfo(key=k, group=(rs[0].stack, chip_family(rs[0].system)), rows=len(rs), public_rows=public[k])
        for k, rs in rows.items()
    ]


def roles_yaml(frozen: dict[str, str] | None = None) -> str:
    """``roles.yaml`` as the split rule gives it around ``frozen`` roles (``validate --write-roles``)."""
    roles = assign_roles(shipped_series(), frozen_roles() if frozen is None else frozen)
    lines = [
        "# Roles of the shipped validation series, frozen as they landed (catalog/split.py states the rule).",
        "# Regenerate with `cloudmatrix validate --write-roles`: new series are assigned, old ones never move.",
        "series:",
    ]
    lines += [f"  {_quote(k)}: {v}" for k, v in sorted(roles.items())]
    return "\n".join(lines) + "\n"


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
