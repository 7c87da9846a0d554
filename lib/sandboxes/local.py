"""Sandboxes as folders: `$DATA_DIR/sandboxes/<name>/` with its own HOME (and so its own
Claude config dir) and a fixed work dir; commands run as subprocesses of this machine.

This isolates state, not security: a local sandbox can read your disk. It exists so the whole
flow runs offline; production runs on Vercel Sandbox. The runner gets only the environment the
service passes (plus PATH), never this process's secrets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

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

    def write_files(self, files: Mapping[str, bytes]) -> None:
        for path, data in files.items():
            target = self._inside(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)

    def install_agent(self) -> None:
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
        root = self._root(name)
        fresh = not (root / _STATE_FILE).exists()
        root.mkdir(parents=True, exist_ok=True)  # the runner's launcher makes the rest
        self._set_status(root, "running")
        return Attachment(LocalSandbox(name, root, self.python), fresh)

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
        tmp = root / f".{_STATE_FILE}.tmp"
        tmp.write_text(json.dumps({"status": status}))
        tmp.replace(root / _STATE_FILE)
