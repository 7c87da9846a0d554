"""Every state operation through the real upstash-redis client, against the REST stand-in over
fakeredis and over a real redis-server."""

from __future__ import annotations

import os
import time

import pytest

from lib.devtools.serving import serve_in_background
from lib.errors import LockLost, StateUnavailable, TurnInProgress
from lib.limits import TurnLimits
from lib.state import (
    _BEGIN_TURN,
    DEFAULT_CHAT,
    ChatRecord,
    StateStore,
    UserRecord,
    connect,
    parse_user,
)
from tests.conftest import Upstash, free_port


@pytest.fixture
def store(upstash_any: Upstash) -> StateStore:
    client = connect(upstash_any.url, upstash_any.token, timeout=5)
    return StateStore(client, f"t{os.urandom(4).hex()}", lock_ttl_ms=60_000)


def user_record(at: float = 1000.0, hint: str | None = None) -> UserRecord:
    return UserRecord("agent-abc", created_at=1.0, last_active_at=at, sandbox_hint=hint)


def chat(session_id: str = "s-1", turns: int = 1, at: float = 1000.0) -> ChatRecord:
    return ChatRecord(session_id, turns, created_at=at, last_active_at=at, first_prompt="hi")


def commit(store: StateStore, user: str = "u1", name: str = DEFAULT_CHAT, **changes) -> None:
    lease = store.begin_turn(user, name)
    store.commit_turn(lease, user_record(changes.get("at", 1000.0)), chat(**changes))


def test_begin_locks_and_reads_the_records_in_one_round_trip(store: StateStore,
                                                              upstash_any: Upstash):
    before = upstash_any.app.round_trips
    lease = store.begin_turn("u1", "c1")
    assert upstash_any.app.round_trips - before == 1
    assert lease.record is None and lease.chat_record is None and lease.chat == "c1"
    assert store.lock_holder("u1", "c1") == lease.token
    assert store.running_turns("u1") == 1


def test_commit_saves_indexes_and_releases_in_one_round_trip(store: StateStore,
                                                             upstash_any: Upstash):
    lease = store.begin_turn("u1", "c1")
    before = upstash_any.app.round_trips
    store.commit_turn(lease, user_record(1234.5), chat(at=1234.5), {"uuid-1": "client-1"})
    assert upstash_any.app.round_trips - before == 1
    assert store.read_chat("u1", "c1") == chat(at=1234.5)
    assert store.read_user("u1") == (user_record(1234.5), None)
    assert store.lock_holder("u1", "c1") is None and store.running_turns("u1") == 0
    for index in (store.activity_key, store.awake_key):
        assert store.redis.zscore(index, "u1") == 1234.5
    assert store.redis.zscore(store.chat_activity_key, "u1:c1") == 1234.5
    assert store.message_ids("u1", "c1") == {"uuid-1": "client-1"}
    again = store.begin_turn("u1", "c1")
    assert again.chat_record == chat(at=1234.5) and again.record == user_record(1234.5)


def test_a_held_chat_refuses_a_second_turn_other_chats_and_users_run(store: StateStore):
    store.begin_turn("u1", "c1")
    with pytest.raises(TurnInProgress) as busy:
        store.begin_turn("u1", "c1")
    assert 1 <= busy.value.retry_after <= 5
    store.begin_turn("u1", "c2")  # another conversation of the same user
    store.begin_turn("u2", "c1")  # another user
    assert store.running_turns("u1") == 2


def test_no_turn_starts_while_the_user_lock_is_held_and_it_waits_for_turns(store: StateStore):
    turn = store.begin_turn("u1", "c1")
    with pytest.raises(TurnInProgress):  # cleanup cannot take a user with a running turn
        store.begin_user("u1")
    store.release(turn)
    cleanup = store.begin_user("u1")
    with pytest.raises(TurnInProgress, match="cleaned up"):
        store.begin_turn("u1", "c2")
    store.release(cleanup)
    store.begin_turn("u1", "c2")


def test_acquire_retried_with_the_same_token_is_idempotent(store: StateStore):
    limits = TurnLimits("lim", rate=(5, 60), per_day=None)
    lease = store.begin_turn("u1", "c1", limits)
    check = limits.check("u1", store.clock_ms())
    keys = [store._user("u1", "lock"), store._user("u1", "busy"),
            store._chat("u1", "c1", "lock"), store._user("u1", "rec"), store._chat("u1", "c1"),
            store._chat("u1", "c1", "log"), *check.keys]
    again = store.redis.eval(_BEGIN_TURN, keys,
                             [lease.token, "60000", str(store.clock_ms()), *check.args])
    assert again[0] == 1
    assert store.redis.get(check.keys[0]) == "1"  # the retry did not count the turn again


def test_release_only_removes_our_own_lock(store: StateStore):
    lease = store.begin_turn("u1", "c1")
    store.redis.set(store._chat("u1", "c1", "lock"), "someone-else")
    store.release(lease)
    assert store.lock_holder("u1", "c1") == "someone-else"
    assert store.running_turns("u1") == 0


