"""A fake of the Vercel Sandbox HTTP API, faithful enough that the real `vercel-sandbox` SDK
parses its answers unmodified. Each sandbox is a temp folder; commands run there for real as
subprocesses. Bound to 127.0.0.1 by the tests that start it.

Wire protocol (as the SDK speaks it): create is `POST v3/sandboxes`; the rest is under
`v2/sandboxes`: `{name}` GET (`?resume=true`) / DELETE, list with `?tags=k:v`,
`sessions/{id}/stop`, `sessions/{id}/cmd` (`?wait=true&logs=true` streams NDJSON),
`cmd/{cid}` (`?wait=true`), `cmd/{cid}/logs` (NDJSON, replayed from the start), `cmd/{cid}/kill`,
`fs/read`, `fs/write` (gzip tar), `fs/mkdir`. Errors are `{"error": {"code", "message"}}`.

Test controls: `fail_next_create` (a 409 as if another request created it first),
`lose_snapshot(name)` (the next resume answers 410 snapshot_not_found), `requests` (a log).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from lib.sandboxes.local import stop_warm_agents

_ids = itertools.count(1)


class _Gone(Exception):
    """The session asked for is not running."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _error(status: int, code: str, message: str) -> Response:
    return Response(json.dumps({"error": {"code": code, "message": message}}), status=status,
                    mimetype="application/json")


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


