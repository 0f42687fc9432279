"""`plan --emit DIR`: the chosen deployment as files a team deploys and checks on real hardware: a launch
script per role for the plan's engine (or its TensorRT-LLM options / MindIE config), Dynamo and llm-d
Kubernetes manifests, a benchmark script replaying the planned workload (AIPerf and `vllm bench serve`),
the plan as JSON and a README naming the engine versions the flags come from. Text only; the CLI writes it."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import yaml

from cloudmatrix.catalog.engines import engine_doc
from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import hf_id_of
from cloudmatrix.planner.emit_engines import (
    Args,
    check_keys,
    documented,
    mindie_config,
    sglang_args,
    trtllm_args,
    trtllm_options,
    vllm_args,
)
from cloudmatrix.planner.emit_k8s import DYNAMO_BACKENDS, dynamo_manifest, llmd_values
from cloudmatrix.planner.emit_shape import RoleShape, engine_for, role_shapes
from cloudmatrix.planner.inputs import PlanRequest, PlanWorkload, load_overridden_hardware
from cloudmatrix.planner.rank import PlannedDeployment
from cloudmatrix.planner.scenario_out import scenario_dict


def _quote(value: str) -> str:
    """A shell word: plain values quoted; the launcher's placeholders (``${NODE_RANK:-0}``) left to expand."""
    return f'"{value}"' if "$" in value and '"' not in value else shlex.quote(value)


def command_lines(launcher: list[str], args: Args) -> str:
    """One command, a flag per continued line."""
    lines = [" ".join(shlex.quote(w) for w in launcher)]
    for flag, value in args:
        lines.append(f"  {flag}" + ("" if value is None else f" {_quote(value)}"))
    return " \\\n".join(lines)


def _script(header: list[str], body: str) -> str:
    return "#!/bin/sh\n" + "".join(f"# {line}\n" for line in header) + "set -eu\n" + body + "\n"


