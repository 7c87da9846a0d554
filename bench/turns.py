"""A turn through our whole HTTP path against a bare `claude_agent_sdk.query(resume=...)`.

Offline, on this machine, in one run: the offline model and the Upstash stand-in in this
process, the dev server (local sandboxes) as its own process. Prints medians of REPEAT runs
after a warm-up, and:
  raw         a new Python process running one resumed query(), as a user would without us
  turn cold   POST /api/chat for a new user (new sandbox, runner installed, new session)
  turn warm   POST /api/chat for a user with a session (resume)
  overhead    the function's own time per turn: Server-Timing lock + attach + save (the rest
              is the runner), and the client's wall time minus the runner's
  round trips Redis requests per warm turn (state + transcript appends), from the stand-in
  imports     cold import time of each api/ module in a new process
  memory      peak RSS of the function process (the dev server) after the turns
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import httpx

from lib.devtools.dev_server import spawn
from lib.devtools.model_server import OfflineModel
from lib.devtools.serving import serve_in_background
from lib.devtools.upstash_server import DEV_TOKEN, UpstashRestServer
from lib.sandboxes.local import stop_warm_agents

ROOT = Path(__file__).resolve().parents[1]
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))

RAW = textwrap.dedent("""
    import anyio, sys
    from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query
    async def main():
        options = ClaudeAgentOptions(resume=sys.argv[1] or None, cwd=sys.argv[2], max_turns=8)
        async for message in query(prompt=sys.argv[3], options=options):
            if isinstance(message, ResultMessage):
                print(message.session_id)
    anyio.run(main)
""")


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def raw_query(env: dict[str, str], workdir: Path, session: str, prompt: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RAW, session, str(workdir), prompt], env=env,
                          capture_output=True, text=True, check=True, cwd=workdir)
    return time.perf_counter() - started, done.stdout.strip().splitlines()[-1]


def bench_raw(model_url: str) -> list[float]:
    home = Path(tempfile.mkdtemp(prefix="bench-raw-"))
    (home / "work").mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
           "ANTHROPIC_BASE_URL": model_url, "ANTHROPIC_API_KEY": "offline",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    _, session = raw_query(env, home / "work", "", "warm-up")
    return [raw_query(env, home / "work", session, f"raw {i}")[0] for i in range(REPEAT)]


def start_dev_server(upstash_url: str, model_url: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    return spawn({"PORT": str(3900 + os.getpid() % 90), "DATA_DIR": data_dir,
                  "UPSTASH_REDIS_REST_URL": upstash_url, "UPSTASH_REDIS_REST_TOKEN": DEV_TOKEN,
                  "ANTHROPIC_BASE_URL": model_url, "AUTH_MODE": "dev", "RATE_LIMIT": "off",
                  "AGENT_WARM_IDLE": "30"})


HTTP = httpx.Client(timeout=120)  # one keep-alive connection, like a browser or a server


def turn(url: str, user: str, prompt: str) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    response = HTTP.post(f"{url}/api/chat", json={"prompt": prompt}, headers={"X-User-Id": user})
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    timing = {part.split(";dur=")[0].strip(): float(part.split(";dur=")[1]) / 1000
              for part in response.headers["Server-Timing"].split(",")}
    return elapsed, timing


def import_times() -> dict[str, float]:
    times = {}
    for path in sorted((ROOT / "api").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if any(part.startswith("_") for part in module.split(".")):
            continue
        code = (f"import time; t = time.perf_counter(); import {module}; "
                f"print(time.perf_counter() - t)")
        runs = [float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                                     capture_output=True, text=True).stdout) for _ in range(3)]
        times[module] = statistics.median(runs)
    return times


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    model, upstash = OfflineModel(), UpstashRestServer()
    model_server, upstash_server = serve_in_background(model), serve_in_background(upstash)
    data_dir = tempfile.mkdtemp(prefix="bench-data-")
    process, url = start_dev_server(upstash_server.url, model_server.url, data_dir)
    try:
        raw = bench_raw(model_server.url)
        turn(url, "warm-up", "warm-up")
        cold = [turn(url, f"cold-{uuid.uuid4().hex[:8]}", "hello")[0] for _ in range(REPEAT)]
        user = f"warm-{uuid.uuid4().hex[:8]}"
        turn(url, user, "first")
        warm, overhead, server, trips = [], [], [], []
        for i in range(REPEAT):
            before = upstash.round_trips
            elapsed, timing = turn(url, user, f"turn {i}")
            trips.append(upstash.round_trips - before)
            warm.append(elapsed)
            overhead.append(elapsed - timing["run"])
            server.append(timing["lock"] + timing["attach"] + timing["save"])
        memory = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait()
        stop_warm_agents(Path(data_dir))
        model_server.stop()
        upstash_server.stop()
    print(f"turns: medians of {REPEAT} after a warm-up (offline model, local sandboxes)")
    print(f"  raw query() in a new process  {median_ms(raw):8.0f} ms")
    print(f"  turn cold (new user)          {median_ms(cold):8.0f} ms  "
          f"{median_ms(cold) / median_ms(raw):.2f}x raw")
    print(f"  turn warm (resume)            {median_ms(warm):8.0f} ms  "
          f"{median_ms(warm) / median_ms(raw):.2f}x raw")
    print(f"  function overhead, warm turn  {median_ms(server):8.1f} ms (lock + attach + save); "
          f"{median_ms(overhead):.1f} ms client wall time outside the runner")
    print(f"  Redis round trips, warm turn  {statistics.median(trips):8.0f} "
          f"(min {min(trips)}, max {max(trips)}; state + rate limit + transcript appends)")
    for module, seconds in import_times().items():
        print(f"  cold import {module:<22} {seconds * 1000:8.0f} ms")
    print(f"  peak RSS of the function process {memory:6.0f} MB")
    print(json.dumps({"raw_ms": median_ms(raw), "cold_ms": median_ms(cold),
                      "warm_ms": median_ms(warm), "overhead_ms": median_ms(server),
                      "client_overhead_ms": median_ms(overhead),
                      "round_trips": statistics.median(trips), "peak_rss_mb": memory}))


if __name__ == "__main__":
    main()
