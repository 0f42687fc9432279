"""`plan --emit DIR`: every stack's launch files parse (YAML, JSON, `sh -n`) and use only the flags and keys
the engines catalog documents (checked here independently of the emitter); the directory writer refuses
symlinks, devices and FIFOs inside and outside the directory; the CLI end to end."""

import json
import os
import re
import shlex
import shutil
import stat
import subprocess

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.engines import engine_docs
from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.cli.app import app
from cloudmatrix.cli.output import resolve_directory, write_directory
from cloudmatrix.inputs import InputError
from cloudmatrix.planner.emit import Emitter
from cloudmatrix.planner.emit_engines import documented
from cloudmatrix.planner.emit_shape import NEAREST_PUBLIC, STACK_ENGINES

runner = CliRunner()
SYSTEM_OF = {"nvidia": "hgx-h200", "amd": "mi355x", "huawei": "cloudmatrix384"}
LAUNCHERS = {  # the words that start each engine's command in an emitted script
    ("python3", "-m", "sglang.launch_server"): "sglang",
    ("vllm", "serve"): "vllm",
    ("trtllm-serve",): "trtllm",
    ("aiperf", "profile"): "aiperf",
    ("vllm", "bench", "serve"): "vllm-bench",
}


def _scenario(stack: str, system: str, mtp: int = 1, ep: int | None = 16, nodes_chips: int = 16) -> dict:
    return {
        "name": f"plan-{system}-deepseek-r1",
        "system": system,
        "model": "deepseek-r1",
        "precision": "fp8",
        "kv_precision": "bf16",
        "stack": stack,
        "prefill": {"instances": 3, "chips": 8, "ep": ep and 8, "tokens_per_chip": 16384, "microbatch": True,
                    "attention_tp": 4, "eplb": "default", "tp": 1},
        "decode": {"instances": 1, "chips": nodes_chips, "ep": ep, "batch_per_chip": 64, "mtp": mtp,
                   "mtp_acceptance": 0.7, "eplb": "default", "microbatch": False, "tp": 1},
        "workload": {"input": {"kind": "fixed", "value": 4096}, "output": {"kind": "fixed", "value": 256}},
        "slo": {"ttft_ms": 5000.0, "tpot_ms": 50.0},
        "requests": 2000,
        "seed": 0,
    }  # fmt: skip


def _vendor_of(stack: str) -> str:
    if stack in ("vllm-ascend", "sglang-ascend", "mindie", "cloudmatrix-infer"):
        return "huawei"
    return "amd" if stack in ("mori-sglang", "atom") else "nvidia"


def _files(stack: str, **kw) -> dict[str, str]:
    system = SYSTEM_OF[_vendor_of(stack)]
    return Emitter(_scenario(stack, system, **kw), load_hardware(system), (4096, 256), 12.5, "predicted").files()


def _commands(script: str) -> list[tuple[str, list[str]]]:
    """Each command an emitted script runs: (engine, its words)."""
    joined = script.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["exec"]:
            words = words[1:]
        for launcher, engine in LAUNCHERS.items():
            if tuple(words[: len(launcher)]) == launcher:
                out.append((engine, words))
    return out


def _keys(data, prefix="") -> list[str]:
    if isinstance(data, dict):
        return [k for key, v in data.items() for k in [f"{prefix}{key}", *_keys(v, f"{prefix}{key}.")]]
    if isinstance(data, list):
        return [k for item in data for k in _keys(item, prefix)]
    return []


def _documented(engine: str, key: str) -> bool:
    known = engine_docs()[engine].keys
    return key in known or any(k.startswith(key + ".") for k in known)


