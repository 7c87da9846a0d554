"""The cleanup cron through its HTTP endpoint, with real state and a moved clock."""

from __future__ import annotations

import threading
from dataclasses import replace

from lib.cleanup import Cleanup
from tests.fakes import Script, line, mirror, ok_result
from tests.world import Clock, World, user

HOUR, DAY = 3600, 24 * 3600


def snapshot(world: World, name: str):
    """Everything stored about a user: record, lock, transcript, sandbox status."""
    record, owner = world.stored(name), world.user_record(name)
    session = record.session_id if record else None
    transcript = world.transcript(session, name) if session else None
    status = world.sandboxes.status(owner.sandbox_name) if owner else None
    return record, world.lock(name), transcript, status


def test_without_the_right_secret_nothing_happens(world: World, clock: Clock):
    world.turn("hi", user("ann"))
    clock.advance(30 * DAY)
    before = snapshot(world, "ann")
    for secret in (None, "wrong", f"{world.services.settings.cron_secret}x"):
        response = world.cron(secret)
        assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"
    assert snapshot(world, "ann") == before


def test_an_unset_secret_refuses_to_run(world: World):
    world.apps[-1].config["SERVICES"] = replace(
        world.services, settings=replace(world.services.settings, cron_secret=None))
    response = world.cron("anything")
    assert response.status_code == 500 and "CRON_SECRET" in response.json["error"]["message"]


def test_idle_stopped_expired_deleted_active_untouched_busy_skipped(world: World, clock: Clock):
    for name in ("old", "idle", "busy"):
        assert world.turn("hi", user(name)).status_code == 200
    clock.advance(13 * DAY)
    world.turn("hi", user("idle"))
    world.turn("hi", user("busy"))
    clock.advance(2 * DAY)  # old: 15 days (past SESSION_TTL); idle and busy: 2 days
    world.turn("hi", user("active"))
    old_sandbox = world.user_record("old").sandbox_name
    lease = world.services.state.begin_turn(world.user("busy"), "work")  # busy's turn runs

    report = world.cron().json
    assert report["expired"] == 1 and report["stopped"] == 1 and report["skipped_busy"] == 1
    assert report["errors"] == 0 and report["more"] is False
    assert world.stored("old") is None and world.lock("old") is None
    assert world.sandboxes.status(old_sandbox) is None
    assert world.services.turns.transcripts.list_sessions(world.user("old")) == []
    assert snapshot(world, "idle")[3] == "stopped"
    assert snapshot(world, "busy")[3] == "running"
    assert world.lock("busy", "work") == lease.token
    assert snapshot(world, "active")[3] == "running"

    again = world.cron().json  # the stopped sandbox is not stopped twice
    assert (again["stopped"], again["expired"], again["skipped_busy"]) == (0, 0, 1)
    world.services.state.release(lease)
    assert world.cron().json["stopped"] == 1


def test_after_cleanup_a_stopped_user_continues_and_an_expired_one_starts_over(
    world: World, clock: Clock
):
    first = world.turn("one", user("sam")).json
    world.turn("one", user("eve"))
    clock.advance(10 * DAY)
    world.turn("two", user("eve"))
    clock.advance(5 * DAY)
    report = world.cron().json
    assert (report["expired"], report["stopped"]) == (1, 1)  # sam expired, eve stopped
    assert world.sandboxes.status(world.user_record("eve").sandbox_name) == "stopped"
    eve = world.turn("three", user("eve")).json
    assert eve["turn"] == 3 and world.sandboxes.runs[-1]["job"]["resume"] == eve["session_id"]
    sam = world.turn("again", user("sam")).json
    assert sam["turn"] == 1 and sam["session_id"] != first["session_id"]


def test_orphans_are_reconciled(world: World, clock: Clock):
    prefix = world.services.settings.sandbox_name_prefix
    world.sandboxes.attach(f"{prefix}{'0' * 32}")  # ours, but no session owns it
    world.sandboxes.attach("someone-elses-sandbox")  # not ours: never touched
    world.turn("hi", user("gone"))
    name = world.user_record("gone").sandbox_name
    world.sandboxes.destroy(name)  # its sandbox vanished (a record without a sandbox)
    clock.advance(2 * HOUR)
    report = world.cron().json
    assert report["orphans_removed"] == 2
    assert world.sandboxes.status(f"{prefix}{'0' * 32}") is None
    assert world.sandboxes.status("someone-elses-sandbox") == "running"
    assert world.stored("gone") is not None  # kept: the next turn restores the transcript
    assert world.turn("back", user("gone")).json["turn"] == 2


