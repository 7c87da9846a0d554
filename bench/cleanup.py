"""Cleanup cost grows with the work due, not with the number of users.

100,000 session records through the local Upstash REST server (fakeredis), of which 1,000 and
then 10,000 are idle: one full cleanup run each, reporting wall time and Redis round trips
(counted by the REST server). Sandboxes are an in-memory stand-in, so the numbers are ours.
"""

from __future__ import annotations

import json
import os
import time
from tempfile import mkdtemp

from lib.bootstrap import build
from lib.config import Settings
from lib.devtools.serving import serve_in_background
from lib.devtools.upstash_server import DEV_TOKEN, UpstashRestServer
from lib.sandboxes import Attachment, SandboxInfo, SandboxStatus

USERS = 100_000
IDLE_FOR = 2 * 3600


class InMemorySandboxes:
    """Just enough of the sandbox port for cleanup: names with a status."""

    def __init__(self) -> None:
        self.statuses: dict[str, SandboxStatus] = {}

    def attach(self, name: str) -> Attachment:
        raise NotImplementedError("the cleanup benchmark runs no turns")

    def status(self, name: str) -> SandboxStatus | None:
        return self.statuses.get(name)

    def stop(self, name: str) -> None:
        self.statuses[name] = "stopped"

    def destroy(self, name: str) -> None:
        self.statuses.pop(name, None)

    def list(self) -> list[SandboxInfo]:
        return [SandboxInfo(name, status) for name, status in self.statuses.items()]


def seed(upstash: UpstashRestServer, settings: Settings, sandboxes: InMemorySandboxes,
         due: int, now: float) -> None:
    """Write USERS records straight into the backing store (fast), `due` of them idle."""
    prefix, pipe = settings.key_prefix, upstash.client.pipeline(transaction=False)
    for i in range(USERS):
        user = f"{i:032x}"
        active = now - IDLE_FOR if i < due else now - 60
        name = f"{settings.sandbox_name_prefix}{user}"
        pipe.execute_command("SET", f"{prefix}:u:{user}:rec", json.dumps(
            {"session_id": f"s-{i}", "sandbox_name": name, "turns": 1,
             "created_at": active, "last_active_at": active}))
        pipe.execute_command("ZADD", f"{prefix}:activity", active, user)
        pipe.execute_command("ZADD", f"{prefix}:awake", active, user)
        sandboxes.statuses[name] = "running"
        if i % 5000 == 4999:
            pipe.execute()
            pipe = upstash.client.pipeline(transaction=False)
    pipe.execute()


def one_run(due: int) -> dict[str, float]:
    upstash = UpstashRestServer()
    server = serve_in_background(upstash)
    try:
        settings = Settings.from_env({
            "UPSTASH_REDIS_REST_URL": server.url, "UPSTASH_REDIS_REST_TOKEN": DEV_TOKEN,
            "AUTH_MODE": "dev", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
            "DATA_DIR": mkdtemp(prefix="bench-"), "KEY_PREFIX": f"b{os.urandom(3).hex()}",
            "CLEANUP_TIME_BUDGET": "250", "TRANSCRIPT_STORE": "upstash",
        })
        sandboxes = InMemorySandboxes()
        now = time.time()
        seed(upstash, settings, sandboxes, due, now)
        cleanup = build(settings, sandboxes=sandboxes).cleanup
        before, started = upstash.round_trips, time.perf_counter()
        report = cleanup.run()
        elapsed = time.perf_counter() - started
        trips = upstash.round_trips - before
    finally:
        server.stop()
    assert report.stopped == due and report.errors == 0, report
    return {"due": due, "stopped": report.stopped, "seconds": elapsed, "round_trips": trips}


def main() -> None:
    print(f"cleanup: {USERS:,} session records, idle ones stopped (Upstash REST stand-in)")
    small, large = one_run(1_000), one_run(10_000)
    for run in (small, large):
        print(f"  due {run['due']:>6,}: {run['seconds']:7.2f} s, {run['round_trips']:>6,} round trips"
              f" ({run['round_trips'] / run['due']:.2f} per due user,"
              f" {run['seconds'] / run['due'] * 1000:.2f} ms per due user)")
    print(f"  10x the due work costs {large['seconds'] / small['seconds']:.1f}x the time and "
          f"{large['round_trips'] / small['round_trips']:.1f}x the round trips "
          f"(the other {USERS - large['due']:,} records are never read)")


if __name__ == "__main__":
    main()
