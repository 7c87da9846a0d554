"""A fake of the Vercel Sandbox HTTP API, as strict as the real service where we know how the real
service behaves, so the real `vercel-sandbox` SDK (0.10.0) parses its answers unmodified and our
code meets the same failures it meets on Vercel. Each sandbox is a host folder; commands run
there for real as subprocesses. Bound to 127.0.0.1 by the tests that start it.

Wire protocol (as the SDK speaks it): create is `POST v3/sandboxes`; the rest is under
`v2/sandboxes`: `{name}` GET (`?resume=true`) / PATCH / DELETE, list with `?tags=k:v`, and per
session `sessions/{sid}` GET, `/stop`, `/snapshot`, `/extend-timeout`, `/network-policy`, `/cmd`
(`?wait=true&logs=true` streams NDJSON), `cmd/{cid}` (`?wait=true`), `cmd/{cid}/logs` (NDJSON,
replayed from the start), `cmd/{cid}/kill`, `fs/read`, `fs/write` (gzip tar), `fs/mkdir`.
Errors are `{"error": {"code", "message"}}`.

Strict by default (each rule cites its source where it is written):
- a sandbox's paths live under the virtual `cwd` ("/vercel/sandbox"), mapped to the box's host
  folder; a request carrying a host path answers 400;
- create answers "pending" and the next GET "running"; a name clash answers 400;
- each session has an execution time limit (create `timeout`, default 5 min) and ends when it
  runs out; `extend-timeout` adds to it;
- stop and snapshot take `stop_delay` seconds ("stopping" / "snapshotting", 422 meanwhile);
  a stopped session answers 410, an unknown one 404;
- `fs/mkdir` is not recursive; snapshots expire; a missing executable answers 400.

Test controls (attributes and methods of `FakeSandboxApi`):
- `boxes` (name -> FakeBox: `.root`, `.request` the create body, `.status`, `.session_id`,
  `.session_timeout_ms`, `.tags`, `.network_policy` the latest policy sent, header values
  included), `sessions` (id -> FakeSession), `snapshots` (id -> FakeSnapshot: `.expires_at`),
  `requests` (a log of (method, path)), `commands_run` (every command request body), `lock`;
- `fail_next_create = True`: another request creates the sandbox just before ours (400 clash);
- `create_pending`, `stop_delay`, `latency` (seconds slept before every answer), `cwd`;
- `stop_sandbox(name)` / `_halt(box)`: stop now (processes killed, warm agents stopped);
- `begin_stop(name, delay=None, status="stopping")`: stop (or "snapshotting") taking `delay`;
- `expire_session(name)`: the current session's execution time limit runs out now;
- `lose_snapshot(name)`: stopped, and its snapshot is gone (resume answers 410);
- `expire_snapshot(snapshot_id)`: creating from that snapshot answers 410 from now on;
- `rate_limit(n, retry_after=1)`: the next n requests answer 429 with `Retry-After`;
- `close_next_stream(after=1)`: the next command stream closes after `after` output records
  with the in-band `sandbox_stream_closed` record, the command still running.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import posixpath
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from lib.sandboxes.local import stop_warm_agents

_ids = itertools.count(1)

# Vercel docs vercel-sandbox/managing ("By default, a sandbox runs for 5 minutes");
# vercel/sandbox packages/vercel-sandbox-mock mock-server.ts `timeout: body.timeout ?? 300_000`.
DEFAULT_TIMEOUT_MS = 300_000
# Vercel docs vercel-sandbox/concepts/snapshots: "Snapshots expire after 30 days by default".
DEFAULT_SNAPSHOT_EXPIRATION_MS = 30 * 24 * 3600 * 1000
# Vercel REST extend-timeout: duration "Must be at least 1000ms".
MIN_EXTEND_MS = 1000
# Vercel REST execute-a-command: `timeout` minimum 100 (ms), then SIGKILL.
MIN_COMMAND_TIMEOUT_MS = 100
# vercel-sandbox README (image omitted -> the universal image).
DEFAULT_IMAGE = "vercel/sandbox/universal:latest"

_STOPPING = {"stopping", "snapshotting"}
_LIVE = {"pending", "running"}


class ApiError(Exception):
    """An error answer: `{"error": {"code", "message"}}` (mock http.ts `apiError`)."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> Response:
        body = json.dumps({"error": {"code": self.code, "message": self.message}})
        return Response(body, status=self.status, headers=self.headers,
                        mimetype="application/json")


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _ndjson(records: Iterator[dict[str, Any]]) -> Response:
    # Exactly `application/x-ndjson`: the TS SDK rejects any other (api-client.ts).
    lines = (json.dumps(record).encode() + b"\n" for record in records)
    return Response(lines, mimetype="application/x-ndjson")


def _exit_code(returncode: int) -> int:
    """A process killed by signal N exits 128+N in the sandbox's shell terms, never negative."""
    return 128 - returncode if returncode < 0 else returncode


