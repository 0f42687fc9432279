"""Kubernetes manifests for a planned deployment: a Dynamo ``DynamoGraphDeployment`` (frontend, prefill and
decode workers of the plan's engine) and llm-d ModelService Helm values (vLLM prefill and decode pods),
each key checked against the engines catalog's documented schema keys."""

from __future__ import annotations

from typing import Any

from cloudmatrix.catalog.engines import engine_doc
from cloudmatrix.planner.emit_engines import Args, check_keys, documented, sglang_args, vllm_args
from cloudmatrix.planner.emit_shape import RoleShape

DYNAMO_BACKENDS = {"sglang", "vllm", "trtllm"}  # the engines Dynamo has worker images for
MULTINODE_FLAGS = {"--host", "--port", "--nnodes", "--node-rank", "--dist-init-addr"}  # set by the operator
LLMD_SET_BY_CHART = {  # the chart's vllmServe command passes the model, port and parallel sizes itself
    "--host", "--port", "--served-model-name", "--tensor-parallel-size", "--data-parallel-size",
    "--data-parallel-size-local", "--data-parallel-address", "--data-parallel-rpc-port", "--data-parallel-start-rank",
}  # fmt: skip


def flat(args: Args, drop: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Arguments as a container's ``args`` list, without the flags in ``drop``."""
    out = []
    for flag, value in args:
        if flag in drop:
            continue
        out.append(flag)
        if value is not None:
            out.append(value)
    return out


def _dynamo_worker_args(engine: str, s: RoleShape, model: str, served: str, max_len: int) -> tuple[str, list[str]]:
    """The worker module and its arguments: SGLang's and vLLM's own flags, TensorRT-LLM's wrapper flags."""
    if engine == "sglang":
        return "dynamo.sglang", flat(sglang_args(s, model, served, npu=False), MULTINODE_FLAGS)
    if engine == "vllm":
        args = documented("vllm", [("--model", model)]) + vllm_args(s, served, max_len, False)
        if s.role == "prefill":
            args.append(("--is-prefill-worker", None))
        return "dynamo.vllm", flat(args, MULTINODE_FLAGS | {"--data-parallel-address", "--data-parallel-start-rank"})
    wrapper: Args = [
        ("--model-path", model),
        ("--served-model-name", served),
        ("--tensor-parallel-size", str(s.ranks)),
        ("--expert-parallel-size", str(s.ep or 1)),
        ("--extra-engine-args", f"/config/{s.role}-llm-api.yaml"),
        ("--disaggregation-mode", s.role),
    ]
    return "dynamo.trtllm", flat(documented("dynamo", wrapper))


def dynamo_manifest(
    name: str, engine: str, shapes: list[RoleShape], model: str, served: str, max_len: int
) -> dict[str, Any]:
    """A ``DynamoGraphDeployment``: one frontend and a worker service per role, replicas = instances."""
    image = f"nvcr.io/nvidia/ai-dynamo/{'tensorrtllm' if engine == 'trtllm' else engine}-runtime:"
    image += engine_doc("dynamo").version
    services: dict[str, Any] = {
        "Frontend": {
            "dynamoNamespace": name,
            "componentType": "frontend",
            "replicas": 1,
            "extraPodSpec": {
                "mainContainer": {
                    "image": image,
                    "command": ["python3", "-m", "dynamo.frontend"],
                    "args": flat(documented("dynamo", [("--http-port", "8000")])),
                }
            },
        }
    }
    for s in shapes:
        module, args = _dynamo_worker_args(engine, s, model, served, max_len)
        service: dict[str, Any] = {
            "dynamoNamespace": name,
            "componentType": "worker",
            "subComponentType": s.role,
            "replicas": s.instances,
            "resources": {"limits": {"gpu": str(s.ranks_per_node)}},
            "extraPodSpec": {"mainContainer": {"image": image, "command": ["python3", "-m", module], "args": args}},
        }
        if s.nodes > 1:
            service["multinode"] = {"nodeCount": s.nodes}
        services[f"{s.role.capitalize()}Worker"] = service
    manifest = {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": name},
        "spec": {"services": services},
    }
    check_keys("dynamo", {k: v for k, v in manifest.items() if k != "spec"})
    for service in services.values():
        check_keys("dynamo", service, prefix="spec.services")
    return manifest


def llmd_values(
    name: str, hf_id: str, shapes: list[RoleShape], served: str, max_len: int, vendor: str
) -> dict[str, Any]:
    """llm-d ModelService Helm values: vLLM pods for prefill and decode with their parallel sizes."""
    gpu = "amd.com/gpu" if vendor == "amd" else "nvidia.com/gpu"
    values: dict[str, Any] = {
        "multinode": any(s.nodes > 1 for s in shapes),
        "modelArtifacts": {"uri": f"hf://{hf_id}", "name": served},
        "routing": {"servicePort": 8000, "proxy": {"enabled": True, "targetPort": 8200}},
        "accelerator": {"type": vendor},
    }
    for s in shapes:
        args = flat(vllm_args(s, served, max_len, npu=False), LLMD_SET_BY_CHART)
        values[s.role] = {
            "create": True,
            "replicas": s.instances,
            "parallelism": {"tensor": s.tp, "data": s.dp, "dataLocal": max(s.ranks_per_node // s.tp, 1)},
            "containers": [
                {
                    "name": "vllm",
                    "image": f"vllm/vllm-openai:v{engine_doc('vllm').version}",
                    "modelCommand": "vllmServe",
                    "args": args,
                    "resources": {"limits": {gpu: s.ranks_per_node}},
                }
            ],
        }
    limits = tuple(f"{role}.containers.resources.limits." for role in ("prefill", "decode"))
    return check_keys("llm-d", values, skip=limits)
