"""The per-metric index of the stored hold-out residuals (what an answer's interval reads) is current with
the full table and gives every interval exactly as the full table does."""

import itertools

import pytest

from cloudmatrix.catalog import holdout_index as hi
from cloudmatrix.catalog import yaml_cache
from cloudmatrix.catalog.residuals import METRICS
from cloudmatrix.errors import ConfigError
from cloudmatrix.studies import intervals
from cloudmatrix.studies.interval_pools import STEP_COUNTERPART, interval_rows, stored_table
from cloudmatrix.studies.intervals import Query, index_residuals, query_interval


def test_index_files_are_derived_from_the_stored_table() -> None:
    """Stale after a regeneration of residuals-holdout.json (or of the papers' rows in residuals.json) unless
    `validate --holdout ... --write-residuals` rewrote them too."""
    for name, text in hi.index_texts(interval_rows()).items():
        assert (hi.INDEX_DIR / name).read_text() == text, name


def test_index_rows_equal_the_full_tables_usable_rows() -> None:
    full = interval_rows()
    for metric in METRICS:
        rows = list(hi.holdout_rows(metric) or ())
        assert rows == hi.projected(full, metric)
        assert len(rows) == sum(r["metric"] == metric and hi.usable(r) for r in full) > 0


QUERIES = [
    Query(system=s, stack=k, metric=m, model=x, model_class=c, weights=w, isl=i, band=b, concurrency=n)
    for s, k, m, (x, c, w), (i, b, n) in itertools.product(
        ("cloudmatrix384", "hgx-h100", "gb200-nvl72", "mi300x"),
        ("vllm", "sglang", "cloudmatrix-infer"),
        METRICS,
        (
            (None, None, None),
            ("deepseek-r1", "mla", "fp8"),
            ("qwen3-32b", "dense", "bf16"),
            ("deepseek-v3.2", "dsa", "fp4"),
        ),
        ((None, None, None), (1024, "conc 9-64", 32), (8192, "conc >512", 4096), (None, "steady", None)),
    )
]


def test_intervals_from_the_index_equal_those_from_the_full_table() -> None:
    full = {m: index_residuals(interval_rows(), m) for m in METRICS}  # the full source, indexed
    for q in QUERIES:
        assert query_interval(100.0, q) == query_interval(100.0, q, table=full[q.metric]), q


def test_without_an_index_the_full_source_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with_index = [query_interval(100.0, q) for q in QUERIES[:48]]
    monkeypatch.setattr(hi, "INDEX_DIR", tmp_path / "none")
    monkeypatch.setattr(intervals, "_STORED", {})
    hi.holdout_rows.cache_clear()
    try:
        assert hi.holdout_rows("tpot_ms") is None
        assert [query_interval(100.0, q) for q in QUERIES[:48]] == with_index
    finally:
        hi.holdout_rows.cache_clear()


@pytest.mark.parametrize("text", ["", "{", '{"series": []}', '{"series": [], "columns": {"series": [3]}}'])
def test_a_damaged_index_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path, text: str) -> None:
    (tmp_path / "tpot_ms.json").write_text(text)
    monkeypatch.setattr(hi, "INDEX_DIR", tmp_path)
    hi.holdout_rows.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"^tpot_ms\.json: cannot read"):
            hi.holdout_rows("tpot_ms")
    finally:
        hi.holdout_rows.cache_clear()


def test_the_kept_tables_equal_the_index_indexed(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """An interval's table (the metric's rows and its counterpart's, in pools) kept per content equals the
    index's rows indexed afresh: built, kept, then loaded; and a changed index is indexed afresh."""
    monkeypatch.setenv(yaml_cache.ENV, str(tmp_path / "cache"))
    for metric in METRICS:
        rows = [r for m in (metric, STEP_COUNTERPART.get(metric)) if m for r in hi.holdout_rows(m) or ()]
        fresh = index_residuals(rows, metric)
        assert stored_table(metric) == fresh == stored_table(metric), metric
    assert len(list((tmp_path / "cache" / "objects").glob("*.pickle"))) >= len(METRICS)
    (tmp_path / "tpot_ms.json").write_text("{")  # a changed (here: damaged) index is read afresh
    monkeypatch.setattr(hi, "INDEX_DIR", tmp_path)
    hi.holdout_rows.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"^tpot_ms\.json: cannot read"):
            stored_table("tpot_ms")
    finally:
        hi.holdout_rows.cache_clear()
