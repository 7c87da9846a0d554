"""What a client may choose per turn: only the agent options the operator lists in
CLIENT_OPTIONS, each validated; the operator's AGENT_* settings fill in the rest."""

from __future__ import annotations

import dataclasses
from typing import Any

from lib.config import PERMISSION_MODES, THINKING_HELP, AgentOptions, thinking_choice
from lib.errors import InvalidRequest

MAX_TOOLS = 64


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise InvalidRequest(f'options.{name} must be a string of 1-{limit} characters')
    return value


def _tools(name: str, value: Any) -> tuple[str, ...]:
    if (not isinstance(value, list) or len(value) > MAX_TOOLS
            or not all(isinstance(t, str) and 0 < len(t) <= 200 for t in value)):
        raise InvalidRequest(f"options.{name} must be a list of at most {MAX_TOOLS} tool names")
    return tuple(value)


def for_turn(base: AgentOptions, raw: Any, allowed: tuple[str, ...],
             max_prompt_chars: int) -> AgentOptions:
    """The operator's options with the client's allowed, valid choices applied."""
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise InvalidRequest('"options" must be a JSON object')
    refused = sorted(set(raw) - set(allowed))
    if refused:
        detail = f"allowed: {', '.join(allowed)}" if allowed else "none are allowed"
        raise InvalidRequest(f"options not allowed here: {', '.join(refused)} ({detail})")
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "model":
            changes[name] = _text(name, value, 100)
        elif name == "system_prompt":
            changes[name] = _text(name, value, max_prompt_chars)
        elif name in ("allowed_tools", "disallowed_tools"):
            changes[name] = _tools(name, value)
        elif name == "permission_mode":
            if value not in PERMISSION_MODES:
                raise InvalidRequest(f"options.permission_mode must be one of {PERMISSION_MODES}")
            changes[name] = value
        elif name == "max_turns":
            if not isinstance(value, int) or isinstance(value, bool) or not (
                    1 <= value <= base.max_turns):
                raise InvalidRequest(f"options.max_turns must be an integer from 1 to "
                                     f"{base.max_turns} (AGENT_MAX_TURNS)")
            changes[name] = value
        elif name == "thinking":
            if (choice := thinking_choice(value)) is None:
                raise InvalidRequest(f"options.thinking must be {THINKING_HELP}")
            changes[name] = choice
    return dataclasses.replace(base, **changes)
