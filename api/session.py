"""GET /api/session: the caller as a whole (their conversations, their sandbox). DELETE:
forget everything: every conversation and transcript, the record, and the sandbox."""

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
    _, chats = svc.chats.list(user_id, 0, 1)
    answer = {"chats": chats, "created_at": view.created_at,
              "last_active_at": view.last_active_at,
              "sandbox": {"status": view.sandbox_status or "missing"}}
    if view.default is not None:  # the conversation of clients that send no chat id
        answer.update(session_id=view.default.session_id, turns=view.default.turns)
    return json_response(answer)


@app.delete("/api/session")
def forget() -> Response:
    svc, user_id = current()
    svc.turns.forget(user_id)
    return Response(status=204)
