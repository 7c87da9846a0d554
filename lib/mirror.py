"""A turn's transcript batches on their way from the sandbox to the durable store.

The runner hands over every batch the SDK would append to a SessionStore (a `mirror` line). They
are stored under the caller's own key, whatever the sandbox says, and noted: whether the agent
began (a failed turn then leaves the chat dirty), the turn's newest entry (the commit's
`last_uuid`) and the ids the client saw for the prompt and the answer.

Batches wait, so that a warm turn's ride in the commit's request (`riders`: the state's commit
is one round trip for records and transcript), when the store shares the state's Redis and they
fit one request. A batch waiting longer than HOLD_FOR, or more than HOLD_BYTES waiting, is
stored on its own as the next line arrives. If the function dies before its commit, what it
held is still in the sandbox's local transcript: the next turn's runner sends every entry after
the last committed one again (a `catch_up` batch, see agent_runner.py), and appends skip the
uuids already stored, so nothing is lost or doubled while the sandbox lives.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from lib.conversation import messages_from, prompts_in
from lib.errors import ServiceError
from lib.transcripts import Entry, Rider, RidesAlong, SessionKey, TranscriptStore

log = logging.getLogger("agent.mirror")

HOLD_FOR = 1.0  # seconds a batch may wait for the commit
HOLD_BYTES = 128 * 1024  # what may wait, in JSON bytes (the commit's request stays small)


class TranscriptMirror:
    def __init__(self, store: TranscriptStore, user: str, prompt: str,
                 user_message_id: str | None, message_id: str) -> None:
        self.store, self.user, self.prompt = store, user, prompt
        self.user_message_id, self.message_id = user_message_id, message_id
        self.message_ids: dict[str, str] = {}  # transcript uuid -> the id the client saw
        self.began = False  # the agent wrote its transcript
        self.last_uuid: str | None = None  # the newest main transcript entry of this turn
        self.recovered = 0  # turns a function that died before its commit left (catch_up)
        self._waiting: list[tuple[SessionKey, list[Entry]]] = []
        self._waiting_since = 0.0
        self._waiting_bytes = 0

    def add(self, message: dict[str, Any]) -> None:
        """One `mirror` line: note it, and hold it for the commit or store it now."""
        try:
            key = message["key"]
            scoped: SessionKey = {"project_key": self.user, "session_id": str(key["session_id"])}
            if key.get("subpath"):
                scoped["subpath"] = str(key["subpath"])
            entries = list(message["entries"])
            if not key.get("subpath"):  # the conversation's own transcript, not a subagent's
                if message.get("catch_up"):
                    self.recovered += prompts_in(e for e in entries if isinstance(e, dict))
                else:
                    self._note(entries)
        except (KeyError, TypeError) as error:
            log.error("could not mirror a transcript batch: %s", error)
            return
        if not self._waiting:
            self._waiting_since = time.monotonic()
        self._waiting.append((scoped, entries))
        self._waiting_bytes += len(json.dumps(entries))
        if (self._waiting_bytes > HOLD_BYTES
                or time.monotonic() - self._waiting_since > HOLD_FOR):
            self.flush()

    def riders(self) -> list[Rider]:
        """What waits, as writes to ride in the commit's request (what cannot ride is stored
        now). They wait on until `committed`: a commit that fails leaves them to `flush`."""
        if not isinstance(self.store, RidesAlong):
            self.flush()
            return []
        riders: list[Rider] = []
        for key, entries in self._merged():
            rider = self.store.rider(key, entries)
            if rider is None:
                self._store(key, entries)
            else:
                riders.append(rider)
        return riders

    def committed(self) -> None:
        """The commit's request, riders and all, was stored."""
        self._waiting, self._waiting_bytes = [], 0

    def flush(self) -> None:
        """Store what waits now (a long turn, or a turn that ends without a commit)."""
        for key, entries in self._merged():
            self._store(key, entries)
        self._waiting, self._waiting_bytes = [], 0

    def _merged(self) -> list[tuple[SessionKey, list[Entry]]]:
        """What waits, one batch per transcript, in order."""
        merged: dict[str, tuple[SessionKey, list[Entry]]] = {}
        for key, entries in self._waiting:
            merged.setdefault(json.dumps(key, sort_keys=True), (key, []))[1].extend(entries)
        return list(merged.values())

    def _store(self, key: SessionKey, entries: list[Entry]) -> None:
        try:
            self.store.append(key, entries)
        except ServiceError as error:
            # The turn goes on; the next turn's catch-up stores it, if the sandbox lives.
            log.error("could not mirror a transcript batch: %s", error)

    def _note(self, entries: list[Any]) -> None:
        self.began = True
        self.last_uuid = next(
            (e["uuid"] for e in reversed(entries) if isinstance(e, dict)
             and isinstance(e.get("uuid"), str) and not e.get("isSidechain")), self.last_uuid)
        for message in messages_from(e for e in entries if isinstance(e, dict)):
            if message.role == "user" and message.text == self.prompt and self.user_message_id:
                self.message_ids.setdefault(message.id, self.user_message_id)
            elif message.role == "assistant" and self.message_id not in self.message_ids.values():
                self.message_ids[message.id] = self.message_id
