"""What every function shares: a Flask app whose every error is JSON, and request helpers.

Files starting with `_` are not deployed as functions by Vercel; this one is imported by them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from lib import logs
from lib.conversation import Message, page
from lib.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from lib.bootstrap import Services

log = logging.getLogger("agent.api")


def create_app(name: str) -> Flask:
    logs.configure()
    app = Flask(name)
    app.config["SERVICES"] = None  # None: built from the environment; tests put their own here

    @app.before_request
    def start() -> None:
        g.started = time.perf_counter()
        g.request_id = request.headers.get("x-vercel-id") or uuid.uuid4().hex
        logs.request_id.set(g.request_id)

    @app.after_request
    def finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.request_id
        cors(response)
        logs.event(log, "request", method=request.method, path=request.path,
                   status=response.status_code,
                   duration_ms=round((time.perf_counter() - g.started) * 1000, 1))
        return response

    @app.errorhandler(ServiceError)
    def service_error(error: ServiceError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        body = {"error": {"code": code, "message": error.description or error.name}}
        response = json_response(body, error.code or 500)
        if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(ServiceError("internal error"))

    return app


# What a browser on an allowed origin may send and read (the UI stream's header, Retry-After).
_CORS_REQUEST_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-User-Id"
_CORS_EXPOSED = "Retry-After, X-Request-Id, x-vercel-ai-ui-message-stream"


def cors(response: Response) -> None:
    """CORS for the origins in CORS_ORIGINS (exact; none by default): a preflight (OPTIONS,
    answered by Flask) gets the methods and headers; every answer, errors too, is readable."""
    origin = request.headers.get("Origin")
    if not origin:
        return
    try:
        allowed = services_for_request().settings.cors_origins
    except ServiceError:  # misconfigured: no CORS, the error stays readable in the logs
        return
    response.headers.add("Vary", "Origin")
    if origin not in allowed:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSED
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = response.headers.get(
            "Allow", "GET, POST, PATCH, DELETE, OPTIONS")
        response.headers["Access-Control-Allow-Headers"] = _CORS_REQUEST_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def error_response(error: ServiceError) -> Response:
    response = json_response(error.to_json(), error.status)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def services_for_request() -> Services:
    """The process's services (built on the first request: the clients and the JWT library
    are imported then, not when the function module is imported)."""
    from lib.bootstrap import services

    svc: Services = current_app.config["SERVICES"] or services()
    if svc.settings.sandbox_backend == "vercel" and "x-vercel-oidc-token" in request.headers:
        from lib.sandboxes.vercel import bind_request_headers

        bind_request_headers(request.headers)
    return svc


def current() -> tuple[Services, str]:
    """The services and the authenticated caller's user id (Unauthorized if none)."""
    from lib.auth import identify

    svc = services_for_request()
    return svc, identify(request.headers, svc.settings)


def int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    """A query argument that must be an integer in [low, high] (400 otherwise)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12) or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def messages_page(messages: list[Message] | None) -> Response:
    """`?limit=` (1-200, default 50) messages before `?before=` (default: the newest), with the
    cursor of the page before them; 404 when there is no such conversation."""
    limit = int_arg("limit", 50, 1, 200) or 50
    before = int_arg("before", None, 0, 10**9)
    if messages is None:
        raise NotFound("no such conversation yet: POST /api/chat starts one")
    shown, earlier = page(messages, limit, before)
    return json_response({"messages": [asdict(m) for m in shown], "next_before": earlier})


def json_body(max_bytes: int) -> dict[str, Any]:
    """The request's JSON object, or a 413/415/400 error saying what is wrong."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the body is over {max_bytes} bytes")
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send Content-Type: application/json")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"the body is over {max_bytes} bytes")
    try:
        body = json.loads(raw)
    except ValueError as error:  # also numbers over Python's 4,300 digits
        raise InvalidRequest(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body
