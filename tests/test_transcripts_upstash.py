"""The Upstash transcript store through the real upstash-redis client and the REST stand-in."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from claude_agent_sdk import fold_session_summary, list_sessions_from_store
from claude_agent_sdk.testing import run_session_store_conformance

from lib.devtools.serving import serve_in_background
from lib.devtools.upstash_server import UpstashRestServer
from lib.state import connect
from lib.transcripts import SdkSessionStore, SessionKey, TranscriptStore, load_transcript, summary
from lib.transcripts.upstash import UpstashTranscripts
from tests.conftest import Upstash

KEY: SessionKey = {"project_key": "user-hash", "session_id": "3f0c8a4e-0000-4000-8000-000000000001"}


@contextmanager
def limited_store(limit: int) -> Iterator[tuple[UpstashTranscripts, UpstashRestServer]]:
    """A store on a stand-in of its own that refuses requests (and answers) over `limit`."""
    app = UpstashRestServer(max_request_bytes=limit)
    server = serve_in_background(app)
    try:
        yield make_store(Upstash(server.url, app), max_request_bytes=limit), app
    finally:
        server.stop()


def make_store(upstash: Upstash, max_request_bytes: int = 256 * 1024) -> UpstashTranscripts:
    client = connect(upstash.url, upstash.token, timeout=10)
    return UpstashTranscripts(client, f"t{os.urandom(4).hex()}", 3600, max_request_bytes)


def test_sdk_conformance(upstash_any: Upstash):
    probe = SdkSessionStore(make_store(upstash_any))
    for method in ("list_sessions", "list_session_summaries", "delete", "list_subkeys"):
        assert callable(getattr(probe, method))  # none of ours is skipped
    asyncio.run(run_session_store_conformance(lambda: SdkSessionStore(make_store(upstash_any))))


def test_a_retried_batch_is_stored_once(upstash_any: Upstash):
    store = make_store(upstash_any)
    batch = [{"type": "user", "uuid": "u1", "n": 1}, {"type": "assistant", "uuid": "u2", "n": 2}]
    store.append(KEY, batch)
    store.append(KEY, batch)  # the SDK retries a batch whose answer was lost
    store.append(KEY, [{"type": "assistant", "uuid": "u2", "n": 2}, {"type": "user", "uuid": "u3"}])
    assert store.load(KEY) == [*batch, {"type": "user", "uuid": "u3"}]
    store.append(KEY, [{"type": "mode", "n": 9}])
    store.append(KEY, [{"type": "mode", "n": 9}])  # no uuid: appended as is, like the SDK asks
    assert [e["type"] for e in store.load(KEY)].count("mode") == 2


def test_keys_with_separators_do_not_collide(upstash_any: Upstash):
    store = make_store(upstash_any)
    store.append({"project_key": "a:b", "session_id": "c"}, [{"type": "x", "n": 1}])
    store.append({"project_key": "a", "session_id": "b:c"}, [{"type": "x", "n": 2}])
    assert store.load({"project_key": "a:b", "session_id": "c"}) == [{"type": "x", "n": 1}]
    assert store.load({"project_key": "a", "session_id": "b:c"}) == [{"type": "x", "n": 2}]


def test_a_long_transcript_loads_whole_through_bounded_requests():
    """5,000 entries of ~2 KB: every request and every answer stays under the configured size."""
    limit = 256 * 1024
    with limited_store(limit) as (store, app):
        entries = [{"type": "user", "uuid": f"e{i}", "text": f"{i:05d}" + "x" * 2000}
                   for i in range(5000)]
        for start in range(0, 5000, 1000):  # batches of 2 MB: each must be split to fit
            store.append(KEY, entries[start:start + 1000])
        before = app.round_trips
        loaded = store.load(KEY)
        reads = app.round_trips - before
    assert loaded == entries
    assert app.largest_request <= limit and app.largest_response <= limit
    assert reads >= 10 * 1024 * 1024 * 4 // 3 // limit  # it really paged: ~13 MB of base64


def test_an_entry_too_big_for_one_request_is_stored_in_pieces(upstash_any: Upstash):
    limit = 64 * 1024
    with limited_store(limit) as (store, app):
        big = {"type": "user", "uuid": "big", "text": '"quoted" \\ é ' * 40_000}  # ~0.6 MB
        batch = [{"type": "user", "uuid": "a"}, big, {"type": "user", "uuid": "b"}]
        store.append(KEY, batch)
        store.append(KEY, batch)  # a retry: nothing is stored twice
        assert store.load(KEY) == batch
        assert app.largest_request <= limit and app.largest_response <= limit


def test_an_interrupted_run_of_pieces_is_skipped(upstash_fakeredis: Upstash):
    from lib.transcripts.upstash import _PART

    store = make_store(upstash_fakeredis)
    entries_key = store._transcript_keys(KEY)[0]
    for item in (json.dumps({"type": "user", "uuid": "a"}), f"{_PART}0/3 eyJ0",
                 json.dumps({"type": "user", "uuid": "b"})):
        store.redis.rpush(entries_key, item)
        store.redis.rpush(f"{entries_key}:n", len(item))
    assert store.load(KEY) == [{"type": "user", "uuid": "a"}, {"type": "user", "uuid": "b"}]


def test_load_transcript_collects_subagents(upstash_fakeredis: Upstash):
    store = make_store(upstash_fakeredis)
    store.append(KEY, [{"type": "user", "uuid": "m1"}])
    store.append({**KEY, "subpath": "subagents/agent-1"}, [{"type": "user", "uuid": "s1"}])
    transcript = load_transcript(store, KEY["project_key"], KEY["session_id"])
    assert transcript.entries == [{"type": "user", "uuid": "m1"}]
    assert transcript.subkeys == {"subagents/agent-1": [{"type": "user", "uuid": "s1"}]}
    assert load_transcript(store, KEY["project_key"], "missing") is None


def test_every_key_gets_the_retention_ttl(upstash_fakeredis: Upstash):
    store = make_store(upstash_fakeredis)
    store.append(KEY, [{"type": "user", "uuid": "m1"}])
    store.append({**KEY, "subpath": "subagents/agent-1"}, [{"type": "user", "uuid": "s1"}])
    keys = [k for k in upstash_fakeredis.app.client.keys(f"{store.prefix}:*")]
    assert len(keys) >= 6
    assert all(0 < upstash_fakeredis.app.client.ttl(k) <= 3600 for k in keys)


# --- summaries ------------------------------------------------------------------------------


def prompt(text: str | list[str], **extra: Any) -> dict[str, Any]:
    content = text if isinstance(text, str) else [{"type": "text", "text": t} for t in text]
    return {"type": "user", "uuid": os.urandom(8).hex(), "timestamp": "2025-03-01T10:00:00.000Z",
            "message": {"role": "user", "content": content}, **extra}


def check_titles(store: TranscriptStore) -> None:
    """What the service lists: a title per conversation, from what a person sees."""
    key: SessionKey = {"project_key": "titles", "session_id": "s1"}
    long = "Plan a three day trip to Lisbon   with a budget,\nmuseums and food " * 3
    store.append(key, [
        {"type": "queue-operation", "operation": "enqueue", "timestamp": "2025-03-01T10:00:00Z"},
        prompt(["<system-reminder>\nToday's date is 2025-03-01.\n</system-reminder>", long]),
        {"type": "assistant", "uuid": "a1", "message": {"content": [{"type": "text", "text": "Sure"}]}},
    ])
    store.append({**key, "subpath": "subagents/agent-1"}, [prompt("a subagent's task")])
    store.append(key, [prompt("and a second prompt")])
    (first,) = store.list_session_summaries("titles")
    assert first["session_id"] == "s1"
    assert first["title"] == first["first_prompt"] == " ".join(long.split())[:79].rstrip() + "…"
    assert len(first["title"]) <= 80
    assert first["created_at"] == 1740823200000
    assert first["mtime"] >= {s["session_id"]: s["mtime"] for s in store.list_sessions("titles")}["s1"]

    store.append({**key, "session_id": "s2"}, [
        prompt("<system-reminder>injected only</system-reminder>"),  # no person's prompt yet
        prompt([]), prompt("[Request interrupted by user]"),
        prompt("/clear", isMeta=True),
        {"type": "user", "uuid": "t1", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "x", "content": "tool output"}]}},
    ])
    titles = {s["session_id"]: s["title"] for s in store.list_session_summaries("titles")}
    assert titles == {"s1": first["title"], "s2": None}
    store.append({**key, "session_id": "s2"}, [prompt("<b>bold</b> is a real prompt")])

    store.append(key, [{"type": "ai-title", "aiTitle": "Lisbon trip", "sessionId": "s1"}])
    store.append(key, [{"type": "custom-title", "customTitle": "My  Lisbon plan", "sessionId": "s1"}])
    store.append(key, [{"type": "ai-title", "aiTitle": "A later AI title"}])  # the user's wins
    titles = {s["session_id"]: s["title"] for s in store.list_session_summaries("titles")}
    assert titles == {"s1": "My Lisbon plan", "s2": "<b>bold</b> is a real prompt"}
    assert sorted(store.session_summaries("titles", ["s2", "none", "s1"]),  # those asked for
                  key=lambda s: s["session_id"]) == sorted(store.list_session_summaries("titles"),
                                                          key=lambda s: s["session_id"])
    assert [s["title"] for s in store.session_summaries("titles", ["s2"])] == [titles["s2"]]
    assert store.session_summaries("titles", []) == []
    store.append(key, [{"type": "custom-title", "customTitle": "Renamed"}])  # the last one wins
    (renamed,) = [s for s in store.list_session_summaries("titles") if s["session_id"] == "s1"]
    assert renamed["title"] == "Renamed" and renamed["first_prompt"] == first["first_prompt"]
    assert renamed["data"]["custom_title"] == "Renamed"  # the SDK's own field, as it folds it

    store.delete(key)
    assert [s["session_id"] for s in store.list_session_summaries("titles")] == ["s2"]
    assert store.list_session_summaries("nobody") == []


def test_summaries_give_titles(upstash_any: Upstash):
    check_titles(make_store(upstash_any))


def random_entry(rng: random.Random) -> dict[str, Any]:
    """An entry of any of the kinds the SDK's summary fold looks at."""
    kind = rng.randrange(12)
    stamp = rng.choice([f"2025-03-0{rng.randint(1, 9)}T10:00:00.000Z", "not a date", None])
    entry: dict[str, Any] = {"uuid": os.urandom(6).hex(), "isSidechain": rng.random() < 0.1}
    if stamp:
        entry["timestamp"] = stamp
    if rng.random() < 0.3:
        entry["cwd"] = rng.choice(["/work", "/tmp/é", ""])
    if kind < 5:
        text = rng.choice(["hello", "  ", "<system-reminder>x</system-reminder>", "line\nbreak",
                           "<command-name>/model</command-name>", "<command-name>/x</command-name>",
                           "[Request interrupted by user]", "<tick>", "é" * 250, "x" * 600])
        content: Any = text if kind == 0 else [{"type": "text", "text": text},
                                               {"type": "text", "text": rng.choice(["a", ""])}]
        if kind == 1:
            content = [{"type": "tool_result", "content": "out"}]
        entry |= {"type": "user", "message": {"content": content}}
        entry |= rng.choice([{}, {}, {"isMeta": True}, {"isCompactSummary": True}])
    elif kind < 10:
        field = ["customTitle", "aiTitle", "lastPrompt", "summary", "gitBranch"][kind - 5]
        entry |= {"type": "x", field: rng.choice(["t1", "t2", "", "ü" * 20])}
    elif kind == 10:
        entry |= {"type": "tag"} | rng.choice([{"tag": "t"}, {"tag": ""}, {}, {"tag": 3}])
    else:
        entry["type"] = "assistant"
    return entry


