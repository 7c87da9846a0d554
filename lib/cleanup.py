"""The sweep behind the cron: expire old conversations and users, stop idle sandboxes,
reconcile orphans.

Work comes from the activity indexes (`ZRANGE BYSCORE`), in batches, so a run costs what is due,
not what exists; it stops at its time budget and says `more`, and the next run goes on where it
stopped. A conversation is expired under its own turn lock, by its own last activity
(SESSION_TTL); a user (every conversation, the sandbox, the record) under the user lock, which
is only taken while none of their turns runs: a busy user is skipped, and a turn that starts
meanwhile gets 409 and retries after. Under a lock the record is read again, so what became
active since the index was read is left alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from lib.config import Settings
from lib.errors import ServiceError, TurnInProgress
from lib.sandboxes import SandboxBackend
from lib.state import Lease, StateStore
from lib.transcripts import TranscriptStore, delete_all

log = logging.getLogger("agent.cleanup")
ORPHAN_CURSOR = "cleanup-orphan-cursor"


class Outcome(Enum):
    DONE = "done"
    ORPHAN = "orphan"  # an index entry or sandbox without its counterpart, reconciled
    NOT_DUE = "not_due"  # active again since the index was read
    BUSY = "busy"
    ERROR = "error"


@dataclass
class CleanupReport:
    stopped: int = 0
    expired: int = 0
    chats_expired: int = 0
    orphans_removed: int = 0
    skipped_busy: int = 0
    errors: int = 0
    more: bool = False
    duration_ms: int = 0


class Cleanup:
    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        sandboxes: SandboxBackend,
        transcripts: TranscriptStore,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.state = state
        self.sandboxes = sandboxes
        self.transcripts = transcripts
        self.clock = clock
        self.monotonic = monotonic

    def run(self) -> CleanupReport:
        started = self.monotonic()
        deadline = started + self.settings.cleanup_time_budget
        report = CleanupReport()
        now = self.clock()
        old = now - self.settings.session_ttl
        more = self._sweep(self.state.chat_activity_key, old, self._lock_chat,
                           self._expire_chat, report, "chats_expired", deadline)
        more |= self._sweep(self.state.activity_key, old, self.state.begin_user, self._expire,
                            report, "expired", deadline)
        more |= self._sweep(self.state.awake_key, now - self.settings.idle_stop_after,
                            self.state.begin_user, self._stop, report, "stopped", deadline)
        more |= self._orphan_sandboxes(report, deadline)
        report.more = more
        report.duration_ms = int((self.monotonic() - started) * 1000)
        log.info("cleanup: %s", report)
        return report

    def _lock_chat(self, member: str) -> Lease:
        user, _, chat = member.partition(":")
        return self.state.begin_turn(user, chat)

    def _sweep(self, index: str, cutoff: float, lock: Callable[[str], Lease],
               handle: Callable[[Lease, float], Outcome], report: CleanupReport, counter: str,
               deadline: float) -> bool:
        """Handle every member of `index` last active before `cutoff`, under the lock `lock`
        takes; True if time ran out."""
        left_in_place = 0  # busy or failed users stay at the head of the index: page past them
        while True:
            batch = self.state.due(index, cutoff, left_in_place, self.settings.cleanup_batch)
            for member in batch:
                if self.monotonic() >= deadline:
                    return True
                outcome = self._locked(member, lock, cutoff, handle)
                if outcome is Outcome.DONE:
                    setattr(report, counter, getattr(report, counter) + 1)
                elif outcome is Outcome.ORPHAN:
                    report.orphans_removed += 1
                elif outcome is Outcome.BUSY:
                    report.skipped_busy += 1
                elif outcome is Outcome.ERROR:
                    report.errors += 1
                left_in_place += outcome in (Outcome.BUSY, Outcome.ERROR)
            if len(batch) < self.settings.cleanup_batch:
                return False

    def _locked(self, member: str, lock: Callable[[str], Lease], cutoff: float,
                handle: Callable[[Lease, float], Outcome]) -> Outcome:
        try:
            lease = lock(member)
        except TurnInProgress:
            return Outcome.BUSY
        except ServiceError as error:
            log.error("cleanup could not lock %s: %s", member, error.message)
            return Outcome.ERROR
        try:
            return handle(lease, cutoff)
        except Exception as error:  # one user's failure must not stop the sweep
            log.error("cleanup failed for %s: %s", member, error)
            try:
                self.state.release(lease)
            except ServiceError:
                pass
            return Outcome.ERROR

    def _expire_chat(self, lease: Lease, cutoff: float) -> Outcome:
        """Delete one conversation (its transcript and its entry); the sandbox stays."""
        chat = lease.chat_record
        if chat is not None and chat.last_active_at >= cutoff:
            self.state.release(lease)
            return Outcome.NOT_DUE
        if chat is not None:
            self.transcripts.delete({"project_key": lease.user, "session_id": chat.session_id})
        self.state.forget_chat(lease)
        return Outcome.DONE if chat is not None else Outcome.ORPHAN

    def _expire(self, lease: Lease, cutoff: float) -> Outcome:
        """Forget the user: destroy the sandbox, delete every transcript, conversation and the
        record (a user whose last conversation expired, or who has been away SESSION_TTL)."""
        if lease.record is not None and lease.record.last_active_at >= cutoff:
            self.state.release(lease)
            return Outcome.NOT_DUE
        self.sandboxes.destroy(lease.sandbox_name(self.settings.sandbox_name_prefix))
        delete_all(self.transcripts, lease.user)
        self.state.forget_user(lease)
        return Outcome.DONE if lease.record is not None else Outcome.ORPHAN

    def _stop(self, lease: Lease, cutoff: float) -> Outcome:
        """Stop a running sandbox (a persistent one keeps its files as a snapshot)."""
        record = lease.record
        if record is None:  # an index entry without a user: drop it
            self.state.forget_user(lease)
            return Outcome.ORPHAN
        if record.last_active_at >= cutoff:
            self.state.release(lease)
            return Outcome.NOT_DUE
        status = self.sandboxes.status(record.sandbox_name)
        if status == "running":
            self.sandboxes.stop(record.sandbox_name)
        self.state.settle_stopped(lease)
        # A record whose sandbox is gone stays: the next turn restores from the transcript.
        return Outcome.ORPHAN if status is None else Outcome.DONE

    def _orphan_sandboxes(self, report: CleanupReport, deadline: float) -> bool:
        """Destroy our sandboxes that belong to no session, a batch per run from a cursor."""
        prefix = self.settings.sandbox_name_prefix
        cursor = self.state.read_marker(ORPHAN_CURSOR) or ""
        names = sorted(info.name for info in self.sandboxes.list()
                       if info.name.startswith(prefix) and info.name > cursor)
        batch = names[: self.settings.cleanup_batch]
        users = [name[len(prefix):] for name in batch]
        with_record = self.state.existing(users)
        for name, user in zip(batch, users, strict=True):
            if self.monotonic() >= deadline:
                self.state.write_marker(ORPHAN_CURSOR, cursor)
                return True
            if user not in with_record:
                outcome = self._locked(user, self.state.begin_user, 0.0, self._destroy_orphan)
                report.orphans_removed += outcome is Outcome.ORPHAN
                report.skipped_busy += outcome is Outcome.BUSY
                report.errors += outcome is Outcome.ERROR
            cursor = name
        finished = len(names) <= len(batch)
        self.state.write_marker(ORPHAN_CURSOR, "" if finished else cursor)
        return not finished

    def _destroy_orphan(self, lease: Lease, _: float) -> Outcome:
        if lease.record is not None:  # a first turn saved it meanwhile: not an orphan
            self.state.release(lease)
            return Outcome.NOT_DUE
        self.sandboxes.destroy(lease.sandbox_name(self.settings.sandbox_name_prefix))
        self.state.release(lease)
        return Outcome.ORPHAN
