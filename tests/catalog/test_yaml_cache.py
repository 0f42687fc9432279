"""The parsed-document cache of the catalog's YAML files: the same document as a fresh parse for every
shipped file, a new parse when the bytes change, nothing kept that JSON cannot give back exactly, and no
failure when the cache cannot be used."""

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog import yaml_cache
from cloudmatrix.catalog.sourced import DATA_DIR, read_yaml
from cloudmatrix.errors import ConfigError


def _fresh(path: Path):
    return yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(yaml_cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_every_shipped_file_reads_the_same_from_the_cache(cache: Path) -> None:
    files = sorted(DATA_DIR.rglob("*.yaml"))
    assert len(files) > 30
    for path in files:
        assert read_yaml(path) == _fresh(path), path  # the parse that fills the cache
        assert read_yaml(path) == _fresh(path), path  # read back from it
    assert len(list((cache / "yaml").glob("*.json"))) == len({p.read_bytes() for p in files})


def test_changed_bytes_are_parsed_afresh(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("a: 1\n")
    assert read_yaml(path) == {"a": 1}
    path.write_text("a: 2\n")
    assert read_yaml(path) == {"a": 2}
    path.write_text("a: 1\n")
    assert read_yaml(path) == {"a": 1}


@pytest.mark.parametrize(
    "text", ["1: one\n", "d: 2024-01-02\n", "x: .nan\n", "s: !!set {a, b}\n", "b: !!binary aGk=\n", "t: true\n"]
)
def test_only_what_json_gives_back_exactly_is_kept(cache: Path, tmp_path: Path, text: str) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(text)
    first = read_yaml(path)
    second = read_yaml(path)
    assert repr(second) == repr(first) == repr(yaml.safe_load(text))
    kept = list((cache / "yaml").glob("*.json")) if (cache / "yaml").exists() else []
    assert len(kept) == (text == "t: true\n")


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
        max_leaves=12,
    )
)
def test_a_cached_document_is_the_parsed_one_type_for_type(document) -> None:
    """Whatever a YAML file holds, reading it twice (fresh, then from the cache) gives the same value with
    the same types (1 stays an int, 1.0 a float, true a bool)."""
    text = yaml.safe_dump({"v": document})
    cached = [yaml_cache.cached_parse(text.encode(), yaml.safe_load) for _ in range(2)]
    assert repr(cached[0]) == repr(cached[1]) == repr(yaml.safe_load(text))


def test_off_and_unusable_caches_only_cost_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("a: [1, 2.5, x]\n")
    monkeypatch.setenv(yaml_cache.ENV, "")
    assert yaml_cache.cache_dir() is None and read_yaml(path) == {"a": [1, 2.5, "x"]}
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(yaml_cache.ENV, str(blocked))
    assert read_yaml(path) == {"a": [1, 2.5, "x"]}
    monkeypatch.setenv(yaml_cache.ENV, str(tmp_path / "c"))
    read_yaml(path)
    (entry,) = (tmp_path / "c" / "yaml").glob("*.json")
    entry.write_text("{damaged")  # a damaged entry is parsed afresh and replaced
    assert read_yaml(path) == {"a": [1, 2.5, "x"]}
    assert entry.read_text().startswith("{")
    assert os.stat(tmp_path / "c" / "yaml").st_mode & 0o077 == 0


def test_bad_yaml_is_still_one_clear_error(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        read_yaml(path)
    with pytest.raises(ConfigError, match=r"cannot read"):
        read_yaml(tmp_path / "missing.yaml")


def test_default_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(yaml_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert yaml_cache.cache_dir() == tmp_path / "cloudmatrix"