def test_work_is_batched_and_resumes_after_the_time_budget(world: World, clock: Clock):
    for i in range(7):
        world.turn("hi", user(f"u{i}"))
    clock.advance(2 * HOUR)
    ticks = iter(range(10_000))
    settings = replace(world.services.settings, cleanup_batch=2, cleanup_time_budget=6)
    sweep = Cleanup(settings, world.services.state, world.sandboxes,
                    world.services.turns.transcripts, clock, monotonic=lambda: next(ticks))
    reports = [sweep.run()]  # a tick per user handled: the budget ends each run early
    while reports[-1].more and len(reports) < 10:
        reports.append(sweep.run())
    assert len(reports) > 1 and reports[-1].more is False
    assert sum(r.stopped for r in reports) == 7


def test_a_user_active_again_since_the_index_was_read_is_left_alone(world: World, clock: Clock):
    world.turn("hi", user("kim"))
    clock.advance(2 * HOUR)
    state = world.services.state
    due = state.due(state.awake_key, clock() - 900, 0, 10)
    assert due == [world.user("kim")]
    world.turn("again", user("kim"))  # a turn lands between the read and the lock
    lease = state.begin_user(world.user("kim"))
    assert world.services.cleanup._stop(lease, clock() - 900).value == "not_due"
    assert world.sandboxes.status(world.user_record("kim").sandbox_name) == "running"
    assert world.lock("kim", None) is None


def test_cleanup_and_a_turn_at_the_same_moment_keep_the_turn(world: World, clock: Clock):
    """Both orders: the turn holds the lock (cleanup skips), or cleanup does (the turn gets
    409, retries, and continues). Either way the conversation is intact."""
    world.turn("one", user("zoe"))
    clock.advance(2 * HOUR)
    session = world.stored("zoe").session_id

    # 1. The turn is running when cleanup comes.
    started, gate = threading.Event(), threading.Event()
    world.sandboxes.scripts.append(Script([line("session", session_id=session),
                                           mirror(session, "two", "ok"), ok_result(session, "ok")],
                                          started=started, gate=gate))
    answers = []
    turn = threading.Thread(target=lambda: answers.append(world.turn("two", user("zoe"))))
    turn.start()
    assert started.wait(10)
    report = world.cron().json
    gate.set()
    turn.join()
    assert report["skipped_busy"] == 1 and report["stopped"] == 0
    assert answers[0].status_code == 200 and answers[0].json["turn"] == 2

    # 2. Cleanup is stopping the sandbox when the turn comes.
    clock.advance(2 * HOUR)
    stopping, proceed = threading.Event(), threading.Event()
    world.sandboxes.on_stop = lambda name: (stopping.set(), proceed.wait(10))
    reports = []
    sweep = threading.Thread(target=lambda: reports.append(world.cron().json))
    sweep.start()
    assert stopping.wait(10)
    busy = world.turn("three", user("zoe"))
    proceed.set()
    sweep.join()
    assert busy.status_code == 409 and busy.headers["Retry-After"]
    assert reports[0]["stopped"] == 1
    retried = world.turn("three", user("zoe"))
    assert retried.status_code == 200 and retried.json["turn"] == 3
    assert retried.json["session_id"] == session and world.lock("zoe") is None
    prompts = [e["message"]["content"] for e in world.transcript(session, "zoe") if e["type"] == "user"]
    assert prompts == ["one", "two", "three"]


def test_conversations_expire_by_their_own_activity_the_user_with_the_last(world: World,
                                                                          clock: Clock):
    chat = world.client()
    chat.post("/api/chat", json={"prompt": "old", "chat_id": "old"}, headers=user("lou"))
    clock.advance(10 * DAY)
    chat.post("/api/chat", json={"prompt": "new", "chat_id": "new"}, headers=user("lou"))
    old_session = world.stored("lou", "old").session_id
    sandbox = world.user_record("lou").sandbox_name
    clock.advance(5 * DAY)  # "old": 15 days (past SESSION_TTL), "new": 5 days

    report = world.cron().json
    assert report["chats_expired"] == 1 and report["expired"] == 0, report
    assert world.stored("lou", "old") is None and world.transcript(old_session, "lou") is None
    assert world.stored("lou", "new") is not None
    assert world.sandboxes.status(sandbox) == "stopped"  # idle: stopped, not destroyed

    clock.advance(10 * DAY)  # now "new" is past it too: the user goes with it
    report = world.cron().json
    assert report["chats_expired"] == 1 and report["expired"] == 1, report
    assert world.user_record("lou") is None and world.sandboxes.status(sandbox) is None
    assert world.services.turns.transcripts.list_sessions(world.user("lou")) == []


def test_a_running_turn_of_any_chat_keeps_the_sandbox_from_being_stopped(world: World,
                                                                         clock: Clock):
    world.turn("one", user("ada"))
    clock.advance(2 * HOUR)
    lease = world.services.state.begin_turn(world.user("ada"), "another-chat")
    report = world.cron().json
    assert report["stopped"] == 0 and report["skipped_busy"] == 1
    assert world.sandboxes.status(world.user_record("ada").sandbox_name) == "running"
    world.services.state.release(lease)
    assert world.cron().json["stopped"] == 1
