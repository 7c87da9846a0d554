"""The service: one turn is lock+load -> attach -> run -> save+release.

`TurnService.start` takes the user's lock before anything is streamed, so a busy user gets a
409 status, not a stream. `Turn.events()` then runs the agent in the user's sandbox and yields
TurnEvents. Whatever happens, the lock is released exactly once, and the record is written only
by the final commit, so an error leaves the previous record untouched.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lib import logs, runner_lines
from lib.auth import user_hash
from lib.config import AgentOptions, Settings
from lib.conversation import rewind_point, shorten
from lib.errors import AgentFailed, SandboxUnavailable, ServiceError, TurnTimeout
from lib.events import (
    Notice,
    ReasoningDelta,
    TextDelta,
    ToolActivity,
    TurnDone,
    TurnEvent,
    TurnFailed,
    TurnStopped,
)
from lib.launcher import Launcher
from lib.limits import TurnLimits
from lib.mirror import TranscriptMirror
from lib.sandboxes import Process, Sandbox, SandboxBackend, SandboxStatus
from lib.state import DEFAULT_CHAT, ChatRecord, Lease, StateStore, UserRecord
from lib.streamlog import StreamLog
from lib.transcripts import TranscriptStore, delete_all, load_transcript

log = logging.getLogger("agent.turns")

# The backend ends a runner this long after the turn's deadline, should our own kill not land.
_KILL_MARGIN = 10.0
STOP_GRACE = 1.5  # seconds the agent has to end a stopped turn before its runner is killed
TOOL_LINES = ("tool_input_start", "tool_input_delta", "tool_use", "tool_result")


@dataclass(frozen=True)
class UserView:
    """The whole user: their conversations and their sandbox."""

    created_at: float
    last_active_at: float
    sandbox_status: SandboxStatus | None
    default: ChatRecord | None  # the conversation of bodies without a chat id, if any


class TurnService:
    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        sandboxes: SandboxBackend,
        transcripts: TranscriptStore,
        limits: TurnLimits,
        streamlog: StreamLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.state = state
        self.streamlog = streamlog
        self.sandboxes = sandboxes
        self.transcripts = transcripts
        self.limits = limits
        self.clock = clock
        self.launcher = Launcher(settings)
        # What the sandbox's output must never carry on (runner_lines.redact).
        self.secrets = tuple(k for k in (settings.anthropic_api_key, settings.redis_token) if k)

    def start(self, user_id: str, prompt: str, options: AgentOptions | None = None,
              chat: str = DEFAULT_CHAT, user_message_id: str | None = None,
              regenerate: bool = False) -> Turn:
        """Take the chat's lock (TurnInProgress if busy), count the turn against the user's limits
        (RateLimited) and load the user's and the chat's records, in one round trip. `regenerate`:
        answer the chat's newest prompt again, dropping its answer."""
        user = user_hash(user_id, self.settings)
        started = time.perf_counter()
        lease = self.state.begin_turn(user, chat, self.limits)
        turn = Turn(self, lease, prompt, options or self.settings.agent, user_message_id,
                    regenerate)
        turn.timings["lock"] = round((time.perf_counter() - started) * 1000, 1)
        return turn

    def describe(self, user_id: str) -> UserView | None:
        user = user_hash(user_id, self.settings)
        record, _ = self.state.read_user(user)
        if record is None:
            return None
        return UserView(record.created_at, record.last_active_at,
                        self.sandboxes.status(record.sandbox_name),
                        self.state.read_chat(user, DEFAULT_CHAT))

    def forget(self, user_id: str) -> None:
        """Destroy the user's sandbox, delete every transcript, conversation and record of
        theirs, under the user lock (TurnInProgress while any of their turns runs)."""
        lease = self.state.begin_user(user_hash(user_id, self.settings))
        try:
            self.sandboxes.destroy(self.sandbox_name(lease))
            delete_all(self.transcripts, lease.user)
        except BaseException:
            self.state.release(lease)
            raise
        self.state.forget_user(lease)

    def sandbox_name(self, lease: Lease) -> str:
        return lease.sandbox_name(self.settings.sandbox_name_prefix)


