"""Faults injected for real: a redis-server of the test's own is stalled (SIGSTOP) while a turn
takes its lock; a turn outlives its lock's short lease only because it renews it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.bootstrap import build
from lib.devtools.serving import serve_in_background
from lib.devtools.upstash_server import UpstashRestServer
from tests.conftest import Upstash, free_port, make_settings, wait_until
from tests.fakes import Script, line, ok_result
from tests.world import World, fake_agent


@pytest.fixture
def own_redis() -> Iterator[tuple[subprocess.Popen, str]]:
    """A redis-server only this test uses (it gets stopped), or a visible skip."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: the Redis fault tests are skipped "
                    "(./scripts/test installs it with apt-get when it can)")
    port, workdir = free_port(), tempfile.mkdtemp(prefix="redis-fault-")
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--dir", workdir],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    wait_until(lambda: redis.Redis.from_url(url).ping(), what="redis-server")
    yield process, url
    os.kill(process.pid, signal.SIGCONT)
    process.terminate()
    process.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def world_on_own_redis(own_redis, tmp_path: Path) -> Iterator[tuple[World, subprocess.Popen]]:
    process, url = own_redis
    app = UpstashRestServer(url)
    server = serve_in_background(app)
    sandboxes = fake_agent()
    settings = make_settings(Upstash(server.url, app), tmp_path, redis_timeout=1,
                             rate_limit=None)
    world = World(build(settings, sandboxes=sandboxes), sandboxes)
    world.services.state.lock_ttl_ms = 2000  # a lease of 2 s, for the test's sake
    yield world, process
    for flask_app in world.apps:
        flask_app.config["SERVICES"] = None
    server.stop()


def test_a_redis_stall_while_taking_the_lock_leaves_no_stuck_lock(world_on_own_redis):
    world, redis_server = world_on_own_redis
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        response = world.turn("hi")
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    assert response.status_code == 503 and response.json["error"]["code"] == "state_unavailable"
    # The acquires (and their retry) land late; their release with the same token, or else
    # the 2 s lease, frees the chat: not the old FUNCTION_MAX_DURATION + 60 s.
    time.sleep(3)
    assert world.lock() is None
    assert world.turn("hi").status_code == 200


def test_a_turn_longer_than_its_lease_keeps_its_lock_by_renewing_it(world_on_own_redis):
    world, _ = world_on_own_redis
    started, gate = threading.Event(), threading.Event()
    world.sandboxes.scripts.append(Script([line("session", session_id="sess-1"),
                                           ok_result("sess-1", "done")], started=started,
                                          gate=gate))
    answers: list = []
    turn = threading.Thread(target=lambda: answers.append(world.turn("long")))
    turn.start()
    assert started.wait(10)
    time.sleep(3)  # longer than the 2 s lease
    assert world.turn("meanwhile").status_code == 409  # still held: renewed
    gate.set()
    turn.join(10)
    assert answers[0].status_code == 200 and world.lock() is None


def stalled_redis_turn(world: World, redis_server: subprocess.Popen, stall_at: str):
    """A turn whose Redis stops (SIGSTOP) for 2.5 s while the agent runs ("running") or just as
    it commits ("commit")."""
    world.services.state.lock_ttl_ms = 5000  # a lease longer than the stall
    started, gate = threading.Event(), threading.Event()
    world.sandboxes.scripts.append(Script([line("session", session_id="sess-1"),
                                           line("text", text="ok"), ok_result("sess-1", "ok")],
                                          started=started, gate=gate))
    answers: list = []
    turn = threading.Thread(target=lambda: answers.append(world.turn("during a stall")))
    turn.start()
    assert started.wait(10)
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        if stall_at == "commit":
            gate.set()
        time.sleep(2.5)
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    gate.set()
    turn.join(20)
    return answers[0]


def test_a_redis_stall_while_the_agent_runs_costs_nothing(world_on_own_redis):
    world, redis_server = world_on_own_redis
    world.turn("before")
    answer = stalled_redis_turn(world, redis_server, "running")
    assert answer.status_code == 200 and answer.json["turn"] == 2
    assert world.lock() is None


def test_a_redis_stall_at_the_commit_never_half_writes_or_forks(world_on_own_redis):
    world, redis_server = world_on_own_redis
    world.turn("before")
    answer = stalled_redis_turn(world, redis_server, "commit")
    assert answer.status_code in (200, 503)  # 503 if the commit's answer was lost
    time.sleep(5.5)  # a late commit lands, or the lease lapses
    after = world.turn("after")
    assert after.status_code == 200 and after.json["session_id"] == "sess-1"  # no fork
    turns = world.stored().turns
    assert turns in (2, 3) and world.lock() is None  # the stalled turn counted once or not
