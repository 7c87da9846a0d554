"""Hand-written fakes of the sandbox port, for fault tests the real runner cannot be made to do."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from lib.sandboxes import Attachment, SandboxInfo, SandboxStatus


def line(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields})


def ok_result(session_id: str = "sess-1", text: str = "hi") -> str:
    return line("result", session_id=session_id, text=text, is_error=False, subtype="success",
                errors=[], usage={"input_tokens": 3, "output_tokens": 1}, cost_usd=0.001,
                num_turns=1)


def mirror(session_id: str, prompt: str, answer: str) -> str:
    """A transcript batch as the runner mirrors it: the prompt and the answer."""
    entries = [
        {"type": "user", "uuid": f"{session_id}-{prompt}-u", "timestamp": "2026-01-01T00:00:00Z",
         "message": {"role": "user", "content": prompt}},
        {"type": "assistant", "uuid": f"{session_id}-{prompt}-a", "timestamp": "2026-01-01T00:00:01Z",
         "message": {"role": "assistant", "id": f"msg-{prompt}",
                     "content": [{"type": "text", "text": answer}]}},
    ]
    return line("mirror", key={"project_key": "-home-agent-work", "session_id": session_id},
                entries=entries)


@dataclass
class Script:
    """What one run of the runner does: print these lines, then exit with this status.
    `hang` keeps stdout open until the process is killed (a runner that never finishes)."""

    lines: list[str]
    exit_code: int = 0
    hang: bool = False
    stderr: str = ""
    started: threading.Event | None = None  # set once the process runs...
    gate: threading.Event | None = None  # ...which then waits for this before its first line
    broken: Exception | None = None  # wait() raises this: the sandbox broke off
    on_interrupt: list[str] | None = None  # a hanging script's last lines after interrupt()


class FakeProcess:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.killed = threading.Event()
        self.interrupted = threading.Event()

    def lines(self) -> Iterator[str]:
        if self.script.started:
            self.script.started.set()
        if self.script.gate:
            self.script.gate.wait(30)
        for text in self.script.lines:
            if self.killed.is_set():
                return
            yield text
        if self.script.hang:
            while not (self.killed.is_set() or (self.interrupted.is_set()
                                                and self.script.on_interrupt is not None)):
                self.killed.wait(0.02)
            if not self.killed.is_set():
                yield from self.script.on_interrupt or []

    def wait(self) -> int:
        if self.script.broken:
            raise self.script.broken
        return -9 if self.killed.is_set() else self.script.exit_code

    def kill(self) -> None:
        self.killed.set()

    def interrupt(self) -> None:
        """Like the warm agent: the turn ends with the script's `on_interrupt` lines (a result
        of a stopped turn), or keeps going when there are none."""
        self.interrupted.set()

    def stderr_tail(self) -> str:
        return self.script.stderr


@dataclass
class FakeSandbox:
    name: str
    backend: FakeSandboxBackend
    python: str = "python3"
    home: str = "/home/agent"
    workdir: str = "/home/agent/work"
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    install_marker: tuple[str, str] | None = None
    hint: str | None = None

    def run(self, argv: list[str], env: Mapping[str, str], timeout: float) -> FakeProcess:
        """python -IS -c LAUNCHER RUNNER WORKDIR MARKER WANT (--job B64 | --job-file PATH) [--warm]"""
        how, value = argv[8:10]
        job = json.loads(base64.b64decode(value) if how == "--job" else self.files.pop(value))
        self.backend.runs.append({"argv": argv, "env": dict(env), "job": job, "timeout": timeout})
        return FakeProcess(self.backend.next_script(job))

    def call_agent(self, address: str, job: bytes, timeout: float) -> None:
        return None  # every turn is a command, played from a Script

    def write_files(self, files: Mapping[str, bytes]) -> None:
        self.files.update(files)

    def install_agent(self, timeout: float) -> None:
        self.backend.installs += 1
        self.backend.install_timeouts.append(timeout)


class FakeSandboxBackend:
    """Sandboxes in memory; each run plays the next Script (or what `respond(job)` returns)."""

    def __init__(self, respond: Callable[[dict], Script] | None = None) -> None:
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.statuses: dict[str, SandboxStatus] = {}
        self.scripts: list[Script] = []
        self.respond = respond
        self.runs: list[dict] = []
        self.installs = 0
        self.install_timeouts: list[float] = []
        self.hints: list[str | None] = []  # what each attach was given
        self.on_stop: Callable[[str], None] = lambda name: None

    def next_script(self, job: dict) -> Script:
        if self.scripts:
            return self.scripts.pop(0)
        assert self.respond is not None, "no script left for this run"
        return self.respond(job)

    def attach(self, name: str, hint: str | None = None) -> Attachment:
        self.hints.append(hint)
        fresh = name not in self.sandboxes
        sandbox = self.sandboxes.setdefault(name, FakeSandbox(name, self, hint=f"at:{name}"))
        self.statuses[name] = "running"
        return Attachment(sandbox, fresh)

    def status(self, name: str) -> SandboxStatus | None:
        return self.statuses.get(name)

    def stop(self, name: str) -> None:
        self.on_stop(name)
        if name in self.statuses:
            self.statuses[name] = "stopped"

    def destroy(self, name: str) -> None:
        self.sandboxes.pop(name, None)
        self.statuses.pop(name, None)

    def list(self) -> list[SandboxInfo]:
        return [SandboxInfo(name, status) for name, status in self.statuses.items()]
