"""The composition root: the one place that builds adapters from settings and wires the service.

Built once per process (clients are reused across requests; no user state is kept here).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from upstash_redis import Redis

from lib.chats import Chats
from lib.cleanup import Cleanup
from lib.config import Settings
from lib.errors import ConfigError
from lib.limits import TurnLimits
from lib.sandboxes import SandboxBackend
from lib.state import StateStore, connect
from lib.streamlog import StreamLog
from lib.transcripts import TranscriptStore
from lib.turns import TurnService


@dataclass(frozen=True)
class Services:
    settings: Settings
    state: StateStore
    streamlog: StreamLog
    turns: TurnService
    chats: Chats
    cleanup: Cleanup


def build(
    settings: Settings,
    sandboxes: SandboxBackend | None = None,
    clock: Callable[[], float] = time.time,
) -> Services:
    redis = connect(settings.redis_url, settings.redis_token, settings.redis_timeout)
    state = StateStore(redis, settings.key_prefix, settings.lock_ttl_ms)
    streamlog = StreamLog(redis, settings.key_prefix)
    if sandboxes is None:
        sandboxes = sandbox_backend(settings)
    transcripts = _transcripts(settings, redis)
    return Services(
        settings,
        state,
        streamlog,
        TurnService(settings, state, sandboxes, transcripts,
                    TurnLimits(settings.key_prefix, settings.rate_limit,
                               settings.max_turns_per_day), streamlog, clock),
        Chats(settings, state, transcripts, clock),
        Cleanup(settings, state, sandboxes, transcripts, clock),
    )


def sandbox_backend(settings: Settings) -> SandboxBackend:
    if settings.sandbox_backend == "vercel":
        from lib.sandboxes.vercel import VercelSandboxBackend, VercelSandboxConfig

        return VercelSandboxBackend(VercelSandboxConfig(
            api_url=settings.vercel_sandbox_api_url,
            token=settings.vercel_token,
            team_id=settings.vercel_team_id,
            project_id=settings.vercel_project_id,
            region=settings.sandbox_region,
            timeout=settings.sandbox_timeout,
            turn_timeout=settings.turn_timeout,
            vcpus=settings.sandbox_vcpus,
            image=settings.sandbox_image,
            base_snapshot_id=settings.sandbox_base_snapshot_id,
            agent_sdk=settings.sandbox_agent_sdk,
            allowed_domains=settings.sandbox_allowed_domains,
            app_tag=settings.key_prefix,
            name_prefix=settings.sandbox_name_prefix,
            anthropic_api_key=settings.anthropic_api_key,
            anthropic_base_url=settings.anthropic_base_url,
        ))
    from lib.sandboxes.local import LocalSandboxBackend

    python = settings.local_sandbox_python
    if python and not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise ConfigError(f"LOCAL_SANDBOX_PYTHON={python!r} is not an executable file: point it "
                          "at a Python with claude-agent-sdk (e.g. the absolute path of "
                          ".venv/bin/python)")
    return LocalSandboxBackend(settings.data_dir, python)


def _transcripts(settings: Settings, redis: Redis) -> TranscriptStore:
    if settings.transcript_store == "s3":
        try:
            import boto3
        except ImportError:
            raise ConfigError("TRANSCRIPT_STORE=s3 needs boto3: add it to requirements.txt") from None
        from lib.transcripts.s3 import S3Transcripts

        client = boto3.client("s3", region_name=settings.s3_region,
                              endpoint_url=settings.s3_endpoint_url)
        return S3Transcripts(client, settings.s3_bucket or "", settings.s3_prefix)
    from lib.transcripts.upstash import UpstashTranscripts

    return UpstashTranscripts(redis, settings.key_prefix, settings.transcript_ttl,
                              settings.transcript_max_request_bytes)


@lru_cache(maxsize=1)
def services() -> Services:
    """The process-wide services, built from the environment on first use."""
    return build(Settings.from_env())