STACKS = sorted([*STACK_ENGINES, *NEAREST_PUBLIC])


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_emits_files_that_parse_with_documented_flags(stack, tmp_path) -> None:
    files = _files(stack)
    assert {"launch-prefill.sh", "launch-decode.sh", "bench.sh", "plan.json", "README.md"} <= set(files)
    for name, text in files.items():
        if name.endswith(".yaml"):
            assert isinstance(yaml.safe_load(text), dict)
        elif name.endswith(".json"):
            assert isinstance(json.loads(text), dict)
        elif name.endswith(".sh"):
            (tmp_path / name).write_text(text)
            assert subprocess.run(["sh", "-n", str(tmp_path / name)], capture_output=True).returncode == 0, text
            commands = _commands(text)
            assert commands or "mindieservice_daemon" in text, name
            for engine, words in commands:
                flags = {w.split("=")[0] for w in words if w.startswith("--")}
                assert flags <= set(engine_docs()[engine].flags), (name, flags - set(engine_docs()[engine].flags))
    cited = [line for line in files["README.md"].splitlines() if line.startswith("- ") and ": " in line]
    for engine in (json.loads(files["plan.json"])["engine"]["id"], "aiperf", "vllm-bench"):
        doc = engine_docs()[engine]  # every engine the files use is cited with its version and source
        assert f"- {doc.name} {doc.version}: {doc.source}" in cited


def _worker_flags(engine: str) -> set[str]:
    base = {"sglang": "sglang", "vllm": "vllm", "trtllm": "dynamo"}[engine]
    return set(engine_docs()[base].flags) | set(engine_docs()["dynamo"].flags)


@pytest.mark.parametrize("stack", ["sglang", "vllm", "trtllm", "dynamo-trtllm"])
def test_dynamo_and_llmd_manifests_use_documented_keys(stack) -> None:
    files = _files(stack)
    dgd, values = yaml.safe_load(files["dynamo.yaml"]), yaml.safe_load(files["llm-d-values.yaml"])
    assert (dgd["apiVersion"], dgd["kind"]) == ("nvidia.com/v1alpha1", "DynamoGraphDeployment")
    services = dgd["spec"]["services"]
    assert {s.get("subComponentType") for s in services.values()} == {None, "prefill", "decode"}
    engine = STACK_ENGINES[stack]
    for service in services.values():
        assert all(_documented("dynamo", k) for k in _keys(service, "spec.services."))
        args = service["extraPodSpec"]["mainContainer"]["args"]
        assert {a for a in args if a.startswith("--")} <= _worker_flags(engine) | {"--http-port"}
    assert services["PrefillWorker"]["replicas"] == 3 and services["DecodeWorker"]["replicas"] == 1
    assert services["DecodeWorker"]["multinode"] == {"nodeCount": 2}  # 16 H200s over 8-GPU nodes
    keys = [k for k in _keys(values) if ".resources.limits." not in k]
    assert all(_documented("llm-d", k) for k in keys), keys
    for role in ("prefill", "decode"):
        args = values[role]["containers"][0]["args"]
        assert {a for a in args if a.startswith("--")} <= set(engine_docs()["vllm"].flags)


def test_ascend_and_config_engines() -> None:
    mindie = _files("mindie")
    config = json.loads(mindie["mindie-decode.json"])
    assert all(_documented("mindie", k) for k in _keys(config))
    assert config["BackendConfig"]["ScheduleConfig"]["maxBatchSize"] == 64 * 16 // 1  # batch per chip x chips
    assert "dynamo.yaml" not in mindie and "llm-d-values.yaml" not in mindie  # GPU-only orchestrators: noted
    assert "no Dynamo manifest" in mindie["README.md"]
    trt = _files("trtllm")
    options = yaml.safe_load(trt["decode-llm-api.yaml"])
    assert all(_documented("trtllm", k) for k in _keys(options))
    assert options["speculative_config"] == {"decoding_type": "MTP", "num_nextn_predict_layers": 1}
    ascend = _files("vllm-ascend")["launch-decode.sh"]
    assert "LLMDataDistCMgrConnector" in ascend and "--headless" in ascend  # followers of a multi-node DP group
    assert "vLLM Ascend runs the same model" in _files("cloudmatrix-infer")["README.md"]


@given(st.text(max_size=80))
def test_manifest_names_are_kubernetes_names(name: str) -> None:
    scenario = _scenario("sglang", "hgx-h200") | {"name": name}
    emitter = Emitter(scenario, load_hardware("hgx-h200"), (4096, 256), 1.0, "predicted")
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", emitter.name), emitter.name


