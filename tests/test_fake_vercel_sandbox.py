"""The fake Vercel Sandbox API is as strict as the real one: each behaviour is checked through the
real `vercel-sandbox` SDK (and the raw HTTP answer where the SDK hides it)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from vercel.sandbox.sync import (
    NetworkPolicy,
    NetworkPolicyRule,
    NetworkPolicyTransform,
    SandboxApiError,
    SandboxCredentials,
    SandboxFilesystemWriteError,
    SandboxPathNotFoundError,
    SandboxQueryByCreatedAt,
    SandboxServiceOptions,
    SnapshotSource,
    SyncSandbox,
    SyncSandboxClient,
    TagFilter,
)

from lib.devtools.serving import BackgroundServer, serve_in_background
from tests.conftest import wait_until
from tests.fake_vercel_sandbox import FakeSandboxApi

PREFIX = "/vercel/sandbox"


@dataclass
class Raw:
    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return self.json["error"]["code"]


@dataclass
class Api:
    fake: FakeSandboxApi
    server: BackgroundServer
    client: SyncSandboxClient

    def sandbox(self, name: str = "box", **options: Any) -> SyncSandbox:
        box, _ = self.client.get_or_create_sandbox(name=name, **options)
        return box

    def call(self, method: str, path: str, body: Any = None) -> Raw:
        """A raw request, to see what the SDK does not show (statuses, headers, content types)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.server.url}/api/{path}", data=data, method=method,
            headers={"Authorization": "Bearer t", "content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Raw(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return Raw(error.code, error.headers, error.read())

    def session_call(self, sid: str, op: str, body: Any = None) -> Raw:
        joiner = "&" if "?" in op else "?"
        return self.call("POST", f"v2/sandboxes/sessions/{sid}/{op}{joiner}teamId=team_t", body)


def _serve(fake: FakeSandboxApi) -> Iterator[Api]:
    server = serve_in_background(fake)
    credentials = SandboxCredentials("token", "team_t", "prj_t")
    client = SyncSandboxClient.create(options=SandboxServiceOptions(
        base_url=f"{server.url}/api", credentials_factory=lambda: credentials))
    yield Api(fake, server, client)
    client.close()
    with fake.lock:
        for box in list(fake.boxes.values()):
            fake._halt(box)
    server.stop()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """Quick: creates answer "running" at once, and stopping takes 0.2 s."""
    yield from _serve(FakeSandboxApi(tmp_path / "sandboxes", create_pending=False, stop_delay=0.2))


@pytest.fixture
def strict_api(tmp_path: Path) -> Iterator[Api]:
    """Every default."""
    yield from _serve(FakeSandboxApi(tmp_path / "sandboxes"))


def _api_error(error: pytest.ExceptionInfo) -> tuple[int, str | None]:
    assert isinstance(error.value, SandboxApiError), error.value
    return error.value.status_code, error.value.code


# create ----------------------------------------------------------------------------------------
def test_create_answers_pending_and_the_next_get_running(strict_api: Api):
    created = strict_api.call("POST", "v3/sandboxes?teamId=team_t",
                              {"projectId": "prj_t", "name": "raw"})
    assert created.status == 200
    assert created.json["sandbox"]["status"] == created.json["session"]["status"] == "pending"
    got = strict_api.call("GET", "v2/sandboxes/raw?projectId=prj_t&resume=false")
    assert got.json["sandbox"]["status"] == got.json["session"]["status"] == "running"

    box = strict_api.sandbox("polled")  # the SDK polls until running
    assert box.status == "running"
    gets = [m for m, p in strict_api.fake.requests if p.endswith("/v2/sandboxes/polled")]
    assert gets == ["GET", "GET"]  # the get-or-create lookup (404), then one poll


def test_a_name_clash_answers_400_not_409(api: Api):
    api.sandbox("taken")
    with pytest.raises(SandboxApiError) as error:
        api.client.create_sandbox(name="taken", destroy=False)
    assert _api_error(error) == (400, "bad_request")
    assert "A sandbox with the name 'taken' already exists for this project." in str(error.value)


def test_fail_next_create_is_another_request_creating_it_first(api: Api):
    api.fake.fail_next_create = True
    with pytest.raises(SandboxApiError) as error:
        api.client.get_or_create_sandbox(name="racy")
    assert _api_error(error) == (400, "bad_request")
    assert "racy" in api.fake.boxes
    box, created = api.client.get_or_create_sandbox(name="racy")
    assert not created and box.status == "running"


# paths -----------------------------------------------------------------------------------------
def test_the_sandbox_reports_virtual_paths_mapped_to_its_folder(api: Api):
    box = api.sandbox()
    root = api.fake.boxes["box"].root
    assert box.cwd == PREFIX and box.current_session.cwd == PREFIX
    done = box.run_process("pwd", capture_output=True)
    assert done.stdout == f"{PREFIX}\n" and done.cwd == PREFIX  # no cwd: the sandbox's own

    box.fs.write_text(f"{PREFIX}/notes/a.txt", "absolute")
    box.fs.write_text("notes/b.txt", "relative")
    assert (root / "notes" / "a.txt").read_text() == "absolute"
    assert box.fs.read_text("notes/b.txt") == "relative"
    assert box.fs.read_text(f"{PREFIX}/notes/a.txt") == "absolute"

    listed = box.run_process("cat", [f"{PREFIX}/notes/a.txt", "b.txt"], cwd=f"{PREFIX}/notes",
                             capture_output=True)
    assert listed.stdout == "absoluterelative" and listed.cwd == f"{PREFIX}/notes"
    env = {"P": f"{PREFIX}/notes:{PREFIX}"}
    seen = box.run_process("sh", ["-c", 'IFS=:; for d in $P; do test -d "$d" && echo "$d"; done'],
                           env=env, capture_output=True)
    assert seen.stdout == f"{PREFIX}/notes\n{PREFIX}\n"  # mapped in, and read back virtual


def test_sandbox_level_env_is_merged_and_mapped(api: Api):
    box = api.sandbox(env={"DATA": f"{PREFIX}/data"})
    box.fs.mkdir("data")
    done = box.run_process("sh", ["-c", 'test -d "$DATA" && echo "$DATA $MINE"'],
                           env={"MINE": "x"}, capture_output=True)
    assert done.stdout == f"{PREFIX}/data x\n"


def test_a_host_path_in_a_request_answers_400(api: Api):
    box = api.sandbox()
    root = str(api.fake.boxes["box"].root)
    attempts = [
        lambda: box.run_process("ls", [root]),
        lambda: box.run_process("ls", cwd=root),
        lambda: box.run_process("env", env={"HOME": root}),
        lambda: box.fs.read_text(f"{root}/x"),
        lambda: box.fs.mkdir(f"{root}/x"),
    ]
    for attempt in attempts:
        with pytest.raises(SandboxApiError) as error:
            attempt()
        assert _api_error(error) == (400, "bad_request")
        assert "not a path inside the sandbox" in str(error.value)
    with pytest.raises(SandboxFilesystemWriteError) as write_error:
        box.fs.write_text("x", "data", cwd=root)
    assert "not a path inside the sandbox" in str(write_error.value.cause)


def test_paths_outside_the_sandbox_folder_answer_400(api: Api):
    box = api.sandbox()
    with pytest.raises(SandboxApiError) as error:
        box.fs.read_text("/etc/hostname")
    assert _api_error(error) == (400, "bad_request")
    with pytest.raises(SandboxFilesystemWriteError):
        box.fs.write_text("/", "invalid")  # vercel-py live tests: a write to "/" fails
    with pytest.raises(SandboxPathNotFoundError):
        box.fs.read_text("missing.txt")


def test_mkdir_is_not_recursive(api: Api):
    box = api.sandbox()
    with pytest.raises(SandboxApiError) as error:
        box.fs.mkdir("a/b")  # the SDK asks for recursive; the service does not do it
    assert _api_error(error) == (400, "bad_request")
    assert "mkdir failed: ENOENT" in str(error.value)
    box.fs.mkdir("a")
    box.fs.mkdir(f"{PREFIX}/a/b")
    assert (api.fake.boxes["box"].root / "a" / "b").is_dir()
    with pytest.raises(SandboxApiError) as error:
        box.fs.mkdir("a")
    assert _api_error(error) == (400, "bad_request")
    assert "mkdir failed: EEXIST" in str(error.value)


# execution time limit --------------------------------------------------------------------------
def test_the_execution_time_limit_stops_the_session(api: Api):
    box = api.sandbox(execution_time_limit=timedelta(seconds=0.5))
    fake_box = api.fake.boxes["box"]
    first = fake_box.session_id
    process = box.create_process("sleep", ["30"])
    command = fake_box.commands[process.id]
    box.run_process("true")  # activity does not extend the limit
    wait_until(lambda: fake_box.status == "stopped", timeout=2, what="the limit")
    assert command.process.poll() is not None  # killed with the session
    assert api.session_call(first, "cmd", {"command": "true"}).code == "sandbox_stopped"

    again = box.run_process("echo", ["resumed"], capture_output=True)  # resume, then replay
    assert again.stdout == "resumed\n"
    assert fake_box.session_id != first and fake_box.status == "running"


def test_session_payloads_carry_the_limit_and_extend_adds_to_it(api: Api):
    box = api.sandbox(execution_time_limit=timedelta(seconds=60))
    session = api.call("GET", "v2/sandboxes/box?projectId=prj_t").json["session"]
    assert session["timeout"] == 60_000
    assert {"startedAt", "requestedAt", "createdAt"} <= session.keys()
    extended = box.extend_execution_time_limit(timedelta(seconds=30))
    assert extended.execution_time_limit == timedelta(seconds=90)
    assert api.fake.boxes["box"].session.timeout == 90_000
    too_short = api.session_call(box.current_session_id, "extend-timeout", {"duration": 999})
    assert (too_short.status, too_short.code) == (400, "bad_request")


def test_an_expired_limit_is_seen_even_before_its_timer_fires(api: Api):
    api.sandbox()
    api.fake.boxes["box"].session.started_at -= 10 * 60 * 1000
    got = api.call("GET", "v2/sandboxes/box?projectId=prj_t&resume=false")
    assert got.json["sandbox"]["status"] == "stopped"


def test_expire_session_and_resume_with_a_fresh_limit(api: Api):
    box = api.sandbox(execution_time_limit=timedelta(seconds=60))
    old = api.fake.boxes["box"].session_id
    box.extend_execution_time_limit(10)
    api.fake.expire_session("box")
    assert api.session_call(old, "fs/mkdir", {"path": "x"}).status == 410
    resumed = api.call("GET", "v2/sandboxes/box?projectId=prj_t&resume=true").json
    assert resumed["resumed"] is True
    assert resumed["session"]["id"] != old and resumed["session"]["timeout"] == 60_000


# stopping --------------------------------------------------------------------------------------
def test_stopping_takes_time_and_answers_422_meanwhile(api: Api):
    box = api.sandbox()
    sid = box.current_session_id
    box.stop()
    assert box.status == "stopping"
    got = api.call("GET", "v2/sandboxes/box?projectId=prj_t&resume=false")
    assert got.json["sandbox"]["status"] == "stopping"
    assert api.session_call(sid, "cmd", {"command": "true"}).status == 422
    resume = api.call("GET", "v2/sandboxes/box?projectId=prj_t&resume=true")
    assert (resume.status, resume.code) == (422, "sandbox_stopping")
    with pytest.raises(SandboxApiError) as error:
        box.run_process("true")  # the SDK's resume meets the same 422
    assert _api_error(error) == (422, "sandbox_stopping")
    wait_until(lambda: api.fake.boxes["box"].status == "stopped", timeout=2, what="stopped")
    assert api.session_call(sid, "cmd", {"command": "true"}).code == "sandbox_stopped"
    assert box.run_process("true").returncode == 0  # resumed


def test_begin_stop_from_outside_and_snapshotting(api: Api):
    box = api.sandbox()
    process = box.create_process("sleep", ["30"])
    command = api.fake.boxes["box"].commands[process.id]
    api.fake.begin_stop("box", delay=0.2)
    assert command.process.wait(timeout=2) is not None
    assert api.session_call(box.current_session_id, "fs/mkdir", {"path": "x"}).code \
        == "sandbox_stopping"
    wait_until(lambda: api.fake.boxes["box"].status == "stopped", timeout=2, what="stopped")

    box.run_process("true")
    api.fake.begin_stop("box", delay=0.2, status="snapshotting")
    answer = api.session_call(box.current_session_id, "fs/mkdir", {"path": "x"})
    assert (answer.status, answer.code) == (422, "sandbox_snapshotting")


def test_stop_sandbox_is_immediate(api: Api):
    box = api.sandbox()
    api.fake.stop_sandbox("box")
    assert api.fake.boxes["box"].status == "stopped"
    assert api.session_call(box.current_session_id, "stop", {}).status == 410


def test_stopped_sessions_answer_410_and_unknown_ones_404(api: Api):
    box = api.sandbox()
    sid = box.current_session_id
    api.fake.stop_sandbox("box")
    stopped = api.session_call(sid, "fs/read", {"path": "x"})
    assert stopped.status == 410
    assert stopped.json == {"error": {"code": "sandbox_stopped", "message": "Sandbox is stopped"}}
    unknown = api.session_call("sbx_sess_nope", "fs/read", {"path": "x"})
    assert (unknown.status, unknown.code) == (404, "not_found")


# rate limits and latency -----------------------------------------------------------------------
def test_rate_limit_answers_429_with_retry_after(api: Api):
    api.sandbox()
    api.fake.rate_limit(2, retry_after=3)
    limited = api.call("GET", "v2/sandboxes/box?projectId=prj_t")
    assert (limited.status, limited.code, limited.headers["Retry-After"]) \
        == (429, "rate_limited", "3")
    with pytest.raises(SandboxApiError) as error:
        api.client.get_sandbox(name="box")
    assert _api_error(error) == (429, "rate_limited")
    assert api.client.get_sandbox(name="box").status == "running"


def test_latency_is_slept_before_every_answer(api: Api):
    api.fake.latency = 0.2
    started = time.monotonic()
    assert api.call("GET", "v2/sandboxes/nope?projectId=prj_t").status == 404
    assert time.monotonic() - started >= 0.2


# command streams -------------------------------------------------------------------------------
@pytest.mark.parametrize("after", [0, 2, 10])
def test_a_stream_closed_mid_command_loses_and_repeats_nothing(api: Api, after: int):
    box = api.sandbox()
    api.fake.close_next_stream(after=after)
    sink = io.StringIO()
    script = "for i in 1 2 3 4; do echo line$i; sleep 0.05; done; echo oops >&2; exit 3"
    done = box.run_process("sh", ["-c", script], stdout=sink, stderr=subprocess.PIPE)
    assert sink.getvalue() == "line1\nline2\nline3\nline4\n"
    assert done.stderr == "oops\n" and done.returncode == 3
    followed = [p for _, p in api.fake.requests if f"/cmd/{done.id}" in p]
    assert any(p.endswith("/logs") for p in followed) and any(
        p.endswith(done.id) for p in followed)


def test_the_closed_stream_record_is_the_documented_one(api: Api):
    box = api.sandbox()
    api.fake.close_next_stream(after=1)
    raw = api.session_call(box.current_session_id, "cmd?wait=true&logs=true",
                           {"command": "sh", "args": ["-c", "echo a; echo b; sleep 0.2"]})
    assert raw.headers["Content-Type"] == "application/x-ndjson"
    records = [json.loads(line) for line in raw.body.splitlines()]
    assert "command" in records[0] and records[0]["command"]["exitCode"] is None
    assert records[1] == {"stream": "stdout", "data": "a\n"}
    assert records[2] == {"stream": "error", "data": {
        "code": "sandbox_stream_closed",
        "message": "Sandbox stream was closed and is not accepting commands."}}
    assert len(records) == 3
    cid = records[0]["command"]["id"]
    waited = api.call("GET", f"v2/sandboxes/sessions/{box.current_session_id}/cmd/{cid}"
                             "?teamId=team_t&wait=true")
    assert waited.json["command"]["exitCode"] == 0  # it kept running to the end


def test_a_missing_executable_is_an_api_error(api: Api):
    box = api.sandbox()
    with pytest.raises(SandboxApiError) as error:
        box.run_process("no-such-executable-anywhere")
    assert _api_error(error) == (400, "executable_not_found")


def test_kill_after_sigkills_and_must_be_at_least_100ms(api: Api):
    box = api.sandbox()
    started = time.monotonic()
    done = box.run_process("sleep", ["30"], kill_after=0.2)
    assert done.returncode == 137 and time.monotonic() - started < 5
    with pytest.raises(SandboxApiError) as error:
        box.run_process("true", kill_after=0.05)
    assert _api_error(error) == (400, "bad_request")


# snapshots -------------------------------------------------------------------------------------
def test_snapshot_stops_the_session_and_expires(api: Api):
    box = api.sandbox()
    box.fs.write_text("kept.txt", "kept")
    before = time.time() * 1000
    snapshot = box.snapshot()
    assert api.fake.boxes["box"].status == "stopped"
    month = 30 * 24 * 3600 * 1000
    assert before + month <= snapshot.expires_at <= time.time() * 1000 + month
    assert box.run_process("true").returncode == 0  # resumes
    forever = box.snapshot(expiration=0)
    assert forever.expires_at is None
    raw = api.session_call(box.run_process("true").session_id, "snapshot",
                           {"expiration": 86_400_000})
    assert raw.status == 201 and raw.json["session"]["status"] == "stopped"
    assert raw.json["snapshot"]["expiresAt"] - time.time() * 1000 <= 86_400_000

    copy = api.sandbox("copy", source=SnapshotSource(snapshot_id=snapshot.id))
    assert copy.fs.read_text("kept.txt") == "kept"
    api.fake.expire_snapshot(snapshot.id)
    for snapshot_id in (snapshot.id, "snap_unknown"):
        with pytest.raises(SandboxApiError) as error:
            api.sandbox("late", source=SnapshotSource(snapshot_id=snapshot_id))
        assert _api_error(error) == (410, "snapshot_not_found")
        assert f"Snapshot not found: {snapshot_id}" in str(error.value)


def test_requests_during_a_snapshot_answer_422_snapshotting(api: Api):
    box = api.sandbox()
    sid = box.current_session_id
    taken = threading.Thread(target=box.snapshot)
    taken.start()
    wait_until(lambda: api.fake.boxes["box"].status == "snapshotting", timeout=2,
               what="snapshotting")
    answer = api.session_call(sid, "fs/mkdir", {"path": "x"})
    assert (answer.status, answer.code) == (422, "sandbox_snapshotting")
    taken.join(timeout=5)
    assert api.fake.boxes["box"].status == "stopped"


def test_a_lost_snapshot_answers_410_and_get_or_create_recreates(api: Api):
    api.sandbox().fs.write_text("old.txt", "old")
    api.fake.lose_snapshot("box")
    resume = api.call("GET", "v2/sandboxes/box?projectId=prj_t&resume=true")
    assert (resume.status, resume.code) == (410, "snapshot_not_found")
    box, created = api.client.get_or_create_sandbox(name="box")
    assert created and not box.fs.exists("old.txt")


# update ----------------------------------------------------------------------------------------
def test_update_replaces_tags_and_stores_the_policy_without_reading_back_values(api: Api):
    box = api.sandbox(tags={"app": "a", "user": "u"})
    policy = NetworkPolicy.custom(allow={"api.example.com": [NetworkPolicyRule(
        transform=[NetworkPolicyTransform(headers={"x-api-key": "the-secret"})])],
        "pypi.org": []})
    box.update(tags={"app": "b"}, network_policy=policy)
    fake_box = api.fake.boxes["box"]
    assert fake_box.tags == {"app": "b"}
    stored = fake_box.network_policy["allow"]["api.example.com"][0]["transform"][0]["headers"]
    assert stored == {"x-api-key": "the-secret"}
    sent = [(m, p.rsplit("/", 1)[-1]) for m, p in api.fake.requests[-2:]]
    assert sent == [("POST", "network-policy"), ("PATCH", "box")]

    got = api.call("GET", "v2/sandboxes/box?projectId=prj_t")
    assert "the-secret" not in got.body.decode() and "x-api-key" in got.body.decode()
    readback = api.client.get_sandbox(name="box").network_policy
    assert readback.allowed_domains == ("api.example.com", "pypi.org")
    assert readback.injection_rules[0].header_names == ("x-api-key",)
    found = api.client.query_sandboxes(
        query=SandboxQueryByCreatedAt(tag=TagFilter(key="app", value="b")))
    assert [b.name for b in found] == ["box"]
    assert list(api.client.query_sandboxes(
        query=SandboxQueryByCreatedAt(tag=TagFilter(key="user", value="u")))) == []


# content types and the rest --------------------------------------------------------------------
def test_content_types_are_exact(api: Api):
    box = api.sandbox()
    box.fs.write_text("f.bin", "data")
    sid = box.current_session_id
    read = api.session_call(sid, "fs/read", {"path": "f.bin"})
    assert (read.headers["Content-Type"], read.body) == ("application/octet-stream", b"data")
    stream = api.session_call(sid, "cmd?wait=true&logs=true", {"command": "true"})
    assert stream.headers["Content-Type"] == "application/x-ndjson"
    detached = api.session_call(sid, "cmd", {"command": "true"})
    assert detached.headers["Content-Type"] == "application/json"
    assert detached.json["command"]["exitCode"] is None
    missing = api.session_call(sid, "fs/read", {"path": "nope"})
    assert missing.status == 404 and missing.headers["Content-Type"] == "application/json"


def test_halt_stops_warm_agents_and_delete_forgets_the_box(api: Api):
    box = api.sandbox()
    # a process that looks like a warm agent (only those are signalled: lib/sandboxes/local.py)
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                              "agent_runner.py", "--serve"])
    try:
        (api.fake.boxes["box"].root / "warm-agent.pid").write_text(str(agent.pid))
        api.fake.stop_sandbox("box")
        assert agent.wait(timeout=5) is not None
    finally:
        agent.kill()
    box.destroy()
    assert "box" not in api.fake.boxes
    gone = api.call("GET", "v2/sandboxes/box?projectId=prj_t")
    assert (gone.status, gone.code) == (404, "not_found")


def test_the_defaults_are_the_strict_ones(tmp_path: Path):
    fake = FakeSandboxApi(tmp_path)
    assert (fake.cwd, fake.create_pending, fake.stop_delay, fake.latency) \
        == (PREFIX, True, 0.3, 0.0)
