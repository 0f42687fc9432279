"""Engine arguments for one role of a planned deployment, from the engines' documented flags
(``catalog/data/engines.yaml``): SGLang and vLLM (also vLLM Ascend) server flags, TensorRT-LLM's
``trtllm-serve`` flags with its LLM API options, and MindIE Service's config.json. A flag or key missing
from the catalog's list is a bug in the emitter, never written."""

from __future__ import annotations

import json
from typing import Any

from cloudmatrix.catalog.engines import engine_doc
from cloudmatrix.planner.emit_shape import RoleShape

NODE_RANK, LEADER = "${NODE_RANK:-0}", "${LEADER_ADDR:-127.0.0.1}"  # set per node by the launcher
PORT = 8000
Args = list[tuple[str, str | None]]  # (flag, value or None for a switch)


def documented(engine: str, args: Args, extra: tuple[str, ...] = ()) -> Args:
    """``args`` once every flag is checked against the engine's documented list."""
    known = set(engine_doc(engine).flags) | set(extra)
    unknown = [flag for flag, _ in args if flag not in known]
    if unknown:
        raise AssertionError(f"{engine}: flags not in the engines catalog: {unknown}")
    return args


def _spec_sglang(s: RoleShape, eagle_draft: str | None) -> Args:
    if not s.mtp:
        return []
    algorithm = "EAGLE3" if s.speculation == "eagle3" else "NEXTN"
    args: Args = [
        ("--speculative-algorithm", algorithm),
        ("--speculative-num-steps", str(s.mtp)),
        ("--speculative-eagle-topk", "1"),
        ("--speculative-num-draft-tokens", str(s.mtp + 1)),
    ]
    if eagle_draft:
        args.append(("--speculative-draft-model-path", eagle_draft))
    return args


def sglang_args(s: RoleShape, model: str, served: str, npu: bool, eagle_draft: str | None = None) -> Args:
    """``python3 -m sglang.launch_server`` for one instance (its node given by NODE_RANK)."""
    args: Args = [("--model-path", model), ("--served-model-name", served), ("--trust-remote-code", None)]
    args += [("--host", "0.0.0.0"), ("--port", str(PORT)), ("--tp-size", str(s.ranks))]
    if s.dp > 1:
        args += [("--dp-size", str(s.dp)), ("--enable-dp-attention", None)]
    if s.moe and s.ep and s.ep > 1:
        args.append(("--ep-size", str(s.ep)))
        if not npu:
            args.append(("--moe-a2a-backend", "deepep"))
        if s.eplb:
            args.append(("--enable-eplb", None))
    if s.microbatch:
        args.append(("--enable-two-batch-overlap", None))
    if s.nodes > 1:
        args += [("--nnodes", str(s.nodes)), ("--node-rank", NODE_RANK), ("--dist-init-addr", f"{LEADER}:5757")]
    args += [("--disaggregation-mode", s.role), ("--disaggregation-transfer-backend", "ascend" if npu else "mooncake")]
    if s.role == "prefill":
        args.append(("--chunked-prefill-size", str(s.tokens_per_batch)))
    else:
        args.append(("--max-running-requests", str(s.batch_per_instance)))
        if not npu:
            args.append(("--cuda-graph-max-bs", str(s.batch_per_rank)))
    args += _spec_sglang(s, eagle_draft)
    if npu:
        args += [("--device", "npu"), ("--attention-backend", "ascend")]
    return documented("sglang", args)


def _kv_transfer(s: RoleShape, npu: bool) -> str:
    if npu:  # vLLM Ascend's PD tutorial: LLMDataDist through its connector module
        config = {
            "kv_connector": "LLMDataDistCMgrConnector",
            "kv_role": "kv_producer" if s.role == "prefill" else "kv_consumer",
            "kv_connector_module_path": "vllm_ascend.distributed.llmdatadist_c_mgr_connector",
        }
    else:  # vLLM's NixlConnector: both roles run kv_both
        config = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    return json.dumps(config, separators=(",", ":"))


