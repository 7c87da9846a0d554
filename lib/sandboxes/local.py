"""Sandboxes as folders: `$DATA_DIR/sandboxes/<name>/` with its own HOME (and so its own
Claude config dir) and a fixed work dir; commands run as subprocesses of this machine.

This isolates state, not security: a local sandbox can read your disk. It exists so the whole
flow runs offline; production runs on Vercel Sandbox. The runner gets only the environment the
service passes (plus PATH), never this process's secrets.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from lib.runner import FINAL_LINES, NO_RESULT
from lib.sandboxes import Attachment, SandboxInfo, SandboxStatus

_STATE_FILE = "sandbox.json"
_INHERITED = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def stop_warm_agents(root: Path) -> None:
    """Stop every warm agent under `root`: they run detached from the commands that started
    them, and each leaves its pid in `warm-agent.pid` (see the runner). The files are the
    agent's to write, so a pid is only signalled if that process is a warm agent."""
    for pid_file in root.rglob("warm-agent.pid"):
        try:
            pid = int(pid_file.read_text())
            if _is_warm_agent(pid):
                os.kill(pid, signal.SIGTERM)
        except (ValueError, OSError):
            pass
        pid_file.unlink(missing_ok=True)


def _is_warm_agent(pid: int) -> bool:
    """The process's command line is the runner's `--serve` (Linux /proc)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"--serve" in argv and any(arg.endswith(b"agent_runner.py") for arg in argv)


class LocalProcess:
    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: Path,
                 timeout: float) -> None:
        self._stderr = tempfile.TemporaryFile()
        self._popen = subprocess.Popen(
            argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, bufsize=1, start_new_session=True,
        )
        self._kill_lock = threading.Lock()
        self._kill_after = threading.Timer(timeout, self.kill)  # like Vercel's kill_after
        self._kill_after.daemon = True
        self._kill_after.start()

    def lines(self) -> Iterator[str]:
        assert self._popen.stdout is not None
        for line in self._popen.stdout:
            yield line.rstrip("\n")

    def wait(self) -> int:
        code = self._popen.wait()
        self._kill_after.cancel()
        if self._popen.stdout:
            self._popen.stdout.close()
        return code

    def kill(self) -> None:
        """Kill the whole process group: the runner and the CLI it spawned."""
        self._signal(signal.SIGKILL, os.killpg)

    def interrupt(self) -> None:
        """SIGINT to the runner only (it relays it to the warm agent, or ends its query)."""
        self._signal(signal.SIGINT, os.kill)

    def _signal(self, signum: int, send: Callable[[int, int], None]) -> None:
        with self._kill_lock:
            if self._popen.poll() is None:
                try:
                    send(self._popen.pid, signum)
                except ProcessLookupError:
                    pass

    def stderr_tail(self, limit: int = 2000) -> str:
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - limit))
        return self._stderr.read().decode(errors="replace")


class AgentCall:
    """A warm turn over the agent's socket: the Process port without a process. It does what
    the launcher's relay does (lib/runner): `interrupt` on the user's stop, done at the final
    line without waiting for the agent to hang up; and a kill is a hang-up, which makes the
    agent cancel a turn it has not answered."""

    def __init__(self, conn: socket.socket, timeout: float) -> None:
        self._conn = conn
        self._reader = conn.makefile("rb")
        self._status: int | None = None
        self._killed = threading.Event()
        self._kill_after = threading.Timer(timeout, self.kill)  # like LocalProcess
        self._kill_after.daemon = True
        self._kill_after.start()

    def lines(self) -> Iterator[str]:
        try:
            for raw in self._reader:
                yield raw.rstrip(b"\n").decode(errors="replace")
                for head, status in FINAL_LINES:
                    if raw.startswith(head):
                        self._status = status
                        return
        except OSError:  # killed, or the agent died
            pass
        if not self._killed.is_set():
            self._status = 1
            yield NO_RESULT.decode()

    def wait(self) -> int:
        self._kill_after.cancel()
        self.kill()  # the answer is complete: hang up
        with contextlib.suppress(OSError):
            self._reader.close()
            self._conn.close()
        return -9 if self._status is None else self._status

    def kill(self) -> None:
        self._killed.set()
        with contextlib.suppress(OSError):
            self._conn.shutdown(socket.SHUT_RDWR)

    def interrupt(self) -> None:
        if self._status is None and not self._killed.is_set():
            with contextlib.suppress(OSError):
                self._conn.sendall(b"interrupt\n")

    def stderr_tail(self) -> str:
        return ""  # the agent's stderr goes to its log, $HOME/.agent-runner/warm-agent.log


class LocalSandbox:
    install_marker = None  # the local python already has claude-agent-sdk
    hint = None

    def __init__(self, name: str, root: Path, python: str) -> None:
        self.name = name
        self.root = root
        self.python = python  # an interpreter with claude-agent-sdk (and its bundled CLI)
        self.home = str(root / "home")
        self.workdir = str(root / "work")
        self.env: dict[str, str] = {}

    def run(self, argv: list[str], env: Mapping[str, str], timeout: float) -> LocalProcess:
        base = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        return LocalProcess(argv, {**base, **env}, self.root, timeout)

    def call_agent(self, address: str, job: bytes, timeout: float) -> AgentCall | None:
        """The agent's abstract Unix socket is on this machine: connect to it, as the
        launcher would in the sandbox, and save the turn a process (~15 ms)."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(timeout)  # a big job waits for a busy agent to read it
            conn.connect("\0" + address)
            conn.sendall(job)
            conn.settimeout(None)
        except OSError:  # no agent there (or it went): the command starts one
            conn.close()
            return None
        return AgentCall(conn, timeout)

    def write_files(self, files: Mapping[str, bytes]) -> None:
        for path, data in files.items():
            target = self._inside(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, data)

    def install_agent(self, timeout: float) -> None:
        """Nothing to install: `python` has the SDK."""

    def _inside(self, path: str) -> Path:
        target = Path(path).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise ValueError(f"{path} is outside sandbox {self.name}")
        return target


