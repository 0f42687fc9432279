"""What one `serve` process is configured with: the model and the names it answers to, the access policy's
inputs (key, hosts, origins, open metrics), the body limit and the seed."""

from __future__ import annotations

from dataclasses import dataclass

from cloudmatrix.emulator.guard import LOCAL_HOSTS


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    model_id: str
    served_names: tuple[str, ...] = ()  # what requests may name the model (default: model_id)
    api_key: str | None = None
    allowed_hosts: frozenset[str] = frozenset(LOCAL_HOSTS)
    allowed_origins: frozenset[str] = frozenset()
    public_metrics: bool = False
    max_body_bytes: int = 4 * 1024 * 1024
    seed: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return self.served_names or (self.model_id,)
