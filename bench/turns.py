"""A turn through our whole HTTP path against the SDK used directly, in one run.

Offline, on this machine: the offline model and the Upstash stand-in in this process, the dev
server (local sandboxes) as its own process. Prints medians of REPEAT runs after a warm-up, and:
  client      a connected `ClaudeSDKClient` in one process, its turns alternating with the warm
              turns below: the floor for this design (the model's time plus the CLI's)
  raw         a new Python process running one resumed query(), as a user would without us
  turn cold   POST /api/chat for a new user (new sandbox, runner installed, new session)
  turn warm   POST /api/chat for a user with a session (resume), and its ratio to the client
  breakdown   where a warm turn's time goes, from the function's Server-Timing and the agent's
              own clock (the result line's agent_ms)
  round trips Redis requests per warm turn, counted by the stand-in
  cold start  a new function process: import api.session, build the services, answer
              GET /api/session
  imports     cold import time of each api/ module in a new process
  memory      peak RSS of the function process (the dev server) after the turns
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from lib.devtools.dev_server import spawn
from lib.devtools.model_server import OfflineModel
from lib.devtools.serving import serve_in_background
from lib.devtools.upstash_server import DEV_TOKEN, UpstashRestServer
from lib.sandboxes.local import stop_warm_agents

ROOT = Path(__file__).resolve().parents[1]
REPEAT = int(os.environ.get("BENCH_REPEAT", "9"))
PAIRS = 2 * REPEAT + 1  # warm turns and client turns are cheap: more of them, a steadier median

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


CLIENT = textwrap.dedent("""
    import anyio, json, sys, time
    from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage
    async def turn(client, prompt):
        started = time.perf_counter()
        await client.query(prompt)
        async for message in client.receive_response():
            if isinstance(message, ResultMessage):
                return time.perf_counter() - started
    async def main():
        options = ClaudeAgentOptions(cwd=sys.argv[1], max_turns=8, include_partial_messages=True)
        async with ClaudeSDKClient(options) as client:
            await turn(client, "warm-up")
            print("ready", flush=True)
            for line in sys.stdin:  # one turn per prompt, when the bench asks
                print(await turn(client, line.strip()), flush=True)
    anyio.run(main)
""")

COLD_START = textwrap.dedent("""
    import json, time
    started = time.perf_counter()
    import api.session
    imported = time.perf_counter()
    answer = api.session.app.test_client().get("/api/session", headers={"X-User-Id": "cold"})
    assert answer.status_code in (200, 404), answer.data
    print(json.dumps([imported - started, time.perf_counter() - started]))
""")


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def raw_query(env: dict[str, str], workdir: Path, session: str, prompt: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RAW, session, str(workdir), prompt], env=env,
                          capture_output=True, text=True, check=True, cwd=workdir)
    return time.perf_counter() - started, done.stdout.strip().splitlines()[-1]


def sdk_home(model_url: str) -> tuple[dict[str, str], Path]:
    """An environment and a work dir of their own, as a sandbox's, for using the SDK directly."""
    home = Path(tempfile.mkdtemp(prefix="bench-sdk-"))
    (home / "work").mkdir()
    return {"PATH": os.environ["PATH"], "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "ANTHROPIC_BASE_URL": model_url, "ANTHROPIC_API_KEY": "offline",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}, home / "work"


def bench_raw(model_url: str) -> list[float]:
    env, work = sdk_home(model_url)
    _, session = raw_query(env, work, "", "warm-up")
    return [raw_query(env, work, session, f"raw {i}")[0] for i in range(REPEAT)]


class InProcessClient:
    """A connected `ClaudeSDKClient` in a process of its own, one turn when asked: its turns
    alternate with the warm turns through HTTP, so both see the machine as it is at that moment
    (on a shared VM, minutes apart can differ by 20%)."""

    def __init__(self, model_url: str) -> None:
        env, work = sdk_home(model_url)
        self.process = subprocess.Popen([sys.executable, "-c", CLIENT, str(work)], env=env,
                                        cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        if self.answer() != "ready":
            raise RuntimeError("the in-process client did not start")

    def answer(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"the in-process client ended (status {self.process.wait()})")
        return line

    def turn(self, prompt: str) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(prompt + "\n")
        self.process.stdin.flush()
        return float(self.answer())

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def function_python() -> str:
    """A Python with only requirements.txt installed, as a Vercel function has (the dev venv
    also holds the test tools: selenium brings trio, which httpcore imports when present, ~60 ms
    that no deployed function pays). Made once with uv, into .cache/."""
    requirements = (ROOT / "requirements.txt").read_bytes()
    venv = ROOT / ".cache" / f"function-venv-{hashlib.sha256(requirements).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if not python.exists():
        uv = str(Path(sys.executable).with_name("uv"))
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python), "-r",
                        str(ROOT / "requirements.txt")], check=True)
    return str(python)


def bench_cold_start(upstash_url: str, model_url: str, data_dir: str) -> tuple[float, float, float]:
    """(import, import + build + answer, the whole process), medians of REPEAT new processes of
    a function-only Python (function_python)."""
    python = function_python()
    env = {**os.environ, "UPSTASH_REDIS_REST_URL": upstash_url, "UPSTASH_REDIS_REST_TOKEN": DEV_TOKEN,
           "AUTH_MODE": "dev", "DATA_DIR": data_dir, "ANTHROPIC_BASE_URL": model_url}
    runs = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        done = subprocess.run([python, "-c", COLD_START], env=env, cwd=ROOT,
                              capture_output=True, text=True, check=True)
        runs.append([*json.loads(done.stdout.splitlines()[-1]), time.perf_counter() - started])
    return tuple(median_ms([run[i] for run in runs]) for i in range(3))  # type: ignore[return-value]