def test_dense_model_without_speculation() -> None:
    files = _files("sglang", mtp=0, ep=None)
    assert "--speculative" not in files["launch-decode.sh"] and "--ep-size" not in files["launch-decode.sh"]


@given(st.text(alphabet="-abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=20))
def test_an_undocumented_flag_is_never_written(flag) -> None:
    flag = "--" + flag.lstrip("-")
    if flag in engine_docs()["sglang"].flags:
        return
    with pytest.raises(AssertionError, match="not in the engines catalog"):
        documented("sglang", [(flag, "1")])


def test_every_engine_cites_a_version_and_source() -> None:
    for engine_id, doc in engine_docs().items():
        assert doc.version and doc.source, engine_id
        assert doc.flags or doc.keys, engine_id


# the directory writer


def test_writes_a_new_directory_and_replaces_files_keeping_their_mode(tmp_path) -> None:
    target = resolve_directory(str(tmp_path / "out"), "--emit")
    write_directory(target, {"a.yaml": "x: 1\n", "run.sh": "#!/bin/sh\n"})
    assert (tmp_path / "out" / "a.yaml").read_text() == "x: 1\n"
    assert os.stat(tmp_path / "out" / "run.sh").st_mode & stat.S_IXUSR
    os.chmod(tmp_path / "out" / "a.yaml", 0o600)
    write_directory(resolve_directory(str(tmp_path / "out"), "--emit"), {"a.yaml": "x: 2\n"})
    assert (tmp_path / "out" / "a.yaml").read_text() == "x: 2\n"
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "a.yaml").st_mode) == 0o600
    assert not [p for p in os.listdir(tmp_path / "out") if p.endswith(".tmp")]


def _refused(given: str, match: str, files: dict | None = None) -> None:
    with pytest.raises(InputError, match=match):
        write_directory(resolve_directory(given, "--emit"), files or {"a.yaml": "x\n"})


def test_directory_targets_refused(tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    _refused(str(tmp_path / "link"), "symlink")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    _refused(str(tmp_path / "dangling"), "symlink")
    (tmp_path / "file").write_text("keep")
    _refused(str(tmp_path / "file"), "a regular file")
    _refused(str(tmp_path / "no" / "such"), "does not exist")
    _refused("-", "expected a directory")
    _refused("", "expected a directory")
    _refused("/dev/null", "character device")
    assert (tmp_path / "file").read_text() == "keep" and not os.listdir(outside)


def test_entries_inside_the_directory_refused_before_anything_is_written(tmp_path) -> None:
    out, outside = tmp_path / "out", tmp_path / "secret.txt"
    out.mkdir()
    outside.write_text("keep")
    (out / "a.yaml").symlink_to(outside)  # a link out of the directory: never followed
    _refused(str(out), "a symlink", {"b.yaml": "new\n", "a.yaml": "x\n"})
    assert outside.read_text() == "keep" and not (out / "b.yaml").exists()
    (out / "a.yaml").unlink()
    os.mkfifo(out / "a.yaml")
    _refused(str(out), "a FIFO")
    (out / "a.yaml").unlink()
    (out / "a.yaml").mkdir()
    _refused(str(out), "a directory")
    shutil.rmtree(out / "a.yaml")
    _refused(str(out), "bad file name", {"../escape": "x"})


def test_plan_emit_end_to_end(tmp_path) -> None:
    out = tmp_path / "deploy"
    args = ["plan", "--system", "hgx-h200", "--model", "qwen3-235b-a22b", "--no-check", "--top", "1"]
    res = runner.invoke(app, [*args, "--emit", str(out), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert sorted(os.path.basename(p) for p in d["emitted"]) == sorted(os.listdir(out))
    assert "Qwen/Qwen3-235B-A22B" in (out / "launch-decode.sh").read_text()
    (tmp_path / "f").write_text("")
    res = runner.invoke(app, [*args, "--emit", str(tmp_path / "f")])
    assert res.exit_code == 2 and "expected a directory" in res.output
