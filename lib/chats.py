"""A user's conversations (chats, named by the client as `useChat` names them): list them,
show, rename, fork and delete one, read its messages. Turns themselves are `turns.py`.

Titles: the one the user gave (PATCH), else the session's title from the transcript store's
summaries (e.g. a title the CLI generated), else the chat's first prompt, shortened.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lib.auth import user_hash
from lib.config import Settings
from lib.conversation import Message, copied_to, history_until, messages_from, prompts_in
from lib.errors import InvalidRequest
from lib.state import ChatRecord, StateStore, UserRecord
from lib.transcripts import TranscriptStore

CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TITLE = 200


def chat_id(raw: object) -> str:
    """A client-chosen chat id, checked: 1-64 letters, digits, `-` or `_`."""
    if not isinstance(raw, str) or not CHAT_ID.fullmatch(raw):
        raise InvalidRequest("a chat id is 1-64 characters: letters, digits, '-' and '_'")
    return raw


@dataclass(frozen=True)
class ChatView:
    id: str
    title: str
    created_at: float
    last_active_at: float
    turns: int
    session_id: str


class Chats:
    def __init__(self, settings: Settings, state: StateStore, transcripts: TranscriptStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.state = state
        self.transcripts = transcripts
        self.clock = clock

    def _user(self, user_id: str) -> str:
        return user_hash(user_id, self.settings)

    @staticmethod
    def _view(chat: str, record: ChatRecord, summary_title: str | None = None) -> ChatView:
        title = record.title or summary_title or record.first_prompt or "New conversation"
        return ChatView(chat, title, record.created_at, record.last_active_at, record.turns,
                        record.session_id)

    def list(self, user_id: str, offset: int, limit: int) -> tuple[list[ChatView], int]:
        """A page of the user's chats, newest activity first, and how many there are."""
        user = self._user(user_id)
        page, total = self.state.list_chats(user, offset, limit)
        titles = self._summary_titles(user, [record.session_id for _, record in page])
        return [self._view(chat, record, titles.get(record.session_id))
                for chat, record in page], total

    def get(self, user_id: str, chat: str) -> ChatView | None:
        user = self._user(user_id)
        record = self.state.read_chat(user, chat)
        if record is None:
            return None
        return self._view(chat, record,
                          self._summary_titles(user, [record.session_id]).get(record.session_id))

    def _summary_titles(self, user: str, sessions: list[str]) -> dict[str, str]:
        """Session id -> the title its transcript summary gives (a custom or AI title the CLI
        wrote, else the first prompt), for these sessions only (Upstash: 1 request a page)."""
        return {found["session_id"]: found["title"]
                for found in self.transcripts.session_summaries(user, sessions) if found["title"]}

    def rename(self, user_id: str, chat: str, title: object) -> ChatView | None:
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
            raise InvalidRequest(f'"title" must be a non-empty string of at most {MAX_TITLE} '
                                 "characters")
        if not self.state.rename_chat(self._user(user_id), chat, " ".join(title.split())):
            return None
        return self.get(user_id, chat)

    def delete(self, user_id: str, chat: str) -> bool:
        """Delete one conversation: its transcript and its entry; the sandbox stays. False when
        there is none; TurnInProgress while one of its turns runs."""
        lease = self.state.begin_turn(self._user(user_id), chat)
        if lease.chat_record is None:
            self.state.release(lease)
            return False
        try:
            self.transcripts.delete({"project_key": lease.user,
                                     "session_id": lease.chat_record.session_id})
        except BaseException:
            self.state.release(lease)
            raise
        self.state.forget_chat(lease)
        return True

    def fork(self, user_id: str, chat: str, message_id: object,
             new_chat: str | None = None) -> ChatView | None:
        """A new conversation whose history is this one's up to `message_id` (with its answer,
        when it is a prompt's answer). Only the durable transcript is written, as a new
        session: its first turn restores it into the sandbox, as after a lost sandbox, and
        goes on from there (the SDK's fork, done on the stored copy)."""
        if not isinstance(message_id, str) or not message_id:
            raise InvalidRequest('"message_id" must name a message of the conversation')
        user = self._user(user_id)
        stored = self._stored(user, chat)
        if stored is None:
            return None
        source, entries, ids = stored
        history = history_until(entries, message_id, ids)
        if history is None:
            raise InvalidRequest(f"conversation {chat!r} has no message {message_id!r}")
        name = new_chat or f"fork-{secrets.token_hex(6)}"
        session = str(uuid.uuid4())
        copies, renamed = copied_to(history, session)
        lease = self.state.begin_turn(user, name)
        try:
            if lease.chat_record is not None:
                raise InvalidRequest(f"a conversation {name!r} exists already")
            self.transcripts.append({"project_key": user, "session_id": session}, copies)
        except BaseException:
            self.state.release(lease)
            raise
        now = self.clock()
        title = f"{source.title or source.first_prompt or 'Conversation'} (fork)"
        record = lease.record
        self.state.commit_turn(
            lease, UserRecord(lease.sandbox_name(self.settings.sandbox_name_prefix),
                              record.created_at if record else now, now,
                              record.sandbox_hint if record else None),
            ChatRecord(session, prompts_in(copies), now, now, title, source.first_prompt),
            {renamed[old]: seen for old, seen in ids.items() if old in renamed})
        return self.get(user_id, name)

    def messages(self, user_id: str, chat: str) -> list[Message] | None:
        """The chat's messages, from the durable transcript (not the sandbox), with the ids the
        client saw when it sent and streamed them."""
        stored = self._stored(self._user(user_id), chat)
        if stored is None:
            return None
        _, entries, ids = stored
        return [Message(ids.get(m.id, m.id), m.role, m.text, m.created_at)
                for m in messages_from(entries)]

    def _stored(self, user: str, chat: str) -> tuple[ChatRecord, list[Any], dict[str, str]] | None:
        """The chat's record, its durable transcript and the ids the client saw; None when
        there is no such chat."""
        record = self.state.read_chat(user, chat)
        if record is None:
            return None
        entries = self.transcripts.load({"project_key": user, "session_id": record.session_id})
        return record, entries or [], self.state.message_ids(user, chat)