def vllm_args(s: RoleShape, served: str, max_len: int, npu: bool, eagle_draft: str | None = None) -> Args:
    """``vllm serve MODEL`` arguments for the leader node of one instance (the others add --headless)."""
    args: Args = [("--served-model-name", served), ("--trust-remote-code", None)]
    args += [("--host", "0.0.0.0"), ("--port", str(PORT)), ("--tensor-parallel-size", str(s.tp))]
    if s.dp > 1:
        local = max(s.ranks_per_node // s.tp, 1)
        args += [("--data-parallel-size", str(s.dp)), ("--data-parallel-size-local", str(local))]
        if s.nodes > 1:
            args += [
                ("--data-parallel-address", LEADER),
                ("--data-parallel-rpc-port", "13345"),
                ("--data-parallel-start-rank", f"$(( ${{NODE_RANK:-0}} * {local} ))"),
            ]
    if s.moe and s.ep and s.ep > 1:
        args.append(("--enable-expert-parallel", None))
        if s.eplb:
            args.append(("--enable-eplb", None))
    if s.microbatch and not npu:
        args.append(("--enable-dbo", None))
    args += [("--max-model-len", str(max_len)), ("--kv-transfer-config", _kv_transfer(s, npu))]
    if s.role == "prefill":
        args.append(("--max-num-batched-tokens", str(max(s.tokens_per_batch // s.dp, 1))))
    else:
        args.append(("--max-num-seqs", str(s.batch_per_rank)))
    if s.mtp:
        method = "eagle3" if s.speculation == "eagle3" else "deepseek_mtp"
        spec: dict[str, Any] = {"method": method, "num_speculative_tokens": s.mtp}
        if eagle_draft:
            spec["model"] = eagle_draft
        args.append(("--speculative-config", json.dumps(spec, separators=(",", ":"))))
    return documented("vllm-ascend" if npu else "vllm", args)


def trtllm_args(s: RoleShape, served_model: str, max_len: int, options_file: str) -> Args:
    """``trtllm-serve MODEL`` for one instance (multi-node under mpirun / trtllm-llmapi-launch)."""
    args: Args = [("--host", "0.0.0.0"), ("--port", str(PORT)), ("--backend", "pytorch")]
    args += [("--tp_size", str(s.ranks)), ("--pp_size", "1")]
    if s.moe and s.ep:
        args.append(("--ep_size", str(s.ep)))
    batch = s.batch_per_rank if s.role == "decode" else max(s.tokens_per_batch // (s.dp * max_len), 1)
    tokens = s.tokens_per_batch // s.dp if s.role == "prefill" else s.batch_per_rank * (1 + s.mtp)
    args += [("--max_batch_size", str(batch)), ("--max_num_tokens", str(max(tokens, 1)))]
    args += [("--max_seq_len", str(max_len)), ("--trust_remote_code", None)]
    args.append(("--extra_llm_api_options", options_file))
    return documented("trtllm", args)


def trtllm_options(s: RoleShape, eagle_draft: str | None = None) -> dict[str, Any]:
    """The LLM API options YAML of one role (keys as TensorRT-LLM's LlmArgs names them)."""
    options: dict[str, Any] = {
        "enable_attention_dp": s.dp > 1 and s.moe,
        "cache_transceiver_config": {"backend": "DEFAULT"},
    }
    if s.role == "prefill":
        options["disable_overlap_scheduler"] = True  # the context servers of TensorRT-LLM's disaggregated recipe
    else:
        options["cuda_graph_config"] = {"enable_padding": True, "max_batch_size": s.batch_per_rank}
    if s.mtp and s.speculation == "eagle3":
        options["speculative_config"] = {
            "decoding_type": "Eagle",
            "max_draft_len": s.mtp,
            "speculative_model_dir": eagle_draft or "EAGLE3_DRAFT_DIR",
            "eagle3_one_model": True,
        }
    elif s.mtp:
        options["speculative_config"] = {"decoding_type": "MTP", "num_nextn_predict_layers": s.mtp}
    return options


def mindie_config(s: RoleShape, served: str, weights: str, input_len: int, output_len: int) -> dict[str, Any]:
    """MindIE Service's config.json for one node of one instance (the keys its docs list)."""
    return {
        "Version": "1.0.0",
        "ServerConfig": {"ipAddress": "127.0.0.1", "port": PORT, "httpsEnabled": False},
        "BackendConfig": {
            "backendName": "mindieservice_llm_engine",
            "modelInstanceNumber": 1,
            "npuDeviceIds": [list(range(s.ranks_per_node))],
            "multiNodesInferEnabled": s.nodes > 1,
            "ModelDeployConfig": {
                "maxSeqLen": input_len + output_len,
                "maxInputTokenLen": input_len,
                "truncation": False,
                "ModelConfig": [
                    {
                        "modelInstanceType": "Standard",
                        "modelName": served,
                        "modelWeightPath": weights,
                        "worldSize": s.ranks_per_node,
                        "backendType": "atb",
                        "trustRemoteCode": False,
                    }
                ],
            },
            "ScheduleConfig": {
                "templateType": "Standard",
                "cacheBlockSize": 128,
                "maxPrefillBatchSize": max(s.tokens_per_batch // input_len, 1) if s.role == "prefill" else 1,
                "maxPrefillTokens": max(s.tokens_per_batch, input_len),
                "maxBatchSize": s.batch_per_instance if s.role == "decode" else 1,
                "maxIterTimes": output_len,
            },
        },
    }


def dotted_keys(data: Any, prefix: str = "") -> list[str]:
    """Every key of nested mappings as a dotted path (list items under their parent's path)."""
    keys = []
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            keys.append(path)
            keys += dotted_keys(value, path)
    elif isinstance(data, list):
        for item in data:
            keys += dotted_keys(item, prefix)
    return keys


def check_keys(engine: str, data: Any, skip: tuple[str, ...] = (), prefix: str = "") -> Any:
    """``data`` once every dotted key (under ``prefix``; outside the ``skip`` subtrees: resource names) is
    in the engine's documented list."""
    known = set(engine_doc(engine).keys)
    leaves = [k for k in dotted_keys(data, prefix) if not (skip and k.startswith(skip))]
    unknown = [k for k in leaves if k not in known and not any(other.startswith(k + ".") for other in known)]
    if unknown:
        raise AssertionError(f"{engine}: keys not in the engines catalog: {unknown}")
    return data
