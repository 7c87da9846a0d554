"""The conversation a person sees, read from a stored transcript: their prompts and the agent's
text answers, without tool traffic, attachments or bookkeeping entries."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lib.transcripts import Entry

# Text blocks the CLI injects into user turns; a person's own prompt may still start with "<".
_INJECTED = re.compile(r"^\s*<(system-reminder|command-name|command-message|command-args|"
                       r"local-command-stdout|local-command-stderr)>")


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


def messages_from(entries: Iterable[Entry]) -> list[Message]:
    """User prompts and assistant text, in order, one assistant message per answer: the
    streamed pieces of one model message (entries sharing `message.id`) are joined, and so are
    the model messages of one answer (text around tool calls), as a client shows them."""
    messages: list[Message] = []
    last_assistant_id = None
    for entry in entries:
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