def sdk_fold(key: SessionKey, batches: list[list[dict[str, Any]]]) -> dict[str, Any]:
    folded = None
    for batch in batches:
        folded = fold_session_summary(folded, key, batch)
    return folded["data"]


def test_the_summary_fold_is_the_sdks():
    """Whatever the batches, merging each batch's delta gives the SDK's own fold."""
    rng = random.Random(7)
    key: SessionKey = {"project_key": "p", "session_id": "s"}
    for _ in range(500):
        batches = [[random_entry(rng) for _ in range(rng.randint(1, 6))]
                   for _ in range(rng.randint(1, 4))]
        fields: dict[str, Any] = {}
        for batch in batches:
            fields = summary.merge(fields, summary.delta(batch))
        assert summary.summary_from("s", 1, fields)["data"] == sdk_fold(key, batches), batches


def test_the_append_script_folds_like_the_sdk():
    """The same through the Lua script, with a small request limit: the listing is paged."""
    limit = 24 * 1024
    with limited_store(limit) as (store, app):
        rng = random.Random(11)
        expected = {}
        for n in range(60):
            key: SessionKey = {"project_key": "p", "session_id": f"s{n}"}
            batches = [[random_entry(rng) for _ in range(rng.randint(1, 8))]
                       for _ in range(rng.randint(1, 4))]
            for batch in batches:
                store.append(key, batch)
            expected[key["session_id"]] = sdk_fold(key, batches)
        before = app.round_trips
        listed = {s["session_id"]: s["data"] for s in store.list_session_summaries("p")}
        round_trips = app.round_trips - before
    assert listed == expected
    assert app.largest_request <= limit and app.largest_response <= limit
    assert 3 <= round_trips <= 8  # the summaries did not fit one answer


