"""The Vercel Sandbox backend through the real vercel-sandbox SDK, against a fake of the Sandbox
HTTP API that runs commands for real and is as strict as the real one (tests/fake_vercel_sandbox.py:
400 on a name clash, pending creates, non-recursive mkdir, session time limits, 410/422 while
stopped/stopping, 429, streams that close, expiring snapshots, sandbox paths that are not host
paths). Turns run the real runner, SDK and CLI (the fake machine's `python3` is this venv's; its
`pip install` is simulated and logged) against the offline model.

Every Sandbox API call is a round trip over the internet (60-300 ms): a warm turn makes ONE."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lib.bootstrap import build
from lib.devtools.serving import serve_in_background
from lib.devtools.smoke_vercel import scan_for_key, smoke
from lib.sandboxes.local import stop_warm_agents
from lib.sandboxes.vercel import PLACEHOLDER_KEY
from tests.conftest import Upstash, make_settings
from tests.fake_vercel_sandbox import FakeSandboxApi
from tests.world import CRON_SECRET, World, user

pytestmark = pytest.mark.slow
SECRET_KEY = "sk-ant-this-key-must-never-reach-the-sandbox"

PYTHON_SHIM = """#!/bin/sh
# The fake sandbox machine's python3: pip installs are logged (and fail on demand), the rest
# runs this test venv's interpreter, which has claude-agent-sdk.
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "$*" >> "$FAKE_INSTALL_LOG"
  if [ -e "$FAKE_FAIL_FLAG" ]; then echo "ERROR: Could not reach the package index" >&2; exit 1; fi
  exit 0
