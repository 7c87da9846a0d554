"""Turn events on the wire: the Vercel AI SDK's UI message stream (SSE, what `useChat` reads),
or one JSON answer at the end.

UI message stream v1, one `id: <n>` + `data: <json>` event per part (n is the part's index in
the turn's stream log, so a client that lost its connection resumes after it with
Last-Event-ID), ended by `data: [DONE]`:
  start {messageId}, start-step, text-start/text-delta/text-end {id},
  reasoning-start/reasoning-delta/reasoning-end {id} (the model's thinking),
  tool-input-start {toolCallId, toolName, dynamic}, tool-input-delta {toolCallId,
  inputTextDelta} (the input JSON as the model writes it), tool-input-available {toolCallId,
  toolName, input, dynamic}, tool-output-available {toolCallId, output: {text, truncated},
  dynamic} or tool-output-error {toolCallId, errorText, dynamic} (dynamic: true, the client
  declared none of the agent's tools; output text cut to TOOL_OUTPUT_LIMIT characters),
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
    ReasoningDelta,
    TextDelta,
    ToolActivity,
    TurnDone,
    TurnEvent,
    TurnFailed,
    TurnStopped,
)
from lib.streamlog import DONE, LiveLog

TRUNCATED_MARK = " […truncated]"
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
    parts = _Parts()
    for event in events:
        yield from parts.of(event)


class _Parts:
    """The UI parts of a turn's events. A text or reasoning part stays open while its deltas
    come; anything else ends it. Tool parts are passed on only in an order the AI SDK client
    accepts (it throws on a delta or an output for a call it has not seen): the sandbox is
    untrusted."""

    def __init__(self) -> None:
        self.count = 0
        self.open: tuple[str, str] | None = None  # ("text" or "reasoning", its id)
        self.streaming: set[str] = set()  # tool calls whose input is being written
        self.called: set[str] = set()  # tool calls whose whole input was sent

    def of(self, event: TurnEvent) -> Iterator[dict[str, Any]]:
        if isinstance(event, (TextDelta, ReasoningDelta)):
            yield from self.delta("text" if isinstance(event, TextDelta) else "reasoning",
                                  event.text)
            return
        yield from self.close()
        if isinstance(event, ToolActivity):
            yield from self.tool(event.kind, event.data)
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

    def delta(self, kind: str, text: str) -> Iterator[dict[str, Any]]:
        if self.open is None or self.open[0] != kind:
            yield from self.close()
            self.count += 1
            self.open = (kind, f"{kind}-{self.count}")
            yield {"type": f"{kind}-start", "id": self.open[1]}
        yield {"type": f"{kind}-delta", "id": self.open[1], "delta": text}

    def close(self) -> Iterator[dict[str, Any]]:
        if self.open is not None:
            yield {"type": f"{self.open[0]}-end", "id": self.open[1]}
            self.open = None

    def tool(self, kind: str, data: dict[str, Any]) -> Iterator[dict[str, Any]]:
        call = data.get("tool_use_id") if kind == "tool_result" else data.get("id")
        if kind == "tool_input_start" and call not in self.streaming | self.called:
            self.streaming.add(call)
            yield {"type": "tool-input-start", "toolCallId": call, "toolName": data["name"],
                   "dynamic": True}
        elif kind == "tool_input_delta" and call in self.streaming:
            yield {"type": "tool-input-delta", "toolCallId": call, "inputTextDelta": data["delta"]}
        elif kind == "tool_use":
            self.streaming.discard(call)
            self.called.add(call)
            yield {"type": "tool-input-available", "toolCallId": call, "toolName": data["name"],
                   "input": data.get("input"), "dynamic": True}
        elif kind == "tool_result" and call in self.called:
            self.called.discard(call)
            yield _tool_output(call, data)


def _tool_output(call: str, data: dict[str, Any]) -> dict[str, Any]:
    """The tool's output as text (already cut to TOOL_OUTPUT_LIMIT characters by
    lib/runner_lines.py): `{text, truncated}`, or an error's text (a cut one ends with a mark)."""
    text, truncated = data.get("output") or "", bool(data.get("truncated"))
    if data.get("is_error"):
        error = (text or "the tool reported an error") + (TRUNCATED_MARK if truncated else "")
        return {"type": "tool-output-error", "toolCallId": call, "errorText": error,
                "dynamic": True}
    return {"type": "tool-output-available", "toolCallId": call,
            "output": {"text": text, "truncated": truncated}, "dynamic": True}


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
