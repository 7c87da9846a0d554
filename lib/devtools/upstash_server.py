"""A local server speaking Upstash Redis's REST protocol, so the real `upstash-redis` client runs offline.

Protocol (DESIGN §7): `POST /` one command as a JSON array, `POST /pipeline` (not atomic) and
`POST /multi-exec` (atomic) arrays of commands, `Authorization: Bearer <token>`. Answers are
`{"result": ...}` or `{"error": "ERR ..."}`; with `Upstash-Encoding: base64` every string is
base64 except the status "OK". Backed by fakeredis, or by a real Redis given a `redis://` URL.

    python -m lib.devtools.upstash_server [--port 8079] [--redis-url redis://...]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import re
import threading
from typing import Any

import redis
from redis.client import CaseInsensitiveDict
from werkzeug.wrappers import Request, Response

DEV_TOKEN = "local-dev-token"

# Upstash accepts this first line to lock only the script's keys; stock Redis rejects it.
_UPSTASH_SHEBANG = re.compile(r"^#!lua[^\n]*")
_ERROR_PREFIX = re.compile(r"^[A-Z]+ ")


def _raw_client(redis_url: str | None) -> redis.Redis:
    """A client whose replies are raw RESP2 values: no response callbacks turning them into bools."""
    if redis_url:
        client: redis.Redis = redis.Redis.from_url(redis_url)
    else:
        import fakeredis

        client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), protocol=2)
    client.response_callbacks = CaseInsensitiveDict({})
    return client


def _encode(value: Any, base64_strings: bool) -> Any:
    if isinstance(value, bytes):
        if value == b"OK":
            return "OK"
        if base64_strings:
            return base64.b64encode(value).decode()
        return value.decode(errors="replace")
    if isinstance(value, (list, tuple)):
        return [_encode(item, base64_strings) for item in value]
    if isinstance(value, bool):
        return int(value)
    return value


def _error_text(error: Exception) -> str:
    """redis-py strips the `ERR ` prefix of generic errors; Upstash's clients see it, so restore it."""
    text = str(error)
    return text if _ERROR_PREFIX.match(text) else f"ERR {text}"


def _prepare(command: Any) -> list[Any]:
    if not isinstance(command, list) or not command:
        raise ValueError("ERR a command must be a non-empty JSON array")
    args = [arg if isinstance(arg, (str, int, float)) else json.dumps(arg) for arg in command]
    if str(args[0]).upper() in ("EVAL", "EVAL_RO") and len(args) > 1:
        args[1] = _UPSTASH_SHEBANG.sub("", str(args[1]), count=1)
    return args


class UpstashRestServer:
    """The WSGI app. Like Upstash it refuses requests over `max_request_bytes` (1 MiB, the
    documented limit). `round_trips`, `largest_request` and `largest_response` (bytes) are
    there for tests and benchmarks."""

    def __init__(self, redis_url: str | None = None, token: str = DEV_TOKEN,
                 max_request_bytes: int = 1024 * 1024) -> None:
        self.client = _raw_client(redis_url)
        self.token = token
        self.max_request_bytes = max_request_bytes
        self._counter = itertools.count(1)
        self._count_lock = threading.Lock()
        self.round_trips = 0
        self.largest_request = 0
        self.largest_response = 0

    def __call__(self, environ: dict, start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            return self._answer({"error": "WRONGPASS invalid or missing auth token"}, 401)
        if request.method != "POST":
            return self._answer({"error": "ERR only POST is supported by this stand-in"}, 405)
        raw = request.get_data()
        with self._count_lock:
            self.round_trips += 1
            self.largest_request = max(self.largest_request, len(raw))
        if len(raw) > self.max_request_bytes:
            return self._answer({"error": "ERR max request size exceeded"}, 400)
        b64 = request.headers.get("Upstash-Encoding", "").lower() == "base64"
        try:
            body = json.loads(raw)
        except ValueError:
            return self._answer({"error": "ERR failed to parse command"}, 400)
        path = request.path.rstrip("/")
        if path == "":
            return self._single(body, b64)
        if path in ("/pipeline", "/multi-exec"):
            if not isinstance(body, list) or not body:
                return self._answer({"error": "ERR a pipeline must be a non-empty array"}, 400)
            return self._batch(body, b64, atomic=path == "/multi-exec")
        return self._answer({"error": f"ERR unknown path {request.path}"}, 404)

    def _single(self, command: Any, b64: bool) -> Response:
        try:
            result = self.client.execute_command(*_prepare(command))
        except (redis.ResponseError, ValueError) as error:
            return self._answer({"error": _error_text(error)}, 400)
        return self._answer({"result": _encode(result, b64)}, 200)

    def _batch(self, commands: list[Any], b64: bool, atomic: bool) -> Response:
        try:
            prepared = [_prepare(command) for command in commands]
        except ValueError as error:
            return self._answer({"error": str(error)}, 400)
        pipe = self.client.pipeline(transaction=atomic)
        for args in prepared:
            pipe.execute_command(*args)
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.ResponseError as error:  # e.g. EXECABORT: nothing ran
            return self._answer({"error": _error_text(error)}, 400)
        answers = [
            {"error": _error_text(r)} if isinstance(r, Exception) else {"result": _encode(r, b64)}
            for r in results
        ]
        return self._answer(answers, 200)

    def _answer(self, body: Any, status: int) -> Response:
        text = json.dumps(body)
        with self._count_lock:
            self.largest_response = max(self.largest_response, len(text))
        response = Response(text, status=status, mimetype="application/json")
        response.headers["Upstash-Sync-Token"] = str(next(self._counter))
        return response


def main() -> None:
    from lib.devtools.serving import serve_in_background

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8079)
    parser.add_argument("--redis-url", default=None, help="use a real Redis instead of fakeredis")
    parser.add_argument("--token", default=DEV_TOKEN)
    args = parser.parse_args()
    server = serve_in_background(UpstashRestServer(args.redis_url, args.token), args.port)
    print(f"Upstash REST stand-in on {server.url} (token {args.token!r})", flush=True)
    server.thread.join()


if __name__ == "__main__":
    main()
