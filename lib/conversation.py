"""The conversation a person sees, read from a stored transcript: their prompts and the agent's
text answers, without tool traffic, attachments or bookkeeping entries."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lib.transcripts import Entry

# Text blocks the CLI injects into user turns (a person's own prompt may still start with "<"),
# and the mark it leaves when a turn is interrupted (the user's stop).
_INJECTED = re.compile(r"^\s*(<(system-reminder|command-name|command-message|command-args|"
                       r"local-command-stdout|local-command-stderr)>"
                       r"|\[Request interrupted by user[^\]]*\]\s*$)")


@dataclass(frozen=True)
class Message:
    id: str
    role: str  # "user" or "assistant"
    text: str
    created_at: str | None  # ISO 8601, as the CLI wrote it


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [block.get("text", "") for block in content
            if isinstance(block, dict) and block.get("type") == "text"]


def shorten(text: str, limit: int = 80) -> str:
    """One line of at most `limit` characters (a title from a prompt)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def current_branch(entries: Iterable[Entry]) -> list[Entry]:
    """The entries of the conversation as it stands: a rewound session (a regenerated answer)
    keeps the abandoned branch in its transcript, so follow `parentUuid` back from the newest
    entry of the main chain. A transcript without parent links is taken as it is."""
    entries = list(entries)
    by_uuid = {e["uuid"]: e for e in entries if isinstance(e.get("uuid"), str)}
    if not any("parentUuid" in e for e in entries):
        return entries
    leaf = next((e for e in reversed(entries)
                 if isinstance(e.get("uuid"), str) and not e.get("isSidechain")), None)
    branch: list[Entry] = []
    seen: set[str] = set()
    while leaf is not None and leaf["uuid"] not in seen:
        seen.add(leaf["uuid"])
        branch.append(leaf)
        parent = leaf.get("parentUuid") or leaf.get("logicalParentUuid")
        leaf = by_uuid.get(parent) if isinstance(parent, str) else None
    return branch[::-1]


def _is_prompt(entry: Entry) -> bool:
    body = entry.get("message") or {}
    return (entry.get("type") == "user" and not entry.get("isMeta")
            and any(t.strip() and not _INJECTED.match(t) for t in _texts(body.get("content"))))


def rewind_point(entries: Iterable[Entry]) -> tuple[str | None, str] | None:
    """To answer the newest prompt again: (the uuid to resume at, the newest prompt's uuid,
    whose turn is dropped). The first is None when that prompt opened the conversation (start
    over); None altogether when there is no prompt."""
    branch = current_branch(entries)
    for index in range(len(branch) - 1, -1, -1):
        if _is_prompt(branch[index]) and isinstance(branch[index].get("uuid"), str):
            keep = next((e["uuid"] for e in reversed(branch[:index])
                         if isinstance(e.get("uuid"), str)), None)
            return keep, branch[index]["uuid"]
    return None


def history_until(entries: Iterable[Entry], message_id: str,
                  ids: dict[str, str]) -> list[Entry] | None:
    """The current branch up to and including the message `message_id` (a client's id from
    `ids`, transcript uuid -> client id, or a transcript uuid), with all of its answer when it
    is one; None when there is no such message."""
    branch = current_branch(entries)
    starts = {m.id: m for m in messages_from(branch)}
    target = next((uid for uid, m in starts.items() if ids.get(uid, uid) == message_id), None)
    if target is None:
        return None
    position = next(i for i, e in enumerate(branch) if e.get("uuid") == target)
    if _is_prompt(branch[position]):
        return branch[: position + 1]
    following = next((i for i in range(position + 1, len(branch)) if _is_prompt(branch[i])),
                     len(branch))
    return branch[:following]


def copied_to(entries: list[Entry], session_id: str) -> tuple[list[Entry], dict[str, str]]:
    """The entries as another session's (a fork): fresh uuids with the parent links kept, the
    new session id in each. Returns them and old uuid -> new uuid."""
    renamed = {e["uuid"]: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{session_id}/{e['uuid']}"))
               for e in entries if isinstance(e.get("uuid"), str)}
    copies = []
    for entry in entries:
        copy = {**entry, "sessionId": session_id}
        for field in ("uuid", "parentUuid", "logicalParentUuid"):
            if isinstance(entry.get(field), str):
                copy[field] = renamed.get(entry[field])
        copies.append(copy)
    return copies, renamed


def prompts_in(entries: Iterable[Entry]) -> int:
    return sum(1 for entry in entries if _is_prompt(entry))


def messages_from(entries: Iterable[Entry]) -> list[Message]:
    """User prompts and assistant text, in order, one assistant message per answer: the
    streamed pieces of one model message (entries sharing `message.id`) are joined, and so are
    the model messages of one answer (text around tool calls), as a client shows them."""
    messages: list[Message] = []
    last_assistant_id = None
    for entry in current_branch(entries):
        kind, body = entry.get("type"), entry.get("message") or {}
        if kind not in ("user", "assistant") or entry.get("isMeta") or entry.get("isSidechain"):
            continue
        text = "".join(t for t in _texts(body.get("content")) if not _INJECTED.match(t))
        if not text.strip():
            continue
        if kind == "assistant" and messages and messages[-1].role == "assistant":
            previous = messages.pop()
            same = body.get("id") and body.get("id") == last_assistant_id
            messages.append(Message(previous.id, "assistant",
                                    previous.text + ("" if same else "\n\n") + text,
                                    previous.created_at))
            last_assistant_id = body.get("id")
            continue
        last_assistant_id = body.get("id") if kind == "assistant" else None
        messages.append(Message(str(entry.get("uuid") or len(messages)), kind, text,
                                entry.get("timestamp")))
    return messages


def page(messages: list[Message], limit: int, before: int | None) -> tuple[list[Message], int | None]:
    """The `limit` messages just before index `before` (default: the newest), oldest first, and
    the cursor for the page before them (None at the start)."""
    end = len(messages) if before is None else max(0, min(before, len(messages)))
    start = max(0, end - limit)
    return messages[start:end], (start if start > 0 else None)
