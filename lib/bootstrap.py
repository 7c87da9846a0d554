"""The composition root: the one place that builds adapters from settings and wires the service.

Built once per process (clients are reused across requests; no user state is kept here).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from lib.config import Settings
from lib.sandboxes import SandboxBackend
from lib.state import StateStore, connect
from lib.turns import TurnService


@dataclass(frozen=True)
class Services:
    settings: Settings
    state: StateStore
    turns: TurnService


def build(settings: Settings, sandboxes: SandboxBackend | None = None) -> Services:
    redis = connect(settings.redis_url, settings.redis_token, settings.redis_timeout)
    state = StateStore(redis, settings.key_prefix, settings.lock_ttl_ms)
    if sandboxes is None:
        from lib.sandboxes.local import LocalSandboxBackend

        sandboxes = LocalSandboxBackend(settings.data_dir)
    return Services(settings, state, TurnService(settings, state, sandboxes))


@lru_cache(maxsize=1)
def services() -> Services:
    """The process-wide services, built from the environment on first use."""
    return build(Settings.from_env())