def _policy_readback(policy: dict[str, Any] | None) -> dict[str, Any]:
    """A network policy as the API reads it back: the legacy normalized shape, header NAMES
    only. Vercel TS utils/network-policy.ts ("The API returns headerNames (secret values are
    stripped)"); vercel-py live tests assert `transform.headers is None`."""
    if not policy:
        return {"mode": "allow-all"}
    if "allow" not in policy and "subnets" not in policy:
        return {"mode": policy.get("mode", "allow-all")}
    allow = policy.get("allow") or {}
    readback: dict[str, Any] = {"mode": "custom", "allowedDomains": list(allow)}
    injections, forwards, responses = [], [], []
    for domain, rules in (allow.items() if isinstance(allow, dict) else ()):
        for rule in rules:
            dimensions = {"matchDimensions": list(rule["match"])} if rule.get("match") else {}
            if rule.get("transform"):
                names = [name for transform in rule["transform"]
                         for name in (transform.get("headers") or {})]
                injections.append({"domain": domain, "headerNames": names, **dimensions})
            elif rule.get("forwardURL"):
                forwards.append({"domain": domain, "forwardURL": rule["forwardURL"],
                                 **dimensions})
            elif rule.get("response"):
                responses.append({"domain": domain,
                                  "statusCode": rule["response"].get("statusCode"),
                                  **dimensions})
    readback.update(injectionRules=injections, forwardRules=forwards, responseRules=responses)
    subnets = policy.get("subnets") or {}
    if "allow" in subnets:
        readback["allowedCIDRs"] = subnets["allow"]
    if "deny" in subnets:
        readback["deniedCIDRs"] = subnets["deny"]
    return readback


