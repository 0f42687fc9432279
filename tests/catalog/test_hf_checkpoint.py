"""`--model` resolution: a catalog id first, then a config.json or model directory, then a Hugging Face id
in the local hub cache (a fixture cache made here: HF_HUB_CACHE and HF_HOME layouts, refs/main or a single
snapshot), never downloading; quantization_config sets or checks the weight precision."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.hf_checkpoint import checkpoint_format
from cloudmatrix.catalog.models import MODELS_DIR, load_model
from cloudmatrix.cli.app import app
from cloudmatrix.errors import ConfigError

runner = CliRunner()
REVISION = "a" * 40
R1 = json.loads((MODELS_DIR / "deepseek-r1.json").read_text())  # fp8 in quantization_config, as on the hub


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for var in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no real cache is ever read
    load_model.cache_clear()
    yield
    load_model.cache_clear()


def _cache(root: Path, hf_id: str, config: dict, ref: bool = True, revision: str = REVISION) -> Path:
    repo = root / f"models--{hf_id.replace('/', '--')}"
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))
    if ref:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(revision)
    return snap / "config.json"


def test_an_hf_id_from_the_hub_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    quantised = R1 | {"num_hidden_layers": 30}  # not the catalog's: proves the cache was read
    _cache(tmp_path / "hub", "deepseek-ai/DeepSeek-R1", quantised)
    spec = load_model("deepseek-ai/DeepSeek-R1")
    assert spec.num_layers == 30 and spec.checkpoint_format == "fp8" and "Hugging Face cache" in spec.source
    h800 = ["--system", "hgx-h800", "--chips", "16", "--batch-per-chip", "32"]  # a chip that computes fp8
    res = runner.invoke(app, ["estimate", *h800, "--model", "deepseek-ai/DeepSeek-R1", "--json"])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr  # no --precision: the checkpoint's fp8 is priced
    assert json.loads(res.stdout)["precision"] == "fp8"
    mismatch = runner.invoke(
        app, ["estimate", *h800, "--model", "deepseek-ai/DeepSeek-R1", "--precision", "int8", "--json"]
    )
    assert mismatch.exit_code == 0 and "stores fp8 weights" in mismatch.stderr and "--precision fp8" in mismatch.stderr


def test_hf_home_layout_and_a_single_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _cache(tmp_path / "hf" / "hub", "org/small-moe", R1 | {"num_hidden_layers": 12}, ref=False)
    assert load_model("org/small-moe").num_layers == 12


def test_a_model_directory_and_a_config_path(tmp_path: Path) -> None:
    model_dir = tmp_path / "my-r1"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(R1 | {"num_hidden_layers": 20}))
    assert load_model(str(model_dir)).num_layers == 20
    assert load_model(str(model_dir / "config.json")).id == "my-r1"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="without a config.json"):
        load_model(str(tmp_path / "empty"))


def test_order_and_offline_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub").mkdir()
    # no cache entry: a shipped model's HF id is the catalog's, an unknown one is refused naming the cache
    assert load_model("deepseek-ai/DeepSeek-R1").num_layers == 61
    with pytest.raises(ConfigError, match=r"not a catalog id, a path, or a model in the Hugging Face cache"):
        load_model("nobody/nothing")
    # a catalog id wins over a directory of that name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deepseek-r1").mkdir()
    assert load_model("deepseek-r1").source.startswith("HF deepseek-ai")
    res = runner.invoke(app, ["estimate", "--model", "nobody/nothing"])
    assert res.exit_code == 2 and "nothing is downloaded" in res.output


def test_ambiguous_cache_and_bad_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    _cache(tmp_path / "hub", "org/two", R1, ref=False)
    repo = tmp_path / "hub" / "models--org--two" / "snapshots"
    shutil.copytree(repo / REVISION, repo / ("b" * 40))
    with pytest.raises(ConfigError, match="2 snapshots"):
        load_model("org/two")
    _cache(tmp_path / "hub", "org/badref", R1)
    (tmp_path / "hub" / "models--org--badref" / "refs" / "main").write_text("../../etc")
    with pytest.raises(ConfigError, match="expected a commit hash"):
        load_model("org/badref")


FP8_GROUP, INT8_GROUP = {"num_bits": 8, "type": "float"}, {"num_bits": 8, "type": "int"}


@pytest.mark.parametrize(
    ("quantization", "expected"),
    [
        ({"quant_method": "fp8", "fmt": "e4m3"}, "fp8"),
        ({"quant_method": "mxfp4"}, "fp4"),
        ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, "fp4"),
        ({"quant_method": "gptq", "bits": 4}, "int4"),
        ({"quant_method": "awq", "bits": 8}, "int8"),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "int8"),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": FP8_GROUP}}}, "fp8"),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": INT8_GROUP}}}, "int8"),
        (None, "bf16"),
    ],
)  # fmt: skip
def test_checkpoint_formats(quantization: dict | None, expected: str) -> None:
    config = {"torch_dtype": "bfloat16"} | ({"quantization_config": quantization} if quantization else {})
    assert checkpoint_format(config) == expected


def test_an_unpriced_format_warns_and_prices_the_default(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(R1 | {"quantization_config": {"quant_method": "gptq", "bits": 4}}))
    res = runner.invoke(app, ["estimate", "--model", str(path), "--json"])
    assert res.exit_code == 0 and "stores int4 weights" in res.stderr
    assert json.loads(res.stdout)["precision"] == "int8"
