"""An offline stand-in for the Anthropic Messages API, as the Claude Code CLI uses it.

It is NOT Claude: each reply is deterministic and says which user messages it received, so a
person (or a test) can see the conversation memory work without a model or a network. The CLI
calls `POST /v1/messages?beta=true` with `stream: true` and expects SSE with `event:` lines;
after a broken stream it retries with `stream: false` and expects a JSON Message (DESIGN §4).

It can also act, so tool use can be seen end to end through the real CLI:
- a prompt that says `write <text> to <file>` (e.g. "Please write hello to notes.txt") gets the
  Write tool called on <file> in the CLI's working directory, then Read on it, then an answer
  quoting what Read returned (or, when Write failed, its error);
- a prompt with the word `think` gets a thinking block before the answer (unless the request
  turns thinking off or asks for it omitted).

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
_WRITE = re.compile(r"\bwrite\s+[\"']?(.+?)[\"']?\s+to\s+([\w./-]*\w)", re.I | re.S)
_THINK = re.compile(r"\bthink\b", re.I)
_CWD = re.compile(r"Primary working directory: (\S+)")
Block = dict[str, Any]


def _blocks(message: dict[str, Any]) -> list[Block]:
    content = message.get("content")
    return [{"type": "text", "text": content}] if isinstance(content, str) else content or []


def _typed(message: dict[str, Any]) -> str:
    """What a person typed in a user message ("" for tool results and system reminders)."""
    if message.get("role") != "user":
        return ""
    parts = [_REMINDER.sub("", block.get("text", "")).strip()
             for block in _blocks(message) if block.get("type") == "text"]
    return "\n".join(part for part in parts if part)


def user_texts(body: dict[str, Any]) -> list[str]:
    """The text a person typed in each user message, without tool results or system reminders."""
    return [text for message in body.get("messages", []) if (text := _typed(message))]


def tool_results(body: dict[str, Any]) -> list[Block]:
    """The tool results sent back since the person's newest message (this turn's tool calls)."""
    results: list[Block] = []
    for message in body.get("messages", []):
        if _typed(message):
            results = []
        results += [b for b in _blocks(message) if b.get("type") == "tool_result"]
    return results


def result_text(result: Block) -> str:
    content = result.get("content")
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return str(content or "")


def reply_for(body: dict[str, Any]) -> str:
    said = user_texts(body)
    if not said:
        return f"{LABEL} I received no user text."
    earlier = "; ".join(f"{i}. {text!r}" for i, text in enumerate(said[:-1], 1))
    memory = f" Earlier you said: {earlier}." if earlier else " This is the first thing you said."
    return f"{LABEL} You said: {said[-1]!r}.{memory} ({len(said)} user messages so far.)"


def working_dir(body: dict[str, Any]) -> str:
    """The CLI's working directory, as its system prompt states it (in `system` or in a
    system message)."""
    found = _CWD.search(json.dumps(body).replace("\\n", "\n"))
    return found.group(1) if found else "/tmp"


def _tool_use(name: str, **tool_input: str) -> Block:
    return {"type": "tool_use", "id": f"toolu_offline_{uuid.uuid4().hex[:16]}", "name": name,
            "input": tool_input}


def acting(body: dict[str, Any], content: str, name: str) -> tuple[list[Block], str]:
    """The step of a write-then-read after the tool results so far: a call, or the answer."""
    path = name if name.startswith("/") else f"{working_dir(body).rstrip('/')}/{name}"
    done = tool_results(body)
    if not done:
        return [{"type": "text", "text": f"I will write {name}."},
                _tool_use("Write", file_path=path, content=content)], "tool_use"
    if done[-1].get("is_error"):
        return [{"type": "text", "text": f"{LABEL} The tool failed: {result_text(done[-1])}"}], \
            "end_turn"
    if len(done) == 1:
        return [_tool_use("Read", file_path=path)], "tool_use"
    return [{"type": "text", "text": f"{LABEL} I wrote {name} and read back: "
                                     f"{result_text(done[-1])}"}], "end_turn"


def thinks(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking") or {}
    return thinking.get("type") not in (None, "disabled") and thinking.get("display") != "omitted"


def reply_blocks(body: dict[str, Any]) -> tuple[list[Block], str]:
    """The answer's content blocks and its stop reason."""
    said = user_texts(body)
    wanted = _WRITE.search(said[-1]) if said else None
    if wanted:
        return acting(body, wanted.group(1), wanted.group(2))
    blocks: list[Block] = [{"type": "text", "text": reply_for(body)}]
    if said and _THINK.search(said[-1]) and thinks(body):
        thought = f"The user asked me to think about {said[-1]!r}. I will answer plainly."
        blocks.insert(0, {"type": "thinking", "thinking": thought, "signature": "offline"})
    return blocks, "end_turn"


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
        blocks, stop_reason = reply_blocks(body)
        model = body.get("model", "offline")
        usage = {"input_tokens": len(json.dumps(body.get("messages", []))) // 4,
                 "output_tokens": sum(len(str(b.get(b["type"], b.get("input"))).split())
                                      for b in blocks)}
        if body.get("stream"):
            return Response(self._stream(blocks, stop_reason, model, usage),
                            mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
        message = self._message(model, usage)
        message.update(content=blocks, stop_reason=stop_reason)
        return Response(json.dumps(message), mimetype="application/json")

    def _message(self, model: str, usage: dict[str, int]) -> dict[str, Any]:
        return {"id": f"msg_offline_{uuid.uuid4().hex[:20]}", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": dict(usage)}

    def _stream(self, blocks: list[Block], stop_reason: str, model: str,
                usage: dict[str, int]) -> Iterator[bytes]:
        yield _sse("message_start", {"type": "message_start",
                                     "message": self._message(model, {**usage, "output_tokens": 0})})
        for index, block in enumerate(blocks):
            yield from self._stream_block(index, block)
        yield _sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": usage["output_tokens"]}})
        yield _sse("message_stop", {"type": "message_stop"})
        self.finished_at.append(time.time())

    def _stream_block(self, index: int, block: Block) -> Iterator[bytes]:
        """One content block as the API streams it: empty at the start, then deltas (words of
        text or thinking, pieces of a tool call's JSON input), then its stop."""
        kind = block["type"]
        empty = {"text": {"text": ""}, "thinking": {"thinking": "", "signature": ""},
                 "tool_use": {"id": block.get("id"), "name": block.get("name"), "input": {}}}
        yield _sse("content_block_start", {"type": "content_block_start", "index": index,
                                           "content_block": {"type": kind, **empty[kind]}})
        if kind == "tool_use":
            raw = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": raw[i:i + 16]}
                      for i in range(0, len(raw), 16)]
        else:
            deltas = [{"type": f"{kind}_delta", kind: word}
                      for word in re.findall(r"\S+\s*", block[kind])]
            if kind == "thinking":
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
        for delta in deltas:
            if self.delay:
                time.sleep(self.delay)
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": delta})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})

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