def test_commit_after_the_lock_was_lost_writes_nothing(store: StateStore):
    commit(store, name="c1", session_id="s-1", turns=1)
    lease = store.begin_turn("u1", "c1")
    store.redis.delete(store._chat("u1", "c1", "lock"))  # lease expired...
    thief = store.begin_turn("u1", "c1")  # ...and another turn took the lock
    with pytest.raises(LockLost):
        store.commit_turn(lease, user_record(), chat("s-2", 2))
    assert store.read_chat("u1", "c1") == chat("s-1", 1)
    assert store.lock_holder("u1", "c1") == thief.token


def test_commit_retried_after_a_lost_answer_reports_success(store: StateStore):
    lease = store.begin_turn("u1", "c1")
    store.commit_turn(lease, user_record(), chat())
    store.commit_turn(lease, user_record(), chat())  # same token: the first attempt had landed


def test_the_lock_and_the_running_turn_expire_with_their_lease(upstash_any: Upstash):
    store = StateStore(connect(upstash_any.url, upstash_any.token, 5), f"t{os.urandom(4).hex()}",
                       200)
    store.begin_turn("u1", "c1")  # a function that died mid-turn
    time.sleep(0.3)
    store.begin_turn("u1", "c1")
    time.sleep(0.3)
    store.begin_user("u1")  # the dead turn no longer counts as running


def test_a_title_survives_the_turns_and_a_missing_chat_cannot_be_renamed(store: StateStore):
    assert store.rename_chat("u1", "c1", "Taxes") is False
    commit(store, name="c1")
    assert store.rename_chat("u1", "c1", "Taxes") is True
    commit(store, name="c1", turns=2)
    assert store.read_chat("u1", "c1").title == "Taxes"


def test_chats_are_listed_newest_first_in_pages(store: StateStore):
    for n, at in enumerate((10.0, 30.0, 20.0)):
        commit(store, name=f"c{n}", session_id=f"s-{n}", at=at)
    page, total = store.list_chats("u1", 0, 2)
    assert total == 3 and [name for name, _ in page] == ["c1", "c2"]
    page, total = store.list_chats("u1", 2, 2)
    assert [(name, record.session_id) for name, record in page] == [("c0", "s-0")]


def test_forget_chat_and_forget_user_delete_records_indexes_and_locks(store: StateStore):
    commit(store, name="c1", session_id="s-1")
    commit(store, name="c2", session_id="s-2")
    store.forget_chat(store.begin_turn("u1", "c1"))
    assert store.read_chat("u1", "c1") is None and store.lock_holder("u1", "c1") is None
    assert [name for name, _ in store.list_chats("u1", 0, 10)[0]] == ["c2"]
    assert store.redis.zscore(store.chat_activity_key, "u1:c1") is None
    store.forget_user(store.begin_user("u1"))
    assert store.read_user("u1") == (None, None) and store.read_chat("u1", "c2") is None
    assert store.lock_holder("u1", None) is None
    for index in (store.activity_key, store.awake_key):
        assert store.redis.zscore(index, "u1") is None
    assert store.redis.zscore(store.chat_activity_key, "u1:c2") is None


def test_a_record_of_the_previous_version_is_the_default_chat(store: StateStore):
    previous = ('{"created_at":1.0,"last_active_at":2.0,"sandbox_name":"agent-abc",'
                '"session_id":"s-old","turns":3}')
    store.redis.set(store._user("u1", "rec"), previous)
    old = ChatRecord("s-old", 3, 1.0, 2.0)
    assert store.read_chat("u1", DEFAULT_CHAT) == old
    assert store.list_chats("u1", 0, 10) == ([(DEFAULT_CHAT, old)], 1)
    lease = store.begin_turn("u1", DEFAULT_CHAT)
    assert lease.chat_record == old and lease.record.sandbox_name == "agent-abc"
    store.release(lease)
    commit(store, name="work", session_id="s-new", at=5.0)  # another chat: the old one stays
    assert store.read_chat("u1", DEFAULT_CHAT) == old
    assert "session_id" not in store.redis.get(store._user("u1", "rec"))
    assert sorted(name for name, _ in store.list_chats("u1", 0, 10)[0]) == ["default", "work"]
    newer = user_record(hint="h").to_json()[:-1] + ',"chats":{"a":1}}'  # a newer version's
    assert parse_user(newer)[0] == user_record(hint="h")


def test_ping(store: StateStore):
    assert store.ping() is True


def test_an_unreachable_store_is_state_unavailable():
    store = StateStore(connect(f"http://127.0.0.1:{free_port()}", "x", timeout=1), "t", 60_000)
    with pytest.raises(StateUnavailable, match="unreachable"):
        store.begin_turn("u1", "c1")


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
                store.begin_turn("u1", "c1")
            with pytest.raises(StateUnavailable):
                store.read_user("u1")
            from lib.transcripts.upstash import UpstashTranscripts

            transcripts = UpstashTranscripts(store.redis, "t", 60, 64 * 1024)
            with pytest.raises(StateUnavailable):
                transcripts.delete({"project_key": "p", "session_id": "s"})
        finally:
            server.stop()


def test_a_wrong_token_is_state_unavailable(upstash_fakeredis: Upstash):
    store = StateStore(connect(upstash_fakeredis.url, "wrong-token", 5), "t", 60_000)
    with pytest.raises(StateUnavailable, match="WRONGPASS"):
        store.read_user("u1")
