"""Every state operation through the real upstash-redis client, against the REST stand-in over
fakeredis and over a real redis-server."""

from __future__ import annotations

import os
import time

import pytest

from lib.devtools.serving import serve_in_background
from lib.errors import LockLost, StateUnavailable, TurnInProgress
from lib.state import _BEGIN, SessionRecord, StateStore, connect
from tests.conftest import Upstash, free_port


@pytest.fixture
def store(upstash_any: Upstash) -> StateStore:
    client = connect(upstash_any.url, upstash_any.token, timeout=5)
    return StateStore(client, f"t{os.urandom(4).hex()}", lock_ttl_ms=60_000)


def record(session_id: str = "s-1", turns: int = 1, at: float = 1000.0) -> SessionRecord:
    return SessionRecord(session_id, "agent-abc", turns, created_at=at, last_active_at=at)


def test_begin_locks_and_reads_the_record_in_one_round_trip(store: StateStore, upstash_any: Upstash):
    before = upstash_any.app.round_trips
    lease = store.begin("u1")
    assert upstash_any.app.round_trips - before == 1
    assert lease.record is None
    assert store.lock_holder("u1") == lease.token


def test_commit_saves_indexes_and_releases_in_one_round_trip(store: StateStore, upstash_any: Upstash):
    lease = store.begin("u1")
    before = upstash_any.app.round_trips
    store.commit(lease, record(at=1234.5))
    assert upstash_any.app.round_trips - before == 1
    assert store.read("u1") == record(at=1234.5)
    assert store.lock_holder("u1") is None
    assert store.redis.zscore(store.activity_key, "u1") == 1234.5
    assert store.begin("u1").record == record(at=1234.5)


def test_a_held_lock_refuses_a_second_turn_with_retry_after(store: StateStore):
    store.begin("u1")
    with pytest.raises(TurnInProgress) as busy:
        store.begin("u1")
    assert 1 <= busy.value.retry_after <= 5
    store.begin("u2")  # other users are unaffected


def test_acquire_retried_with_the_same_token_is_idempotent(store: StateStore):
    lease = store.begin("u1")
    lock, rec = store._keys("u1")
    again = store.redis.eval(_BEGIN, [lock, rec], [lease.token, "60000"])
    assert again[0] == 1


def test_release_only_removes_our_own_lock(store: StateStore):
    lease = store.begin("u1")
    store.redis.set(store._keys("u1")[0], "someone-else")
    store.release(lease)
    assert store.lock_holder("u1") == "someone-else"


def test_commit_after_the_lock_was_lost_writes_nothing(store: StateStore):
    first = store.begin("u1")
    store.commit(first, record("s-1", 1))
    lease = store.begin("u1")
    store.redis.delete(store._keys("u1")[0])  # lease expired...
    thief = store.begin("u1")  # ...and another turn took the lock
    with pytest.raises(LockLost):
        store.commit(lease, record("s-2", 2))
    assert store.read("u1") == record("s-1", 1)
    assert store.lock_holder("u1") == thief.token


def test_commit_retried_after_a_lost_answer_reports_success(store: StateStore):
    lease = store.begin("u1")
    store.commit(lease, record())
    store.commit(lease, record())  # same token, same record: the first attempt had landed


def test_the_lock_expires_with_its_lease(upstash_any: Upstash):
    store = StateStore(connect(upstash_any.url, upstash_any.token, 5), f"t{os.urandom(4).hex()}", 200)
    store.begin("u1")
    time.sleep(0.3)
    store.begin("u1")


def test_forget_deletes_record_index_and_lock(store: StateStore):
    store.commit(store.begin("u1"), record())
    store.forget(store.begin("u1"))
    assert store.read("u1") is None
    assert store.lock_holder("u1") is None
    assert store.redis.zscore(store.activity_key, "u1") is None


def test_ping(store: StateStore):
    assert store.ping() is True


def test_an_unreachable_store_is_state_unavailable():
    store = StateStore(connect(f"http://127.0.0.1:{free_port()}", "x", timeout=1), "t", 60_000)
    with pytest.raises(StateUnavailable, match="unreachable"):
        store.begin("u1")


def answering(body: bytes, status: str = "400 Bad Request", delay: float = 0.0):
    """A server that answers every request the same way (after `delay` seconds)."""
    def app(environ, start_response):
        time.sleep(delay)
        start_response(status, [("Content-Type", "application/json")])
        return [body]
    return serve_in_background(app)


def test_a_hanging_store_times_out_into_state_unavailable():
    server = answering(b'{"result": "PONG"}', "200 OK", delay=5)
    try:
        store = StateStore(connect(server.url, "x", timeout=0.3), "t", 60_000)
        with pytest.raises(StateUnavailable, match="ReadTimeout"):
            store.ping()
    finally:
        server.stop()


def test_every_client_quirk_is_one_error_type():
    """Errors in single commands raise UpstashError; a top-level error from /multi-exec raises
    AttributeError inside the client; garbage raises ValueError. All are StateUnavailable."""
    for body in (b'{"error": "ERR boom"}', b"not json at all"):
        server = answering(body)
        try:
            store = StateStore(connect(server.url, "x", timeout=2), "t", 60_000)
            with pytest.raises(StateUnavailable):
                store.ping()
            with pytest.raises(StateUnavailable):
                store.begin("u1")
            with pytest.raises(StateUnavailable):
                store.read("u1")
            from lib.transcripts.upstash import UpstashTranscripts

            transcripts = UpstashTranscripts(store.redis, "t", 60, 64 * 1024)
            with pytest.raises(StateUnavailable):
                transcripts.delete({"project_key": "p", "session_id": "s"})
        finally:
            server.stop()


def test_a_wrong_token_is_state_unavailable(upstash_fakeredis: Upstash):
    store = StateStore(connect(upstash_fakeredis.url, "wrong-token", 5), "t", 60_000)
    with pytest.raises(StateUnavailable, match="WRONGPASS"):
        store.read("u1")


def test_records_of_the_previous_version_and_of_a_newer_one_read_fine():
    before_hints = ('{"created_at":1.0,"last_active_at":2.0,"sandbox_name":"agent-abc",'
                    '"session_id":"s-1","turns":3}')
    assert SessionRecord.from_json(before_hints) == SessionRecord("s-1", "agent-abc", 3, 1.0, 2.0)
    newer = SessionRecord("s-1", "agent-abc", 3, 1.0, 2.0, sandbox_hint="h").to_json()
    with_more = newer[:-1] + ',"chats":{"a":1}}'
    assert SessionRecord.from_json(with_more).sandbox_hint == "h"
