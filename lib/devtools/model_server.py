"""An offline stand-in for the Anthropic Messages API, as the Claude Code CLI uses it.

It is NOT Claude: each reply is deterministic and says which user messages it received, so a
person (or a test) can see the conversation memory work without a model or a network. The CLI
calls `POST /v1/messages?beta=true` with `stream: true` and expects SSE with `event:` lines;
after a broken stream it retries with `stream: false` and expects a JSON Message (DESIGN §4).

    python -m lib.devtools.model_server [--port 8078] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from werkzeug.wrappers import Request, Response

LABEL = "[offline model: a local stand-in, not Claude]"
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.S)


def user_texts(body: dict[str, Any]) -> list[str]:
    """The text a person typed in each user message, without tool results or system reminders."""
    texts = []
    for message in body.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        parts = [
            _REMINDER.sub("", block.get("text", "")).strip()
            for block in blocks
            if block.get("type") == "text"
        ]
        text = "\n".join(part for part in parts if part)
        if text:
            texts.append(text)
    return texts


def reply_for(body: dict[str, Any]) -> str:
    said = user_texts(body)
    if not said:
        return f"{LABEL} I received no user text."
    earlier = "; ".join(f"{i}. {text!r}" for i, text in enumerate(said[:-1], 1))
    memory = f" Earlier you said: {earlier}." if earlier else " This is the first thing you said."
    return f"{LABEL} You said: {said[-1]!r}.{memory} ({len(said)} user messages so far.)"


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class OfflineModel:
    """The WSGI app. `requests` keeps every Messages request body, in order, and `finished_at`
    the time each streamed reply was fully sent, for tests."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.finished_at: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        if request.method != "POST":
            return self._error(405, "invalid_request_error", "use POST")
        try:
            body = json.loads(request.get_data() or b"{}")
        except ValueError:
            return self._error(400, "invalid_request_error", "body is not JSON")
        if request.path == "/v1/messages/count_tokens":
            return Response(json.dumps({"input_tokens": len(json.dumps(body)) // 4}),
                            mimetype="application/json")
        if request.path != "/v1/messages":
            return self._error(404, "not_found_error", f"no route {request.path}")
        with self._lock:
            self.requests.append(body)
        text = reply_for(body)
        model = body.get("model", "offline")
        usage = {"input_tokens": len(json.dumps(body.get("messages", []))) // 4,
                 "output_tokens": len(text.split())}
        if body.get("stream"):
            return Response(self._stream(text, model, usage), mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache"})
        message = self._message(model, usage)
        message.update(content=[{"type": "text", "text": text}], stop_reason="end_turn")
        return Response(json.dumps(message), mimetype="application/json")

    def _message(self, model: str, usage: dict[str, int]) -> dict[str, Any]:
        return {"id": f"msg_offline_{uuid.uuid4().hex[:20]}", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": dict(usage)}

    def _stream(self, text: str, model: str, usage: dict[str, int]) -> Iterator[bytes]:
        yield _sse("message_start", {"type": "message_start",
                                     "message": self._message(model, {**usage, "output_tokens": 0})})
        yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})
        for word in re.findall(r"\S+\s*", text):
            if self.delay:
                time.sleep(self.delay)
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": word}})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield _sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": usage["output_tokens"]}})
        yield _sse("message_stop", {"type": "message_stop"})
        self.finished_at.append(time.time())

    @staticmethod
    def _error(status: int, kind: str, message: str) -> Response:
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return Response(json.dumps(body), status=status, mimetype="application/json")


def main() -> None:
    from lib.devtools.serving import serve_in_background

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8078)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between streamed words")
    args = parser.parse_args()
    server = serve_in_background(OfflineModel(args.delay), args.port)
    print(f"offline model on {server.url}", flush=True)
    server.thread.join()


if __name__ == "__main__":
    main()
