"""Catalog objects kept validated (catalog/object_cache.py): every shipped file, model, routing profile and
hold-out index comes back from the cache equal to the validated object; a changed file is validated afresh
with its error; an entry someone else could have written, or a broken one, is never used; the code key
covers every module that decides a catalog object."""

import ast
import os
import pickle
from pathlib import Path

import pytest

from cloudmatrix.catalog import object_cache, yaml_cache
from cloudmatrix.catalog.hardware import HARDWARE_DIR, ChipSpec, Hardware, SystemSpec, load_chip
from cloudmatrix.catalog.holdout_index import INDEX_DIR, holdout_rows
from cloudmatrix.catalog.kernels import CURVES_PATH, MICROBENCH_PATH, CurveCatalog, Microbench
from cloudmatrix.catalog.models import _catalog_model, model_ids
from cloudmatrix.catalog.reference import REFERENCE_DIR, ReferenceSet
from cloudmatrix.catalog.residuals import METRICS
from cloudmatrix.catalog.routing import model_routing
from cloudmatrix.catalog.sourced import parse_file, read_yaml
from cloudmatrix.catalog.stacks import STACKS_PATH, StackCatalog
from cloudmatrix.errors import ConfigError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(yaml_cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "objects"


def _three_ways(build, monkeypatch: pytest.MonkeyPatch, cache: Path) -> list:
    """Validated with the cache off, then kept, then read back from the cache."""
    monkeypatch.setenv(yaml_cache.ENV, "")
    fresh = build()
    monkeypatch.setenv(yaml_cache.ENV, str(cache.parent))
    return [fresh, build(), build()]


def _catalog_files() -> list[tuple[type, Path]]:
    hardware = [(SystemSpec if "chip" in read_yaml(p) else ChipSpec, p) for p in sorted(HARDWARE_DIR.glob("*.yaml"))]
    references = [(ReferenceSet, p) for p in sorted(REFERENCE_DIR.glob("*.yaml"))]
    fixed = [(StackCatalog, STACKS_PATH), (CurveCatalog, CURVES_PATH), (Microbench, MICROBENCH_PATH)]
    return hardware + references + fixed


def test_every_catalog_file_comes_back_equal_to_its_validation(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _catalog_files()
    assert len(files) > 30
    for model, path in files:
        fresh, kept, loaded = _three_ways(lambda m=model, p=path: parse_file(m, p), monkeypatch, cache)
        assert type(loaded) is model and loaded == kept == fresh, path
        assert repr(loaded) == repr(fresh), path  # every nested value of the same type too
    assert len(list(cache.glob("*.pickle"))) == len(files)


def test_every_model_and_routing_profile_comes_back_equal(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for model_id in model_ids():
        fresh, kept, loaded = _three_ways(lambda m=model_id: _catalog_model(m), monkeypatch, cache)
        assert loaded == kept == fresh, model_id
        fresh, kept, loaded = _three_ways(lambda m=model_id: model_routing.__wrapped__(m), monkeypatch, cache)
        assert loaded == kept == fresh, model_id


def test_hardware_made_from_validated_parts_equals_its_validation() -> None:
    for path in sorted(HARDWARE_DIR.glob("*.yaml")):
        if "chip" in read_yaml(path):
            system = parse_file(SystemSpec, path)
            chip = load_chip(system.chip)
            made = Hardware.model_construct(system=system, chip=chip)
            assert made == Hardware(system=system, chip=chip), path
            assert made == Hardware.model_validate({"system": system.model_dump(), "chip": chip.model_dump()}), path


def test_a_changed_file_is_validated_afresh(cache: Path, tmp_path: Path) -> None:
    shipped = HARDWARE_DIR / "ascend-910c.yaml"
    good = tmp_path / "ascend-910c.yaml"
    good.write_bytes(shipped.read_bytes())
    assert parse_file(ChipSpec, good) == parse_file(ChipSpec, shipped)  # kept
    good.write_bytes(shipped.read_bytes().replace(b"dies_per_chip: {value: 2,", b"dies_per_chip: {value: two,"))
    with pytest.raises(ConfigError, match=r"ascend-910c.yaml: dies_per_chip.value: .*two"):
        parse_file(ChipSpec, good)
    with pytest.raises(ConfigError, match=r"dies_per_chip"):  # failures are never kept
        parse_file(ChipSpec, good)


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.pickle"))


def test_an_entry_others_could_write_or_a_broken_one_is_not_used(cache: Path) -> None:
    validated = parse_file(StackCatalog, STACKS_PATH)
    (entry,) = _entries(cache)
    entry.write_bytes(pickle.dumps("planted"))
    os.chmod(entry, 0o666)
    assert parse_file(StackCatalog, STACKS_PATH) == validated
    os.chmod(entry, 0o600)
    entry.write_bytes(pickle.dumps(validated)[:100])  # cut short
    assert parse_file(StackCatalog, STACKS_PATH) == validated
    assert pickle.loads(entry.read_bytes()) == validated  # rewritten whole


def test_no_cache_directory_builds_every_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(yaml_cache.ENV, str(blocked))  # a file where the directory would be: nothing kept
    assert parse_file(StackCatalog, STACKS_PATH) == parse_file(StackCatalog, STACKS_PATH)


def test_the_code_key_covers_every_module_the_catalog_imports() -> None:
    """Imports point downward, so the catalog's code and the layer-0 modules it imports decide its objects:
    every module outside the catalog that a catalog module imports is hashed into the key."""
    catalog = Path(object_cache.__file__).parent
    imported = set()
    for path in catalog.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cloudmatrix."):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names if a.name.startswith("cloudmatrix."))
    outside = {m.split(".")[1] + ".py" for m in imported if not m.startswith("cloudmatrix.catalog")}
    assert outside and outside <= set(object_cache.LOWER_MODULES)


def test_every_holdout_index_comes_back_equal(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for metric in METRICS:
        if (INDEX_DIR / f"{metric}.json").exists():
            fresh, kept, loaded = _three_ways(lambda m=metric: holdout_rows.__wrapped__(m), monkeypatch, cache)
            assert loaded == kept == fresh and len(loaded) > 0, metric
