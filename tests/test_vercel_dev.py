"""./scripts/vercel-dev end to end: the real Vercel CLI serving the functions offline.

One `vercel dev` for the whole test (each function's first request takes ~9 s). It checks what
only `vercel dev` can get wrong: the environment reaching every function (the stand-ins, one
absolute DATA_DIR shared by all), routing, static files, and that nothing outlives the script.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lib.devtools.ui_stream import post_stream, text_of
from lib.devtools.vercel_cli import vercel_cli
from tests.conftest import ROOT, free_port, wait_until

CRON_SECRET = "vercel-dev-cron-secret"


def _parents() -> dict[int, int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            pass
    return parents


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc)."""
    parents, found, todo = _parents(), set(), [pid]
    while todo:
        parent = todo.pop()
        children = {child for child, ppid in parents.items() if ppid == parent} - found
        found |= children
        todo += children
    return found


def warm_agents(data_dir: Path) -> set[int]:
    return {int(p.read_text()) for p in data_dir.rglob("warm-agent.pid") if p.read_text().isdigit()}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def vercel_dev(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen, Path, set[int]]]:
    """./scripts/vercel-dev on a free port; afterwards, whatever it left running is killed
    (the test asserts there is nothing)."""
    try:
        vercel_cli()
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"the Vercel CLI cannot be installed here ({error}): vercel dev is not tested")
    port, log_path = free_port(), tmp_path / "vercel-dev.log"
    # relative, as people write it (the default is `.data`): every function runs in a folder of
    # its own under /tmp, so only the script making it absolute gives them one DATA_DIR
    relative = f".data/test-vercel-dev-{os.urandom(4).hex()}"
    data_dir = ROOT / relative
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("UPSTASH_", "KV_", "ANTHROPIC_", "AUTH_", "DATA_DIR"))}
    env = {**inherited, "PORT": str(port), "DATA_DIR": relative, "CRON_SECRET": CRON_SECRET,
           "AGENT_WARM_IDLE": "60"}
    seen: set[int] = set()
    with log_path.open("wb") as log:
        process = subprocess.Popen(["./scripts/vercel-dev"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", process, data_dir, seen
    finally:
        print(log_path.read_text(errors="replace")[-6000:])
        if process.poll() is None:  # the test failed early: let the script clean up first
            seen |= descendants(process.pid)
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in seen | warm_agents(data_dir):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(data_dir, ignore_errors=True)


def ask(client: httpx.Client, url: str, user: str, prompt: str) -> dict:
    response = client.post(f"{url}/api/chat", json={"prompt": prompt}, headers={"X-User-Id": user})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_vercel_dev_serves_a_remembered_conversation_and_stops_everything(vercel_dev) -> None:
    url, process, data_dir, seen = vercel_dev
    started = time.monotonic()
    wait_until(lambda: httpx.get(f"{url}/api/health", timeout=30).json()["ok"], timeout=180,
               what="vercel dev's /api/health")
    print(f"first answer after {time.monotonic() - started:.1f} s")
    with httpx.Client(timeout=120) as client:
        prompts = ["My name is Alice.", "What is my name?", "Say it once more."]
        answers = [ask(client, url, "alice", prompt) for prompt in prompts]
        assert [a["turn"] for a in answers] == [1, 2, 3]
        assert len({a["session_id"] for a in answers}) == 1
        assert all(repr(p) in answers[2]["text"] for p in prompts), answers[2]["text"]

        events = post_stream(client, url, "alice", "And now streamed?")
        assert events[-1][1] == "[DONE]"
        assert "(4 user messages so far.)" in text_of(events)
        assert json.loads(events[0][1])["type"] == "start"

        # one DATA_DIR for all functions: api/session sees the sandbox api/chat runs
        session = client.get(f"{url}/api/session", headers={"X-User-Id": "alice"}).json()
        assert session["sandbox"] == {"status": "running"} and session["turns"] == 4

        page = client.get(f"{url}/")
        assert page.status_code == 200 and "<html" in page.text

        assert client.get(f"{url}/api/cron/cleanup").status_code == 401
        wrong = {"Authorization": "Bearer not-the-secret"}
        assert client.get(f"{url}/api/cron/cleanup", headers=wrong).status_code == 401
        swept = client.get(f"{url}/api/cron/cleanup",
                           headers={"Authorization": f"Bearer {CRON_SECRET}"})
        assert swept.status_code == 200 and swept.json()["errors"] == 0

        assert client.delete(f"{url}/api/session", headers={"X-User-Id": "alice"}).status_code == 204
        assert client.get(f"{url}/api/session", headers={"X-User-Id": "alice"}).status_code == 404
        assert list((data_dir / "sandboxes").iterdir()) == []  # the sandbox really went

        ask(client, url, "bob", "Leave a warm agent behind.")
    agents = warm_agents(data_dir)
    assert agents and all(alive(pid) for pid in agents)
    seen |= descendants(process.pid)
    assert len(seen) >= 3  # node, and a Python process per function used
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    wait_until(lambda: not any(alive(pid) for pid in seen | agents), timeout=15,
               what="vercel dev, its functions and the warm agent to stop")