@dataclass
class FakeCommand:
    id: str
    name: str
    args: list[str]
    cwd: str
    session_id: str
    process: subprocess.Popen
    started_at: int = field(default_factory=_now_ms)
    output: list[dict[str, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "args": self.args, "cwd": self.cwd,
                "sessionId": self.session_id, "startedAt": self.started_at,
                "exitCode": self.process.returncode if self.done.is_set() else None}

    def pump(self) -> None:
        """Collect stdout and stderr as they come (the logs endpoint replays them)."""
        def read(stream: Any, name: str) -> None:
            for chunk in iter(lambda: stream.readline(), b""):
                with self.changed:
                    self.output.append({"stream": name, "data": chunk.decode(errors="replace")})
                    self.changed.notify_all()

        readers = [threading.Thread(target=read, args=(self.process.stdout, "stdout"), daemon=True),
                   threading.Thread(target=read, args=(self.process.stderr, "stderr"), daemon=True)]
        for reader in readers:
            reader.start()

        def finish() -> None:
            self.process.wait()
            for reader in readers:
                reader.join()
            with self.changed:
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
class FakeBox:
    name: str
    root: Path
    request: dict[str, Any]
    session_id: str
    status: str = "running"
    created_at: int = field(default_factory=_now_ms)
    snapshot_lost: bool = False
    commands: dict[str, FakeCommand] = field(default_factory=dict)

    def payload(self, project_id: str) -> dict[str, Any]:
        return {
            "name": self.name, "currentSessionId": self.session_id, "status": self.status,
            "persistent": self.request.get("persistent", True), "projectId": project_id,
            "cwd": str(self.root), "region": self.request.get("region", "iad1"),
            "memory": 2048, "vcpus": 1, "tags": self.request.get("tags") or {},
            "executionTimeLimit": self.request.get("executionTimeLimit"),
            "createdAt": self.created_at, "updatedAt": _now_ms(), "statusUpdatedAt": _now_ms(),
        }

    def session(self, project_id: str) -> dict[str, Any]:
        return {"id": self.session_id, "sourceSandboxName": self.name, "projectId": project_id,
                "status": self.status, "cwd": str(self.root), "region": "iad1",
                "memory": 2048, "vcpus": 1, "requestedAt": self.created_at,
                "startedAt": self.created_at}


class FakeSandboxApi:
    """The WSGI app. Mounted under `/api` like the real base URL."""

    def __init__(self, base_dir: Path, env: dict[str, str] | None = None) -> None:
        self.base_dir = base_dir
        self.env = env or {}  # the sandbox machine's environment (PATH with its `python3`)
        self.boxes: dict[str, FakeBox] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.commands_run: list[dict[str, Any]] = []  # the body of every command request
        self.fail_next_create = False
        self.urls = Map([
            Rule("/api/v3/sandboxes", endpoint="create", methods=["POST"]),
            Rule("/api/v2/sandboxes", endpoint="list", methods=["GET"]),
            Rule("/api/v2/sandboxes/<name>", endpoint="get", methods=["GET"]),
            Rule("/api/v2/sandboxes/<name>", endpoint="delete", methods=["DELETE"]),
            Rule("/api/v2/sandboxes/sessions/<sid>/stop", endpoint="stop", methods=["POST"]),
            Rule("/api/v2/sandboxes/sessions/<sid>/snapshot", endpoint="snapshot",
                 methods=["POST"]),
            Rule("/api/v2/sandboxes/sessions/<sid>/cmd", endpoint="run", methods=["POST"]),
            Rule("/api/v2/sandboxes/sessions/<sid>/cmd/<cid>", endpoint="command", methods=["GET"]),
            Rule("/api/v2/sandboxes/sessions/<sid>/cmd/<cid>/logs", endpoint="logs",
                 methods=["GET"]),
            Rule("/api/v2/sandboxes/sessions/<sid>/cmd/<cid>/kill", endpoint="kill",
                 methods=["POST"]),
            Rule("/api/v2/sandboxes/sessions/<sid>/fs/read", endpoint="read", methods=["POST"]),
            Rule("/api/v2/sandboxes/sessions/<sid>/fs/write", endpoint="write", methods=["POST"]),
            Rule("/api/v2/sandboxes/sessions/<sid>/fs/mkdir", endpoint="mkdir", methods=["POST"]),
        ])

    # test controls ---------------------------------------------------------------------------
    def lose_snapshot(self, name: str) -> None:
        """The sandbox is stopped and its snapshot is gone (the files with it)."""
        with self.lock:
            box = self.boxes[name]
            self._halt(box)
            box.snapshot_lost = True

    def stop_sandbox(self, name: str) -> None:
        with self.lock:
            self._halt(self.boxes[name])

    # WSGI --------------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        self.requests.append((request.method, request.path))
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return _error(401, "unauthorized", "missing token")(environ, start_response)
        try:
            endpoint, args = self.urls.bind_to_environ(environ).match()
            response = getattr(self, f"_{endpoint}")(request, **args)
        except _Gone:
            response = _error(410, "sandbox_stopped", "this session has stopped")
        except NotFound:
            response = _error(404, "not_found", f"no route {request.method} {request.path}")
        except HTTPException as error:
            response = _error(error.code or 500, "bad_request", str(error))
        return response(environ, start_response)

    def _project(self, request: Request) -> str:
        return request.args.get("projectId", "prj_fake")

    def _box(self, name: str) -> FakeBox | None:
        return self.boxes.get(name)

    def _session_box(self, sid: str) -> FakeBox:
        for box in self.boxes.values():
            if box.session_id == sid:
                if box.status != "running":
                    raise _Gone()
                return box
        raise _Gone()

    def _answer(self, box: FakeBox, request: Request, **extra: Any) -> Response:
        project = self._project(request)
        return _json({"sandbox": box.payload(project), "session": box.session(project),
                      "routes": [], **extra})

    # sandboxes ---------------------------------------------------------------------------------
    def _create(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        name = body.get("name") or f"sbx-{next(_ids)}"
        with self.lock:
            if self.fail_next_create or name in self.boxes:
                self.fail_next_create = False
                if name not in self.boxes:  # "another request" creates it just before us
                    self._new_box(name, body)
                return _error(409, "sandbox_already_exists", f"sandbox {name} already exists")
            box = self._new_box(name, body)
            return self._answer(box, request)

    def _new_box(self, name: str, body: dict[str, Any]) -> FakeBox:
        root = self.base_dir / name
        shutil.rmtree(root, ignore_errors=True)
        source = body.get("source") or {}
        if source.get("type") == "snapshot":
            shutil.copytree(self.base_dir / ".snapshots" / source["snapshotId"], root)
        else:
            root.mkdir(parents=True)
        box = FakeBox(name, root, body, f"sess_{next(_ids)}")
        self.boxes[name] = box
        return box

    def _get(self, request: Request, name: str) -> Response:
        with self.lock:
            box = self._box(name)
            if box is None:
                return _error(404, "not_found", f"sandbox {name} not found")
            resumed = False
            if request.args.get("resume") == "true" and box.status == "stopped":
                if box.snapshot_lost:
                    return _error(410, "snapshot_not_found", "the sandbox's snapshot is gone")
                box.status, box.session_id, resumed = "running", f"sess_{next(_ids)}", True
            return self._answer(box, request, resumed=resumed)

    def _delete(self, request: Request, name: str) -> Response:
        with self.lock:
            box = self.boxes.pop(name, None)
            if box is None:
                return _error(404, "not_found", f"sandbox {name} not found")
            self._halt(box)
            shutil.rmtree(box.root, ignore_errors=True)
            return self._answer(box, request)

    def _list(self, request: Request) -> Response:
        wanted = dict(tag.split(":", 1) for tag in request.args.getlist("tags"))
        with self.lock:
            boxes = [b for b in self.boxes.values()
                     if all((b.request.get("tags") or {}).get(k) == v for k, v in wanted.items())]
            project = self._project(request)
            return _json({"sandboxes": [b.payload(project) for b in boxes],
                          "pagination": {"count": len(boxes), "next": None, "prev": None}})

    def _halt(self, box: FakeBox) -> None:
        """Stop the VM: every process in it ends, detached ones (the warm agent) included."""
        for command in box.commands.values():
            command.kill()
        box.commands.clear()
        stop_warm_agents(box.root)
        box.status = "stopped"

    def _stop(self, request: Request, sid: str) -> Response:
        with self.lock:
            box = self._session_box(sid)
            self._halt(box)
            project = self._project(request)
            return _json({"session": {**box.session(project), "stoppedAt": _now_ms()},
                          "sandbox": box.payload(project)})

    def _snapshot(self, request: Request, sid: str) -> Response:
        """Like Vercel: the filesystem is saved and the session stops."""
        with self.lock:
            box = self._session_box(sid)
            snapshot_id = f"snap_{next(_ids)}"
            self._halt(box)
            shutil.copytree(box.root, self.base_dir / ".snapshots" / snapshot_id)
            project = self._project(request)
            now = _now_ms()
            return _json({"snapshot": {"id": snapshot_id, "sourceSessionId": sid,
                                       "region": "iad1", "status": "created", "sizeBytes": 1,
                                       "createdAt": now, "updatedAt": now},
                          "session": box.session(project)})

    # commands ----------------------------------------------------------------------------------
    def _run(self, request: Request, sid: str) -> Response:
        body = json.loads(request.get_data())
        self.commands_run.append(body)
        with self.lock:
            box = self._session_box(sid)
            cwd = body.get("cwd") or str(box.root)
            env = {**self.env, **(body.get("env") or {})}
            process = subprocess.Popen(
                [body["command"], *(body.get("args") or [])], cwd=cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,
            )
            command = FakeCommand(f"cmd_{next(_ids)}", body["command"], body.get("args") or [],
                                  cwd, sid, process)
            box.commands[command.id] = command
            command.pump()
        if request.args.get("wait") == "true" and request.args.get("logs") == "true":
            def stream() -> Iterator[bytes]:
                yield (json.dumps({"command": command.payload()}) + "\n").encode()
                for record in command.records():
                    yield (json.dumps(record) + "\n").encode()
                yield (json.dumps({"command": command.payload()}) + "\n").encode()

            return Response(stream(), mimetype="application/x-ndjson")
        return _json({"command": command.payload()})

    def _find_command(self, sid: str, cid: str) -> FakeCommand:
        with self.lock:
            for box in self.boxes.values():
                if cid in box.commands and box.session_id == sid:
                    return box.commands[cid]
        raise _Gone()

    def _command(self, request: Request, sid: str, cid: str) -> Response:
        command = self._find_command(sid, cid)
        if request.args.get("wait") == "true":
            command.done.wait()
        return _json({"command": command.payload()})

    def _logs(self, request: Request, sid: str, cid: str) -> Response:
        command = self._find_command(sid, cid)
        stream = (json.dumps(record).encode() + b"\n" for record in command.records())
        return Response(stream, mimetype="application/x-ndjson")

    def _kill(self, request: Request, sid: str, cid: str) -> Response:
        command = self._find_command(sid, cid)
        body = json.loads(request.get_data() or b"{}")
        command.kill(int(body.get("signal") or signal.SIGKILL))
        return _json({"command": command.payload()})

    # files -------------------------------------------------------------------------------------
    def _path(self, box: FakeBox, path: str, cwd: str | None) -> Path:
        return Path(cwd or box.root, path)

    def _read(self, request: Request, sid: str) -> Response:
        body = json.loads(request.get_data())
        with self.lock:
            target = self._path(self._session_box(sid), body["path"], body.get("cwd"))
        if not target.is_file():
            return _error(404, "file_not_found", f"{body['path']} does not exist")
        return Response(target.read_bytes(), mimetype="application/octet-stream")

    def _write(self, request: Request, sid: str) -> Response:
        with self.lock:
            box = self._session_box(sid)
        base = Path(request.headers.get("x-cwd") or box.root)
        archive = tarfile.open(fileobj=io.BytesIO(gzip.decompress(request.get_data())), mode="r:")
        for member in archive.getmembers():
            target = base / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                extracted = archive.extractfile(member)
                target.write_bytes(extracted.read() if extracted else b"")
        return _json({})

    def _mkdir(self, request: Request, sid: str) -> Response:
        body = json.loads(request.get_data())
        with self.lock:
            target = self._path(self._session_box(sid), body["path"], body.get("cwd"))
        target.mkdir(parents=bool(body.get("recursive", True)), exist_ok=True)
        return _json({})
