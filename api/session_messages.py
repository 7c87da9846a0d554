"""GET /api/session/messages: the caller's conversation, read from the durable transcript
without touching the sandbox. `?limit=` (1-200, default 50) newest messages before `?before=`.

vercel.json rewrites /api/session/messages here; both paths are routed because Vercel may show
the function either the original path or the rewritten one.
"""

from dataclasses import asdict

from flask import Response, request

from api._http import create_app, current, json_response
from lib.conversation import page
from lib.errors import InvalidRequest, NotFound

app = create_app(__name__)
MAX_LIMIT = 200


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


@app.get("/api/session/messages")
@app.get("/api/session_messages")
def messages() -> Response:
    svc, user_id = current()
    limit = _int_arg("limit", 50, 1, MAX_LIMIT)
    before = _int_arg("before", None, 0, 10**9)
    conversation = svc.turns.conversation(user_id)
    if conversation is None:
        raise NotFound("no conversation yet: POST /api/chat starts one")
    shown, earlier = page(conversation, limit or 50, before)
    return json_response({"messages": [asdict(m) for m in shown], "next_before": earlier})