def start_dev_server(upstash_url: str, model_url: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    return spawn({"PORT": str(3900 + os.getpid() % 90), "DATA_DIR": data_dir,
                  "UPSTASH_REDIS_REST_URL": upstash_url, "UPSTASH_REDIS_REST_TOKEN": DEV_TOKEN,
                  "ANTHROPIC_BASE_URL": model_url, "AUTH_MODE": "dev", "RATE_LIMIT": "1000/60",
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


PHASES = [  # (row, how it is computed from a turn's Server-Timing and wall time), in order
    ("HTTP + Flask + the rest of the function", lambda t: t["wall"] - t["lock"] - t["attach"]
     - t["run"] - t["save"]),
    ("lock + load + rate limit (1 round trip)", lambda t: t["lock"]),
    ("attach (the user's sandbox)", lambda t: t["attach"]),
    ("reaching the agent (its socket, from the function)", lambda t: t["run"] - t["agent"] - t["mirror"]),
    ("the agent's turn (warm agent, its clock)", lambda t: t["agent"]),
    ("mirroring the transcript (held)", lambda t: t["mirror"]),
    ("save + release + transcript (1 round trip)", lambda t: t["save"]),
]


@contextlib.contextmanager
def redis_behind_the_stand_in() -> Iterator[tuple[str | None, str]]:
    """A redis-server of our own when one is installed (closer to Upstash's cost per command
    than fakeredis, which runs Lua in Python), else fakeredis; and which it is."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None, "fakeredis (no redis-server installed)"
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as conn:
                if conn.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", "redis-server"
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    with redis_behind_the_stand_in() as (redis_url, redis_kind):
        run(redis_url, redis_kind)


def run(redis_url: str | None, redis_kind: str) -> None:
    model, upstash = OfflineModel(), UpstashRestServer(redis_url)
    model_server, upstash_server = serve_in_background(model), serve_in_background(upstash)
    data_dir = tempfile.mkdtemp(prefix="bench-data-")
    process, url = start_dev_server(upstash_server.url, model_server.url, data_dir)
    in_process: InProcessClient | None = None
    try:
        raw = bench_raw(model_server.url)
        turn(url, "warm-up", "warm-up")
        cold = [turn(url, f"cold-{uuid.uuid4().hex[:8]}", "hello")[0] for _ in range(REPEAT)]
        # Each of those users' sandboxes keeps a warm agent and its CLI, idle but not free (a
        # few % of a core each): on Vercel every sandbox is a VM of its own, so the measured
        # user's must not share this machine's 2 cores with ten others.
        stop_warm_agents(Path(data_dir))
        user = f"warm-{uuid.uuid4().hex[:8]}"
        turn(url, user, "first")
        in_process = InProcessClient(model_server.url)
        client, warm, timings, trips = [], [], [], []
        for i in range(PAIRS):  # a client turn, then a warm turn of ours: pairs, in one run
            client.append(in_process.turn(f"client {i}"))
            before = upstash.round_trips
            elapsed, timing = turn(url, user, f"turn {i}")
            trips.append(upstash.round_trips - before)
            warm.append(elapsed)
            timings.append({"mirror": 0.0, "agent": 0.0, **timing, "wall": elapsed})
        in_process.close()
        memory = peak_rss_mb(process.pid)
        stop_warm_agents(Path(data_dir))  # a function's machine runs no sandbox
        cold_start = bench_cold_start(upstash_server.url, model_server.url, data_dir)
    finally:
        if in_process is not None and in_process.process.poll() is None:
            in_process.process.kill()
        process.terminate()
        process.wait()
        stop_warm_agents(Path(data_dir))
        model_server.stop()
        upstash_server.stop()
    ratio = median_ms(warm) / median_ms(client)
    print(f"turns: medians of {REPEAT} after a warm-up, {PAIRS} for the client/warm pairs (offline "
          f"model, local sandboxes, the Upstash stand-in over {redis_kind})")
    print(f"  in-process ClaudeSDKClient    {median_ms(client):8.0f} ms  (the floor)")
    print(f"  raw query() in a new process  {median_ms(raw):8.0f} ms")
    print(f"  turn cold (new user)          {median_ms(cold):8.0f} ms  "
          f"{median_ms(cold) / median_ms(raw):.2f}x raw")
    print(f"  turn warm (resume)            {median_ms(warm):8.0f} ms  "
          f"{median_ms(warm) / median_ms(raw):.2f}x raw, {ratio:.2f}x the in-process client "
          f"(target <= 1.5)")
    print("  where a warm turn's time goes (medians per phase, ms):")
    breakdown = {row: median_ms([phase(t) for t in timings]) for row, phase in PHASES}
    for row, ms in breakdown.items():
        print(f"    {row:<44} {ms:7.1f}")
    print(f"  Redis round trips, warm turn  {statistics.median(trips):8.0f} "
          f"(min {min(trips)}, max {max(trips)}; target 2)")
    print(f"  cold start of a function process: import {cold_start[0]:.0f} ms, + build + answer "
          f"GET /api/session {cold_start[1]:.0f} ms; whole process {cold_start[2]:.0f} ms")
    for module, seconds in import_times().items():
        print(f"  cold import {module:<22} {seconds * 1000:8.0f} ms")
    print(f"  peak RSS of the function process {memory:6.0f} MB")
    print(json.dumps({"client_ms": median_ms(client), "raw_ms": median_ms(raw),
                      "cold_ms": median_ms(cold), "warm_ms": median_ms(warm),
                      "warm_over_client": round(ratio, 2), "breakdown_ms": breakdown,
                      "round_trips": statistics.median(trips), "cold_start_ms": cold_start[1],
                      "cold_process_ms": cold_start[2], "peak_rss_mb": memory}))


if __name__ == "__main__":
    main()
