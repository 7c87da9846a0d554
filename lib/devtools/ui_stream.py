"""Reading the AI SDK UI message stream over HTTP, as a client does: for the tests and the
benchmarks (the chat page and the CLI have their own readers)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

Event = tuple[int, str]  # (SSE id: the part's index in the stream log, data)


def post_stream(client: httpx.Client | None, url: str, user: str, prompt: str,
                on_event: Callable[[int, str], bool | None] | None = None) -> list[Event]:
    """The events of a streamed turn (`POST /api/chat`, `prompt`, the `default` chat, as
    `user`); `on_event(id, data)` returning True drops the connection there."""
    events: list[Event] = []
    post = (client or httpx).stream  # type: ignore[attr-defined]
    with post("POST", f"{url}/api/chat", json={"prompt": prompt}, timeout=120,
              headers={"X-User-Id": user, "Accept": "text/event-stream"}) as response:
        event_id = -1
        for raw in response.iter_lines():
            if raw.startswith("id: "):
                event_id = int(raw[4:])
            elif raw.startswith("data: "):
                events.append((event_id, raw[6:]))
                if on_event and on_event(event_id, raw[6:]):
                    break
    return events


def parse_events(text: str) -> list[Event]:
    """The events of a whole SSE body."""
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            id_line, data = block.split("\n")
            events.append((int(id_line[4:]), data[6:]))
    return events


def text_of(events: list[Event]) -> str:
    """The answer the text parts carry."""
    parts = [json.loads(data) for _, data in events if data != "[DONE]"]
    return "".join(p["delta"] for p in parts if p["type"] == "text-delta")
