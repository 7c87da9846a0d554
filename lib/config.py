"""Every setting, read from the environment and validated in one place.

`Settings.from_env()` raises `ConfigError` naming the variable at fault; the README documents
each variable. Nothing else in `lib/` reads `os.environ`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lib.errors import ConfigError

PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions")
CLIENT_OPTION_NAMES = ("model", "system_prompt", "allowed_tools", "disallowed_tools",
                       "permission_mode", "max_turns", "thinking")
DEV_HASH_KEY = "dev-only-user-hash-key"
MIN_THINKING_BUDGET = 1024  # the Messages API's smallest budget_tokens
THINKING_HELP = f"adaptive, disabled, or a thinking budget of at least {MIN_THINKING_BUDGET} tokens"


def thinking_choice(value: object) -> str | None:
    """A valid thinking setting as text ("adaptive", "disabled" or a budget), else None."""
    if isinstance(value, bool):
        return None
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    if text in ("adaptive", "disabled"):
        return text
    return text if text.isdigit() and int(text) >= MIN_THINKING_BUDGET else None


def thinking_config(choice: str | None) -> dict[str, object] | None:
    """The SDK's ThinkingConfig for a setting; None leaves the CLI's default. Thinking text is
    asked for summarized: newer models omit it otherwise, and it is what the stream shows."""
    if choice is None:
        return None
    if choice == "disabled":
        return {"type": "disabled"}
    if choice == "adaptive":
        return {"type": "adaptive", "display": "summarized"}
    return {"type": "enabled", "budget_tokens": int(choice), "display": "summarized"}


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


@dataclass(frozen=True)
class AgentOptions:
    """What the operator lets the agent do; clients cannot change it."""

    model: str | None = None
    system_prompt: str | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    permission_mode: str = "default"
    max_turns: int = 8
    thinking: str | None = None  # see thinking_choice; None: the CLI's default

    def to_job(self) -> dict[str, object]:
        return {
            "model": self.model,
            "system_prompt": self.system_prompt,
            "allowed_tools": list(self.allowed_tools),
            "disallowed_tools": list(self.disallowed_tools),
            "permission_mode": self.permission_mode,
            "max_turns": self.max_turns,
            "thinking": thinking_config(self.thinking),
        }


@dataclass(frozen=True)
class Settings:
    redis_url: str
    redis_token: str = field(repr=False)
    auth_mode: str = "jwt"
    jwt_secret: str | None = field(default=None, repr=False)
    jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: int = 30
    user_hash_key: str = field(default=DEV_HASH_KEY, repr=False)
    key_prefix: str = "agent"
    redis_timeout: float = 5.0
    sandbox_backend: str = "local"
    sandbox_name_prefix: str = "agent-"
    data_dir: Path = Path(".data")
    local_sandbox_python: str | None = None
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    agent: AgentOptions = AgentOptions()
    agent_warm: bool = True
    agent_warm_idle: int = 300
    model_retries: int = 2  # the CLI's retries of a failed model request (CLAUDE_CODE_MAX_RETRIES)
    client_options: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API
    max_prompt_chars: int = 32_000
    max_body_bytes: int = 4_500_000  # what Vercel accepts
    turn_timeout: int = 240
    function_max_duration: int = 300
    transcript_store: str = "upstash"
    transcript_ttl: int = 30 * 24 * 3600
    transcript_max_request_bytes: int = 512 * 1024
    s3_bucket: str | None = None
    s3_prefix: str = "transcripts/"
    s3_region: str | None = None
    s3_endpoint_url: str | None = None
    rate_limit: tuple[int, int] | None = (20, 60)
    max_turns_per_day: int | None = None
    cron_secret: str | None = field(default=None, repr=False)
    idle_stop_after: int = 900
    session_ttl: int = 14 * 24 * 3600
    cleanup_batch: int = 200
    cleanup_time_budget: int = 120
    vercel_sandbox_api_url: str | None = None
    vercel_token: str | None = field(default=None, repr=False)
    vercel_team_id: str | None = None
    vercel_project_id: str | None = None
    sandbox_region: str = "iad1"
    sandbox_timeout: int = 1800
    sandbox_vcpus: int = 2
    sandbox_image: str | None = None
    sandbox_base_snapshot_id: str | None = None
    sandbox_agent_sdk: str = "claude-agent-sdk==0.2.189"
    sandbox_allowed_domains: tuple[str, ...] = ("pypi.org", "files.pythonhosted.org")

    @property
    def lock_ttl_ms(self) -> int:
        """The turn lock outlives the function by a minute, so a killed function's lock expires."""
        return (self.function_max_duration + 60) * 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        read = _Reader(env)
        redis_url = read.first("UPSTASH_REDIS_REST_URL", "KV_REST_API_URL")
        redis_token = read.first("UPSTASH_REDIS_REST_TOKEN", "KV_REST_API_TOKEN")
        auth_mode = read.choice("AUTH_MODE", ("jwt", "dev"), "jwt")
        if auth_mode == "dev" and env.get("VERCEL_ENV") in ("production", "preview"):
            raise ConfigError(
                "AUTH_MODE=dev trusts the X-User-Id header and is for local use only; "
                f"it is refused when VERCEL_ENV={env['VERCEL_ENV']}"
            )
        jwt_secret = read.text("AUTH_JWT_SECRET")
        jwks_url = read.text("AUTH_JWKS_URL")
        if auth_mode == "jwt" and not (jwt_secret or jwks_url):
            raise ConfigError(
                "AUTH_JWT_SECRET (HS256) or AUTH_JWKS_URL (RS256/ES256) is required when "
                "AUTH_MODE=jwt (the default)"
            )
        if jwt_secret is not None and len(jwt_secret) < 32:
            raise ConfigError("AUTH_JWT_SECRET must be at least 32 characters (HS256 key)")
        user_hash_key = read.text("USER_HASH_SECRET") or jwt_secret
        if user_hash_key is None:
            if auth_mode == "jwt":
                raise ConfigError("USER_HASH_SECRET is required when AUTH_JWT_SECRET is not set")
            user_hash_key = DEV_HASH_KEY
        if not (read.text("ANTHROPIC_API_KEY") or read.text("ANTHROPIC_BASE_URL")):
            raise ConfigError(
                "ANTHROPIC_API_KEY must be set (or ANTHROPIC_BASE_URL, for a compatible model server)"
            )
        settings = cls(
            redis_url=redis_url.rstrip("/"),
            redis_token=redis_token,
            auth_mode=auth_mode,
            jwt_secret=jwt_secret,
            jwks_url=jwks_url,
            jwt_audience=read.text("AUTH_JWT_AUDIENCE"),
            jwt_issuer=read.text("AUTH_JWT_ISSUER"),
            jwt_leeway=read.integer("AUTH_JWT_LEEWAY", 30, minimum=0),
            user_hash_key=user_hash_key,
            key_prefix=read.text("KEY_PREFIX") or "agent",
            redis_timeout=read.number("REDIS_TIMEOUT", 5.0, minimum=0.1),
            sandbox_backend=read.choice("SANDBOX_BACKEND", ("local", "vercel"), "local"),
            sandbox_name_prefix=read.text("SANDBOX_NAME_PREFIX") or "agent-",
            data_dir=Path(read.text("DATA_DIR") or ".data").absolute(),
            local_sandbox_python=read.text("LOCAL_SANDBOX_PYTHON"),
            anthropic_api_key=read.text("ANTHROPIC_API_KEY"),
            anthropic_base_url=read.text("ANTHROPIC_BASE_URL"),
            agent=AgentOptions(
                model=read.text("AGENT_MODEL"),
                system_prompt=read.text("AGENT_SYSTEM_PROMPT"),
                allowed_tools=read.names("AGENT_ALLOWED_TOOLS"),
                disallowed_tools=read.names("AGENT_DISALLOWED_TOOLS"),
                permission_mode=read.choice("AGENT_PERMISSION_MODE", PERMISSION_MODES, "default"),
                max_turns=read.integer("AGENT_MAX_TURNS", 8, minimum=1),
                thinking=read.thinking("AGENT_THINKING"),
            ),
            client_options=read.names("CLIENT_OPTIONS"),
            cors_origins=read.names("CORS_ORIGINS"),
            agent_warm=read.choice("AGENT_WARM", ("1", "0", "true", "false"), "1") in ("1", "true"),
            agent_warm_idle=read.integer("AGENT_WARM_IDLE", 300, minimum=5),
            model_retries=read.integer("AGENT_MODEL_RETRIES", 2, minimum=0),
            max_prompt_chars=read.integer("MAX_PROMPT_CHARS", 32_000, minimum=1),
            max_body_bytes=read.integer("MAX_BODY_BYTES", 4_500_000, minimum=1024),
            turn_timeout=read.integer("TURN_TIMEOUT", 240, minimum=5),
            function_max_duration=read.integer("FUNCTION_MAX_DURATION", 300, minimum=10),
            transcript_store=read.choice("TRANSCRIPT_STORE", ("upstash", "s3"), "upstash"),
            transcript_ttl=read.integer("TRANSCRIPT_TTL", 30 * 24 * 3600, minimum=60),
            transcript_max_request_bytes=read.integer(
                "TRANSCRIPT_MAX_REQUEST_BYTES", 512 * 1024, minimum=64 * 1024
            ),
            s3_bucket=read.text("TRANSCRIPT_S3_BUCKET"),
            s3_prefix=read.text("TRANSCRIPT_S3_PREFIX") or "transcripts/",
            s3_region=read.text("TRANSCRIPT_S3_REGION"),
            s3_endpoint_url=read.text("TRANSCRIPT_S3_ENDPOINT_URL"),
            rate_limit=read.rate("RATE_LIMIT", (20, 60)),
            max_turns_per_day=read.integer("MAX_TURNS_PER_DAY", 0, minimum=0) or None,
            cron_secret=read.text("CRON_SECRET"),
            idle_stop_after=read.integer("IDLE_STOP_AFTER", 900, minimum=60),
            session_ttl=read.integer("SESSION_TTL", 14 * 24 * 3600, minimum=120),
            cleanup_batch=read.integer("CLEANUP_BATCH", 200, minimum=1),
            cleanup_time_budget=read.integer("CLEANUP_TIME_BUDGET", 120, minimum=1),
            vercel_sandbox_api_url=read.text("VERCEL_SANDBOX_API_URL"),
            vercel_token=read.text("VERCEL_TOKEN"),
            vercel_team_id=read.text("VERCEL_TEAM_ID"),
            vercel_project_id=read.text("VERCEL_PROJECT_ID"),
            sandbox_region=read.text("SANDBOX_REGION") or "iad1",
            sandbox_timeout=read.integer("SANDBOX_TIMEOUT", 1800, minimum=60),
            sandbox_vcpus=read.integer("SANDBOX_VCPUS", 2, minimum=1),
            sandbox_image=read.text("SANDBOX_IMAGE"),
            sandbox_base_snapshot_id=read.text("SANDBOX_BASE_SNAPSHOT_ID"),
            sandbox_agent_sdk=read.text("SANDBOX_AGENT_SDK") or "claude-agent-sdk==0.2.189",
            sandbox_allowed_domains=read.names("SANDBOX_ALLOWED_DOMAINS")
            if "SANDBOX_ALLOWED_DOMAINS" in env else ("pypi.org", "files.pythonhosted.org"),
        )
        if settings.session_ttl <= settings.idle_stop_after:
            raise ConfigError("SESSION_TTL must be longer than IDLE_STOP_AFTER")
        if settings.transcript_ttl < settings.session_ttl:
            raise ConfigError(
                "TRANSCRIPT_TTL must be at least SESSION_TTL, or transcripts expire before sessions"
            )
        if settings.cleanup_time_budget >= settings.function_max_duration:
            raise ConfigError("CLEANUP_TIME_BUDGET must be below FUNCTION_MAX_DURATION")
        if settings.sandbox_timeout <= settings.turn_timeout:
            raise ConfigError("SANDBOX_TIMEOUT must be longer than TURN_TIMEOUT")
        if settings.transcript_store == "s3" and not settings.s3_bucket:
            raise ConfigError("TRANSCRIPT_S3_BUCKET is required when TRANSCRIPT_STORE=s3")
        for origin in settings.cors_origins:
            if not _ORIGIN.fullmatch(origin):
                raise ConfigError(f"CORS_ORIGINS: {origin!r} is not an origin (scheme://host"
                                  "[:port], no path; exact origins only, no wildcards)")
        unknown = sorted(set(settings.client_options) - set(CLIENT_OPTION_NAMES))
        if unknown:
            raise ConfigError(f"CLIENT_OPTIONS may list {', '.join(CLIENT_OPTION_NAMES)}; "
                              f"not {', '.join(unknown)}")
        if settings.turn_timeout >= settings.function_max_duration:
            raise ConfigError(
                f"TURN_TIMEOUT ({settings.turn_timeout}) must be below FUNCTION_MAX_DURATION "
                f"({settings.function_max_duration}) so a turn can save before the function is killed"
            )
        return settings


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def first(self, *names: str) -> str:
        for name in names:
            if value := self.text(name):
                return value
        raise ConfigError(f"{' or '.join(names)} must be set")

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.text(name) or default
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def thinking(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        if (choice := thinking_choice(raw)) is None:
            raise ConfigError(f"{name} must be {THINKING_HELP}; got {raw!r}")
        return choice

    def integer(self, name: str, default: int, minimum: int) -> int:
        return int(self._parsed(name, default, int, minimum))

    def number(self, name: str, default: float, minimum: float) -> float:
        return float(self._parsed(name, default, float, minimum))

    def _parsed(self, name: str, default: float, kind: type, minimum: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a {kind.__name__}; got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}; got {raw!r}")
        return value

    def rate(self, name: str, default: tuple[int, int]) -> tuple[int, int] | None:
        """`N/S`: N per S seconds; `off` disables."""
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() == "off":
            return None
        count, _, seconds = raw.partition("/")
        if not (count.isdigit() and seconds.isdigit() and int(count) > 0 and int(seconds) > 0):
            raise ConfigError(f"{name} must look like 20/60 (turns per seconds) or off; got {raw!r}")
        return int(count), int(seconds)

    def names(self, name: str) -> tuple[str, ...]:
        raw = self.text(name) or ""
        return tuple(part.strip() for part in raw.split(",") if part.strip())
