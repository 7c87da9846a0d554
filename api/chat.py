"""POST /api/chat: one turn of the caller's conversation, as SSE or as one JSON answer."""

from flask import Response, request

from api._http import create_app, current, json_body, json_response
from lib.errors import InvalidRequest, PayloadTooLarge
from lib.options import for_turn
from lib.streaming import to_json, to_sse

app = create_app(__name__)


@app.post("/api/chat")
def chat() -> Response:
    svc, user_id = current()
    body = json_body(svc.settings.max_body_bytes)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest('"prompt" must be a non-empty string')
    if len(prompt) > svc.settings.max_prompt_chars:
        raise PayloadTooLarge(f'"prompt" is over {svc.settings.max_prompt_chars} characters')
    options = for_turn(svc.settings.agent, body.get("options"), svc.settings.client_options,
                       svc.settings.max_prompt_chars)
    turn = svc.turns.start(user_id, prompt, options)
    if request.accept_mimetypes.best_match(["application/json", "text/event-stream"]) == (
        "text/event-stream"
    ):
        response = Response(to_sse(turn.events()), mimetype="text/event-stream")
        response.headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.call_on_close(turn.close)
        return response
    status, answer = to_json(turn.events())
    response = json_response(answer, status)
    response.headers["Server-Timing"] = ", ".join(
        f"{phase};dur={ms}" for phase, ms in turn.timings.items())
    return response
