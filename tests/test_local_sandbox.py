"""The local sandbox backend: folders with their own HOME, commands streamed, no env leaking in."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from lib.sandboxes.local import LocalSandboxBackend


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
