"""The local sandbox backend: folders with their own HOME, commands streamed, no env leaking in."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from lib.config import Settings
from lib.launcher import Launcher
from lib.runner import NEEDS_INSTALL, agent_address
from lib.sandboxes.local import AgentCall, LocalSandboxBackend


@pytest.fixture
def backend(tmp_path: Path) -> LocalSandboxBackend:
    return LocalSandboxBackend(tmp_path)


def test_attach_creates_once_then_reattaches(backend: LocalSandboxBackend, tmp_path: Path):
    first = backend.attach("agent-a")
    assert first.fresh and first.sandbox.hint is None and first.sandbox.install_marker is None
    assert (tmp_path / "sandboxes" / "agent-a").is_dir()
    assert str(tmp_path / "sandboxes" / "agent-a") in first.sandbox.home
    assert not backend.attach("agent-a").fresh
    assert backend.status("agent-a") == "running"


def test_stop_list_destroy(backend: LocalSandboxBackend):
    backend.attach("agent-a")
    backend.attach("agent-b")
    backend.stop("agent-a")
    assert [(i.name, i.status) for i in backend.list()] == [("agent-a", "stopped"),
                                                             ("agent-b", "running")]
    assert not backend.attach("agent-a").fresh  # a stopped sandbox resumes with its files
    backend.destroy("agent-a")
    assert backend.status("agent-a") is None
    assert backend.attach("agent-a").fresh
    assert backend.status("never") is None


def test_run_streams_lines_in_the_workdir_with_only_the_given_env(
    backend: LocalSandboxBackend, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", "must-not-leak")
    sandbox = backend.attach("agent-a").sandbox
    code = ("import os, sys, time\n"
            "print(os.getcwd(), flush=True)\n"
            "print(os.environ.get('UPSTASH_REDIS_REST_TOKEN'), os.environ['GIVEN'], flush=True)\n"
            "sys.stderr.write('oops')\n")
    process = sandbox.run([sys.executable, "-c", code], {"GIVEN": "yes"}, timeout=30)
    lines = list(process.lines())
    assert process.wait() == 0
    assert lines == [os.path.realpath(sandbox.root), "None yes"]  # the base folder
    assert process.stderr_tail() == "oops"


def test_kill_stops_the_process_and_its_children(backend: LocalSandboxBackend):
    sandbox = backend.attach("agent-a").sandbox
    process = sandbox.run(
        ["sh", "-c", "sleep 30 & echo started; wait"], {}, timeout=30)
    assert next(iter(process.lines())) == "started"
    started = time.monotonic()
    process.kill()
    assert process.wait() != 0
    assert time.monotonic() - started < 5


def test_the_backend_ends_a_process_after_its_timeout(backend: LocalSandboxBackend):
    sandbox = backend.attach("agent-a").sandbox
    started = time.monotonic()
    process = sandbox.run(["sh", "-c", "sleep 30"], {}, timeout=0.5)
    assert process.wait() != 0
    assert time.monotonic() - started < 10


def test_files_stay_inside_the_sandbox(backend: LocalSandboxBackend):
    sandbox = backend.attach("agent-a").sandbox
    sandbox.write_files({f"{sandbox.home}/x/y.txt": b"data", f"{sandbox.home}/z.txt": b"z"})
    assert Path(sandbox.home, "x", "y.txt").read_bytes() == b"data"
    with pytest.raises(ValueError):
        sandbox.write_files({f"{sandbox.home}/../../../escape.txt": b"no"})
    with pytest.raises(ValueError):
        backend.attach("../etc")


def test_a_planted_pid_file_never_signals_another_process(backend: LocalSandboxBackend):
    import subprocess

    sandbox = backend.attach("agent-a").sandbox
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        planted = Path(sandbox.workdir, "x", ".agent-runner", "warm-agent.pid")
        planted.parent.mkdir(parents=True)
        planted.write_text(str(bystander.pid))  # what an agent with a shell could write
        backend.destroy("agent-a")
        time.sleep(0.2)
        assert bystander.poll() is None  # not signalled
    finally:
        bystander.kill()
        bystander.wait()


def test_a_damaged_state_file_is_a_stopped_sandbox_not_an_error(backend: LocalSandboxBackend,
                                                                tmp_path: Path):
    backend.attach("agent-a")
    (tmp_path / "sandboxes" / "agent-a" / "sandbox.json").write_text("{not json")
    assert backend.status("agent-a") == "stopped"
    assert [(i.name, i.status) for i in backend.list()] == [("agent-a", "stopped")]
    assert not backend.attach("agent-a").fresh and backend.status("agent-a") == "running"


SETTINGS = Settings.from_env({"UPSTASH_REDIS_REST_URL": "http://127.0.0.1:9",
                              "UPSTASH_REDIS_REST_TOKEN": "t", "AUTH_MODE": "dev",
                               "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})


class FakeAgent:
    """A warm agent as far as its socket goes (the runner's `--serve` protocol): reads a job
    line, then plays `answer(job, reader, conn)`; records what it saw."""

    def __init__(self, name: str, answer) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind("\0" + name)
        self.server.listen(1)
        self.jobs: list[dict] = []
        self.hung_up = threading.Event()  # the caller closed its end
        self.thread = threading.Thread(target=self.serve, args=(answer,), daemon=True)
        self.thread.start()

    def serve(self, answer) -> None:
        conn, _ = self.server.accept()
        with conn, self.server:
            reader = conn.makefile("rb")
            self.jobs.append(json.loads(reader.readline()))
            answer(conn, reader)
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                reader.read()  # to EOF
                self.hung_up.set()


def send(conn: socket.socket, kind: str, **fields) -> None:
    conn.sendall(json.dumps({"type": kind, **fields}).encode() + b"\n")


def agent_call(backend: LocalSandboxBackend, answer, timeout: float = 30):
    """A sandbox, a fake agent where the launcher would look, and a turn handed to it."""
    launcher = Launcher(SETTINGS)
    sandbox = backend.attach(f"agent-{uuid.uuid4().hex[:8]}").sandbox
    agent = FakeAgent(agent_address(launcher.runner_path(sandbox), launcher.env(sandbox)), answer)
    call = launcher.start(sandbox, {"prompt": "hi", "resume": None}, "job-1", timeout)
    return sandbox, agent, call


def test_a_warm_turn_goes_straight_to_the_agents_socket(backend: LocalSandboxBackend):
    """No command runs: the job (with the turn's work dir) goes to the agent's socket, a stop
    is `interrupt`, and the turn ends at the result line without waiting for the agent to hang
    up; then the call hangs up."""
    def answer(conn: socket.socket, reader) -> None:
        send(conn, "mirror", entries=[{"big": "x" * 200_000}])  # longer than one read
        send(conn, "said", line=reader.readline().decode())
        send(conn, "result", session_id="s1")
        time.sleep(0.5)  # an agent still tidying up

    sandbox, agent, call = agent_call(backend, answer)
    assert isinstance(call, AgentCall)
    lines = call.lines()
    first = json.loads(next(lines))
    assert len(first["entries"][0]["big"]) == 200_000
    assert agent.jobs == [{"cwd": sandbox.workdir, "prompt": "hi", "resume": None}]
    call.interrupt()
    assert [json.loads(line) for line in lines] == [
        {"type": "said", "line": "interrupt\n"}, {"type": "result", "session_id": "s1"}]
    assert call.wait() == 0
    assert agent.hung_up.wait(5)
    call.kill()  # idempotent, and harmless once done


@pytest.mark.parametrize("answer, status, last", [
    (lambda conn, reader: send(conn, "restore_needed", session_id="s1"), 3, "restore_needed"),
    (lambda conn, reader: send(conn, "error", code="agent_failed", message="no"), 1, "error"),
    (lambda conn, reader: (send(conn, "text", text="half"), conn.shutdown(socket.SHUT_WR)), 1,
     "error"),  # the agent hung up without a result
], ids=["restore needed", "error", "no result"])
def test_an_agent_call_ends_with_the_status_the_launcher_would_exit_with(
        backend: LocalSandboxBackend, answer, status: int, last: str):
    _, _, call = agent_call(backend, answer)
    lines = [json.loads(line) for line in call.lines()]
    assert call.wait() == status and lines[-1]["type"] == last


def test_a_killed_or_timed_out_agent_call_hangs_up(backend: LocalSandboxBackend):
    """A kill (the turn's deadline, a stop past its grace) is a hang-up, which is how the
    agent knows to cancel a turn it has not answered."""
    for timeout, kill in ((30, True), (0.3, False)):
        _, agent, call = agent_call(backend, lambda conn, reader: time.sleep(0.1), timeout)
        if kill:
            threading.Timer(0.2, call.kill).start()
        assert list(call.lines()) == []
        assert call.wait() == -9
        assert agent.hung_up.wait(5)


def test_without_an_agent_listening_the_turn_runs_its_command(backend: LocalSandboxBackend):
    sandbox = backend.attach("agent-a").sandbox
    assert sandbox.call_agent("agent-runner-nobody", b"{}\n", 5) is None
    process = Launcher(SETTINGS).start(sandbox, {"prompt": "hi"}, "job-1", 30)
    assert not isinstance(process, AgentCall)
    assert [json.loads(line)["type"] for line in process.lines()] == ["needs_install"]
    assert process.wait() == NEEDS_INSTALL  # the launcher ran: the runner is not there yet


def test_two_turns_of_one_user_attach_at_once(backend: LocalSandboxBackend):
    """Two chats of one user attach the same sandbox at the same moment: both get it (each
    writes its status through a temporary file of its own), and no temporary file is left."""
    barrier, failures = threading.Barrier(8), []

    def attach() -> None:
        barrier.wait()
        for _ in range(50):
            try:
                backend.attach("agent-a")
            except Exception as error:  # noqa: BLE001 - what the test looks for
                failures.append(error)

    threads = [threading.Thread(target=attach) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and backend.status("agent-a") == "running"
    assert not list((backend.base / "agent-a").glob(".*.tmp"))
