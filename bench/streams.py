"""Streams that outlive their connection, and stops that reach the agent, measured.

Offline, in one run: the Upstash stand-in (which counts round trips) and the offline model in
this process, the dev server (local sandboxes, real runner, SDK and CLI) as its own process.
  log cost     a warm turn whose answer is ~2,000 streamed parts: Redis round trips for the
               whole turn, of which the stream log's batched writes (vs. a plain JSON turn)
  resume       TRIES turns, each dropped after a random number of parts and resumed with
               Last-Event-ID: how many got every part exactly once (the text equals the
               stored answer)
  stop         TRIES turns stopped at their first text part: time from the stop request to
               the end of the stream, p50 and p95 (the target is 2 s), and whether the next
               message ran at once
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from lib.devtools.dev_server import spawn
from lib.devtools.model_server import OfflineModel
from lib.devtools.serving import serve_in_background
from lib.devtools.ui_stream import parse_events, post_stream, text_of
from lib.devtools.upstash_server import DEV_TOKEN, UpstashRestServer
from lib.sandboxes.local import stop_warm_agents

TRIES = int(os.environ.get("BENCH_TRIES", "20"))
LONG = "w " * 2000  # the offline model quotes it back: ~2,000 text parts


def main() -> None:
    slow, fast = OfflineModel(delay=0.02), OfflineModel(delay=0.0)
    upstash = UpstashRestServer()
    servers = [serve_in_background(app) for app in (slow, fast, upstash)]
    slow_server, fast_server, upstash_server = servers
    data_dir = tempfile.mkdtemp(prefix="bench-streams-")
    common = {"DATA_DIR": data_dir, "UPSTASH_REDIS_REST_URL": upstash_server.url,
              "UPSTASH_REDIS_REST_TOKEN": DEV_TOKEN, "AUTH_MODE": "dev", "RATE_LIMIT": "off",
              "AGENT_WARM_IDLE": "60"}
    processes = []
    client = httpx.Client(timeout=120)
    try:
        process, fast_url = spawn({**common, "PORT": str(3950 + os.getpid() % 40),
                                   "ANTHROPIC_BASE_URL": fast_server.url})
        processes.append(process)
        process, slow_url = spawn({**common, "PORT": str(4000 + os.getpid() % 40),
                                   "ANTHROPIC_BASE_URL": slow_server.url})
        processes.append(process)

        # log cost: a JSON turn and a streamed one, each with a ~2,000-part answer
        client.post(f"{fast_url}/api/chat", json={"prompt": "warm up"},
                    headers={"X-User-Id": "cost"})
        before = upstash.round_trips
        answer = client.post(f"{fast_url}/api/chat", json={"prompt": LONG},
                             headers={"X-User-Id": "cost"}).json()
        plain = upstash.round_trips - before
        before = upstash.round_trips
        events = post_stream(client, fast_url, "cost", LONG + " again")
        streamed = upstash.round_trips - before
        parts = len(events)

        # resume: dropped at random points, resumed after the last part seen
        rng, whole = random.Random(7), 0
        for i in range(TRIES):
            user = f"resume-{i}"
            drop_after = rng.randint(1, 30)
            seen = post_stream(client, slow_url, user, "Tell me a story.",
                               lambda i, _, n=drop_after: i + 1 >= n)
            rest = client.get(f"{slow_url}/api/chat/default/stream",
                              headers={"X-User-Id": user, "Last-Event-ID": str(seen[-1][0])})
            resumed = seen + (parse_events(rest.text) if rest.status_code == 200 else [])
            stored = client.get(f"{slow_url}/api/session/messages",
                                headers={"X-User-Id": user}).json()["messages"][-1]["text"]
            ids = [index for index, _ in resumed]
            whole += ids == list(range(len(ids))) and text_of(resumed) == stored

        # stop: at the first text part; how long until the stream ends
        waits, next_ok = [], 0
        for i in range(TRIES):
            user = f"stop-{i}"
            asked: list[float] = []

            def ask(user: str = user, asked: list[float] = asked) -> None:
                if not asked:
                    asked.append(time.perf_counter())
                    client.post(f"{slow_url}/api/chat/default/stop",
                                headers={"X-User-Id": user})

            post_stream(client, slow_url, user, "Tell me everything. " * 20,
                        lambda _, data, ask=ask: ask() if '"text-delta"' in data else None)
            waits.append(time.perf_counter() - asked[0])
            after = client.post(f"{slow_url}/api/chat", json={"prompt": "Go on."},
                                headers={"X-User-Id": user})
            next_ok += after.status_code == 200
    finally:
        client.close()
        for process in processes:
            process.terminate()
            process.wait()
        stop_warm_agents(Path(data_dir))
        for server in servers:
            server.stop()
    waits.sort()
    p95 = waits[max(0, int(round(0.95 * len(waits))) - 1)]
    print(f"streams: stream log, resume and stop (offline model, local sandboxes, {TRIES} tries)")
    print(f"  log cost: a {parts}-part answer takes {streamed} Redis round trips streamed, "
          f"{plain} as JSON (no log): {streamed - plain} for the log "
          f"({(streamed - plain) / parts:.3f} per part); answer {len(answer.get('text', ''))} "
          f"characters")
    print(f"  resume: {whole}/{TRIES} dropped turns resumed with every part exactly once")
    print(f"  stop: stop request -> end of stream p50 {statistics.median(waits) * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms (target 2000 ms); next message ran at once "
          f"{next_ok}/{TRIES}")
    print(json.dumps({"parts": parts, "round_trips_streamed": streamed,
                      "round_trips_json": plain, "resumed": whole, "tries": TRIES,
                      "stop_p50_ms": statistics.median(waits) * 1000, "stop_p95_ms": p95 * 1000,
                      "next_ok": next_ok}))


if __name__ == "__main__":
    main()