def test_listing_summaries_is_a_bounded_number_of_round_trips(upstash_fakeredis: Upstash):
    store = make_store(upstash_fakeredis)
    app = upstash_fakeredis.app
    for n in range(40):
        key: SessionKey = {"project_key": "many", "session_id": f"s{n:02d}"}
        before = app.round_trips
        store.append(key, [prompt(f"question {n} " + "x" * 300)] + [
            {"type": "assistant", "uuid": f"a{n}-{i}", "text": "y" * 2000} for i in range(50)])
        assert app.round_trips - before == 1  # the summary costs no request of its own
        store.append({**key, "subpath": "subagents/agent-1"}, [prompt("sub")])
    before = app.round_trips
    summaries = store.list_session_summaries("many")
    assert app.round_trips - before == 2  # the index and sizes, then every summary
    before = app.round_trips
    page = store.session_summaries("many", [f"s{n:02d}" for n in range(40)])
    assert app.round_trips - before == 1 and len(page) == 40  # a page of chats: no listing
    assert sorted(s["title"] for s in summaries) == sorted(
        (f"question {n} " + "x" * 300)[:79] + "…" for n in range(40))


def test_the_sdk_lists_sessions_from_our_summaries(upstash_fakeredis: Upstash):
    """The SDK's `list_sessions_from_store` takes its fast path: no transcript is loaded."""
    from claude_agent_sdk import project_key_for_directory

    store = make_store(upstash_fakeredis)
    project = project_key_for_directory("/work")
    store.append({"project_key": project, "session_id": "s1"},
                 [prompt("first question", cwd="/work"), {"type": "x", "customTitle": "Named"}])
    store.append({"project_key": project, "session_id": "s2"}, [prompt("second question")])
    store.load = None  # any load fails
    infos = asyncio.run(list_sessions_from_store(SdkSessionStore(store), directory="/work"))
    assert {(i.session_id, i.summary, i.custom_title) for i in infos} == {
        ("s1", "Named", "Named"), ("s2", "second question", None)}
