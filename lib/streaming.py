"""Turn events on the wire: the Vercel AI SDK's UI message stream (SSE, what `useChat` reads),
or one JSON answer at the end.

UI message stream v1, one `data: <json>` event per part, ended by `data: [DONE]`:
  start {messageId}, start-step, text-start/text-delta/text-end {id},
  tool-input-available {toolCallId, toolName, input, dynamic}, tool-output-available
  {toolCallId, output, dynamic} or tool-output-error {toolCallId, errorText, dynamic},
  data-notice {data: {code, message}}, data-session {data: {session_id, turn, usage, cost_usd}}
  (not the text again: the text parts carry it),
  finish-step, finish; or, on failure, data-error {data: {code, message}} and error {errorText}.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict
from typing import Any

from lib.errors import ServiceError
from lib.events import Notice, TextDelta, ToolActivity, TurnDone, TurnEvent, TurnFailed

UI_STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}


def sse(part: dict[str, Any] | str) -> bytes:
    data = part if isinstance(part, str) else json.dumps(part, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def to_ui_stream(events: Iterator[TurnEvent], message_id: str) -> Iterator[bytes]:
    """The answer's message is `message_id` (the id the stored history gives it too). Closing
    this stream closes `events` at once (a turn then finishes on its own)."""
    with closing(events):  # type: ignore[type-var]
        yield sse({"type": "start", "messageId": message_id})
        yield sse({"type": "start-step"})
        for part in _parts(events):
            yield sse(part)
        yield sse("[DONE]")


def _parts(events: Iterator[TurnEvent]) -> Iterator[dict[str, Any]]:
    texts = 0
    open_text: str | None = None
    for event in events:
        if isinstance(event, TextDelta):
            if open_text is None:
                texts += 1
                open_text = f"text-{texts}"
                yield {"type": "text-start", "id": open_text}
            yield {"type": "text-delta", "id": open_text, "delta": event.text}
            continue
        if open_text is not None:  # anything else ends the current text part
            yield {"type": "text-end", "id": open_text}
            open_text = None
        if isinstance(event, ToolActivity):
            yield _tool_part(event)
        elif isinstance(event, Notice):
            yield {"type": "data-notice", "data": asdict(event)}
        elif isinstance(event, TurnDone):
            yield {"type": "data-session",
                   "data": {k: v for k, v in asdict(event).items() if k != "text"}}
            yield {"type": "finish-step"}
            yield {"type": "finish"}
        elif isinstance(event, TurnFailed):
            yield {"type": "data-error", "data": event.error.to_json()["error"]}
            yield {"type": "error", "errorText": event.error.message}


def _tool_part(event: ToolActivity) -> dict[str, Any]:
    data = event.data
    if event.kind == "tool_use":
        return {"type": "tool-input-available", "toolCallId": data.get("id"),
                "toolName": data.get("name"), "input": data.get("input"), "dynamic": True}
    if data.get("is_error"):
        return {"type": "tool-output-error", "toolCallId": data.get("tool_use_id"),
                "errorText": "the tool reported an error", "dynamic": True}
    return {"type": "tool-output-available", "toolCallId": data.get("tool_use_id"),
            "output": {"ok": True}, "dynamic": True}


def to_json(events: Iterator[TurnEvent]) -> tuple[int, dict[str, Any]]:
    """Run the turn to its end; the answer is TurnDone's fields (plus notices) or the error."""
    notices: list[dict[str, str]] = []
    with closing(events):  # type: ignore[type-var]  # the turn finishes (and logs) now
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
