"""The sandbox port: where a user's agent runs and keeps its files.

A backend attaches a sandbox by name (creating or resuming it) and says whether it is *fresh*
(created now, or its files are gone), runs commands with stdout streamed line by line, reads and
writes files, and stops, destroys and lists sandboxes for the cleanup job. `local.py` keeps
sandboxes as folders on this machine; the Vercel Sandbox backend fits the same protocol.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

SandboxStatus = Literal["running", "stopped"]


class Process(Protocol):
    def lines(self) -> Iterator[str]:
        """Stdout, one line at a time, as the process writes it; ends when stdout closes."""
        ...

    def wait(self) -> int:
        """Block until the process exits; return its exit status."""
        ...

    def kill(self) -> None:
        """Stop the process now (idempotent, safe from another thread)."""
        ...

    def stderr_tail(self) -> str:
        """The last part of what the process wrote to stderr, for error messages."""
        ...


class Sandbox(Protocol):
    name: str
    python: str  # the interpreter that has claude-agent-sdk, as a path inside the sandbox
    home: str  # $HOME inside the sandbox; the Claude config dir is $HOME/.claude
    workdir: str  # the fixed cwd of every agent turn (transcript paths derive from it)
    env: Mapping[str, str]  # what this backend's runner needs; wins over the service's env

    def run(self, argv: list[str], env: Mapping[str, str]) -> Process: ...

    def write_file(self, path: str, data: bytes) -> None: ...

    def exists(self, path: str) -> bool: ...


@dataclass(frozen=True)
class SandboxInfo:
    name: str
    status: SandboxStatus


@dataclass(frozen=True)
class Attachment:
    sandbox: Sandbox
    fresh: bool


class SandboxBackend(Protocol):
    def attach(self, name: str) -> Attachment:
        """Get the named sandbox running, creating or resuming it."""
        ...

    def status(self, name: str) -> SandboxStatus | None:
        """None when no such sandbox exists."""
        ...

    def stop(self, name: str) -> None: ...

    def destroy(self, name: str) -> None: ...

    def list(self) -> list[SandboxInfo]: ...
