"""The Vercel Sandbox backend through the real vercel-sandbox SDK, against a fake of the Sandbox
HTTP API that runs commands for real. Turns run the real runner, SDK and CLI (the fake machine's
`python3` is this venv's; its `pip install` is simulated and logged) against the offline model."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lib.bootstrap import build
from lib.devtools.serving import serve_in_background
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
        return self.fake.boxes[self.world.stored(user_id).sandbox_name]

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


def test_first_turn_creates_and_bootstraps_second_reattaches(vercel: VercelWorld, model):
    first = vercel.world.turn("Remember 7.")
    assert first.status_code == 200, first.json
    assert vercel.installs() == 1
    created = vercel.box().request
    assert created["persistent"] is True and created["region"] == "iad1"
    assert created["tags"] == {"app": vercel.world.services.settings.key_prefix,
                               "user": vercel.world.user()}
    second = vercel.world.turn("What number?")
    assert second.status_code == 200 and second.json["turn"] == 2
    assert second.json["session_id"] == first.json["session_id"]
    assert vercel.installs() == 1  # reattached: nothing reinstalled
    assert texts_seen(model, "What number?") == ["Remember 7.", "What number?"]
    assert [m for m, p in vercel.fake.requests if p.endswith("/v3/sandboxes")] == ["POST"]


def test_the_model_key_never_enters_the_sandbox(vercel: VercelWorld):
    assert vercel.world.turn("hello").status_code == 200
    box = vercel.box()
    policy = box.request["networkPolicy"]
    assert json.dumps(policy).count(SECRET_KEY) == 1  # injected as a header by the policy
    for command in vercel.fake.commands_run:
        assert SECRET_KEY not in json.dumps(command)
    runner_env = vercel.fake.commands_run[-1]["env"]
    assert runner_env["ANTHROPIC_API_KEY"] == PLACEHOLDER_KEY
    for path in box.root.rglob("*"):
        if path.is_file():
            assert SECRET_KEY.encode() not in path.read_bytes(), path


def test_a_stopped_sandbox_resumes_with_its_files(vercel: VercelWorld, model):
    vercel.world.turn("The code is owl.")
    vercel.fake.stop_sandbox(vercel.box().name)
    assert vercel.world.services.turns.describe("alice").sandbox_status == "stopped"
    again = vercel.world.turn("Which code?")
    assert again.status_code == 200 and again.json["turn"] == 2
    assert vercel.installs() == 1
    assert texts_seen(model, "Which code?") == ["The code is owl.", "Which code?"]


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


def test_a_lost_snapshot_is_recreated_and_the_conversation_restored(vercel: VercelWorld, model):
    vercel.world.turn("Blue is my colour.")
    vercel.fake.lose_snapshot(vercel.box().name)
    again = vercel.world.turn("My colour?")
    assert again.status_code == 200 and again.json["turn"] == 2, again.json
    assert texts_seen(model, "My colour?") == ["Blue is my colour.", "My colour?"]


def test_a_409_on_create_is_handled(vercel: VercelWorld):
    vercel.fake.fail_next_create = True
    response = vercel.world.turn("hello")
    assert response.status_code == 200, response.json


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


def test_cleanup_stops_and_lists_through_tags(vercel: VercelWorld, clock):
    vercel.world.turn("hi", user("ivy"))
    name = vercel.world.stored("ivy").sandbox_name
    backend = vercel.world.services.turns.sandboxes
    assert [info.name for info in backend.list()] == [name]
    clock.advance(2 * 3600)
    report = vercel.world.cron().json
    assert report["stopped"] == 1 and report["errors"] == 0
    assert vercel.fake.boxes[name].status == "stopped"
    assert backend.status(name) == "stopped"


def test_sandboxes_made_from_the_base_snapshot_install_nothing(vercel: VercelWorld, model):
    backend = vercel.world.services.turns.sandboxes
    snapshot_id = backend.make_base_snapshot("agent-base")
    assert vercel.installs() == 1
    settings = dataclasses.replace(vercel.world.services.settings,
                                   sandbox_base_snapshot_id=snapshot_id)
    vercel.world.__init__(build(settings, clock=vercel.world.services.turns.clock),
                          vercel.world.sandboxes)
    first = vercel.world.turn("From the snapshot.")
    assert first.status_code == 200, first.json
    assert vercel.installs() == 1  # the snapshot had it all
    assert vercel.box().request["source"] == {"type": "snapshot", "snapshotId": snapshot_id}
