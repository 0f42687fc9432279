"""Each stack's scheduler loop (overlapping or not) is catalog data tied to the engine version, and every
corpus row that names its engine's image ran a version where that loop was the default."""

import re

import pytest

from cloudmatrix.catalog.corpus import load_corpora
from cloudmatrix.catalog.sourced import read_yaml
from cloudmatrix.catalog.stack_loop import stack_overlaps
from cloudmatrix.catalog.stacks import STACKS_PATH, load_stack, stack_ids

# the container image each engine ships in (a row run in another image, Dynamo's, names that one's version)
ENGINE_IMAGES = {"sglang": "lmsysorg/sglang:", "vllm": "vllm/vllm-openai:", "trtllm": "tensorrt-llm/release:"}


def _version(text: str) -> tuple[int, ...]:
    """The release numbers of a version (``v0.5.5.post3`` -> (0, 5, 5); ``1.2.0rc2`` -> (1, 2, 0))."""
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text)
    assert found, text
    return tuple(int(x) for x in found.groups())


def test_the_loop_is_read_from_the_catalog_file() -> None:
    raw = {entry["id"]: entry.get("loop") for entry in read_yaml(STACKS_PATH)["stacks"]}
    stated = {s for s, loop in raw.items() if loop is not None}
    assert stated == {"sglang", "vllm", "trtllm"}
    for stack in stated:
        loop = load_stack(stack).loop
        assert loop is not None
        dumped = loop.model_dump()
        assert {k: dumped[k] for k in raw[stack]} == raw[stack]
        assert stack_overlaps(stack) is raw[stack]["overlap"]


@pytest.mark.parametrize("stack", stack_ids())
def test_a_stack_without_a_loop_of_its_own_runs_its_engines(stack: str) -> None:
    profile = load_stack(stack)
    engine = profile
    while engine.loop_setting is None and engine.base is not None:
        engine = load_stack(engine.base)
    assert profile.loop == engine.loop_setting
    if profile.loop is None:  # not stated: a scheduler that takes requests in between steps
        assert not stack_overlaps(stack) and not stack_overlaps(stack, speculative=True)


def test_the_engines_loops_at_the_versions_their_rows_ran() -> None:
    assert stack_overlaps("sglang") and not stack_overlaps("sglang", speculative=True)  # EAGLE/NEXTN turn it off
    assert stack_overlaps("trtllm") and stack_overlaps("dynamo-trtllm", speculative=True)
    assert stack_overlaps("vllm") and stack_overlaps("dynamo-vllm") and not stack_overlaps(None)
    assert stack_overlaps("mori-sglang") and stack_overlaps("dynamo-sglang")
    assert not stack_overlaps("deepseek")  # no loop stated: takes requests in between steps


def test_a_loop_the_rows_set_by_its_flag_says_where() -> None:
    """vLLM's AsyncScheduler is opt-in at v0.13, the image of its InferenceMAX rows, whose recipes set it
    (``async-scheduling: true`` in the server's config): the loop is the one they ran, and its source says so
    beside the release that made it the default."""
    loop = load_stack("vllm").loop
    assert loop is not None and loop.overlap and loop.flag == "--async-scheduling"
    assert _version(loop.since) <= _version(loop.version) and not loop.until
    assert "async-scheduling: true" in loop.source and "v0.14.0" in loop.source


def test_every_row_in_its_engines_image_ran_a_version_of_the_stated_loop() -> None:
    rows = load_corpora(["inferencemax-public", "inferencemax-more"])
    checked = 0
    for row in rows:
        loop = load_stack(row.stack).loop
        image = ENGINE_IMAGES.get(row.stack)
        if loop is None or image is None or image not in row.source:
            continue
        ran = _version(row.source.split(image, 1)[1])
        assert not loop.since or ran >= _version(loop.since), (row.id, ran)
        assert not loop.until or ran < _version(loop.until), (row.id, ran)
        checked += 1
    assert checked > 200  # the sglang, vllm and trtllm rows of the two InferenceMAX corpora
