"""Shared fixtures: the local stand-ins, served for real on 127.0.0.1, and stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from lib.config import Settings
from lib.devtools.dev_server import spawn
from lib.devtools.model_server import OfflineModel
from lib.devtools.serving import BackgroundServer, serve_in_background
from lib.devtools.upstash_server import DEV_TOKEN, UpstashRestServer
from lib.sandboxes.local import stop_warm_agents

ROOT = Path(__file__).resolve().parents[1]
JWT_SECRET = "test-secret-that-is-long-enough-for-hs256!"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class Upstash:
    """A running Upstash REST stand-in and the app behind it (for round-trip counts)."""

    url: str
    app: UpstashRestServer
    token: str = DEV_TOKEN


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, or a visible skip when none is installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: the real-Redis half of these tests is skipped "
                    "(./scripts/test installs it with apt-get when it can)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="redis-")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    wait_until(lambda: redis.Redis.from_url(url).ping(), what="redis-server")
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


def _serve_upstash(redis_url: str | None) -> Iterator[Upstash]:
    app = UpstashRestServer(redis_url)
    server = serve_in_background(app)
    yield Upstash(server.url, app)
    server.stop()


@pytest.fixture(scope="session")
def upstash_fakeredis() -> Iterator[Upstash]:
    yield from _serve_upstash(None)


@pytest.fixture(scope="session", params=["fakeredis", "redis-server"])
def upstash_any(request: pytest.FixtureRequest) -> Iterator[Upstash]:
    """The REST stand-in over each backing store in turn."""
    if request.param == "fakeredis":
        yield request.getfixturevalue("upstash_fakeredis")
    else:
        yield from _serve_upstash(request.getfixturevalue("redis_server_url"))


@pytest.fixture(scope="session")
def model() -> Iterator[tuple[OfflineModel, BackgroundServer]]:
    app = OfflineModel(delay=0.0)
    server = serve_in_background(app)
    yield app, server
    server.stop()


def make_settings(upstash: Upstash, data_dir: Path, **changes) -> Settings:
    env = {
        "UPSTASH_REDIS_REST_URL": upstash.url,
        "UPSTASH_REDIS_REST_TOKEN": upstash.token,
        "AUTH_MODE": "dev",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "DATA_DIR": str(data_dir),
        "KEY_PREFIX": f"t{os.urandom(4).hex()}",  # every test gets its own keyspace
        "AGENT_WARM_IDLE": "20",  # warm agents left by a test do not outlive it by much
    }
    return replace(Settings.from_env(env), **changes)


@dataclass
class DevServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_dev_server(tmp_path: Path):
    """Start `python -m lib.devtools.dev_server` as its own process (a new function instance)."""
    started: list[DevServer] = []

    def start(**env: str) -> DevServer:
        log_path = tmp_path / f"dev-{len(started)}.log"
        with log_path.open("wb") as log:
            try:
                process, url = spawn({"PORT": str(free_port()), "DATA_DIR": str(tmp_path / "data"),
                                      "AGENT_WARM_IDLE": "20", **env}, stdout=log)
            except RuntimeError:
                raise AssertionError(f"dev server did not start:\n{log_path.read_text()}") from None
        server = DevServer(url, process, log_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    stop_warm_agents(tmp_path)  # the warm agents a test left behind


pytest_plugins = ["tests.world"]