class Turn:
    def __init__(self, service: TurnService, lease: Lease, prompt: str,
                 options: AgentOptions, user_message_id: str | None = None,
                 regenerate: bool = False) -> None:
        self.service = service
        self.lease = lease
        self.prompt = prompt
        self.options = options
        # The ids the client sees: its own for the prompt, ours (the stream's `start` part) for
        # the answer. The commit maps the transcript's uuids to them.
        self.user_message_id = user_message_id
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.mirror = TranscriptMirror(service.transcripts, lease.user, prompt, user_message_id,
                                       self.message_id)
        self.regenerate = regenerate
        self._rewind: dict[str, str] = {}  # resume_at and drops_turn, when answering again
        self._settled = False
        self.sandbox: Sandbox | None = None
        self._process: Process | None = None
        self._stop_asked = threading.Event()
        # Its stream log (the parts are added by whoever encodes them) and stop watch.
        self.live = service.streamlog.open(lease.user, lease.chat or DEFAULT_CHAT, lease.token,
                                           service.settings.function_max_duration)
        self.live.on_stop = self.stop
        self.timings: dict[str, float] = {}  # milliseconds per phase: lock, attach, run, save
        # The whole turn (attach, bootstrap, run) lives within TURN_TIMEOUT of its start.
        self.deadline = time.monotonic() + service.settings.turn_timeout

    def events(self) -> Iterator[TurnEvent]:
        """Run the turn. If the consumer goes away mid-stream, the turn still runs to its end and
        is saved, so the answer is there on the next read."""
        steps = self._steps()
        try:
            for event in steps:  # noqa: UP028 - `yield from` would close `steps` along with us
                yield event
        except GeneratorExit:
            for _ in steps:
                pass
            raise
        finally:
            self.close()

    def stop(self) -> None:
        """The user's stop (from any instance, through the stream log): interrupt the agent,
        which ends the turn with what it said so far; kill the runner if that takes over
        STOP_GRACE seconds. Safe from another thread."""
        self._stop_asked.set()
        process = self._process
        if process is not None:
            process.interrupt()
            timer = threading.Timer(STOP_GRACE, process.kill)
            timer.daemon = True
            timer.start()

    def close(self) -> None:
        """Release the lock if the turn did not commit (marking the chat dirty when the agent
        had begun: its part of the turn is in the transcripts). Idempotent."""
        if not self._settled:
            self._settled = True
            self.mirror.flush()
            try:
                self.service.state.release(self.lease, dirty=self.mirror.began)
            except ServiceError as error:  # the lease expires on its own
                log.warning("could not release turn lock: %s", error.message)

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            self.timings[phase] = round(self.timings.get(phase, 0.0) + elapsed, 1)

    def _steps(self) -> Iterator[TurnEvent]:
        outcome: TurnEvent
        try:
            for outcome in self._run():
                yield outcome
        except ServiceError as error:
            outcome = TurnFailed(error)
            yield outcome
        except Exception:
            log.exception("turn failed unexpectedly")
            outcome = TurnFailed(ServiceError("the turn failed unexpectedly"))
            yield outcome
        fields: dict[str, Any] = {"user": self.lease.user, "timings_ms": self.timings}
        if isinstance(outcome, TurnDone):
            fields.update(outcome="done", session_id=outcome.session_id, turn=outcome.turn,
                          cost_usd=outcome.cost_usd, usage=outcome.usage)
        elif isinstance(outcome, TurnFailed):
            fields.update(outcome=outcome.error.code)
        logs.event(log, "turn", **fields)

    def _run(self) -> Iterator[TurnEvent]:
        service, record = self.service, self.lease.record
        with self._timed("attach"):
            attachment = service.sandboxes.attach(service.sandbox_name(self.lease),
                                                  record.sandbox_hint if record else None)
        sandbox = attachment.sandbox
        self.sandbox = sandbox
        chat = self.lease.chat_record
        resume = chat.session_id if chat else None
        if self.regenerate and resume:
            resume = self._rewound(resume)
        elif resume and chat and chat.dirty and chat.last_uuid:
            # A turn failed after the agent began: the conversation is what was committed.
            log.info("chat %s: resuming at its last committed entry", self.lease.chat)
            self._rewind = {"resume_at": chat.last_uuid}
        restore = None
        if resume and attachment.fresh:  # the sandbox's files are new: bring the transcript
            resume, restore = yield from self._restorable(resume)
        installed = False
        while True:  # at most: install, restore, run
            outcome = yield from self._attempt(sandbox, resume, restore)
            if outcome["type"] == "needs_install" and not installed:
                installed = True
                with self._timed("install"):  # within the turn's time, like the rest of it
                    service.launcher.install(sandbox,
                                             list(outcome.get("missing") or ["runner", "agent"]),
                                             max(1.0, self.deadline - time.monotonic()))
            elif outcome["type"] == "restore_needed" and resume and restore is None:
                log.info("sandbox %s lost its transcript; restoring it", sandbox.name)
                resume, restore = yield from self._restorable(resume)
            else:
                break
        if outcome["type"] == "stopped":
            yield Notice("stopped", "the turn was stopped; what the agent said so far is kept")
            if not outcome["session_id"]:  # stopped before the agent began: nothing to keep
                self.close()
                yield TurnStopped()
                return
            saved = self._save(outcome["session_id"])
            yield TurnDone(saved.session_id, outcome["text"], saved.turns, {}, None, "other")
            return
        if outcome["type"] == "broken":  # its transcript was mirrored as it went: keep it
            self._save(outcome["session_id"])
            raise outcome["error"]
        if outcome["type"] == "timeout":
            if outcome["session_id"] and outcome.get("answered"):  # what it did is kept
                self._save(outcome["session_id"])
            raise TurnTimeout(f"the turn ran out of its {service.settings.turn_timeout} s; "
                              "what it did so far is kept and the conversation goes on")
        if outcome["type"] == "needs_install":
            raise SandboxUnavailable(f"sandbox {sandbox.name} still lacks {outcome.get('missing')} "
                                     "after installing it")
        if outcome["type"] != "result":
            raise AgentFailed("the agent could not find its conversation after a restore")
        saved = self._save(outcome["session_id"])
        usage = {k: v for k, v in (outcome.get("usage") or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        yield TurnDone(saved.session_id, outcome.get("text") or "", saved.turns, usage,
                       outcome.get("cost_usd"),
                       "length" if outcome.get("subtype") == "error_max_turns" else "stop")

    def _rewound(self, session_id: str) -> str | None:
        """Answer the newest prompt again: resume just before it, dropping its turn (the model
        no longer sees the dropped answer); start over when it opened the conversation."""
        entries = self.service.transcripts.load({"project_key": self.lease.user,
                                                 "session_id": session_id})
        point = rewind_point(entries or [])
        if point is None:
            return session_id  # nothing to drop: a plain turn
        keep, drop = point
        if keep is None:
            return None
        self._rewind = {"resume_at": keep, "drops_turn": drop}
        return session_id

    def _save(self, session_id: str) -> ChatRecord:
        """Commit the chat and the user record (and release the lock): one more turn of this
        session, or the first of a new one."""
        service, lease = self.service, self.lease
        chat, now = lease.chat_record, service.clock()
        continued = chat is not None and session_id == chat.session_id
        replaced = self.regenerate and "drops_turn" in self._rewind  # the answer, not a turn
        # Turns a dead function left, caught up, count when this turn goes on from them (not
        # when it resumes at an earlier entry: a dirty chat, or answering again).
        recovered = 0 if self._rewind else self.mirror.recovered
        turns = (chat.turns + (0 if replaced else 1) + recovered) if continued and chat else 1
        saved = ChatRecord(
            session_id=session_id,
            turns=turns,
            created_at=chat.created_at if chat else now,
            last_active_at=now,
            first_prompt=chat.first_prompt if chat and chat.first_prompt else shorten(self.prompt),
            last_uuid=self.mirror.last_uuid or (chat.last_uuid if continued and chat else None),
        )
        record = UserRecord(
            sandbox_name=service.sandbox_name(lease),
            created_at=lease.record.created_at if lease.record else now,
            last_active_at=now,
            sandbox_hint=self.sandbox.hint if self.sandbox else None,
        )
        with self._timed("save"):
            service.state.commit_turn(lease, record, saved, self.mirror.message_ids,
                                      self.mirror.riders())
        self.mirror.committed()
        self._settled = True
        return saved

    def _restorable(self, session_id: str) -> Iterator[TurnEvent]:
        """(resume, restore) for a session whose local transcript is gone: the durable copy, or
        a new conversation when there is none."""
        transcript = load_transcript(self.service.transcripts, self.lease.user, session_id)
        if transcript is None:
            yield Notice("conversation_restarted",
                         "this conversation could not be restored; a new one begins")
            return None, None
        return session_id, transcript.to_job()

    def _attempt(
        self, sandbox: Sandbox, resume: str | None, restore: dict | None
    ) -> Iterator[TurnEvent]:
        chat = self.lease.chat_record
        committed = chat.last_uuid if chat and resume == chat.session_id else None
        job = {"prompt": self.prompt, "resume": resume, "restore": restore,
               "committed": committed, "options": self.options.to_job(), **self._rewind}
        with self._timed("run"):
            remaining = max(0.0, self.deadline - time.monotonic())
            return (yield from self._stream(self.service.launcher.start(
                sandbox, job, self.lease.token, remaining + _KILL_MARGIN)))

    def _stream(self, process: Any) -> Iterator[TurnEvent]:
        """Forward the runner's lines as events, mirror its transcript batches; return its
        result (or restore_needed, needs_install) line, {"type": "timeout", "session_id"} when
        the turn's deadline stopped it, {"type": "broken", "session_id", "error"} when the
        sandbox broke off after the agent began, or raise."""
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), expire)
        timer.daemon = True
        timer.start()
        result: dict[str, Any] | None = None
        failure: dict[str, Any] | None = None
        session_id: str | None = None
        said: list[str] = []
        acted = False  # the agent used a tool
        garbage = 0
        self._process = process
        if self._stop_asked.is_set():  # asked before the runner started
            self.stop()
        try:
            for message in runner_lines.messages(process.lines(), self.service.secrets):
                if message is None:  # not the runner's protocol: never trusted, never used
                    garbage += 1
                    continue
                kind = message["type"]
                if kind == "text":
                    said.append(message["text"])
                    yield TextDelta(said[-1])
                elif kind == "session":
                    session_id = str(message.get("session_id") or "") or None
                    self.mirror.began = True
                elif kind == "thinking":
                    yield ReasoningDelta(message["text"])
                elif kind in TOOL_LINES:
                    acted = True
                    yield ToolActivity(kind, {k: v for k, v in message.items() if k != "type"})
                elif kind == "mirror":
                    with self._timed("mirror"):  # part of "run"
                        self.mirror.add(message)
                elif kind in ("result", "restore_needed", "needs_install"):
                    result = message
                    if isinstance(message.get("agent_ms"), (int, float)):
                        self.timings["agent"] = message["agent_ms"]  # part of "run"
                elif kind == "error":
                    failure = message
            try:
                code = process.wait()
            except ServiceError as error:  # the sandbox broke off: keep what the agent saved
                if session_id and not timed_out.is_set():
                    return {"type": "broken", "session_id": session_id, "error": error}
                raise
        finally:
            self._process = None
            timer.cancel()
            process.kill()
        if self._stop_asked.is_set() and not timed_out.is_set():
            return {"type": "stopped", "text": "".join(said),
                    "session_id": (result or {}).get("session_id") or session_id}
        if timed_out.is_set():  # a turn that produced no answer is not a turn
            return {"type": "timeout", "session_id": session_id, "answered": bool(said) or acted}
        if failure or result is None:
            log.warning("runner failed (exit %s, %d garbage lines): %s | stderr: %s", code,
                        garbage, failure,
                        runner_lines.redact(process.stderr_tail(), self.service.secrets))
            detail = failure.get("message") if failure else f"the runner exited with status {code}"
            raise AgentFailed(f"the agent could not run: {detail}")
        max_turns = result.get("subtype") == "error_max_turns"  # an answer, cut short: "length"
        if result["type"] == "result" and ((result.get("is_error") and not max_turns)
                                           or not result.get("session_id")):
            errors = "; ".join(map(str, result.get("errors") or [])) or result.get("text")
            raise AgentFailed(f"the agent reported an error ({result.get('subtype')}): {errors}")
        return result
