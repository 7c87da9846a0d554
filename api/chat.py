"""POST /api/chat: one turn of the caller's conversation.

Body `{"prompt": ...}`, or the body `useChat` sends (`messages` with `parts`: the newest user
message is the prompt; the server owns the history). The answer is the AI SDK UI message stream
when the client asks for `text/event-stream` or sends a `useChat` body, else one JSON object.
"""

from flask import Response, request

from api._http import create_app, current, json_body, json_response
from lib.errors import InvalidRequest, PayloadTooLarge
from lib.options import for_turn
from lib.streaming import UI_STREAM_HEADERS, to_json, to_ui_stream

app = create_app(__name__)


def prompt_of(body: dict) -> str:
    if "prompt" in body or "messages" not in body:
        prompt = body.get("prompt")
    else:
        messages = body["messages"]
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"] \
            if isinstance(messages, list) else []
        if not users:
            raise InvalidRequest('"messages" must hold at least one user message')
        parts = users[-1].get("parts")
        if not isinstance(parts, list):
            raise InvalidRequest('the newest user message must have "parts"')
        prompt = "".join(p.get("text", "") for p in parts
                         if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest('"prompt" must be a non-empty string')
    return prompt


@app.post("/api/chat")
def chat() -> Response:
    svc, user_id = current()
    body = json_body(svc.settings.max_body_bytes)
    prompt = prompt_of(body)
    if len(prompt) > svc.settings.max_prompt_chars:
        raise PayloadTooLarge(f'"prompt" is over {svc.settings.max_prompt_chars} characters')
    options = for_turn(svc.settings.agent, body.get("options"), svc.settings.client_options,
                       svc.settings.max_prompt_chars)
    turn = svc.turns.start(user_id, prompt, options)
    wants_stream = request.accept_mimetypes.best_match(
        ["application/json", "text/event-stream"]) == "text/event-stream"
    if wants_stream or "messages" in body:
        response = Response(to_ui_stream(turn.events()), mimetype="text/event-stream",
                            headers=UI_STREAM_HEADERS)
        response.call_on_close(turn.close)
        return response
    status, answer = to_json(turn.events())
    response = json_response(answer, status)
    response.headers["Server-Timing"] = ", ".join(
        f"{phase};dur={ms}" for phase, ms in turn.timings.items())
    return response
