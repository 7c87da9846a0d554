"""The OpenAPI document stays true to the functions and the errors the service can answer."""

from __future__ import annotations

import json

from werkzeug.test import Client

import lib.errors
from lib.devtools.dev_server import DevServer, rewrites
from lib.openapi import DOCUMENT, ERROR_CODES


def routes() -> dict[str, set[str]]:
    """Every public path with the methods its function serves. A function reached through an
    exact vercel.json rewrite is public at the rewrite's source only; one reached through a
    prefix rewrite (`/api/chats/:path*`) at its own path and below."""
    server = DevServer()
    hidden = {dest for source, prefix, dest in rewrites() if not prefix and source != dest}
    found: dict[str, set[str]] = {}
    for path, app in server.functions.items():
        if path == "/api/not_found":  # the catch-all of unknown paths: it only answers 404
            continue
        for rule in app.url_map.iter_rules():
            public = rule.rule != path and server.destination(rule.rule) == path
            own = rule.rule == path and path not in hidden
            if rule.endpoint != "static" and (public or own):
                found.setdefault(rule.rule, set()).update(
                    m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    return found


def test_every_route_is_documented_and_nothing_else():
    documented = {path: set(ops) for path, ops in DOCUMENT["paths"].items()}
    assert routes() == documented


def test_every_error_code_the_service_can_answer_is_listed():
    codes = {cls.code for cls in vars(lib.errors).values()
             if isinstance(cls, type) and issubclass(cls, lib.errors.ServiceError)}
    codes |= {"method_not_allowed", "not_found", "daily_limit_reached"}
    assert codes == set(ERROR_CODES)


def test_the_document_is_served():
    response = Client(DevServer()).get("/api/openapi.json")
    assert response.status_code == 200
    assert json.loads(response.data)["openapi"].startswith("3.1")
