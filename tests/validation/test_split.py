"""The fitted/predicted split: a fixed rule over whole series, frozen once it lands, meeting its constraints."""

from collections import Counter, defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.corpus import PUBLIC_CORPUS, chip_family, load_corpora, load_rows, shipped_series
from cloudmatrix.catalog.split import SeriesInfo, assign_roles, series_hash
from cloudmatrix.catalog.validation import frozen_roles, shipped_corpora


def test_hash_is_stable() -> None:
    """The rule's coin must never change: a landed series keeps its number on every machine."""
    assert series_hash("pub|nv1-b200-min-latency") == 0.004670352907851338
    assert series_hash("abc") == int("ba7816bf", 16) / 2**32  # sha256("abc") starts ba7816bf


def test_every_shipped_series_has_a_frozen_role() -> None:
    stored = frozen_roles()
    assert {s.key for s in shipped_series()} <= set(stored), "run `cloudmatrix validate --write-roles`"


# The corpora in the order they landed: the rule ran once per landing, around the roles frozen before it.
LANDINGS = (
    ("inferencemax-public", "published"),
    ("inferencemax-more", "sglang-ascend"),
    ("formats-2026",),
    ("eagle3-sglang",),
)


def test_landings_cover_the_shipped_corpora() -> None:
    assert sorted(c for landing in LANDINGS for c in landing) == shipped_corpora()


def test_stored_roles_are_the_rule_and_never_move() -> None:
    series = shipped_series()
    stored = frozen_roles()
    assert assign_roles(series, frozen=stored) == {s.key: stored[s.key] for s in series}
    frozen: dict[str, str] = {}
    for landing in LANDINGS:  # each landing as the rule gave it, around the earlier ones
        keys = {r.series for name in landing for r in load_rows(name, roles={})}
        mine = [s for s in series if s.key in keys or s.key in frozen]
        frozen = assign_roles(mine, frozen=frozen)
        assert frozen == {s.key: stored[s.key] for s in mine}, landing


def test_constraints_hold_on_the_shipped_corpus() -> None:
    rows = load_corpora()
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        groups[(r.stack, chip_family(r.system))].add(r.role)
    assert all("fitted" in roles for roles in groups.values()), groups
    public = Counter(r.role for r in load_rows(PUBLIC_CORPUS))
    assert public["predicted"] * 2 >= sum(public.values())
    every_csv = Counter(r.role for name in ("inferencemax-public", "inferencemax-more") for r in load_rows(name))
    assert every_csv["predicted"] * 2 >= sum(every_csv.values())
    by_series: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        by_series[r.series].add(r.role)
    assert all(len(v) == 1 for v in by_series.values()), "a series is split between roles"


series_lists = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.sampled_from(["a", "b", "c"]), st.integers(0, 12)),
    min_size=1,
    max_size=30,
    unique_by=lambda t: t[0],
)


@settings(max_examples=150, deadline=None)
@given(items=series_lists, frozen_share=st.floats(0, 1))
def test_rule_properties(items: list[tuple[str, str, int]], frozen_share: float) -> None:
    series = [SeriesInfo(key=k, group=(g, "fam"), rows=max(n, 1), public_rows=n) for k, g, n in items]
    first = assign_roles(series)
    groups = {s.group for s in series}
    for g in groups:  # rule 2
        assert any(first[s.key] == "fitted" for s in series if s.group == g)
    public = sum(s.public_rows for s in series)
    predicted = sum(s.public_rows for s in series if first[s.key] == "predicted")
    fitted = Counter(s.group for s in series if first[s.key] == "fitted")
    # rule 3 holds, or every fitted series that counts is the last fitted one of its group (rule 2 wins)
    assert predicted * 2 >= public or all(
        fitted[s.group] == 1 for s in series if first[s.key] == "fitted" and s.public_rows
    )
    cut = int(len(series) * frozen_share)
    frozen = {s.key: first[s.key] for s in series[:cut]}
    again = assign_roles(series, frozen=frozen)
    assert all(again[k] == v for k, v in frozen.items())  # landed roles never move
