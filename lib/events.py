"""What a turn reports as it runs, in order: deltas (text, thinking) and tool activity, then one
TurnDone or one TurnFailed (or TurnStopped). `streaming.py` encodes these for the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lib.errors import ServiceError


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's thinking, as it is produced."""

    text: str


@dataclass(frozen=True)
class ToolActivity:
    """A runner line about a tool call, its fields as lib/runner_lines.py checked them."""

    kind: str  # "tool_input_start", "tool_input_delta", "tool_use" or "tool_result"
    data: dict[str, Any]


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not an error (e.g. memory could not be kept)."""

    code: str
    message: str


@dataclass(frozen=True)
class TurnDone:
    session_id: str
    text: str
    turn: int
    usage: dict[str, float] = field(default_factory=dict)
    cost_usd: float | None = None
    # Why the answer ended, as the AI SDK names it: "stop" (it was complete), "length" (the
    # agent hit its max turns), "other" (the user stopped it).
    finish_reason: str = "stop"


@dataclass(frozen=True)
class TurnFailed:
    error: ServiceError


@dataclass(frozen=True)
class TurnStopped:
    """Stopped before the agent began: nothing was said, nothing is kept."""


TurnEvent = TextDelta | ReasoningDelta | ToolActivity | Notice | TurnDone | TurnFailed | TurnStopped