@dataclass
class FakeCommand:
    id: str
    name: str
    args: list[str]
    cwd: str  # the virtual cwd, as reported
    session_id: str
    process: subprocess.Popen
    host_root: str  # output mentioning the host folder reads as the virtual cwd
    virtual_root: str
    started_at: int = field(default_factory=_now_ms)
    finished_at: int | None = None
    output: list[dict[str, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    kill_timer: threading.Timer | None = None

    def payload(self, *, started: bool = False) -> dict[str, Any]:
        """`started`: the record of the start (exitCode null even if it has already ended)."""
        # Required by vercel-sandbox 0.10.0 api_client.py `_CommandPayload`: id, name, args,
        # cwd, sessionId, startedAt; exitCode null while running (TS validators.ts).
        payload: dict[str, Any] = {
            "id": self.id, "name": self.name, "args": self.args, "cwd": self.cwd,
            "sessionId": self.session_id, "startedAt": self.started_at, "exitCode": None}
        if not started and self.done.is_set() and self.finished_at is not None:
            payload["exitCode"] = _exit_code(self.process.returncode)
            payload["durationMs"] = self.finished_at - self.started_at
        return payload

    def pump(self) -> None:
        """Collect stdout and stderr as they come (the logs endpoint replays them)."""
        def read(stream: Any, name: str) -> None:
            for chunk in iter(stream.readline, b""):
                data = chunk.decode(errors="replace").replace(self.host_root, self.virtual_root)
                with self.changed:
                    self.output.append({"stream": name, "data": data})
                    self.changed.notify_all()

        readers = [threading.Thread(target=read, args=(self.process.stdout, "stdout"), daemon=True),
                   threading.Thread(target=read, args=(self.process.stderr, "stderr"), daemon=True)]
        for reader in readers:
            reader.start()

        def finish() -> None:
            self.process.wait()
            for reader in readers:
                reader.join()
            if self.kill_timer is not None:
                self.kill_timer.cancel()
            with self.changed:
                self.finished_at = _now_ms()
                self.done.set()
                self.changed.notify_all()

        threading.Thread(target=finish, daemon=True).start()

    def records(self) -> Iterator[dict[str, str]]:
        """Every output record from the start, then new ones as they come, until exit."""
        sent = 0
        while True:
            with self.changed:
                while sent == len(self.output) and not self.done.is_set():
                    self.changed.wait(1)
                fresh, finished = self.output[sent:], self.done.is_set()
            yield from fresh
            sent += len(fresh)
            if finished and sent == len(self.output):
                return

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass


@dataclass
class FakeSession:
    id: str
    box: FakeBox
    timeout: int  # ms, from startedAt; extend-timeout adds to it
    network_policy: dict[str, Any] | None
    status: str = "running"
    requested_at: int = field(default_factory=_now_ms)
    started_at: int = field(default_factory=_now_ms)
    updated_at: int = field(default_factory=_now_ms)
    stopped_at: int | None = None

    @property
    def deadline_ms(self) -> int:
        # Vercel TS sandbox.ts `get expiresAt()`: (startedAt ?? createdAt) + timeout.
        return self.started_at + self.timeout


@dataclass
class FakeBox:
    name: str
    root: Path
    request: dict[str, Any]  # the create body, as sent
    cwd: str  # the virtual path of `root`
    tags: dict[str, str] = field(default_factory=dict)
    network_policy: dict[str, Any] | None = None
    timeout: int = DEFAULT_TIMEOUT_MS
    env: dict[str, str] = field(default_factory=dict)
    persistent: bool = True
    created_at: int = field(default_factory=_now_ms)
    status_updated_at: int = field(default_factory=_now_ms)
    snapshot_lost: bool = False
    current_snapshot_id: str | None = None
    commands: dict[str, FakeCommand] = field(default_factory=dict)
    phase_until: float = 0.0  # when "stopping"/"snapshotting" ends (time.time())
    timer: threading.Timer | None = None
    session: FakeSession = field(init=False)

    @property
    def session_id(self) -> str:
        return self.session.id

    @property
    def session_timeout_ms(self) -> int:
        """The current session's execution time limit, extensions included."""
        return self.session.timeout

    @property
    def status(self) -> str:
        return self.session.status

    @status.setter
    def status(self, status: str) -> None:
        self.session.status = status
        self.session.updated_at = self.status_updated_at = _now_ms()
        if status == "stopped" and self.session.stopped_at is None:
            self.session.stopped_at = self.status_updated_at


@dataclass
class FakeSnapshot:
    id: str
    root: Path
    source_session_id: str
    expires_at: int | None  # ms; None: never
    created_at: int = field(default_factory=_now_ms)

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and _now_ms() >= self.expires_at

    def payload(self) -> dict[str, Any]:
        # Required by vercel-sandbox 0.10.0 api_client.py `_SnapshotPayload`; `expiresAt` absent
        # means never (Vercel REST create-a-snapshot).
        payload: dict[str, Any] = {
            "id": self.id, "sourceSessionId": self.source_session_id, "region": "iad1",
            "status": "created", "sizeBytes": sum(p.stat().st_size for p in self.root.rglob("*")
                                                 if p.is_file()),
            "createdAt": self.created_at, "updatedAt": self.created_at,
            "lastUsedAt": self.created_at, "creationMethod": "manual"}
        if self.expires_at is not None:
            payload["expiresAt"] = self.expires_at
        return payload


class FakeSandboxApi:
    """The WSGI app. Mounted under `/api` like the real base URL."""

    def __init__(self, base_dir: Path, env: dict[str, str] | None = None, *,
                 cwd: str = "/vercel/sandbox", create_pending: bool = True,
                 stop_delay: float = 0.3) -> None:
        self.base_dir = base_dir
        self.env = env or {}  # the sandbox machine's environment (PATH with its `python3`)
        self.cwd = cwd.rstrip("/")  # the virtual path every sandbox's folder is reported at
        self.create_pending = create_pending
        self.stop_delay = stop_delay
        self.latency = 0.0
        self.boxes: dict[str, FakeBox] = {}
        self.sessions: dict[str, FakeSession] = {}
        self.snapshots: dict[str, FakeSnapshot] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.commands_run: list[dict[str, Any]] = []  # the body of every command request
        self.fail_next_create = False
        self._rate_limited = 0
        self._retry_after: float = 1
        self._close_next_stream: int | None = None
        self._host_markers = {str(base_dir), str(base_dir.resolve())}
        session = "/api/v2/sandboxes/sessions/<sid>"
        self.urls = Map([
            Rule("/api/v3/sandboxes", endpoint="create", methods=["POST"]),
            Rule("/api/v2/sandboxes", endpoint="list", methods=["GET"]),
            Rule("/api/v2/sandboxes/<name>", endpoint="get", methods=["GET"]),
            Rule("/api/v2/sandboxes/<name>", endpoint="update", methods=["PATCH"]),
            Rule("/api/v2/sandboxes/<name>", endpoint="delete", methods=["DELETE"]),
            Rule(session, endpoint="session", methods=["GET"]),
            Rule(f"{session}/stop", endpoint="stop", methods=["POST"]),
            Rule(f"{session}/snapshot", endpoint="snapshot", methods=["POST"]),
            Rule(f"{session}/extend-timeout", endpoint="extend", methods=["POST"]),
            Rule(f"{session}/network-policy", endpoint="policy", methods=["POST"]),
            Rule(f"{session}/cmd", endpoint="run", methods=["POST"]),
            Rule(f"{session}/cmd/<cid>", endpoint="command", methods=["GET"]),
            Rule(f"{session}/cmd/<cid>/logs", endpoint="logs", methods=["GET"]),
            Rule(f"{session}/cmd/<cid>/kill", endpoint="kill", methods=["POST"]),
            Rule(f"{session}/fs/read", endpoint="read", methods=["POST"]),
            Rule(f"{session}/fs/write", endpoint="write", methods=["POST"]),
            Rule(f"{session}/fs/mkdir", endpoint="mkdir", methods=["POST"]),
        ])

    # test controls ---------------------------------------------------------------------------
    def stop_sandbox(self, name: str) -> None:
        """Stop the sandbox now, with no stopping phase."""
        with self.lock:
            self._halt(self.boxes[name])

    def expire_session(self, name: str) -> None:
        """The current session's execution time limit runs out now."""
        self.stop_sandbox(name)

    def lose_snapshot(self, name: str) -> None:
        """The sandbox is stopped and its snapshot is gone (the files with it)."""
        with self.lock:
            box = self.boxes[name]
            self._halt(box)
            box.snapshot_lost = True

    def begin_stop(self, name: str, delay: float | None = None, status: str = "stopping") -> None:
        """Start stopping the sandbox (or snapshotting it: `status="snapshotting"`), which takes
        `delay` seconds (default `stop_delay`)."""
        assert status in _STOPPING, status
        with self.lock:
            self._begin_phase(self.boxes[name], status,
                              self.stop_delay if delay is None else delay)

    def expire_snapshot(self, snapshot_id: str) -> None:
        with self.lock:
            self.snapshots[snapshot_id].expires_at = _now_ms()

    def rate_limit(self, n: int, retry_after: float = 1) -> None:
        """The next `n` requests, whatever they are, answer 429."""
        with self.lock:
            self._rate_limited, self._retry_after = n, retry_after

    def close_next_stream(self, after: int = 1) -> None:
        """The next `cmd?wait=true&logs=true` stream closes after `after` output records."""
        with self.lock:
            self._close_next_stream = after

    # WSGI --------------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Any) -> Any:
        if self.latency:
            time.sleep(self.latency)
        request = Request(environ)
        self.requests.append((request.method, request.path))
        try:
            response = self._dispatch(request, environ)
        except ApiError as error:
            response = error.response()
        return response(environ, start_response)

    def _dispatch(self, request: Request, environ: dict) -> Response:
        with self.lock:
            if self._rate_limited > 0:
                # Vercel TS with-retry.ts reads `Retry-After` (seconds) on 429.
                self._rate_limited -= 1
                retry_after = self._retry_after
                raise ApiError(429, "rate_limited", "Too many requests",
                               headers={"Retry-After": f"{retry_after:g}"})
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            raise ApiError(401, "unauthorized", "missing token")
        try:
            endpoint, args = self.urls.bind_to_environ(environ).match()
        except NotFound:
            raise ApiError(404, "not_found", f"No route for {request.method} {request.path}") from None
        except HTTPException as error:  # 405
            raise ApiError(error.code or 400, "method_not_allowed", str(error)) from None
        return getattr(self, f"_{endpoint}")(request, **args)

    # helpers -----------------------------------------------------------------------------------
    def _body(self, request: Request, *, optional: bool = False) -> dict[str, Any]:
        raw = request.get_data()
        if not raw and optional:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise _bad_request("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise _bad_request("the request body must be a JSON object")
        self._refuse_host_paths(body)
        return body

    def _refuse_host_paths(self, value: Any) -> None:
        """A host path in a request means the client leaked one: the sandbox has no such path."""
        if isinstance(value, dict):
            for item in [*value.keys(), *value.values()]:
                self._refuse_host_paths(item)
        elif isinstance(value, list):
            for item in value:
                self._refuse_host_paths(item)
        elif isinstance(value, str) and any(marker in value for marker in self._host_markers):
            raise _bad_request(f"not a path inside the sandbox: {value}")

    def _inside(self, virtual: str) -> bool:
        return virtual == self.cwd or virtual.startswith(self.cwd + "/")

    def _host_path(self, box: FakeBox, virtual: str) -> Path:
        """The host path of an absolute sandbox path, which must lie under the virtual cwd."""
        virtual = posixpath.normpath(virtual)
        if not self._inside(virtual):
            raise _bad_request(f"{virtual} is outside {self.cwd}, the only folder this fake "
                               "sandbox has")
        return box.root / posixpath.relpath(virtual, self.cwd)

    def _resolve(self, box: FakeBox, path: str, cwd: str | None) -> tuple[str, Path]:
        base = posixpath.join(self.cwd, cwd) if cwd else self.cwd  # relative cwd: from the home
        virtual = posixpath.normpath(posixpath.join(base, path))
        self._refuse_host_paths(virtual)  # also a tar member joined with `x-cwd`
        return virtual, self._host_path(box, virtual)

    def _map_arg(self, box: FakeBox, arg: str) -> str:
        if self._inside(arg):
            return str(box.root) + arg[len(self.cwd):]
        return arg

    def _map_env(self, box: FakeBox, env: dict[str, str]) -> dict[str, str]:
        pattern = re.compile(re.escape(self.cwd) + r"(?=[/:\s]|$)")
        return {key: pattern.sub(lambda _: str(box.root), value) for key, value in env.items()}

    def _sandbox_payload(self, box: FakeBox) -> dict[str, Any]:
        # vercel-sandbox 0.10.0 api_client.py `_SandboxPayload` requires name and
        # currentSessionId; the rest follows Vercel TS validators.ts `SandboxMetaData`.
        vcpus = (box.request.get("resources") or {}).get("vcpus", 1)
        payload: dict[str, Any] = {
            "name": box.name, "currentSessionId": box.session_id, "status": box.status,
            "persistent": box.persistent, "projectId": box.request.get("projectId"),
            "cwd": self.cwd, "region": box.request.get("region", "iad1"),
            "image": box.request.get("image", DEFAULT_IMAGE), "memory": 2048 * vcpus,
            "vcpus": vcpus, "timeout": box.timeout, "tags": box.tags,
            "networkPolicy": _policy_readback(box.network_policy),
            "createdAt": box.created_at, "updatedAt": box.status_updated_at,
            "statusUpdatedAt": box.status_updated_at}
        if box.status in _LIVE:
            payload["expiresAt"] = box.session.deadline_ms  # Vercel TS CHANGELOG 2.4.0
        if box.current_snapshot_id:
            payload["currentSnapshotId"] = box.current_snapshot_id
        return payload

    def _session_payload(self, session: FakeSession) -> dict[str, Any]:
        # Vercel TS validators.ts `Session`; REST session schema (sourceSandboxName, projectId).
        box = session.box
        vcpus = (box.request.get("resources") or {}).get("vcpus", 1)
        payload: dict[str, Any] = {
            "id": session.id, "sourceSandboxName": box.name,
            "projectId": box.request.get("projectId"), "status": session.status,
            "cwd": self.cwd, "region": box.request.get("region", "iad1"), "memory": 2048 * vcpus,
            "vcpus": vcpus, "timeout": session.timeout, "requestedAt": session.requested_at,
            "createdAt": session.requested_at, "updatedAt": session.updated_at,
            "networkPolicy": _policy_readback(session.network_policy)}
        if session.status != "pending":
            payload["startedAt"] = session.started_at
        if session.stopped_at is not None:
            payload["stoppedAt"] = session.stopped_at
        return payload

    def _answer(self, box: FakeBox, status: int = 200, **extra: Any) -> Response:
        return _json({"sandbox": self._sandbox_payload(box),
                      "session": self._session_payload(box.session), "routes": [], **extra},
                     status)

    # lifecycle ---------------------------------------------------------------------------------
    def _new_session(self, box: FakeBox, status: str) -> FakeSession:
        session = FakeSession(f"sbx_sess_{next(_ids)}", box, box.timeout, box.network_policy,
                              status=status)
        box.session = session
        self.sessions[session.id] = session
        self._arm(box)
        return session

    def _refresh(self, box: FakeBox) -> None:
        """Apply what time did: a stopping phase ends, an execution time limit runs out (a timer
        does both; this catches a timer that has not fired yet)."""
        if box.status in _STOPPING and time.time() >= box.phase_until:
            self._finish_stop(box)
        elif box.status in _LIVE and _now_ms() >= box.session.deadline_ms:
            self._halt(box)

    def _arm(self, box: FakeBox) -> None:
        """(Re)arm the box's one timer for its next due transition."""
        if box.timer is not None:
            box.timer.cancel()
            box.timer = None
        if box.status in _LIVE:
            due = box.session.deadline_ms / 1000
        elif box.status in _STOPPING:
            due = box.phase_until
        else:
            return
        box.timer = threading.Timer(max(0.0, due - time.time()), self._on_timer, args=(box,))
        box.timer.daemon = True
        box.timer.start()

    def _on_timer(self, box: FakeBox) -> None:
        with self.lock:
            if box.timer is not threading.current_thread():
                return  # re-armed or cancelled since
            box.timer = None
            self._refresh(box)
            self._arm(box)  # fired a little early: wait for the rest

    def _kill_all(self, box: FakeBox) -> None:
        """Every process in the VM ends, detached ones (the warm agent) included."""
        for command in box.commands.values():
            command.kill()
        box.commands.clear()
        stop_warm_agents(box.root)

    def _halt(self, box: FakeBox) -> None:
        """Stop the VM now: every process in it ends, and the session with it."""
        self._kill_all(box)
        self._finish_stop(box)

    def _finish_stop(self, box: FakeBox) -> None:
        if box.status != "stopped":
            box.status = "stopped"
        self._arm(box)  # cancels the timer

    def _begin_phase(self, box: FakeBox, status: str, delay: float) -> None:
        """Vercel docs errors/SANDBOX_STOPPING and SANDBOX_SNAPSHOTTING: stopping takes a while,
        and requests meanwhile answer 422."""
        self._kill_all(box)
        box.status, box.phase_until = status, time.time() + delay
        if delay <= 0:
            self._finish_stop(box)
        else:
            self._arm(box)

    def _live(self, sid: str) -> tuple[FakeBox, FakeSession]:
        """The running session `sid` and its box, or the lifecycle error the real API answers."""
        session = self.sessions.get(sid)
        if session is None:
            raise ApiError(404, "not_found", f"Session not found: {sid}")  # mock-server.ts
        box = session.box
        self._refresh(box)
        if session is not box.session or session.status not in _LIVE | _STOPPING:
            # Vercel docs errors/SANDBOX_STOPPED: 410; mock-server.ts "Sandbox is stopped".
            raise ApiError(410, "sandbox_stopped", "Sandbox is stopped")
        if session.status == "stopping":  # Vercel docs errors/SANDBOX_STOPPING: 422
            raise ApiError(422, "sandbox_stopping", "Sandbox is stopping")
        if session.status == "snapshotting":  # Vercel docs errors/SANDBOX_SNAPSHOTTING: 422
            raise ApiError(422, "sandbox_snapshotting", "Sandbox is creating a snapshot")
        if session.status == "pending":
            box.status = "running"
        return box, session

    # sandboxes ---------------------------------------------------------------------------------
    def _create(self, request: Request) -> Response:
        body = self._body(request)
        name = body.get("name") or f"sbx-{next(_ids)}"
        with self.lock:
            if self.fail_next_create or name in self.boxes:
                if self.fail_next_create and name not in self.boxes:
                    self._new_box(name, body)  # "another request" creates it just before us
                self.fail_next_create = False
                # Vercel TS sandbox.test.ts "name race after a 404": 400, not 409.
                raise _bad_request(
                    f"A sandbox with the name '{name}' already exists for this project.")
            source = body.get("source") or {}
            if source.get("type") == "snapshot":
                snapshot = self.snapshots.get(source.get("snapshotId", ""))
                if snapshot is None or snapshot.expired:
                    # Vercel docs errors/SNAPSHOT_NOT_FOUND: 410; mock-server.ts message.
                    raise ApiError(410, "snapshot_not_found",
                                   f"Snapshot not found: {source.get('snapshotId')}")
            box = self._new_box(name, body)
            return self._answer(box)

    def _new_box(self, name: str, body: dict[str, Any]) -> FakeBox:
        root = self.base_dir / name
        shutil.rmtree(root, ignore_errors=True)
        source = body.get("source") or {}
        if source.get("type") == "snapshot":
            shutil.copytree(self.snapshots[source["snapshotId"]].root, root)
        else:
            root.mkdir(parents=True)
        box = FakeBox(name, root, body, self.cwd, tags=dict(body.get("tags") or {}),
                      network_policy=body.get("networkPolicy"),
                      timeout=int(body.get("timeout") or DEFAULT_TIMEOUT_MS),
                      env=dict(body.get("env") or {}), persistent=body.get("persistent", True))
        # vercel-sandbox 0.10.0 service.py `_wait_for_ready_sandbox` polls a "pending" create.
        self._new_session(box, "pending" if self.create_pending else "running")
        self.boxes[name] = box
        return box

    def _get(self, request: Request, name: str) -> Response:
        with self.lock:
            box = self.boxes.get(name)
            if box is None:
                raise ApiError(404, "not_found", f"Sandbox not found: {name}")
            self._refresh(box)
            if box.status == "pending":
                box.status = "running"  # the image is ready by the first poll
            resumed = False
            if request.args.get("resume") == "true":
                if box.status == "stopping":
                    raise ApiError(422, "sandbox_stopping", "Sandbox is stopping")
                if box.status == "snapshotting":
                    raise ApiError(422, "sandbox_snapshotting", "Sandbox is creating a snapshot")
                if box.status not in _LIVE:
                    if box.snapshot_lost:
                        # vercel/eve#2373 quotes the real body of a resume with no snapshot.
                        raise ApiError(410, "snapshot_not_found",
                                       "Cannot resume sandbox: no snapshot available.")
                    self._new_session(box, "running")  # a fresh execution time limit
                    resumed = True
            return self._answer(box, resumed=resumed)

    def _update(self, request: Request, name: str) -> Response:
        """PATCH: vercel-sandbox 0.10.0 api_client.py `update_sandbox`; mock-server.ts
        `#updateSandbox` (tags replace the whole map; the policy also applies to the session)."""
        body = self._body(request)
        with self.lock:
            box = self.boxes.get(name)
            if box is None:
                raise ApiError(404, "not_found", f"Sandbox not found: {name}")
            self._refresh(box)
            if body.get("tags") is not None:
                box.tags = dict(body["tags"])
            if body.get("networkPolicy") is not None:
                box.network_policy = box.session.network_policy = body["networkPolicy"]
            if body.get("env") is not None:
                box.env = dict(body["env"])
            if body.get("persistent") is not None:
                box.persistent = bool(body["persistent"])
            if body.get("timeout") is not None:
                box.timeout = int(body["timeout"])
                if box.status == "running" and box.timeout > box.session.timeout:
                    box.session.timeout = box.timeout
                    self._arm(box)
            box.status_updated_at = box.session.updated_at = _now_ms()
            return _json({"sandbox": self._sandbox_payload(box), "routes": []})

    def _delete(self, request: Request, name: str) -> Response:
        with self.lock:
            box = self.boxes.pop(name, None)
            if box is None:
                raise ApiError(404, "not_found", f"Sandbox not found: {name}")
            self._halt(box)
            shutil.rmtree(box.root, ignore_errors=True)
            return self._answer(box)

    def _list(self, request: Request) -> Response:
        wanted = dict(tag.split(":", 1) for tag in request.args.getlist("tags"))
        prefix = request.args.get("namePrefix", "")
        with self.lock:
            boxes = [b for b in self.boxes.values() if b.name.startswith(prefix)
                     and all(b.tags.get(k) == v for k, v in wanted.items())]
            for box in boxes:
                self._refresh(box)
            return _json({"sandboxes": [self._sandbox_payload(b) for b in boxes],
                          "pagination": {"count": len(boxes), "next": None, "prev": None}})

    # sessions ----------------------------------------------------------------------------------
    def _session(self, request: Request, sid: str) -> Response:
        with self.lock:
            session = self.sessions.get(sid)
            if session is None:
                raise ApiError(404, "not_found", f"Session not found: {sid}")
            self._refresh(session.box)
            return _json({"session": self._session_payload(session), "routes": []})

    def _stop(self, request: Request, sid: str) -> Response:
        with self.lock:
            box, session = self._live(sid)
            self._begin_phase(box, "stopping", self.stop_delay)
            return _json({"session": self._session_payload(session),
                          "sandbox": self._sandbox_payload(box)})

    def _snapshot(self, request: Request, sid: str) -> Response:
        """Vercel REST create-a-snapshot: 201; "The session will be terminated after the
        snapshot is created"; the session is "snapshotting" (422) until then."""
        body = self._body(request, optional=True)
        expiration = body.get("expiration", DEFAULT_SNAPSHOT_EXPIRATION_MS)
        if not isinstance(expiration, int) or expiration < 0:
            raise _bad_request("expiration must be a number of milliseconds >= 0 (0: never)")
        with self.lock:
            box, session = self._live(sid)
            self._kill_all(box)
            snapshot_id = f"snap_{next(_ids)}"
            copy = self.base_dir / ".snapshots" / snapshot_id
            shutil.copytree(box.root, copy)
            snapshot = FakeSnapshot(snapshot_id, copy, sid,
                                    _now_ms() + expiration if expiration else None)
            self.snapshots[snapshot_id] = snapshot
            box.current_snapshot_id = snapshot_id
            self._begin_phase(box, "snapshotting", self.stop_delay)
            until = box.phase_until
        time.sleep(max(0.0, until - time.time()))
        with self.lock:
            self._refresh(box)
            return _json({"snapshot": snapshot.payload(),
                          "session": self._session_payload(session)}, 201)

    def _extend(self, request: Request, sid: str) -> Response:
        body = self._body(request)
        duration = body.get("duration")
        if not isinstance(duration, int) or duration < MIN_EXTEND_MS:
            raise _bad_request(f"duration must be at least {MIN_EXTEND_MS}ms")
        with self.lock:
            box, session = self._live(sid)
            session.timeout += duration  # mock-server.ts `session.timeout += duration`
            session.updated_at = _now_ms()
            self._arm(box)
            return _json({"session": self._session_payload(session)})

    def _policy(self, request: Request, sid: str) -> Response:
        """The live policy of the session (vercel-sandbox 0.10.0 service.py `update_sandbox`
        sends it before the PATCH); mock-server.ts `#updateNetworkPolicy`."""
        body = self._body(request)
        with self.lock:
            box, session = self._live(sid)
            session.network_policy = box.network_policy = body
            session.updated_at = _now_ms()
            return _json({"session": self._session_payload(session)})

    # commands ----------------------------------------------------------------------------------
    def _run(self, request: Request, sid: str) -> Response:
        with suppress(ValueError):  # every command request is logged, refused ones too
            self.commands_run.append(json.loads(request.get_data()))
        body = self._body(request)
        name, args, env = body.get("command"), body.get("args") or [], body.get("env") or {}
        if not isinstance(name, str) or not name:
            raise _bad_request("command is required")
        timeout = body.get("timeout")
        if timeout is not None and (not isinstance(timeout, int)
                                    or timeout < MIN_COMMAND_TIMEOUT_MS):
            raise _bad_request(f"timeout must be at least {MIN_COMMAND_TIMEOUT_MS}ms")
        wait = request.args.get("wait") == "true" or body.get("wait") is True
        logs = request.args.get("logs") == "true" or body.get("logs") is True
        with self.lock:
            box, session = self._live(sid)
            cwd, host_cwd = self._resolve(box, ".", body.get("cwd"))
            if not host_cwd.is_dir():
                raise _bad_request(f"cwd {cwd} does not exist")
            try:
                process = subprocess.Popen(
                    [self._map_arg(box, name), *(self._map_arg(box, a) for a in args)],
                    cwd=host_cwd, env={**self.env, **self._map_env(box, box.env),
                                       **self._map_env(box, env)},
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except (FileNotFoundError, PermissionError, NotADirectoryError):
                # vercel-py live tests: a missing executable is the API error
                # `executable_not_found`, not exit 127.
                raise ApiError(400, "executable_not_found", f"Executable not found: {name}") from None
            command = FakeCommand(f"cmd_{next(_ids)}", name, list(args), cwd, sid, process,
                                  str(box.root), self.cwd)
            if timeout is not None:  # Vercel REST execute-a-command: SIGKILL after `timeout`
                command.kill_timer = threading.Timer(timeout / 1000, command.kill)
                command.kill_timer.daemon = True
                command.kill_timer.start()
            box.commands[command.id] = command
            command.pump()
            close_after = None
            if wait and logs:
                close_after, self._close_next_stream = self._close_next_stream, None
        if not wait:
            return _json({"command": command.payload(started=True)})
        return _ndjson(self._command_stream(command, logs, close_after))

    def _command_stream(self, command: FakeCommand, logs: bool,
                        close_after: int | None) -> Iterator[dict[str, Any]]:
        """The initial command record, its output, the final record (vercel-sandbox 0.10.0
        api_client.py `run_process`) - or, when told to close, the in-band error record the
        Vercel REST execute-a-command documents, with the command left running."""
        yield {"command": command.payload(started=True)}
        sent = 0
        for record in command.records() if logs else ():
            if close_after is not None and sent >= close_after:
                break
            yield record
            sent += 1
        if close_after is not None:
            yield {"stream": "error", "data": {
                "code": "sandbox_stream_closed",
                "message": "Sandbox stream was closed and is not accepting commands."}}
            return
        command.done.wait()
        yield {"command": command.payload()}

    def _find_command(self, sid: str, cid: str) -> FakeCommand:
        with self.lock:
            box, _ = self._live(sid)
            command = box.commands.get(cid)
            if command is None or command.session_id != sid:
                raise ApiError(404, "not_found", f"Command not found: {cid}")  # mock-server.ts
            return command

    def _command(self, request: Request, sid: str, cid: str) -> Response:
        command = self._find_command(sid, cid)
        if request.args.get("wait") == "true":
            command.done.wait()
        return _json({"command": command.payload()})

    def _logs(self, request: Request, sid: str, cid: str) -> Response:
        return _ndjson(self._find_command(sid, cid).records())

    def _kill(self, request: Request, sid: str, cid: str) -> Response:
        command = self._find_command(sid, cid)
        body = self._body(request, optional=True)
        command.kill(int(body.get("signal") or signal.SIGKILL))
        return _json({"command": command.payload()})

    # files -------------------------------------------------------------------------------------
    def _read(self, request: Request, sid: str) -> Response:
        body = self._body(request)
        with self.lock:
            box, _ = self._live(sid)
            virtual, target = self._resolve(box, body.get("path") or "", body.get("cwd"))
        if target.is_dir():
            raise _bad_request(f"read failed: EISDIR: illegal operation on a directory, "
                               f"read '{virtual}'")
        if not target.is_file():
            # A JSON body with a missing-path code: vercel-sandbox 0.10.0 service.py maps it to
            # SandboxPathNotFoundError (vercel-py live tests: a missing file does).
            raise ApiError(404, "file_not_found", f"File not found: {virtual}")
        # Exactly `application/octet-stream`: the TS SDK rejects any other (api-client.ts).
        return Response(target.read_bytes(), mimetype="application/octet-stream")

    def _write(self, request: Request, sid: str) -> Response:
        """A gzip tar extracted under `x-cwd` (vercel-sandbox 0.10.0 sends "/" and absolute
        paths); parents are created (mock-server.ts; vercel-py live tests)."""
        base = request.headers.get("x-cwd") or self.cwd
        self._refuse_host_paths(base)
        try:
            archive = tarfile.open(fileobj=io.BytesIO(gzip.decompress(request.get_data())),
                                   mode="r:")
            members = archive.getmembers()
        except (OSError, EOFError, tarfile.TarError):
            raise _bad_request("the request body is not a gzip tar") from None
        with self.lock:
            box, _ = self._live(sid)
            self._refuse_host_paths([member.name for member in members])
            targets = [(member, self._resolve(box, member.name, base)) for member in members]
        for member, (virtual, target) in targets:
            try:
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    extracted = archive.extractfile(member)
                    target.write_bytes(extracted.read() if extracted else b"")
                    target.chmod(member.mode & 0o7777)
            except OSError as error:
                raise _bad_request(f"write failed: {virtual}: {error.strerror}") from None
        return _json({})

    def _mkdir(self, request: Request, sid: str) -> Response:
        """Not recursive, whatever `recursive` says: vercel-sandbox-mock mock-server.ts ("Not
        recursive, matching the real API"); the REST docs claim `mkdir -p`, we follow the
        stricter."""
        body = self._body(request)
        with self.lock:
            box, _ = self._live(sid)
            virtual, target = self._resolve(box, body.get("path") or "", body.get("cwd"))
        if target.exists():
            raise _bad_request(f"mkdir failed: EEXIST: file already exists, mkdir '{virtual}'")
        if not target.parent.is_dir():
            raise _bad_request(
                f"mkdir failed: ENOENT: no such file or directory, mkdir '{virtual}'")
        target.mkdir()
        return _json({})
