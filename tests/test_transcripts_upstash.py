"""The Upstash transcript store through the real upstash-redis client and the REST stand-in."""

from __future__ import annotations

import asyncio
import json
import os

from claude_agent_sdk.testing import run_session_store_conformance

from lib.devtools.serving import serve_in_background
from lib.devtools.upstash_server import UpstashRestServer
from lib.state import connect
from lib.transcripts import SdkSessionStore, SessionKey, load_transcript
from lib.transcripts.upstash import UpstashTranscripts
from tests.conftest import Upstash

KEY: SessionKey = {"project_key": "user-hash", "session_id": "3f0c8a4e-0000-4000-8000-000000000001"}


def make_store(upstash: Upstash, max_request_bytes: int = 256 * 1024) -> UpstashTranscripts:
    client = connect(upstash.url, upstash.token, timeout=10)
    return UpstashTranscripts(client, f"t{os.urandom(4).hex()}", 3600, max_request_bytes)


def test_sdk_conformance(upstash_any: Upstash):
    probe = SdkSessionStore(make_store(upstash_any))
    for method in ("list_sessions", "delete", "list_subkeys"):  # none of ours is skipped
        assert callable(getattr(probe, method))
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
    app = UpstashRestServer(max_request_bytes=limit)
    server = serve_in_background(app)
    try:
        store = make_store(Upstash(server.url, app), max_request_bytes=limit)
        entries = [{"type": "user", "uuid": f"e{i}", "text": f"{i:05d}" + "x" * 2000}
                   for i in range(5000)]
        for start in range(0, 5000, 1000):  # batches of 2 MB: each must be split to fit
            store.append(KEY, entries[start:start + 1000])
        before = app.round_trips
        loaded = store.load(KEY)
        reads = app.round_trips - before
    finally:
        server.stop()
    assert loaded == entries
    assert app.largest_request <= limit and app.largest_response <= limit
    assert reads >= 10 * 1024 * 1024 * 4 // 3 // limit  # it really paged: ~13 MB of base64


def test_an_entry_too_big_for_one_request_is_stored_in_pieces(upstash_any: Upstash):
    limit = 64 * 1024
    app = UpstashRestServer(max_request_bytes=limit)
    server = serve_in_background(app)
    try:
        store = make_store(Upstash(server.url, app), max_request_bytes=limit)
        big = {"type": "user", "uuid": "big", "text": '"quoted" \\ é ' * 40_000}  # ~0.6 MB
        batch = [{"type": "user", "uuid": "a"}, big, {"type": "user", "uuid": "b"}]
        store.append(KEY, batch)
        store.append(KEY, batch)  # a retry: nothing is stored twice
        assert store.load(KEY) == batch
        assert app.largest_request <= limit and app.largest_response <= limit
    finally:
        server.stop()


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
