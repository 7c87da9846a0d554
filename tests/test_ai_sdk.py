"""The real npm AI SDK client against the dev server: `Chat` (@ai-sdk/react, outside React) with
`DefaultChatTransport` (ai), run by node (tests/ai_sdk_client.mjs), for ai@5 and ai@7. Two
chats of one user, switched between, a regenerate, history loaded with the ids the client saw;
a reload mid-turn that resumes the stream; stop() together with the stop endpoint. Skipped,
visibly, where node or npm is missing or the packages cannot be installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.devtools.model_server import OfflineModel
from lib.devtools.serving import serve_in_background
from tests.conftest import ROOT, Upstash

pytestmark = pytest.mark.slow

# ai is pinned by the @ai-sdk/react version: 2.0.280 -> ai 5.0.277, 4.0.177 -> ai 7.0.173
PACKAGES = {
    "ai@5": ["@ai-sdk/react@2.0.280", "react@19.2.1", "zod@3.25.76"],
    "ai@7": ["@ai-sdk/react@4.0.177", "react@19.2.1"],
}
CLIENT = ROOT / "tests" / "ai_sdk_client.mjs"


def installed(version: str) -> Path:
    """The packages in a folder of the repo's .cache (installed once), or a visible skip."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are not installed: the AI SDK client tests are skipped")
    prefix = ROOT / ".cache" / f"ai-sdk-{version.removeprefix('ai@')}"
    stamp = prefix / ".installed"
    wanted = " ".join(PACKAGES[version])
    if not stamp.exists() or stamp.read_text() != wanted:
        prefix.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit",
                               "--no-fund", "--loglevel=error", "-E", *PACKAGES[version]],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"could not install {wanted} with npm: {done.stderr[-500:]}")
        stamp.write_text(wanted)
    return prefix


@pytest.fixture
def dev(start_dev_server, upstash_fakeredis: Upstash) -> Iterator:
    """The dev server against an offline model that streams a word every 50 ms (long enough to
    reload or stop mid-turn)."""
    model = serve_in_background(OfflineModel(delay=0.05))
    yield start_dev_server(UPSTASH_REDIS_REST_URL=upstash_fakeredis.url,
                           UPSTASH_REDIS_REST_TOKEN=upstash_fakeredis.token,
                           ANTHROPIC_BASE_URL=model.url, KEY_PREFIX=f"aisdk{os.urandom(3).hex()}")
    model.stop()


def client(version: str, url: str, scenario: str) -> dict:
    packages = installed(version)
    done = subprocess.run(["node", str(CLIENT), str(packages), url,
                           f"{scenario}-{version.removeprefix('ai@')}", scenario],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def same(shown: list[dict], stored: list[dict]) -> bool:
    return [(m["id"], m["role"], m["text"]) for m in shown] == [
        (m["id"], m["role"], m["text"]) for m in stored]


@pytest.mark.parametrize("version", PACKAGES)
def test_two_chats_switched_a_regenerate_and_history_with_the_clients_ids(version, dev):
    seen = client(version, dev.url, "chats")
    assert seen["status"] == ["ready", "ready"] and seen["errors"] == ["", ""]
    a, b = seen["a"], seen["b"]
    assert "'Remember plum.'" in a[3]["text"] and "pear" not in a[3]["text"]
    assert "'Remember pear.'" in b[3]["text"] and "plum" not in b[3]["text"]
    before = seen["before"]
    assert len(a) == len(before) == 4 and a[:3] == before[:3]
    assert a[3]["id"] != before[3]["id"]  # regenerate: a new answer in its place
    assert same(a, seen["historyA"]) and same(b, seen["historyB"])  # nothing shows twice


@pytest.mark.parametrize("version", PACKAGES)
def test_a_reload_mid_turn_resumes_the_stream_to_the_full_answer(version, dev):
    seen = client(version, dev.url, "resume")
    assert seen["status"] == "ready" and seen["error"] == ""
    answer = seen["history"][-1]
    assert len(seen["seenBefore"]) < len(answer["text"])  # reloaded mid-answer
    assert seen["resumed"][-1] == {"id": answer["id"], "role": "assistant",
                                   "text": answer["text"]}
    assert same(seen["resumed"], seen["history"])


@pytest.mark.parametrize("version", PACKAGES)
def test_stop_with_the_stop_endpoint_ends_the_turn_and_the_next_message_runs(version, dev):
    seen = client(version, dev.url, "stop")
    assert seen["stopStatus"] == 202 and seen["status"] == "ready" and seen["error"] == ""
    stopped, after = seen["history"][1], seen["history"][3]
    assert "(1 user messages so far.)" not in stopped["text"]  # cut short, and kept
    assert "Earlier you said: 1. 'Tell me everything about plums.'" in after["text"]
    ids = [(m["id"], m["role"]) for m in seen["chat"]]
    assert ids == [(m["id"], m["role"]) for m in seen["history"]]  # the same messages
    # (the client stopped reading at once: it may have less of the stopped answer than was kept)
    assert stopped["text"].startswith(seen["chat"][1]["text"])
