"""What the function accepts from the sandbox: every stdout line of the runner, checked against
the runner's protocol (lib/runner/agent_runner.py) before anything of it is used, stored or
sent to the client. The sandbox is untrusted: an agent with a shell can print anything."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


def _text(limit: int = 1_000_000) -> Check:
    return lambda v: isinstance(v, str) and len(v) <= limit


def _id(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 200


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


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
    "session": {"session_id": _id},
    "tool_use": {"id": _id, "name": _text(200), "input": lambda v: True},
    "tool_result": {"tool_use_id": _id, "is_error": lambda v: isinstance(v, bool)},
    "mirror": {"key": _key, "entries": lambda v: isinstance(v, list)
               and all(isinstance(e, dict) for e in v),
               "catch_up": _optional(lambda v: isinstance(v, bool))},
    "result": {"session_id": _optional(_id), "text": _optional(_text()),
               "is_error": lambda v: isinstance(v, bool), "subtype": _optional(_text(100)),
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
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    fields = SCHEMA.get(message.get("type"))  # type: ignore[arg-type]
    if fields is None or not all(check(message.get(name)) for name, check in fields.items()):
        return None
    return message
