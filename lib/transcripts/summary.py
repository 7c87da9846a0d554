"""Session summaries kept up to date on append, so listing a user's conversations reads one
small record per session instead of every transcript.

A stored summary has two parts:
- `data`: the state of the SDK's own fold (`claude_agent_sdk._internal.session_summary.
  fold_session_summary`), with its keys and meaning, so the SDK's `list_sessions_from_store`
  reads our summaries as if it had written them (reimplemented here: `lib/` does not import the
  SDK; `tests/` check the two agree);
- `prompt`: our own first prompt, the one a person typed: the SDK's `first_prompt` may be a
  block the CLI injected (`<system-reminder>`...), which `lib.conversation` never shows.

Every field is set-once or last-wins, so the fold of a batch can be computed without the stored
summary and merged into it where it lives (`merge`; the Upstash adapter does it in its append
script): `merge(stored, delta(batch))` is the fold of the stored entries and the batch.
A delta is a list of `Op`s, applied in order.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from lib.conversation import _INJECTED, shorten
from lib.transcripts import Entry, SessionSummary

# The SDK's filters for its `first_prompt` (claude_agent_sdk/_internal/sessions.py).
_SKIP_FIRST_PROMPT = re.compile(
    r"^(?:<local-command-stdout>|<session-start-hook>|<tick>|<goal>|"
    r"\[Request interrupted by user[^\]]*\]|"
    r"\s*<ide_opened_file>[\s\S]*</ide_opened_file>\s*$|"
    r"\s*<ide_selection>[\s\S]*</ide_selection>\s*$)"
)
_COMMAND_NAME = re.compile(r"<command-name>(.*?)</command-name>")

# entry key -> summary key, last one wins (the SDK's `_LAST_WINS_FIELDS`)
_LAST_WINS = {"customTitle": "custom_title", "aiTitle": "ai_title", "lastPrompt": "last_prompt",
              "summary": "summary_hint", "gitBranch": "git_branch"}
_SET_ONCE = ("is_sidechain", "created_at", "cwd")
TITLE_CHARS = 80
MAX_CHARS = 500  # any longer string is cut: summaries stay small, whatever a transcript holds
LOCK = "first_prompt_locked"

# What to do to one field of the stored summary:
#   once    set it unless it is set               last    set it
#   drop    remove it                             unlocked_once / unlocked: `once` / `last`, but
#   only while the SDK's first prompt is not locked (the lock is read before any op is applied)
Op = tuple[Literal["once", "last", "drop", "unlocked_once", "unlocked"], str, Any]


def _epoch_ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z")
                                          else value).timestamp() * 1000)
    except ValueError:
        return None


def _cut(value: Any) -> Any:
    return value[:MAX_CHARS - 1] + "…" if isinstance(value, str) and len(value) > MAX_CHARS else value


def _texts(entry: Entry) -> list[str] | None:
    """The text blocks of a user entry that is a person's message, None for any other entry
    (not a user entry, a meta or compaction entry, a tool result)."""
    message = entry.get("message")
    if (entry.get("type") != "user" or entry.get("isMeta") is True
            or entry.get("isCompactSummary") is True):
        return None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
        return None
    return [b["text"] for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)]


def delta(entries: list[Entry]) -> list[Op]:
    """The ops folding a batch of entries, appended to a main transcript, into its summary."""
    data: dict[str, Any] = {}
    fallback: str | None = None  # the SDK's `command_fallback`, kept until a prompt locks
    prompt: str | None = None
    tag: tuple[Any, ...] = ()  # (value,) if a tag entry came: the last one's, "" = cleared
    for entry in entries:
        if "is_sidechain" not in data:
            data["is_sidechain"] = entry.get("isSidechain") is True
        if "created_at" not in data and (ms := _epoch_ms(entry.get("timestamp"))) is not None:
            data["created_at"] = ms
        if "cwd" not in data and isinstance(entry.get("cwd"), str) and entry["cwd"]:
            data["cwd"] = entry["cwd"]
        texts = _texts(entry)
        if texts is not None and LOCK not in data:
            for raw in texts:  # the SDK's `_fold_first_prompt`
                text = raw.replace("\n", " ").strip()
                if not text:
                    continue
                if command := _COMMAND_NAME.search(text):
                    fallback = fallback or command.group(1)
                    continue
                if _SKIP_FIRST_PROMPT.match(text):
                    continue
                data["first_prompt"] = text[:200].rstrip() + "…" if len(text) > 200 else text
                data[LOCK] = True
                break
        if texts is not None and prompt is None and not entry.get("isSidechain"):
            text = "".join(t for t in texts if not _INJECTED.match(t))  # as the conversation shows
            if text.strip():
                prompt = shorten(text, TITLE_CHARS)
        for source, target in _LAST_WINS.items():
            if isinstance(entry.get(source), str):
                data[target] = entry[source]
        if entry.get("type") == "tag":
            tag = (entry["tag"] if isinstance(entry.get("tag"), str) else "",)
    ops: list[Op] = [("once", f"d:{k}", _cut(data[k])) for k in _SET_ONCE if k in data]
    if fallback:
        ops.append(("unlocked_once", "d:command_fallback", _cut(fallback)))
    if LOCK in data:
        ops += [("unlocked", "d:first_prompt", data["first_prompt"]), ("unlocked", f"d:{LOCK}", True)]
    ops += [("last", f"d:{k}", _cut(data[k])) for k in _LAST_WINS.values() if k in data]
    if tag:
        ops.append(("last", "d:tag", _cut(tag[0])) if tag[0] else ("drop", "d:tag", None))
    if prompt is not None:
        ops.append(("once", "prompt", prompt))
    return ops


def merge(fields: dict[str, Any], ops: list[Op]) -> dict[str, Any]:
    """The stored fields (`d:<data key>`, `prompt`) with the ops applied."""
    fields = dict(fields)
    locked = f"d:{LOCK}" in fields
    for op, name, value in ops:
        if op == "drop":
            fields.pop(name, None)
        elif op == "last" or (op == "unlocked" and not locked):
            fields[name] = value
        elif op == "once" or (op == "unlocked_once" and not locked):
            fields.setdefault(name, value)
    return fields


def summary_from(session_id: str, mtime: int, fields: dict[str, Any]) -> SessionSummary:
    """The summary the port returns, from the stored fields."""
    data = {name[2:]: value for name, value in fields.items() if name.startswith("d:")}
    prompt = fields.get("prompt")
    title = data.get("custom_title") or data.get("ai_title") or prompt or None
    return {"session_id": session_id, "mtime": mtime, "data": data,
            "title": " ".join(title.split()) if isinstance(title, str) else None,
            "first_prompt": prompt if isinstance(prompt, str) else None,
            "created_at": data.get("created_at") if isinstance(data.get("created_at"), int)
            else None}
