"""Turn events on the wire: Server-Sent Events as they happen, or one JSON answer at the end."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import asdict
from typing import Any

from lib.errors import ServiceError
from lib.events import Notice, TextDelta, ToolActivity, TurnDone, TurnEvent, TurnFailed


def sse_event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def to_sse(events: Iterator[TurnEvent]) -> Iterator[bytes]:
    """`text` {"text"}, `tool_use`/`tool_result`, `notice` {"code","message"}, then exactly one
    `done` {"session_id","text","turn","usage","cost_usd"} or `error` {"error": {...}}.
    Closing this stream closes `events` at once (a turn then finishes on its own)."""
    with closing(events):  # type: ignore[type-var]
        yield b": turn started\n\n"  # sends the headers before the agent's first token
        yield from _encode(events)


def _encode(events: Iterator[TurnEvent]) -> Iterator[bytes]:
    for event in events:
        if isinstance(event, TextDelta):
            yield sse_event("text", {"text": event.text})
        elif isinstance(event, ToolActivity):
            yield sse_event(event.kind, event.data)
        elif isinstance(event, Notice):
            yield sse_event("notice", asdict(event))
        elif isinstance(event, TurnDone):
            yield sse_event("done", asdict(event))
        elif isinstance(event, TurnFailed):
            yield sse_event("error", event.error.to_json())


def to_json(events: Iterable[TurnEvent]) -> tuple[int, dict[str, Any]]:
    """Run the turn to its end; the answer is TurnDone's fields (plus notices) or the error."""
    notices: list[dict[str, str]] = []
    for event in events:
        if isinstance(event, Notice):
            notices.append(asdict(event))
        elif isinstance(event, TurnDone):
            body = asdict(event)
            if notices:
                body["notices"] = notices
            return 200, body
        elif isinstance(event, TurnFailed):
            return event.error.status, event.error.to_json()
    failure = ServiceError("the turn ended without a result")
    return failure.status, failure.to_json()