fi
exec {python} "$@"
"""


@dataclass
class VercelWorld:
    world: World
    fake: FakeSandboxApi
    machine: Path

    def installs(self) -> int:
        log = self.machine / "installs.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def box(self, user_id: str = "alice"):
        return self.fake.boxes[self.world.user_record(user_id).sandbox_name]

    def turn_counted(self, prompt: str, headers: dict | None = None):
        """A turn, and the Sandbox API requests it made."""
        before = len(self.fake.requests)
        response = self.world.turn(prompt, headers)
        return response, self.fake.requests[before:]

    def fail_installs(self, fail: bool) -> None:
        flag = self.machine / "fail-install"
        flag.touch() if fail else flag.unlink(missing_ok=True)


@pytest.fixture
def vercel(upstash_fakeredis: Upstash, model, tmp_path: Path, clock) -> Iterator[VercelWorld]:
    machine = tmp_path / "machine"
    (machine / "bin").mkdir(parents=True)
    shim = machine / "bin" / "python3"
    shim.write_text(PYTHON_SHIM.format(python=sys.executable))
    shim.chmod(0o755)
    fake = FakeSandboxApi(tmp_path / "sandboxes", env={
        "PATH": f"{machine / 'bin'}:{os.environ['PATH']}",
        "FAKE_INSTALL_LOG": str(machine / "installs.log"),
        "FAKE_FAIL_FLAG": str(machine / "fail-install"),
    })
    server = serve_in_background(fake)
    settings = make_settings(
        upstash_fakeredis, tmp_path, sandbox_backend="vercel",
        vercel_sandbox_api_url=f"{server.url}/api", vercel_token="vercel-token",
        vercel_team_id="team_test", vercel_project_id="prj_test",
        anthropic_base_url=model[1].url, anthropic_api_key=SECRET_KEY, cron_secret=CRON_SECRET,
    )
    services = build(settings, clock=clock)
    world = World(services, services.turns.sandboxes)
    yield VercelWorld(world, fake, machine)
    for app in world.apps:
        app.config["SERVICES"] = None
    for box in list(fake.boxes.values()):
        fake._halt(box)
    server.stop()
    stop_warm_agents(tmp_path)


def texts_seen(model, prompt: str) -> list[str]:
    from lib.devtools.model_server import user_texts

    return [t for body in model[0].requests if (t := user_texts(body)) and t[-1] == prompt][-1]


def commands(requests: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(m, p) for m, p in requests if p.endswith("/cmd")]


def test_a_warm_turn_is_one_api_request(vercel: VercelWorld, model):
    first, made = vercel.turn_counted("Remember 7.")
    assert first.status_code == 200, first.json
    assert vercel.installs() == 1
    created = vercel.box().request
    assert created["persistent"] is True and created["region"] == "iad1"
    assert created["tags"]["app"] == vercel.world.services.settings.key_prefix
    assert created["tags"]["user"] == vercel.world.user()
    assert [m for m, p in made if p.endswith("/v3/sandboxes")] == ["POST"]
    assert not [p for _, p in vercel.fake.requests if p.endswith("/fs/mkdir")]  # never: not -p
    second, made = vercel.turn_counted("What number?")
    assert second.status_code == 200 and second.json["turn"] == 2
    assert second.json["session_id"] == first.json["session_id"]
    assert made == [("POST", f"/api/v2/sandboxes/sessions/{vercel.box().session_id}/cmd")]
    assert "--job" in vercel.fake.commands_run[-1]["args"]  # the job travels in the command
    assert vercel.installs() == 1
    assert texts_seen(model, "What number?") == ["Remember 7.", "What number?"]


def test_paths_come_from_the_api_not_the_host(vercel: VercelWorld):
    assert vercel.world.turn("hello").status_code == 200
    host = str(vercel.fake.base_dir)
    for body in vercel.fake.commands_run:
        assert host not in json.dumps(body)
        assert body["cwd"] == "/vercel/sandbox"
        assert not body.get("sudo")  # the image's user (ubuntu, vercel-sandbox) is not root
    hint = vercel.world.user_record().sandbox_hint
    assert hint and "/vercel/sandbox" in hint and host not in hint


def test_the_model_key_never_enters_the_sandbox(vercel: VercelWorld):
    assert vercel.world.turn("hello").status_code == 200
    box = vercel.box()
    assert json.dumps(box.request["networkPolicy"]).count(SECRET_KEY) == 1  # a header transform
    for command in vercel.fake.commands_run:
        assert SECRET_KEY not in json.dumps(command)
    runner_env = vercel.fake.commands_run[-1]["env"]
    assert runner_env["ANTHROPIC_API_KEY"] == PLACEHOLDER_KEY
    assert runner_env["AGENT_TRUST_SYSTEM_CA"] == "1"  # the firewall's CA, for the CLI
    for path in box.root.rglob("*"):
        if path.is_file():
            assert SECRET_KEY.encode() not in path.read_bytes(), path
    assert SECRET_KEY not in vercel.world.user_record().sandbox_hint


def test_a_rotated_key_updates_the_network_policy(vercel: VercelWorld):
    assert vercel.world.turn("hello").status_code == 200
    rotated = "sk-ant-the-rotated-key"
    settings = dataclasses.replace(vercel.world.services.settings, anthropic_api_key=rotated)
    vercel.world.__init__(build(settings, clock=vercel.world.services.turns.clock),
                          vercel.world.sandboxes)
    again, made = vercel.turn_counted("still there?")
    assert again.status_code == 200 and again.json["turn"] == 2, again.json
    assert ("PATCH", f"/api/v2/sandboxes/{vercel.box().name}") in made
    assert rotated in json.dumps(vercel.box().network_policy)
    assert SECRET_KEY not in json.dumps(vercel.box().network_policy)
    _, made = vercel.turn_counted("and now?")
    assert len(made) == 1  # the new fingerprint is remembered


def test_a_stopped_sandbox_resumes_with_its_files(vercel: VercelWorld, model):
    vercel.world.turn("The code is owl.")
    vercel.fake.stop_sandbox(vercel.box().name)
    assert vercel.world.services.turns.describe("alice").sandbox_status == "stopped"
    again, made = vercel.turn_counted("Which code?")
    assert again.status_code == 200 and again.json["turn"] == 2
    assert len(commands(made)) == 2  # 410 on the remembered session, then on the resumed one
    assert vercel.installs() == 1
    assert texts_seen(model, "Which code?") == ["The code is owl.", "Which code?"]
    _, made = vercel.turn_counted("Once more.")
    assert len(made) == 1


def test_a_turn_racing_the_cron_waits_for_the_stop_then_resumes(vercel: VercelWorld):
    vercel.world.turn("hello")
    vercel.fake.begin_stop(vercel.box().name, delay=1.0)  # 422 sandbox_stopping for a second
    again = vercel.world.turn("are you there?")
    assert again.status_code == 200 and again.json["turn"] == 2, again.json
    assert vercel.box().status == "running"


@pytest.mark.parametrize("lose", [
    pytest.param(FakeSandboxApi.expire_session, id="session past its time limit: resumed"),
    pytest.param(FakeSandboxApi.lose_snapshot, id="snapshot gone: recreated and restored"),
])
def test_the_conversation_outlives_the_session(vercel: VercelWorld, model, lose):
    vercel.world.turn("Remember pear.")
    lose(vercel.fake, vercel.box().name)
    again = vercel.world.turn("Which fruit?")
    assert again.status_code == 200 and again.json["turn"] == 2, again.json
    assert texts_seen(model, "Which fruit?") == ["Remember pear.", "Which fruit?"]


def test_a_session_short_of_time_is_extended_before_the_turn(vercel: VercelWorld, clock):
    settings = dataclasses.replace(vercel.world.services.settings, sandbox_timeout=120,
                                   turn_timeout=55)  # a turn needs 55 + 10 + 60 s left
    vercel.world.__init__(build(settings, clock=clock), vercel.world.sandboxes)
    assert vercel.world.turn("hello").status_code == 200
    session = vercel.box().session_id
    limit = vercel.box().session_timeout_ms
    again, made = vercel.turn_counted("again")
    assert again.status_code == 200, again.json
    assert ("POST", f"/api/v2/sandboxes/sessions/{session}/extend-timeout") in made
    assert vercel.box().session_timeout_ms > limit and vercel.box().session_id == session


def test_rate_limits_are_waited_out(vercel: VercelWorld):
    vercel.world.turn("hello")
    vercel.fake.rate_limit(2, retry_after=0.2)
    again, made = vercel.turn_counted("again")
    assert again.status_code == 200, again.json
    assert len(commands(made)) == 3  # two 429s, then the command


def test_a_stream_that_closes_mid_turn_loses_nothing(vercel: VercelWorld):
    first = vercel.world.turn("hello")
    vercel.fake.close_next_stream(after=2)
    again, made = vercel.turn_counted("again")
    assert again.status_code == 200 and again.json["turn"] == 2, again.json
    assert again.json["session_id"] == first.json["session_id"]
    assert any(p.endswith("/logs") for _, p in made)  # followed from the logs endpoint
    assert len(commands(made)) == 1  # and never run twice


def test_a_destroyed_sandbox_is_recreated_and_the_conversation_restored(vercel: VercelWorld,
                                                                        model):
    vercel.world.turn("My dog is Rex.")
    vercel.world.services.turns.sandboxes.destroy(vercel.box().name)
    again = vercel.world.turn("What is my dog called?")
    assert again.status_code == 200 and again.json["turn"] == 2, again.json
    assert "notices" not in again.json
    assert vercel.installs() == 2  # a new sandbox is bootstrapped anew
    assert texts_seen(model, "What is my dog called?") == ["My dog is Rex.",
                                                          "What is my dog called?"]


def test_a_name_clash_on_create_is_a_400_and_handled(vercel: VercelWorld):
    vercel.fake.fail_next_create = True  # another request creates it just before us
    response, made = vercel.turn_counted("hello")
    assert response.status_code == 200, response.json
    assert [m for m, p in made if p.endswith("/v3/sandboxes")] == ["POST"]


def test_a_bootstrap_failure_is_clear_and_retried_on_the_next_turn(vercel: VercelWorld):
    vercel.fail_installs(True)
    failed = vercel.world.turn("hello")
    assert failed.status_code == 503
    assert failed.json["error"]["code"] == "sandbox_unavailable"
    assert "claude-agent-sdk" in failed.json["error"]["message"]
    assert "package index" in failed.json["error"]["message"]
    assert vercel.world.lock() is None and vercel.world.stored() is None
    vercel.fail_installs(False)
    retried = vercel.world.turn("hello")
    assert retried.status_code == 200 and vercel.installs() == 2


def test_a_changed_agent_sdk_is_installed_again(vercel: VercelWorld):
    assert vercel.world.turn("hello").status_code == 200
    settings = dataclasses.replace(vercel.world.services.settings,
                                   sandbox_agent_sdk="claude-agent-sdk==0.2.190")
    vercel.world.__init__(build(settings, clock=vercel.world.services.turns.clock),
                          vercel.world.sandboxes)
    again = vercel.world.turn("again")
    assert again.status_code == 200 and again.json["turn"] == 2, again.json
    assert vercel.installs() == 2


def test_cleanup_stops_and_lists_through_tags(vercel: VercelWorld, clock):
    vercel.world.turn("hi", user("ivy"))
    name = vercel.world.user_record("ivy").sandbox_name
    backend = vercel.world.services.turns.sandboxes
    assert [info.name for info in backend.list()] == [name]
    clock.advance(2 * 3600)
    report = vercel.world.cron().json
    assert report["stopped"] == 1 and report["errors"] == 0
    assert vercel.fake.boxes[name].status in ("stopping", "stopped")
    assert backend.status(name) == "stopped"
    again = vercel.world.turn("back", user("ivy"))
    assert again.status_code == 200 and again.json["turn"] == 2, again.json


def rebuild_with_snapshot(vercel: VercelWorld, snapshot_id: str) -> None:
    settings = dataclasses.replace(vercel.world.services.settings,
                                   sandbox_base_snapshot_id=snapshot_id)
    vercel.world.__init__(build(settings, clock=vercel.world.services.turns.clock),
                          vercel.world.sandboxes)


def test_sandboxes_made_from_the_base_snapshot_install_nothing(vercel: VercelWorld):
    snapshot_id = vercel.world.services.turns.sandboxes.make_base_snapshot("agent-base")
    assert vercel.installs() == 1
    assert vercel.fake.snapshots[snapshot_id].expires_at is None  # made never to expire
    assert "agent-base" not in vercel.fake.boxes  # the builder is destroyed
    rebuild_with_snapshot(vercel, snapshot_id)
    first = vercel.world.turn("From the snapshot.")
    assert first.status_code == 200, first.json
    assert vercel.installs() == 1  # the snapshot had it all
    assert vercel.box().request["source"] == {"type": "snapshot", "snapshotId": snapshot_id}


def test_an_expired_base_snapshot_falls_back_to_the_image(vercel: VercelWorld):
    snapshot_id = vercel.world.services.turns.sandboxes.make_base_snapshot("agent-base")
    vercel.fake.expire_snapshot(snapshot_id)
    rebuild_with_snapshot(vercel, snapshot_id)
    first = vercel.world.turn("hello")
    assert first.status_code == 200, first.json
    assert "source" not in vercel.box().request
    assert vercel.installs() == 2  # installed on the first turn instead


def test_the_live_smoke_test_runs_its_steps_against_the_fake(vercel: VercelWorld):
    out = io.StringIO()
    code = smoke(vercel.world.services.settings, out, folders=())
    assert code == 0, out.getvalue()
    for step in ("turn 1", "turn 2 (warm)", "scan the sandbox", "stop the sandbox",
                 "turn 3 (resume", "delete sandbox"):
        assert step in out.getvalue()
    assert "OK: memory" in out.getvalue()
    assert not vercel.fake.boxes  # the throwaway sandbox is gone


def test_the_smoke_tests_key_scan_finds_a_planted_key(vercel: VercelWorld):
    assert vercel.world.turn("hello").status_code == 200
    services = vercel.world.services
    assert scan_for_key(services, "alice", SECRET_KEY, ()) == []
    (vercel.box().root / "work" / "leak.txt").write_text(f"oops {SECRET_KEY} oops")
    found = scan_for_key(services, "alice", SECRET_KEY, ())
    assert len(found) == 1 and found[0].startswith("file ") and found[0].endswith("leak.txt")


def test_two_conversations_a_regenerate_and_a_fork_in_one_sandbox(vercel: VercelWorld, model):
    from api import chats

    client, headers = vercel.world.client(), {"X-User-Id": "alice"}

    def send(chat_id: str, text: str, trigger: str = "submit-message") -> dict:
        body = {"id": chat_id, "trigger": trigger, "messages": [
            {"id": f"u-{text}", "role": "user", "parts": [{"type": "text", "text": text}]}]}
        response = client.post("/api/chat", json=body, headers=headers)
        parts = [json.loads(line[6:]) for line in response.get_data(as_text=True).splitlines()
                 if line.startswith("data: {")]
        assert parts[-1]["type"] == "finish", parts[-3:]
        return parts[0]

    first = send("a", "Remember plum.")
    send("b", "Remember pear.")
    send("a", "Which fruit?")
    assert texts_seen(model, "Which fruit?") == ["Remember plum.", "Which fruit?"]
    send("a", "Which fruit?", "regenerate-message")
    assert texts_seen(model, "Which fruit?") == ["Remember plum.", "Which fruit?"]
    forked = vercel.world.client(chats.app).post(
        "/api/chats/a/fork", json={"message_id": first["messageId"], "chat_id": "c"},
        headers=headers)
    assert forked.status_code == 201, forked.json
    send("c", "And in the fork?")
    assert texts_seen(model, "And in the fork?") == ["Remember plum.", "And in the fork?"]
    assert len({box.name for box in vercel.fake.boxes.values()}) == 1  # one sandbox for all


def test_stop_and_resume_on_vercel(vercel: VercelWorld, upstash_fakeredis):
    """A slow answer: a second client attaches to its stream, the stop reaches the agent
    through the Sandbox API (one signal request), the chat is free at once."""
    import threading

    from lib.devtools.model_server import OfflineModel

    slow = serve_in_background(OfflineModel(delay=0.1))
    settings = dataclasses.replace(vercel.world.services.settings,
                                   anthropic_base_url=slow.url)
    try:
        vercel.world.__init__(build(settings, clock=vercel.world.services.turns.clock),
                              vercel.world.sandboxes)
        client, headers = vercel.world.client(), {"X-User-Id": "alice",
                                                   "Accept": "text/event-stream"}
        assert vercel.world.turn("warm up").status_code == 200
        live: list[bytes] = []
        turn = threading.Thread(target=lambda: live.append(client.post(
            "/api/chat", json={"prompt": "Tell me a long story."}, headers=headers).data))
        turn.start()
        state = vercel.world.services.state
        user = vercel.world.user()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not vercel.world.services.streamlog.read(
                user, "default", 0)[2][3:]:
            time.sleep(0.05)  # until the first text parts are in the log
        attached = client.get("/api/chat/default/stream", headers=headers)
        before = len(vercel.fake.requests)
        assert client.post("/api/chat/default/stop", headers=headers).status_code == 202
        turn.join(30)
        assert attached.status_code == 200
        assert attached.get_data() == live[0]  # the same parts, the same ids
        assert b'"finishReason":"other"' in live[0]
        assert any(p.endswith("/kill") for _, p in vercel.fake.requests[before:])
        assert state.lock_holder(user, "default") is None
        assert vercel.world.turn("next").status_code == 200
    finally:
        slow.stop()
