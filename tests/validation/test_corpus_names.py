"""Every name InferenceMAX and InferenceX write into a result row maps onto the catalog exactly (runner types and
runner names, frameworks, model ids and display names, each precision per chip family); every catalog stack is
a valid stack in a YAML row; the corpora that joined later load with their frozen roles; and a row the twin
refuses is reported with its reason without failing the run."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cloudmatrix.catalog.corpus import load_rows
from cloudmatrix.catalog.inferencemax import read_inferencemax
from cloudmatrix.catalog.stacks import stack_ids
from cloudmatrix.catalog.validation import VALIDATION_DIR, frozen_roles, yaml_rows
from cloudmatrix.cli.app import app
from cloudmatrix.errors import ConfigError

runner = CliRunner()
CSV = VALIDATION_DIR / "inferencemax-public.csv"


def _template() -> dict[str, str]:
    """A co-located DeepSeek-R1 FP8 SGLang row on B200 (TP8, 1K/1K, conc 4)."""
    with CSV.open() as f:
        return next(r for r in csv.DictReader(f) if r["hw"] == "b200" and r["framework"] == "sglang")


def _read(tmp_path: Path, **cells: str) -> object:
    rec = _template() | cells
    path = tmp_path / "names.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rec))
        writer.writeheader()
        writer.writerow(rec)
    return read_inferencemax(path, _family)[0]


def _family(system: str) -> str:
    from cloudmatrix.catalog.corpus import chip_family

    return chip_family(system)


@pytest.mark.parametrize(
    ("hw", "system"),
    [
        ("h100", "hgx-h100"),
        ("h200", "hgx-h200"),
        ("b200", "hgx-b200"),
        ("b300", "hgx-b300"),
        ("gb200", "gb200-nvl72"),
        ("gb300", "gb300-nvl72"),
        ("mi300x", "mi300x"),
        ("mi325x", "mi325x"),
        ("mi355x", "mi355x"),
        ("mi355x-amd_0", "mi355x"),
        ("mi355x-disagg", "mi355x"),
        ("mi325x-amds_02", "mi325x"),
        ("b200-trt", "hgx-b200"),
        ("b200-dynamo", "hgx-b200"),
        ("b200-multinode", "hgx-b200"),
        ("h200-dgxc-slurm_3", "hgx-h200"),
        ("gb300-nv", "gb300-nvl72"),
        ("cluster:b300-nv", "hgx-b300"),
        ("MI300X", "mi300x"),
    ],
)
def test_hardware_names(tmp_path: Path, hw: str, system: str) -> None:
    framework = "sglang"  # runs on NVIDIA and AMD
    row = _read(tmp_path, hw=hw, framework=framework)
    assert row.system == system  # type: ignore[attr-defined]


@pytest.mark.parametrize("hw", ["rtx6000pro", "b200-fast", "tpu-v5e", "mi355x_amd", "h100--trt", "gb200 nv"])
def test_unknown_hardware_is_refused_with_the_known(tmp_path: Path, hw: str) -> None:
    with pytest.raises(ConfigError, match=r"column hw: .* is not mapped \(known: h100, h200"):
        _read(tmp_path, hw=hw)


@pytest.mark.parametrize(
    ("framework", "hw", "stack"),
    [
        ("sglang", "b200", "sglang"),
        ("vllm", "h100", "vllm"),
        ("trt", "b200-trt", "trtllm"),
        ("atom", "mi355x", "atom"),
        ("atom-disagg", "mi355x-disagg", "atom"),
        ("mori-sglang", "mi355x", "mori-sglang"),
        ("sglang-disagg", "mi355x-disagg", "mori-sglang"),
        ("sglang-disagg", "b200-multinode", "sglang"),
        ("vllm-disagg", "h200", "vllm"),
        ("dynamo-sglang", "gb200", "dynamo-sglang"),
        ("dynamo-trt", "gb300", "dynamo-trtllm"),
        ("dynamo-vllm", "b200", "dynamo-vllm"),
    ],
)
def test_framework_names(tmp_path: Path, framework: str, hw: str, stack: str) -> None:
    row = _read(tmp_path, framework=framework, hw=hw)
    assert row.stack == stack  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("model", "precision", "hw", "framework", "expected"),
    [
        ("DeepSeek-R1", "fp8", "h200", "sglang", ("deepseek-r1", "fp8", "fp8", "bf16")),
        ("DeepSeek-R1-0528", "fp8", "mi300x", "sglang", ("deepseek-r1", "fp8", "fp8", "bf16")),
        ("deepseek-ai/DeepSeek-R1-0528", "fp8", "mi355x", "atom", ("deepseek-r1", "fp8", "fp8", "fp8")),
        ("DeepSeek-R1-0528 (nvidia FP4)", "fp4", "b200", "sglang", ("deepseek-r1", "nvfp4", "nvfp4", "fp8")),
        ("nvidia/DeepSeek-R1-0528-FP4-V2", "fp4", "gb300", "dynamo-trt", ("deepseek-r1", "nvfp4", "nvfp4", "fp8")),
        ("DeepSeek-R1-0528 (amd MXFP4)", "fp4", "mi355x", "sglang", ("deepseek-r1", "mxfp4", "mxfp4", "fp8")),
        ("amd/DeepSeek-R1-0528-MXFP4-Preview", "fp4", "mi355x", "atom", ("deepseek-r1", "mxfp4", "mxfp4", "fp8")),
        ("amd/DeepSeek-R1-0528-MXFP4", "fp4", "mi355x", "mori-sglang", ("deepseek-r1", "mxfp4", "mxfp4", "fp8")),
        ("dsr1", "fp8", "b300", "sglang", ("deepseek-r1", "fp8", "fp8", "bf16")),
        ("gpt-oss-120b", "fp4", "h100", "vllm", ("gpt-oss-120b", "mxfp4", "bf16", "bf16")),
        ("openai/gpt-oss-120b", "fp4", "b200-trt", "trt", ("gpt-oss-120b", "mxfp4", "fp8", "fp8")),
        ("gptoss", "fp4", "mi325x", "vllm", ("gpt-oss-120b", "mxfp4", "bf16", "bf16")),
    ],
)
def test_model_names_and_formats(
    tmp_path: Path, model: str, precision: str, hw: str, framework: str, expected: tuple[str, ...]
) -> None:
    row = _read(tmp_path, model=model, precision=precision, hw=hw, framework=framework)
    got = (row.model, row.weights, row.activations, row.kv)  # type: ignore[attr-defined]
    assert got == expected


def test_a_format_a_family_lacks_is_refused(tmp_path: Path) -> None:
    """NVFP4 DeepSeek has no Hopper build: the row names the precision, the model and the family."""
    with pytest.raises(ConfigError, match=r"precision 'fp4' of deepseek-r1 is not mapped on hopper chips"):
        _read(tmp_path, model="DeepSeek-R1-0528 (nvidia FP4)", precision="fp4", hw="h200")


def test_rocm_sglang_uses_its_chunked_prefill_size(tmp_path: Path) -> None:
    """The ROCm SGLang DeepSeek scripts set --chunked-prefill-size 196608 (one TP8 engine of 8 GPUs)."""
    row = _read(tmp_path, hw="mi325x")
    assert row.aggregated.chunk_tokens_per_chip == 196608 / 8  # type: ignore[attr-defined]


def _yaml_row(stack: str) -> dict[str, object]:
    data = yaml.safe_load((VALIDATION_DIR / "rows-published.yaml").read_text())
    return dict(data["rows"][0]) | {"stack": stack}


@pytest.mark.parametrize("stack", stack_ids())
def test_every_catalog_stack_is_a_valid_row_stack(stack: str) -> None:
    rows = yaml_rows({"id": "t", "title": "t", "rows": [_yaml_row(stack)]}, "t.yaml")
    assert rows[0].stack == stack


def test_an_unknown_stack_is_refused_naming_the_catalog() -> None:
    with pytest.raises(ConfigError) as e:
        yaml_rows({"id": "t", "title": "t", "rows": [_yaml_row("tgi")]}, "t.yaml")
    message = str(e.value)
    assert "stack: expected a catalog stack" in message and "mindie" in message and "'tgi'" in message


@pytest.mark.parametrize(
    ("corpus", "rows", "systems"),
    [
        ("inferencemax-more", 67, {"hgx-h100", "hgx-h200", "mi300x", "mi325x"}),
        ("sglang-ascend", 6, {"cloudmatrix384"}),
    ],
)
def test_new_corpora_load_with_their_frozen_roles(corpus: str, rows: int, systems: set[str]) -> None:
    loaded = load_rows(corpus)
    roles = frozen_roles()
    assert len(loaded) == len({r.id for r in loaded}) == rows
    assert {r.system for r in loaded} == systems
    assert all(r.role == roles[r.series] for r in loaded)
    assert {r.role for r in loaded} == {"fitted", "predicted"}


def test_the_more_csv_holds_the_first_long_input_and_amd_rows() -> None:
    rows = load_rows("inferencemax-more")
    long_input = [r for r in rows if r.workload.input_len == 8192]
    amd = [r for r in rows if r.system in ("mi300x", "mi325x")]
    assert (len(long_input), len(amd)) == (37 + 10, 30)  # 37 Hopper rows, 10 of the 30 AMD rows at 8K/1K
    assert {(r.stack, r.weights, r.kv) for r in amd} == {("sglang", "fp8", "bf16")}


def test_the_v32_row_generated_3072_tokens() -> None:
    """Fixed against the source printout (196,608 generated tokens for 64 prompts), noted on the row."""
    row = next(r for r in load_rows("sglang-ascend") if r.model == "deepseek-v3.2")
    assert (row.workload.input_len, row.workload.output_len, row.workload.num_requests) == (64000, 3072, 64)
    assert "3,072" in row.note


def test_a_refused_row_is_reported_with_its_reason(tmp_path: Path) -> None:
    """A row the twin cannot run stays a refusal with its reason, beside the answered rows; the run succeeds."""
    data = yaml.safe_load((VALIDATION_DIR / "rows-published.yaml").read_text())
    ok = next(r for r in data["rows"] if r["kind"] == "decode")
    too_big = dict(ok) | {"id": "too-big", "series": "t|too-big", "decode": dict(ok["decode"]) | {"chips": 1}}
    too_big["model"], too_big["weights"], too_big["activations"] = "deepseek-r1", "bf16", "bf16"
    too_big["decode"] = {"chips": 1, "tp": 1, "ep": 1}
    path = tmp_path / "rows.yaml"
    path.write_text(yaml.safe_dump({"id": "t", "title": "t", "rows": [ok, too_big]}))
    res = runner.invoke(app, ["validate", str(path), "--json", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    status = {e["id"]: (e["status"], e["reason"]) for e in out["rows"]}
    assert status[ok["id"]] == ("ok", "")
    assert status["too-big"][0] == "refused" and "does not fit" in status["too-big"][1]
    assert out["summary"]["refused"] == [{"id": "too-big", "reason": status["too-big"][1]}]
    assert out["summary"]["answered_rows"] == 1


def test_every_mapped_format_runs_on_every_mapped_system() -> None:
    """Each weight/activation format the mapping can produce is a precision the twin runs, and every system the
    mapping names has a rate for it (MXFP4 and NVFP4 at the FP4 rate; chips without FP4 units fall back)."""
    from cloudmatrix.catalog.hardware import load_hardware
    from cloudmatrix.catalog.inferencemax import mapping
    from cloudmatrix.studies.validate_run import TWIN_PRECISION

    formats = set()
    for per_precision in mapping()["formats"].values():
        for f in per_precision.values():
            for value in (f["weights"], f["activations"]):
                formats |= set(value.values()) if isinstance(value, dict) else {value}
    assert formats == {"fp8", "nvfp4", "mxfp4", "bf16"}
    assert {TWIN_PRECISION[f] for f in formats} == {"fp8", "fp4", "bf16"}
    for system in set(mapping()["hardware"].values()):
        die = load_hardware(system).chip.die
        assert all(die.peak_flops(TWIN_PRECISION[f]) > 0 for f in formats), system
    mi355x = load_hardware("mi355x").chip.die
    assert mi355x.peak_flops("fp4") == pytest.approx(2 * mi355x.peak_flops("fp8"), rel=1e-4)  # MXFP4: 2x FP8
