"""Where a ``--model`` that is not a catalog id finds its config.json, and what precision its checkpoint is
stored in. Nothing is ever downloaded: a Hugging Face id (``ORG/NAME``) is looked up in the local hub cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) in the layout the hub client
writes, ``models--ORG--NAME/snapshots/REVISION/config.json``, the revision ``refs/main`` points at (or the
only snapshot there is). ``quantization_config`` names the weights' format (``checkpoint_format``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import path_exists, read_text

HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
MAX_REF_BYTES = 1024


def hub_cache() -> Path:
    """The hub cache directory the Hugging Face client uses, from the same environment variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def looks_like_hf_id(name: str) -> bool:
    return bool(HF_ID.match(name)) and ".." not in name


def cached_config(hf_id: str) -> Path | None:
    """The config.json of ``hf_id`` in the local hub cache, None if the cache does not hold the model."""
    repo = hub_cache() / f"models--{hf_id.replace('/', '--')}"
    if not path_exists(repo / "snapshots", "Hugging Face cache"):
        return None
    ref = repo / "refs" / "main"
    if path_exists(ref, "Hugging Face cache"):
        revision = read_text(ref, "Hugging Face cache ref", MAX_REF_BYTES).strip()
        if not re.fullmatch(r"[0-9a-fA-F]{7,64}", revision):
            raise ConfigError(f"{ref}: expected a commit hash, got {revision[:80]!r}")
        config = repo / "snapshots" / revision / "config.json"
        if path_exists(config, "Hugging Face cache"):
            return config
        raise ConfigError(f"{hf_id}: the cache's refs/main names snapshot {revision}, which has no config.json")
    snapshots = sorted(
        p for p in (repo / "snapshots").iterdir() if path_exists(p / "config.json", "Hugging Face cache")
    )
    if len(snapshots) == 1:
        return snapshots[0] / "config.json"
    if not snapshots:
        return None
    names = ", ".join(p.name for p in snapshots[:5])
    raise ConfigError(
        f"{hf_id}: the cache holds {len(snapshots)} snapshots ({names}) and no refs/main to choose one; "
        "give the snapshot's config.json path"
    )


def config_path(given: str) -> Path:
    """A path to a config.json, or to a model directory holding one."""
    path = Path(given)
    if path_exists(path, "model config") and path.is_dir():
        inside = path / "config.json"
        if not path_exists(inside, "model config"):
            raise ConfigError(f"{given}: a directory without a config.json (expected a model directory)")
        return inside
    return path


# quantization_config's methods, as the twin's weight precisions (None: a format the twin does not price)
_METHODS = {"fp8": "fp8", "fbgemm_fp8": "fp8", "mxfp4": "fp4", "modelopt": "fp4", "bitsandbytes": None}


def checkpoint_format(config: dict[str, Any]) -> str | None:
    """The weights' format a config's ``quantization_config`` declares (``fp8``, ``int8``, ``fp4``, ``int4``,
    ...), ``bf16`` for an unquantised bf16/fp16 checkpoint, None when the config does not say."""
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        dtype = config.get("torch_dtype") or config.get("dtype")
        return "bf16" if dtype in ("bfloat16", "float16") else None
    method = str(q.get("quant_method", "")).lower()
    algo = str(q.get("quant_algo", "")).upper()
    if method == "modelopt":
        return "fp4" if "FP4" in algo else "fp8" if "FP8" in algo else algo.lower() or None
    if method == "bitsandbytes":
        return "int8" if q.get("load_in_8bit") else "int4" if q.get("load_in_4bit") else None
    if method in ("gptq", "awq", "compressed-tensors", "w8a8", "quark"):
        bits = q.get("bits") or _compressed_bits(q)
        kind = _compressed_type(q)
        if bits in (4, 8):
            return f"{kind}{bits}"
        return None
    return _METHODS.get(method, method or None)


def _compressed_bits(q: dict[str, Any]) -> int | None:
    for group in (q.get("config_groups") or {}).values():
        weights = group.get("weights") if isinstance(group, dict) else None
        if isinstance(weights, dict) and isinstance(weights.get("num_bits"), int):
            return int(weights["num_bits"])
    return None


def _compressed_type(q: dict[str, Any]) -> str:
    for group in (q.get("config_groups") or {}).values():
        weights = group.get("weights") if isinstance(group, dict) else None
        if isinstance(weights, dict) and weights.get("type") == "float":
            return "fp"
    return "int"
