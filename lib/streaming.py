"""Turn events on the wire: the Vercel AI SDK's UI message stream (SSE, what `useChat` reads),
or one JSON answer at the end.

UI message stream v1, one `id: <n>` + `data: <json>` event per part (n is the part's index in
the turn's stream log, so a client that lost its connection resumes after it with
Last-Event-ID), ended by `data: [DONE]`:
  start {messageId}, start-step, text-start/text-delta/text-end {id},
  tool-input-available {toolCallId, toolName, input, dynamic}, tool-output-available
  {toolCallId, output, dynamic} or tool-output-error {toolCallId, errorText, dynamic},
  data-notice {data: {code, message}}, data-session {data: {session_id, turn, usage, cost_usd}}
  (not the text again: the text parts carry it), finish-step, finish {finishReason,
  messageMetadata: {session_id, turn, usage, cost_usd}}; or, on failure, data-error
  {data: {code, message}}, error {errorText} and finish {finishReason: "error"}.
Every part also goes to the turn's stream log, whether or not the client is still there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict
from typing import Any

from lib.errors import ServiceError
from lib.events import (
    Notice,
    TextDelta,
    ToolActivity,
    TurnDone,
    TurnEvent,
    TurnFailed,
    TurnStopped,
)
from lib.streamlog import DONE, LiveLog

UI_STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}


def sse(data: str, index: int | None = None) -> bytes:
    return (f"id: {index}\n" if index is not None else "").encode() + f"data: {data}\n\n".encode()


def encoded(part: dict[str, Any]) -> str:
    return json.dumps(part, separators=(",", ":"))


def to_ui_stream(events: Iterator[TurnEvent], message_id: str, live: LiveLog) -> Iterator[bytes]:
    """The answer's message is `message_id` (the id the stored history gives it too). If the
    client goes away, the rest of the parts still go to the log (and the turn runs on)."""
    parts = ui_parts(events, message_id)
    try:
        with closing(parts):
            for data in parts:
                index = live.add(data)
                try:
                    yield sse(data, index)
                except GeneratorExit:
                    for rest in parts:
                        live.add(rest)
                    raise
    finally:
        live.close()


def ui_parts(events: Iterator[TurnEvent], message_id: str) -> Iterator[str]:
    """The stream's parts, encoded, `[DONE]` last."""
    with closing(events):  # type: ignore[type-var]
        yield encoded({"type": "start", "messageId": message_id})
        yield encoded({"type": "start-step"})
        for part in _parts(events):
            yield encoded(part)
        yield DONE


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
            session = {"session_id": event.session_id, "turn": event.turn, "usage": event.usage,
                       "cost_usd": event.cost_usd}
            yield {"type": "data-session", "data": session}
            yield {"type": "finish-step"}
            yield {"type": "finish", "finishReason": event.finish_reason,
                   "messageMetadata": session}
        elif isinstance(event, TurnStopped):
            yield {"type": "finish-step"}
            yield {"type": "finish", "finishReason": "other"}
        elif isinstance(event, TurnFailed):
            yield {"type": "data-error", "data": event.error.to_json()["error"]}
            yield {"type": "error", "errorText": event.error.message}
            yield {"type": "finish", "finishReason": "error"}


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


def to_json(events: Iterator[TurnEvent], live: LiveLog) -> tuple[int, dict[str, Any]]:
    """Run the turn to its end; the answer is TurnDone's fields (plus notices) or the error."""
    notices: list[dict[str, str]] = []
    try:
        with closing(events):  # type: ignore[type-var]  # the turn finishes (and logs) now
            for event in events:
                if isinstance(event, Notice):
                    notices.append(asdict(event))
                elif isinstance(event, TurnDone):
                    body = asdict(event)
                    if notices:
                        body["notices"] = notices
                    return 200, body
                elif isinstance(event, TurnStopped):
                    return 200, {"stopped": True, "notices": notices}
                elif isinstance(event, TurnFailed):
                    return event.error.status, event.error.to_json()
    finally:
        live.close()
    failure = ServiceError("the turn ended without a result")
    return failure.status, failure.to_json()