class Emitter:
    """The files of one planned deployment (``scenario``: ``planner.scenario_out.scenario_dict``)."""

    def __init__(
        self, scenario: dict[str, Any], hw: Hardware, lengths: tuple[float, float], rate_req_s: float, summary: str
    ) -> None:
        self.scenario, self.hw, self.summary, self.rate_req_s = scenario, hw, summary, rate_req_s
        self.input_len, self.output_len = round(lengths[0]), round(lengths[1])
        self.max_len = self.input_len + self.output_len
        model = str(scenario["model"])
        self.hf_id = hf_id_of(model) or model
        self.served = self.hf_id
        self.engine, self.note = engine_for(str(scenario["stack"]), hw.system.vendor)
        self.npu = hw.system.vendor == "huawei"
        self.shapes = role_shapes(scenario, hw)
        # a Kubernetes object name (DNS-1123 label): lowercase letters, digits and '-', at most 63
        self.name = re.sub(r"[^a-z0-9-]+", "-", str(scenario["name"]).lower()).strip("-")[:63].rstrip("-") or "plan"
        self.notes: list[str] = [self.note] if self.note else []

    def files(self) -> dict[str, str]:
        files = {f"launch-{s.role}.sh": self._launch(s) for s in self.shapes}
        if self.engine == "trtllm":
            for s in self.shapes:
                options = check_keys("trtllm", trtllm_options(s))
                files[f"{s.role}-llm-api.yaml"] = yaml.safe_dump(options, sort_keys=False)
        if self.engine == "mindie":
            for s in self.shapes:
                config = mindie_config(s, self.served, f"/models/{self.hf_id}", self.input_len, self.output_len)
                files[f"mindie-{s.role}.json"] = json.dumps(check_keys("mindie", config), indent=2) + "\n"
            self.notes.append(
                "MindIE's prefill/decode pairing is set up by MindIE MS (its deployment tool), not by config.json"
            )
        files.update(self._manifests())
        files["bench.sh"] = self._bench()
        files["plan.json"] = json.dumps(self._plan_json(), indent=2) + "\n"
        files["README.md"] = self._readme(sorted([*files, "README.md"]))
        return files

    def _header(self, s: RoleShape) -> list[str]:
        doc = engine_doc(self.engine)
        header = [
            f"{s.role} role of `cloudmatrix plan`: {self.scenario['model']} on {self.scenario['system']}",
            f"{s.instances} instance(s) of {s.chips} chips = {s.ranks} devices, {s.nodes} node(s) each;",
            f"TP {s.tp} x DP {s.dp}"
            + (f", EP {s.ep}" if s.ep else "")
            + (f", {s.mtp} draft token(s)" if s.mtp else ""),
            f"Flags: {doc.name} {doc.version} ({doc.source})",
        ]
        if s.nodes > 1:
            header.append("Run on every node of an instance with NODE_RANK=0..N-1 and LEADER_ADDR=node 0's address.")
        return header + [f"Weights: a {self.scenario['precision']} checkpoint of {self.hf_id}."]

    def _launch(self, s: RoleShape) -> str:
        doc = engine_doc(self.engine)
        if self.engine == "sglang":
            body = "exec " + command_lines(list(doc.launcher), sglang_args(s, self.hf_id, self.served, self.npu))
        elif self.engine in ("vllm", "vllm-ascend"):
            body = self._vllm_body(s, list(doc.launcher) + [self.hf_id])
        elif self.engine == "trtllm":
            args = trtllm_args(s, self.served, self.max_len, f"{s.role}-llm-api.yaml")
            body = "exec " + command_lines([*doc.launcher, self.hf_id], args)
        else:  # MindIE reads its config.json from the install directory
            body = (
                f'cp mindie-{s.role}.json "${{MIES_INSTALL_PATH:-/usr/local/Ascend/mindie/latest/mindie-service}}'
                '/conf/config.json"\ncd "${MIES_INSTALL_PATH:-/usr/local/Ascend/mindie/latest/mindie-service}"\n'
                "exec ./bin/" + " ".join(doc.launcher)
            )
        return _script(self._header(s), body)

    def _vllm_body(self, s: RoleShape, launcher: list[str]) -> str:
        args = vllm_args(s, self.served, self.max_len, self.npu)
        if s.nodes == 1 or s.dp == 1:
            return "exec " + command_lines(launcher, args)
        follower = documented("vllm", [*args, ("--headless", None)])
        return (
            'if [ "${NODE_RANK:-0}" = 0 ]; then\n'
            f"exec {command_lines(launcher, args)}\nelse\nexec {command_lines(launcher, follower)}\nfi"
        )

    def _manifests(self) -> dict[str, str]:
        out = {}
        base = self.engine.removesuffix("-ascend")
        if self.hw.system.vendor == "nvidia" and base in DYNAMO_BACKENDS:
            manifest = dynamo_manifest(self.name, base, self.shapes, self.hf_id, self.served, self.max_len)
            out["dynamo.yaml"] = yaml.safe_dump(manifest, sort_keys=False)
        else:
            self.notes.append(f"no Dynamo manifest: Dynamo's worker images run on NVIDIA GPUs ({self.engine} here)")
        if self.hw.system.vendor in ("nvidia", "amd"):
            values = llmd_values(self.name, self.hf_id, self.shapes, self.served, self.max_len, self.hw.system.vendor)
            out["llm-d-values.yaml"] = yaml.safe_dump(values, sort_keys=False)
        else:
            self.notes.append("no llm-d values: llm-d's ModelService chart schedules NVIDIA or AMD GPUs")
        return out

    def _bench(self) -> str:
        rate = self.rate_req_s
        n = int(self.scenario["requests"])
        aiperf: Args = [
            ("--model", self.served),
            ("--tokenizer", self.hf_id),
            ("--url", "${URL:-http://localhost:8000}"),
            ("--endpoint-type", "chat"),
            ("--streaming", None),
            ("--synthetic-input-tokens-mean", str(self.input_len)),
            ("--synthetic-input-tokens-stddev", "0"),
            ("--output-tokens-mean", str(self.output_len)),
            ("--output-tokens-stddev", "0"),
            ("--extra-inputs", "ignore_eos:true"),
            ("--request-count", str(n)),
            ("--request-rate", f"{rate:.4g}"),
            ("--random-seed", str(self.scenario["seed"])),
        ]
        bench: Args = [
            ("--backend", "vllm"),
            ("--base-url", "${URL:-http://localhost:8000}"),
            ("--endpoint", "/v1/completions"),
            ("--model", self.served),
            ("--tokenizer", self.hf_id),
            ("--dataset-name", "random"),
            ("--random-input-len", str(self.input_len)),
            ("--random-output-len", str(self.output_len)),
            ("--random-range-ratio", "0"),
            ("--num-prompts", str(n)),
            ("--request-rate", f"{rate:.4g}"),
            ("--ignore-eos", None),
            ("--percentile-metrics", "ttft,tpot,itl,e2el"),
            ("--metric-percentiles", "50,90,99"),
            ("--save-result", None),
            ("--result-filename", "vllm-bench-result.json"),
            ("--seed", str(self.scenario["seed"])),
        ]
        aiperf_doc, bench_doc = engine_doc("aiperf"), engine_doc("vllm-bench")
        header = [
            f"Replays the planned workload ({self.input_len} in / {self.output_len} out tokens, Poisson at "
            f"{rate:.4g} req/s, {n} requests) against the deployment's frontend at $URL.",
            f"{self.summary}",
            f"AIPerf {aiperf_doc.version}: {aiperf_doc.source}",
            f"vllm bench serve {bench_doc.version}: {bench_doc.source}",
            "TOOL=aiperf (default) or TOOL=vllm. `cloudmatrix serve` answers the same requests for a dry run.",
        ]
        body = (
            'if [ "${TOOL:-aiperf}" = aiperf ]; then\n'
            f"exec {command_lines(list(aiperf_doc.launcher), documented('aiperf', aiperf))}\n"
            f"else\nexec {command_lines(list(bench_doc.launcher), documented('vllm-bench', bench))}\nfi"
        )
        return _script(header, body)

    def _plan_json(self) -> dict[str, Any]:
        doc = engine_doc(self.engine)
        return {
            "scenario": self.scenario,
            "engine": {"id": self.engine, "name": doc.name, "version": doc.version, "source": doc.source},
            "roles": [vars(s) for s in self.shapes],
            "predicted": self.summary,
            "notes": self.notes,
        }

    def _readme(self, names: list[str]) -> str:
        doc = engine_doc(self.engine)
        lines = [
            f"# {self.scenario['name']}",
            "",
            f"Written by `cloudmatrix plan --emit` for {self.scenario['model']} on {self.scenario['system']} "
            f"(stack `{self.scenario['stack']}`, engine {doc.name} {doc.version}).",
            "",
            self.summary,
            "",
            "| file | what |",
            "| --- | --- |",
        ]
        what = {
            "launch-prefill.sh": "prefill instance launch (one per instance; per node when it spans nodes)",
            "launch-decode.sh": "decode instance launch",
            "prefill-llm-api.yaml": "TensorRT-LLM LLM API options of the prefill servers",
            "decode-llm-api.yaml": "TensorRT-LLM LLM API options of the decode servers",
            "mindie-prefill.json": "MindIE Service config.json of a prefill node",
            "mindie-decode.json": "MindIE Service config.json of a decode node",
            "dynamo.yaml": f"Dynamo {engine_doc('dynamo').version} DynamoGraphDeployment (kubectl apply -f)",
            "llm-d-values.yaml": "llm-d ModelService Helm values (helm install ... llm-d-modelservice -f)",
            "bench.sh": "AIPerf / vllm bench serve replay of the planned workload",
            "plan.json": "the planned scenario, the engine's roles and the prediction",
            "README.md": "this file",
        }
        lines += [f"| `{n}` | {what.get(n, '')} |" for n in names]
        lines += ["", "Flags and keys come from these public docs (every one is in the catalog's engines.yaml):", ""]
        used = [self.engine, "dynamo", "llm-d", "aiperf", "vllm-bench"]
        lines += [f"- {engine_doc(e).name} {engine_doc(e).version}: {engine_doc(e).source}" for e in used]
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def emit_files(d: PlannedDeployment, w: PlanWorkload, request: PlanRequest) -> dict[str, str]:
    """The files of the planned deployment ``d`` by name (no directories: all sit in the one given)."""
    hw = load_overridden_hardware(request.system, request.hardware_overrides)
    summary = (
        f"Predicted by the twin: {d.output_tok_s_per_chip:,.1f} output tok/s per chip over {d.chips} chips at "
        f"{d.rate_req_s:,.2f} req/s; TTFT {d.ttft_s * 1e3:,.0f} ms, TPOT {d.tpot_s * 1e3:.1f} ms at the decode "
        f"batch cap (SLOs {request.ttft_slo_ms:g} / {request.tpot_slo_ms:g} ms)."
    )
    scenario = scenario_dict(d, w, request)
    return Emitter(scenario, hw, (w.input_len, w.output_len), d.rate_req_s, summary).files()
