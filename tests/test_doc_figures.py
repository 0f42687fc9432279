"""Docs that cannot go stale: every figure block and quoted sentence of the docs is what
scripts/doc_figures.py renders from the stored outputs (docs/figures.json), and the cheap sources still print
those outputs today (the others, simulations of 20,000 requests, are re-run by the script)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("doc_figures", ROOT / "scripts" / "doc_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["doc_figures"] = module
    spec.loader.exec_module(module)
    return module


figures = _script()
STORED = figures.load_stored()


def test_every_doc_figure_is_rendered_from_the_stored_outputs() -> None:
    assert figures.stale(STORED) == []
    assert figures.rendered_docs(STORED) == {}  # the script would change nothing


def test_every_block_in_the_docs_has_a_source_and_every_source_is_quoted() -> None:
    ids = {m["id"] for p in figures.doc_paths() for m in figures.MARKER.finditer(p.read_text())}
    assert ids == set(figures.BLOCKS)
    used = {figures.BLOCKS[i][0] for i in ids} | {s for q in figures.QUOTES for s in q.sources}
    assert used == set(figures.SOURCES) == set(STORED)


@pytest.mark.parametrize("name", [n for n, s in figures.SOURCES.items() if s.cheap])
def test_the_cheap_sources_still_print_the_stored_outputs(name: str) -> None:
    """Re-run: what the docs render from today's output is what they quote (rounded as quoted)."""
    fresh = dict(STORED) | {name: json.loads(json.dumps(figures.produce(name)))}
    for block, (source, render) in figures.BLOCKS.items():
        if source == name:
            assert render(fresh) == render(STORED), f"figures:{block} is stale: run scripts/doc_figures.py"
    for q in figures.QUOTES:
        if name in q.sources:
            assert q.render(fresh) == q.render(STORED), f"{q.doc}: stale quote: run scripts/doc_figures.py"


def test_a_changed_figure_is_caught() -> None:
    """The check can fail: one figure moved in the stored outputs shows as stale in its doc."""
    moved = json.loads(json.dumps(STORED))
    moved["compare-4k256-50"][1]["output_tok_s_per_chip"] *= 1.5
    moved["holdout-figures"]["series"]["tpot_ms"]["median"] += 1
    problems = figures.stale(moved)
    assert any("figures:compare-4k256-50" in p for p in problems)
    assert any(p.startswith("README.md") for p in problems)
