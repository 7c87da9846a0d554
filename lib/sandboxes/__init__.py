"""The sandbox port: where a user's agent runs and keeps its files.

A backend attaches a sandbox by name (creating or resuming it) and says whether it is *fresh*
(created now, or its files are gone), runs commands with stdout streamed line by line, writes
files, installs the agent SDK where it must, and stops, destroys and lists sandboxes for the
cleanup job. `local.py` keeps sandboxes as folders on this machine, and reaches a warm agent's
socket directly (`call_agent`); `vercel.py` runs them on Vercel Sandbox, where every call is a
round trip over the internet: a warm turn is one `run`.
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

    def interrupt(self) -> None:
        """Send it SIGINT (the user's stop; safe from another thread; no-op once it ended)."""
        ...

    def stderr_tail(self) -> str:
        """The last part of what the process wrote to stderr, for error messages."""
        ...


class Sandbox(Protocol):
    name: str
    python: str  # the interpreter that runs the runner, as a path or command inside the sandbox
    home: str  # $HOME inside the sandbox; the Claude config dir is $HOME/.claude
    workdir: str  # the fixed cwd of every agent turn (transcript paths derive from it)
    env: Mapping[str, str]  # what this backend's runner needs; wins over the service's env
    # (path, text): the runner's launcher checks that this file holds this text, the record of
    # what `install_agent` installed; None when there is nothing to install (the local backend).
    install_marker: tuple[str, str] | None

    @property
    def hint(self) -> str | None:
        """Where this sandbox is now, for the next `attach` to skip looking it up (opaque)."""
        ...

    def run(self, argv: list[str], env: Mapping[str, str], timeout: float) -> Process:
        """Start a command in the sandbox's base folder, which always exists; the backend ends
        it after `timeout` seconds even if nobody kills it."""
        ...

    def call_agent(self, address: str, job: bytes, timeout: float) -> Process | None:
        """Hand `job` (one JSON line) straight to the sandbox's warm agent listening at
        `address` (lib/runner.agent_address) and return its answer as a Process: no command
        runs. None when this backend has no such way in or no agent listens there; the turn
        then runs its command, which starts the agent."""
        ...

    def write_files(self, files: Mapping[str, bytes]) -> None:
        """Write these files (parent folders are created), in one call."""
        ...

    def install_agent(self, timeout: float) -> None:
        """Install the agent SDK and write `install_marker` within `timeout` seconds (the
        turn's time left); SandboxUnavailable if it fails."""
        ...


@dataclass(frozen=True)
class SandboxInfo:
    name: str
    status: SandboxStatus


@dataclass(frozen=True)
class Attachment:
    sandbox: Sandbox
    fresh: bool


class SandboxBackend(Protocol):
    def attach(self, name: str, hint: str | None = None) -> Attachment:
        """Get the named sandbox running, creating or resuming it. With the `hint` of an earlier
        attach a backend may skip looking it up: `run` then re-attaches by itself if the
        sandbox turns out stopped or gone, and the runner reports what the files lack."""
        ...

    def status(self, name: str) -> SandboxStatus | None:
        """None when no such sandbox exists."""
        ...

    def stop(self, name: str) -> None: ...

    def destroy(self, name: str) -> None: ...

    def list(self) -> list[SandboxInfo]: ...
