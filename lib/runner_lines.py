"""What the function accepts from the sandbox: every stdout line of the runner, checked against
the runner's protocol (lib/runner/agent_runner.py) before anything of it is used, stored or
sent to the client. The sandbox is untrusted: an agent with a shell can print anything."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

Check = Callable[[Any], bool]
# What of a tool's output reaches the client (README: "Tool output"). The runner cuts it to the
# same limit (its own TOOL_OUTPUT_LIMIT); the function cuts it again, since the sandbox is
# untrusted.
TOOL_OUTPUT_LIMIT = 4000


def _text(limit: int = 1_000_000) -> Check:
    return lambda v: isinstance(v, str) and len(v) <= limit


def _id(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 200


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _usage(v: Any) -> bool:
    """The SDK's usage: counts, and also strings and nested objects (service_tier,
    server_tool_use...); only the finite numbers are kept (turns.py)."""
    return isinstance(v, dict) and all(isinstance(k, str) for k in v)


def _key(v: Any) -> bool:
    return (isinstance(v, dict) and _id(v.get("session_id"))
            and _optional(_text(500))(v.get("subpath")))


# type -> {field: check}; a field missing from a line is checked as None
SCHEMA: dict[str, dict[str, Check]] = {
    "text": {"text": _text()},
    "thinking": {"text": _text()},
    "session": {"session_id": _id},
    "tool_input_start": {"id": _id, "name": _text(200)},
    "tool_input_delta": {"id": _id, "delta": _text()},
    "tool_use": {"id": _id, "name": _text(200), "input": lambda v: True},
    "tool_result": {"tool_use_id": _id, "is_error": _bool, "output": _optional(_text()),
                    "truncated": _optional(_bool)},
    "mirror": {"key": _key, "entries": lambda v: isinstance(v, list)
               and all(isinstance(e, dict) for e in v),
               "catch_up": _optional(_bool)},
    "result": {"session_id": _optional(_id), "text": _optional(_text()),
               "is_error": _bool, "subtype": _optional(_text(100)),
               "errors": lambda v: v is None or (isinstance(v, list)
                                                 and all(isinstance(e, str) for e in v)),
               "usage": _optional(_usage), "cost_usd": _optional(_number),
               "num_turns": _optional(lambda v: isinstance(v, int) and not isinstance(v, bool)),
               "agent_ms": _optional(_number)},
    "restore_needed": {"session_id": _id},
    "needs_install": {"missing": lambda v: isinstance(v, list)
                      and set(v) <= {"runner", "agent"}},
    "error": {"code": _text(100), "message": _text(2000), "detail": _optional(_text(5000))},
}


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """The text without these secrets (a model server may echo the key into its answer or its
    errors: it must not reach a client, a log or a transcript)."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def parse(line: str, secrets: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The line as a message of the runner's protocol (secrets redacted), or None when it is
    not one."""
    line = redact(line, secrets)
    try:
        message = json.loads(line)
        if "\\" in line and secrets:  # JSON escapes (\u0073k-...) can spell a secret
            message = json.loads(redact(json.dumps(message, ensure_ascii=False), secrets))
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    fields = SCHEMA.get(message.get("type"))  # type: ignore[arg-type]
    if fields is None or not all(check(message.get(name)) for name, check in fields.items()):
        return None
    if message["type"] == "tool_result":
        return clipped(message, secrets)
    return message


# The streamed kinds, each a stream of pieces of one text: kind -> the field with the piece.
DELTAS = {"text": "text", "thinking": "text", "tool_input_delta": "delta"}
# What does not show in the client's stream: it neither ends nor interrupts a stream of deltas.
_UNSEEN = ("mirror", "session")


def messages(lines: Iterable[str], secrets: tuple[str, ...] = ()) -> Iterator[dict[str, Any] | None]:
    """The lines as messages (None for a line that is not one), with the secrets out of the
    streamed deltas too. A model that writes a secret writes it a token at a time, in no single
    line: each stream of deltas (the text, the thinking, a tool call's input) holds back a tail
    that could be the beginning of a secret until the next piece shows whether it is. What is
    held goes out before the next message the client sees, and at the end."""
    held: dict[str, Any] | None = None  # a delta message whose piece is the held tail
    for line in lines:
        message = parse(line, secrets)
        if message is None or message["type"] in _UNSEEN:
            yield message
            continue
        field = DELTAS.get(message["type"])
        if held is not None and (field is None or _stream(held) != _stream(message)):
            yield held  # the held tail is not a secret's: the stream ends or another begins
            held = None
        if field is None:
            yield message
            continue
        text = redact((held[field] if held else "") + message[field], secrets)
        cut = _secret_start(text, secrets)
        held = {**message, field: text[cut:]} if cut < len(text) else None
        if cut:
            yield {**message, field: text[:cut]}
    if held is not None:
        yield held


def _stream(message: dict[str, Any]) -> tuple[str, Any]:
    return message["type"], message.get("id")


def _secret_start(text: str, secrets: tuple[str, ...]) -> int:
    """Where a trailing beginning of a secret starts in `text` (its length if none)."""
    cut = len(text)
    for secret in secrets:
        if not secret:
            continue
        at = text.find(secret[0], max(0, len(text) - len(secret) + 1))
        while at != -1 and at < cut:
            if secret.startswith(text[at:]):
                cut = at
                break
            at = text.find(secret[0], at + 1)
    return cut


def clipped(result: dict[str, Any], secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """A tool_result whose output is at most TOOL_OUTPUT_LIMIT characters, `truncated` when it
    was cut here or in the sandbox (and then without a secret's beginning left at the cut)."""
    output = result.get("output") or ""
    truncated = len(output) > TOOL_OUTPUT_LIMIT or bool(result.get("truncated"))
    output = output[:TOOL_OUTPUT_LIMIT]
    if truncated:
        output = _without_cut_secret(output, secrets)
    return {**result, "output": output, "truncated": truncated}


def _without_cut_secret(text: str, secrets: tuple[str, ...]) -> str:
    """The text without a trailing beginning of a secret (8 characters or more) that a cut
    separated from the rest of it, which redact() then could not recognise."""
    cut = _secret_start(text, secrets)
    return text[:cut] + "[redacted]" if len(text) - cut >= 8 else text
