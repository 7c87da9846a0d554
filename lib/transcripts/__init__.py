"""Durable transcripts: the conversation outlives any one sandbox.

`TranscriptStore` is the port, synchronous because the function is: the methods of the SDK's
`SessionStore` protocol (DESIGN §4) with the same keys and meaning. Adapters: `upstash.py`
(default) and `s3.py`. `SdkSessionStore` wraps one in the SDK's async protocol (for the SDK's
conformance suite, or for code that runs the SDK in-process) without importing the SDK.
`list_session_summaries` (the protocol's optional method) lists a user's sessions with their
titles from small summaries the adapters keep up to date on append (`summary.py`);
`session_summaries` (ours) reads those of given sessions only.

The function scopes every key it writes by the authenticated user (`project_key` = user hash),
whatever the sandbox reports: a sandbox can never write into another user's transcripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NotRequired, Protocol, TypedDict, runtime_checkable

Entry = dict[str, Any]


class SessionKey(TypedDict):
    project_key: str
    session_id: str
    subpath: NotRequired[str]


class SessionListEntry(TypedDict):
    session_id: str
    mtime: int  # epoch milliseconds


class SessionSummary(TypedDict):
    """One session as a list of conversations shows it, kept up to date on every append to its
    main transcript (subagent transcripts do not count). The SDK's `SessionSummaryEntry`
    (`session_id`, `mtime`, `data`) with our own fields added."""

    session_id: str
    mtime: int  # epoch ms of the last append, the clock `list_sessions` uses (never older)
    data: dict[str, Any]  # the SDK's summary state (custom_title, ai_title, first_prompt, ...)
    title: str | None  # customTitle, else aiTitle, else the first prompt; None if none yet
    first_prompt: str | None  # the first prompt a person typed (no injected text), <= 80 chars
    created_at: int | None  # epoch ms of the first entry's `timestamp`


class TranscriptStore(Protocol):
    def append(self, key: SessionKey, entries: list[Entry]) -> None:
        """Add entries in order; an entry whose `uuid` is already stored is skipped."""
        ...

    def load(self, key: SessionKey) -> list[Entry] | None:
        """All entries in append order, or None for a key never written."""
        ...

    def list_sessions(self, project_key: str) -> list[SessionListEntry]: ...

    def list_session_summaries(self, project_key: str) -> list[SessionSummary]:
        """A summary per session whose main transcript was appended to since summaries exist
        (in no particular order); a few requests whatever the number of entries."""
        ...

    def session_summaries(self, project_key: str, session_ids: list[str]) -> list[SessionSummary]:
        """The summaries of these sessions (those that have one), for a page of conversations
        or one: requests for these, not for all of the user's sessions."""
        ...

    def delete(self, key: SessionKey) -> None:
        """Delete a transcript; without `subpath`, with all its subkeys."""
        ...

    def list_subkeys(self, key: SessionKey) -> list[str]: ...


Rider = Callable[[Any], None]
"""Enqueues a store's writes on an upstash-redis pipeline, to ride in another request."""


@runtime_checkable
class RidesAlong(Protocol):
    """A store on the state's own Redis: its appends can ride in the state's requests."""

    def rider(self, key: SessionKey, entries: list[Entry]) -> Rider | None:
        """`append` as commands for another request, or None when it needs requests of its own
        (too large for one)."""
        ...


@dataclass
class Transcript:
    """A whole session as the runner needs it to restore: main entries and subagent ones."""

    entries: list[Entry]
    subkeys: dict[str, list[Entry]] = field(default_factory=dict)

    def to_job(self) -> dict[str, Any]:
        return {"entries": self.entries, "subkeys": self.subkeys}


def load_transcript(store: TranscriptStore, project_key: str, session_id: str) -> Transcript | None:
    key: SessionKey = {"project_key": project_key, "session_id": session_id}
    entries = store.load(key)
    if not entries:
        return None
    subkeys = {}
    for subpath in store.list_subkeys(key):
        if sub_entries := store.load({**key, "subpath": subpath}):
            subkeys[subpath] = sub_entries
    return Transcript(entries, subkeys)


def delete_all(store: TranscriptStore, project_key: str) -> None:
    """Delete every session stored under a project key (here: every session of one user)."""
    for session in store.list_sessions(project_key):
        store.delete({"project_key": project_key, "session_id": session["session_id"]})


class SdkSessionStore:
    """The SDK's async `SessionStore` protocol over a `TranscriptStore`, in worker threads."""

    def __init__(self, store: TranscriptStore) -> None:
        self.store = store

    async def append(self, key: SessionKey, entries: list[Entry]) -> None:
        await asyncio.to_thread(self.store.append, key, entries)

    async def load(self, key: SessionKey) -> list[Entry] | None:
        return await asyncio.to_thread(self.store.load, key)

    async def list_sessions(self, project_key: str) -> list[SessionListEntry]:
        return await asyncio.to_thread(self.store.list_sessions, project_key)

    async def list_session_summaries(self, project_key: str) -> list[SessionSummary]:
        return await asyncio.to_thread(self.store.list_session_summaries, project_key)

    async def delete(self, key: SessionKey) -> None:
        await asyncio.to_thread(self.store.delete, key)

    async def list_subkeys(self, key: SessionKey) -> list[str]:
        return await asyncio.to_thread(self.store.list_subkeys, key)
