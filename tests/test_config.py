from __future__ import annotations

import pytest

from lib.config import Settings
from lib.errors import ConfigError

BASE = {
    "UPSTASH_REDIS_REST_URL": "http://127.0.0.1:1",
    "UPSTASH_REDIS_REST_TOKEN": "t",
    "AUTH_JWT_SECRET": "x" * 32,
    "ANTHROPIC_API_KEY": "k",
}


def settings(**env: str) -> Settings:
    merged = {**BASE, **env}
    return Settings.from_env({k: v for k, v in merged.items() if v is not None})


def test_defaults_are_safe():
    s = settings()
    assert s.auth_mode == "jwt"
    assert s.agent.permission_mode == "default"
    assert s.lock_ttl_ms > s.function_max_duration * 1000
    assert "x" * 32 not in repr(s) and "redis_token" not in repr(s)  # secrets stay out of logs


def test_vercel_kv_names_are_accepted():
    s = Settings.from_env({"KV_REST_API_URL": "http://kv/", "KV_REST_API_TOKEN": "kt",
                           "AUTH_JWT_SECRET": "x" * 32, "ANTHROPIC_API_KEY": "k"})
    assert (s.redis_url, s.redis_token) == ("http://kv", "kt")


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"UPSTASH_REDIS_REST_URL": ""}, "UPSTASH_REDIS_REST_URL or KV_REST_API_URL"),
        ({"UPSTASH_REDIS_REST_TOKEN": ""}, "UPSTASH_REDIS_REST_TOKEN or KV_REST_API_TOKEN"),
        ({"AUTH_JWT_SECRET": ""}, "AUTH_JWT_SECRET"),
        ({"AUTH_JWT_SECRET": "short"}, "AUTH_JWT_SECRET"),
        ({"AUTH_MODE": "open"}, "AUTH_MODE"),
        ({"ANTHROPIC_API_KEY": ""}, "ANTHROPIC_API_KEY"),
        ({"TURN_TIMEOUT": "abc"}, "TURN_TIMEOUT"),
        ({"TURN_TIMEOUT": "400"}, "TURN_TIMEOUT"),
        ({"AGENT_PERMISSION_MODE": "yolo"}, "AGENT_PERMISSION_MODE"),
        ({"MAX_PROMPT_CHARS": "0"}, "MAX_PROMPT_CHARS"),
        ({"REDIS_TIMEOUT": "-1"}, "REDIS_TIMEOUT"),
        ({"RATE_LIMIT": "20 per minute"}, "RATE_LIMIT"),
        ({"RATE_LIMIT": "0/60"}, "RATE_LIMIT"),
        ({"SESSION_TTL": "600", "IDLE_STOP_AFTER": "900"}, "SESSION_TTL"),
        ({"SANDBOX_BACKEND": "docker"}, "SANDBOX_BACKEND"),
        ({"TRANSCRIPT_STORE": "s3"}, "TRANSCRIPT_S3_BUCKET"),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
        ({"CORS_ORIGINS": "https://app.example.com/path"}, "CORS_ORIGINS"),
    ],
)
def test_a_bad_setting_names_its_variable(env: dict[str, str], names: str):
    with pytest.raises(ConfigError, match=names):
        settings(**env)


@pytest.mark.parametrize("vercel_env", ["production", "preview"])
def test_dev_auth_is_refused_on_vercel(vercel_env: str):
    with pytest.raises(ConfigError, match="local use only"):
        settings(AUTH_MODE="dev", VERCEL_ENV=vercel_env)
    assert settings(AUTH_MODE="dev", VERCEL_ENV="development").auth_mode == "dev"


def test_agent_options_come_from_the_operator():
    s = settings(AGENT_ALLOWED_TOOLS="Read, Grep", AGENT_MAX_TURNS="3", AGENT_MODEL="m")
    assert s.agent.to_job()["allowed_tools"] == ["Read", "Grep"]
    assert s.agent.max_turns == 3 and s.agent.model == "m"


def test_thinking_is_the_operators_choice_and_asks_for_the_text():
    assert settings().agent.to_job()["thinking"] is None  # the CLI's own default
    assert settings(AGENT_THINKING="adaptive").agent.to_job()["thinking"] == {
        "type": "adaptive", "display": "summarized"}
    assert settings(AGENT_THINKING="disabled").agent.to_job()["thinking"] == {"type": "disabled"}
    assert settings(AGENT_THINKING="2048").agent.to_job()["thinking"] == {
        "type": "enabled", "budget_tokens": 2048, "display": "summarized"}
    for bad in ("on", "100", "-5"):
        with pytest.raises(ConfigError, match="AGENT_THINKING"):
            settings(AGENT_THINKING=bad)


def test_rate_limit_forms():
    assert settings().rate_limit == (20, 60)
    assert settings(RATE_LIMIT="5/10").rate_limit == (5, 10)
    assert settings(RATE_LIMIT="off").rate_limit is None