class LocalSandboxBackend:
    def __init__(self, data_dir: Path, python: str | None = None) -> None:
        self.base = data_dir / "sandboxes"
        self.python = python or sys.executable  # the dev venv's, which has the SDK

    def attach(self, name: str, hint: str | None = None) -> Attachment:
        status = self.status(name)
        root = self._root(name)
        if status != "running":  # a warm turn writes nothing here
            root.mkdir(parents=True, exist_ok=True)  # the runner's launcher makes the rest
            self._set_status(root, "running")
        return Attachment(LocalSandbox(name, root, self.python), status is None)

    def status(self, name: str) -> SandboxStatus | None:
        state = self._root(name) / _STATE_FILE
        if not state.exists():
            return None
        try:
            status = json.loads(state.read_text())["status"]
        except (ValueError, KeyError, TypeError, OSError):
            return "stopped"  # damaged: its files are there, no agent is known to run
        return status if status in ("running", "stopped") else "stopped"

    def stop(self, name: str) -> None:
        """Like a stopped VM: files stay, processes (the warm agent) do not."""
        root = self._root(name)
        if (root / _STATE_FILE).exists():
            stop_warm_agents(root)
            self._set_status(root, "stopped")

    def destroy(self, name: str) -> None:
        root = self._root(name)
        stop_warm_agents(root)
        shutil.rmtree(root, ignore_errors=True)

    def list(self) -> list[SandboxInfo]:
        if not self.base.exists():
            return []
        return [
            SandboxInfo(root.name, status)
            for root in sorted(self.base.iterdir())
            if (status := self.status(root.name)) is not None
        ]

    def _root(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid sandbox name {name!r}")
        return self.base / name

    @staticmethod
    def _set_status(root: Path, status: SandboxStatus) -> None:
        _write_atomically(root / _STATE_FILE, json.dumps({"status": status}).encode())


def _write_atomically(target: Path, data: bytes) -> None:
    """Write a file whole or not at all, also when two turns of one user (two chats) write it
    at once: each through a temporary file of its own."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
