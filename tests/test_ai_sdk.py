"""The real npm AI SDK client against the dev server: `Chat` (@ai-sdk/react, outside React) with
`DefaultChatTransport` (ai), run by node (tests/ai_sdk_client.mjs), for ai@5 and ai@7. Two
chats of one user, switched between, a regenerate, history loaded with the ids the client saw;
a reload mid-turn that resumes the stream; stop() together with the stop endpoint; tool calls
and thinking as the client's message parts. Skipped,
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

# `npm view ai@5 version` / `npm view ai@7 version` (the newest of each), and the @ai-sdk/react
# that depends on exactly that ai (its peer dependencies: react, and zod for ai@5)
PACKAGES = {
    "ai@5": ["ai@5.0.277", "@ai-sdk/react@2.0.280", "react@19.2.1", "zod@3.25.76"],
    "ai@7": ["ai@7.0.173", "@ai-sdk/react@4.0.177", "react@19.2.1"],
}
# which chat's transport sends only the newest message (prepareSendMessagesRequest); the other
# sends the whole history (the default). A is the one regenerated: each mode once.
NEWEST_ONLY = {"ai@5": "b", "ai@7": "a"}
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
        try:
            done = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit",
                                   "--no-fund", "--loglevel=error", "-E", *PACKAGES[version]],
                                  capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip(f"could not install {wanted} with npm: no answer in 600 s")
        if done.returncode != 0:
            pytest.skip(f"could not install {wanted} with npm: {done.stderr[-500:]}")
        stamp.write_text(wanted)
    return prefix


@pytest.fixture
def serve(start_dev_server, upstash_fakeredis: Upstash):
    """Start the dev server against a model's URL, in a keyspace of its own."""

    def start(model_url: str, **env: str):
        return start_dev_server(UPSTASH_REDIS_REST_URL=upstash_fakeredis.url,
                                UPSTASH_REDIS_REST_TOKEN=upstash_fakeredis.token,
                                ANTHROPIC_BASE_URL=model_url,
                                KEY_PREFIX=f"aisdk{os.urandom(3).hex()}", **env)

    return start


@pytest.fixture
def dev(serve) -> Iterator:
    """The dev server against an offline model that streams a word every 50 ms (long enough to
    reload or stop mid-turn)."""
    model = serve_in_background(OfflineModel(delay=0.05))
    yield serve(model.url)
    model.stop()


def client(version: str, url: str, scenario: str, *extra: str) -> dict:
    packages = installed(version)
    done = subprocess.run(["node", str(CLIENT), str(packages), url,
                           f"{scenario}-{version.removeprefix('ai@')}", scenario, *extra],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def same(shown: list[dict], stored: list[dict]) -> bool:
    return [(m["id"], m["role"], m["text"]) for m in shown] == [
        (m["id"], m["role"], m["text"]) for m in stored]


@pytest.mark.parametrize("version", PACKAGES)
def test_two_chats_switched_a_regenerate_and_history_with_the_clients_ids(version, serve, model):
    dev = serve(model[1].url)  # answers at once: "You said: 'X'. Earlier you said: 1. 'Y'. ..."
    seen = client(version, dev.url, "chats", NEWEST_ONLY[version])
    steps = {s["step"]: s for s in seen["steps"]}
    assert [(s["status"], s["error"]) for s in seen["steps"]] == [("ready", "")] * 5, seen["steps"]
    a, b = seen["a"], seen["b"]

    asked_a = steps["a: Which fruit?"]["messages"]  # A before the regenerate
    assert [m["role"] for m in asked_a] == ["user", "assistant"] * 2
    assert "You said: 'Which fruit?'. Earlier you said: 1. 'Remember plum.'." in asked_a[3]["text"]
    assert "pear" not in asked_a[3]["text"]
    assert [m["role"] for m in b] == ["user", "assistant"] * 2
    assert "You said: 'Which fruit?'. Earlier you said: 1. 'Remember pear.'." in b[3]["text"]
    assert "plum" not in b[3]["text"]

    # regenerate: the same count, the last answer replaced by a new one (with a new id); the
    # model saw the rewound conversation (the prompt once), so it says the same thing again
    assert len(a) == len(asked_a) == 4 and a[:3] == asked_a[:3]
    assert a[3]["role"] == "assistant" and a[3]["id"] != asked_a[3]["id"]
    assert a[3]["text"] == asked_a[3]["text"] and "(2 user messages so far.)" in a[3]["text"]

    # what each transport sent: the whole history, or only the newest message
    newest_only = NEWEST_ONLY[version]
    for name, final in (("a", a), ("b", b)):
        sends = [s for s in seen["sent"] if s["chat"] == name]
        whole = [1, 3, 3] if name == "a" else [1, 3]
        assert [len(s["messages"]) for s in sends] == (
            [1] * len(whole) if name == newest_only else whole), sends
        assert [s["messages"][-1] for s in sends[:2]] == [[final[0]["id"], "user"],
                                                          [final[2]["id"], "user"]]
    regenerate = [s for s in seen["sent"] if s["chat"] == "a"][-1]
    assert regenerate["trigger"] == "regenerate-message"
    assert regenerate["messageId"] is None  # regenerate() without {messageId} names none
    assert regenerate["messages"][-1] == [a[2]["id"], "user"]

    # the loaded history: the ids the client has, in its order, nothing twice, one page
    for final, stored in ((a, seen["historyA"]), (b, seen["historyB"])):
        assert stored["status"] == 200 and stored["next_before"] is None
        assert [m["id"] for m in stored["messages"]] == [m["id"] for m in final]
        assert same(final, stored["messages"])
        ids = [m["id"] for m in stored["messages"]]
        assert len(set(ids)) == len(ids) == 4
    assert asked_a[3]["id"] not in [m["id"] for m in seen["historyA"]["messages"]]


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


@pytest.mark.parametrize("version", PACKAGES)
def test_tool_calls_and_thinking_become_the_clients_message_parts(version, serve, model):
    dev = serve(model[1].url, AGENT_PERMISSION_MODE="acceptEdits")
    wrote, thought = client(version, dev.url, "tools")["seen"]
    assert (wrote["status"], wrote["error"]) == ("ready", ""), wrote
    tools = [p for p in wrote["parts"] if p["type"] == "dynamic-tool"]
    assert [(t["toolName"], t["state"]) for t in tools] == [("Write", "output-available"),
                                                            ("Read", "output-available")]
    assert tools[0]["input"]["content"] == "hello sdk"
    assert tools[0]["output"]["text"].startswith("File created successfully")
    assert tools[1]["output"] == {"text": "1\thello sdk", "truncated": False}
    texts = [p["text"] for p in wrote["parts"] if p["type"] == "text"]
    assert "read back: 1\thello sdk" in texts[-1]
    assert (thought["status"], thought["error"]) == ("ready", ""), thought
    reasoning = [p for p in thought["parts"] if p["type"] == "reasoning"]
    assert len(reasoning) == 1 and reasoning[0]["state"] == "done"
    assert reasoning[0]["text"].startswith("The user asked me to think about 'Think about figs.'")
