"""GET /api/session: the caller's conversation record. DELETE: forget it and its sandbox."""

from flask import Response

from api._http import create_app, current, json_response
from lib.errors import NotFound

app = create_app(__name__)


@app.get("/api/session")
def show() -> Response:
    svc, user_id = current()
    view = svc.turns.describe(user_id)
    if view is None:
        raise NotFound("no conversation yet: POST /api/chat starts one")
    return json_response({
        "session_id": view.session_id,
        "turns": view.turns,
        "created_at": view.created_at,
        "last_active_at": view.last_active_at,
        "sandbox": {"status": view.sandbox_status or "missing"},
    })


@app.delete("/api/session")
def forget() -> Response:
    svc, user_id = current()
    svc.turns.forget(user_id)
    return Response(status=204)
