"""GET /api/health: is the function configured and does the state store answer?"""

from flask import Response

from api._http import create_app, json_response, services_for_request
from lib.errors import ServiceError

app = create_app(__name__)


@app.get("/api/health")
def health() -> Response:
    try:
        redis_ok = services_for_request().state.ping()
    except ServiceError as error:
        return json_response({"ok": False, "redis": "down", **error.to_json()}, error.status)
    return json_response({"ok": redis_ok, "redis": "ok" if redis_ok else "down"},
                         200 if redis_ok else 503)
