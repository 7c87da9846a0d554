"""Turns on the Vercel Sandbox backend, with every Sandbox API call made slow as on the internet.

The real `vercel-sandbox` SDK talks to the fake of the Sandbox API (`tests/fake_vercel_sandbox.py`,
which runs commands for real and is as strict as the real API), with a delay added to every
request (its `latency`): public measurements put a
command call at 60-300 ms (vercel-labs/sandbox-benchmarking), so each request we make costs a
turn that much. The turns go through the real endpoint (`api/chat.py`, in process), the Upstash
stand-in, the real runner, SDK and CLI, and the offline model. In one run, at 0 ms (the baseline)
and at LATENCY_MS added to each API request, medians of REPEAT:
  first turn      a new user: create, install (simulated pip), runner, turn
  warm turn       the same user again: the command on the remembered session
  after a stop    the sandbox was stopped (the cleanup cron): resume, then the turn
with the Sandbox API requests each made, and the time the latency added per warm turn.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from api import chat
from lib.bootstrap import build
from lib.config import Settings
from lib.devtools.model_server import OfflineModel
from lib.devtools.serving import serve_in_background
from lib.devtools.upstash_server import DEV_TOKEN, UpstashRestServer
from lib.sandboxes.local import stop_warm_agents
from tests.fake_vercel_sandbox import FakeSandboxApi

REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
LATENCY_MS = float(os.environ.get("BENCH_SANDBOX_LATENCY_MS", "80"))

# The fake machine's python3: pip installs are simulated, the rest runs this venv's Python.
PYTHON_SHIM = f"""#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then exit 0; fi
exec {sys.executable} "$@"
"""


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-vercel-"))
    (workdir / "bin").mkdir()
    shim = workdir / "bin" / "python3"
    shim.write_text(PYTHON_SHIM)
    shim.chmod(0o755)
    fake = FakeSandboxApi(workdir / "sandboxes",
                          env={"PATH": f"{workdir / 'bin'}:{os.environ['PATH']}"})
    model, upstash = OfflineModel(delay=0.0), UpstashRestServer()
    servers = [serve_in_background(app) for app in (fake, model, upstash)]
    api, model_server, upstash_server = servers
    settings = Settings.from_env({
        "UPSTASH_REDIS_REST_URL": upstash_server.url, "UPSTASH_REDIS_REST_TOKEN": DEV_TOKEN,
        "AUTH_MODE": "dev", "RATE_LIMIT": "off", "DATA_DIR": str(workdir),
        "KEY_PREFIX": f"bench{uuid.uuid4().hex[:6]}", "AGENT_WARM_IDLE": "30",
        "SANDBOX_BACKEND": "vercel", "VERCEL_SANDBOX_API_URL": f"{api.url}/api",
        "VERCEL_TOKEN": "bench", "VERCEL_TEAM_ID": "team_bench", "VERCEL_PROJECT_ID": "prj_bench",
        "ANTHROPIC_BASE_URL": model_server.url, "ANTHROPIC_API_KEY": "sk-ant-bench",
    })
    chat.app.config["SERVICES"] = build(settings)
    logging.getLogger("agent").setLevel(logging.WARNING)  # the turns' log lines
    client = chat.app.test_client()

    def turn(user: str, prompt: str) -> tuple[float, int]:
        before = len(fake.requests)
        started = time.perf_counter()
        response = client.post("/api/chat", json={"prompt": prompt}, headers={"X-User-Id": user})
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.get_data(as_text=True)
        return elapsed, len(fake.requests) - before

    def sandbox_of(user: str) -> str:
        services = chat.app.config["SERVICES"]
        from lib.auth import user_hash

        return services.state.read_user(user_hash(user, settings))[0].sandbox_name

    results: dict[str, dict[str, tuple[float, float]]] = {}
    try:
        turn("warm-up", "warm-up")
        turn("warm-up", "warm-up again")
        for latency in (0.0, LATENCY_MS / 1000):
            fake.latency = latency
            rows: dict[str, list[tuple[float, int]]] = {"first": [], "warm": [], "stopped": []}
            for _ in range(REPEAT):
                user = f"user-{uuid.uuid4().hex[:8]}"
                rows["first"].append(turn(user, "My number is 7."))
                rows["warm"].append(turn(user, "What is my number?"))
                fake.stop_sandbox(sandbox_of(user))
                rows["stopped"].append(turn(user, "And again?"))
            results[f"{latency * 1000:.0f}"] = {
                kind: (statistics.median(t for t, _ in runs) * 1000,
                       statistics.median(n for _, n in runs))
                for kind, runs in rows.items()}
    finally:
        chat.app.config["SERVICES"] = None
        for box in list(fake.boxes.values()):
            fake._halt(box)
        for server in servers:
            server.stop()
        stop_warm_agents(workdir)
    base, slowed = results["0"], results[f"{LATENCY_MS:.0f}"]
    print(f"vercel: turns on the Vercel Sandbox backend against the fake API, medians of {REPEAT}")
    print(f"  {'':14} {'requests':>8} {'0 ms/request':>14} {f'{LATENCY_MS:.0f} ms/request':>15}"
          f" {'added':>9}")
    for kind, label in (("first", "first turn"), ("warm", "warm turn"),
                        ("stopped", "after a stop")):
        print(f"  {label:<14} {slowed[kind][1]:8.0f} {base[kind][0]:11.0f} ms "
              f"{slowed[kind][0]:12.0f} ms {slowed[kind][0] - base[kind][0]:6.0f} ms  "
              f"({slowed[kind][0] / base[kind][0]:.2f}x)")
    print(json.dumps({"latency_ms": LATENCY_MS, "results": results}))


if __name__ == "__main__":
    main()
