"""A whole deployment in-process: the real endpoints and state (through the Upstash stand-in),
with a hand-written fake of the sandbox port and a clock the test moves."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.test import Client

from api import chat, chats, health, session, session_messages
from api.cron import cleanup
from lib.auth import user_hash
from lib.bootstrap import Services, build
from lib.state import DEFAULT_CHAT
from tests.conftest import Upstash, make_settings
from tests.fakes import FakeSandboxBackend, Script, line, mirror, ok_result

ALICE = {"X-User-Id": "alice"}
JSON = {**ALICE, "Content-Type": "application/json"}
SSE = {**JSON, "Accept": "text/event-stream"}
CRON_SECRET = "cron-secret-for-tests-0123456789"


def user(name: str) -> dict[str, str]:
    """Headers naming a caller in AUTH_MODE=dev."""
    return {"X-User-Id": name}


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class World:
    def __init__(self, services: Services, sandboxes: FakeSandboxBackend) -> None:
        self.services = services
        self.sandboxes = sandboxes
        self.apps: list[Flask] = [chat.app, session.app, health.app, session_messages.app,
                                  chats.app, cleanup.app]
        for app in self.apps:
            app.config["SERVICES"] = services

    def client(self, app: Flask = chat.app) -> Client:
        return app.test_client()

    def turn(self, prompt: str = "hello", headers: dict | None = None):
        return self.client().post("/api/chat", json={"prompt": prompt}, headers=headers or ALICE)

    def user(self, user_id: str = "alice") -> str:
        return user_hash(user_id, self.services.settings)

    def stored(self, user_id: str = "alice", chat: str = DEFAULT_CHAT):
        """The chat's record (None before its first turn)."""
        return self.services.state.read_chat(self.user(user_id), chat)

    def user_record(self, user_id: str = "alice"):
        return self.services.state.read_user(self.user(user_id))[0]

    def lock(self, user_id: str = "alice", chat: str | None = DEFAULT_CHAT):
        """Who holds the chat's turn lock (chat None: the user lock)."""
        return self.services.state.lock_holder(self.user(user_id), chat)

    def transcript(self, session_id: str = "sess-1", user_id: str = "alice"):
        return self.services.turns.transcripts.load(
            {"project_key": self.user(user_id), "session_id": session_id})

    def cron(self, secret: str | None = CRON_SECRET):
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return self.client(cleanup.app).get("/api/cron/cleanup", headers=headers)


def fake_agent() -> FakeSandboxBackend:
    """A sandbox backend whose runner resumes the session it is given, or starts a new one."""
    new_ids = (f"sess-{n}" for n in itertools.count(1))

    def agent(job: dict) -> Script:
        session_id = job["resume"] or next(new_ids)
        return Script([line("session", session_id=session_id), line("text", text="hi "),
                       mirror(session_id, job["prompt"], "hi there"),
                       line("text", text="there"), ok_result(session_id, "hi there")])

    return FakeSandboxBackend(respond=agent)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(upstash_fakeredis: Upstash, tmp_path: Path, clock: Clock) -> Iterator[World]:
    sandboxes = fake_agent()
    settings = make_settings(upstash_fakeredis, tmp_path, anthropic_api_key="sk-test-secret",
                             cron_secret=CRON_SECRET)
    w = World(build(settings, sandboxes=sandboxes, clock=clock), sandboxes)
    yield w
    for app in w.apps:
        app.config["SERVICES"] = None
