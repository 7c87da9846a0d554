"""POST /api/chat: one turn of one of the caller's conversations.

Body `{"prompt": ..., "chat_id"?: ...}`, or the body `useChat` sends (`{id, messages, trigger,
messageId}`: `id` names the chat, the newest user message is the prompt and its `id` is kept as
that message's id; the server owns the history, earlier messages are not read). Without a chat
id the turn goes to the `default` conversation. The answer is the AI SDK UI message stream when
the client asks for `text/event-stream` or sends a `useChat` body, else one JSON object.
`trigger: "regenerate-message"` (useChat's `regenerate()`) answers the newest prompt again: the
conversation is rewound to before its answer, which the model no longer sees.

GET /api/chat/{id}/stream: the running turn's stream again, from its stream log (what
`useChat({resume: true})` calls on mount): the whole of it, or after `Last-Event-ID`; 204 when
no turn runs. POST /api/chat/{id}/stop: the running turn stops (from any instance) and keeps
what it said; 204 when nothing runs. vercel.json rewrites /api/chat/* here.
"""

import time

from flask import Response, request

from api._http import create_app, current, json_body, json_response
from lib.auth import user_hash
from lib.chats import chat_id
from lib.errors import InvalidRequest, PayloadTooLarge, TurnInProgress
from lib.options import for_turn
from lib.state import DEFAULT_CHAT
from lib.streaming import UI_STREAM_HEADERS, sse, to_json, to_ui_stream

app = create_app(__name__)


def newest_user_message(body: dict) -> tuple[str, str | None]:
    """The prompt and the client's id for it, from a plain or a `useChat` body."""
    if "prompt" in body or "messages" not in body:
        prompt, message_id = body.get("prompt"), None
    else:
        messages = body["messages"]
        newest = next((m for m in reversed(messages) if isinstance(m, dict)
                       and m.get("role") == "user"), None) if isinstance(messages, list) else None
        if newest is None:
            raise InvalidRequest('"messages" must hold at least one user message')
        parts = newest.get("parts")
        if not isinstance(parts, list):
            raise InvalidRequest('the newest user message must have "parts"')
        texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
        if not all(isinstance(text, str) for text in texts):
            raise InvalidRequest('the "text" of a text part must be a string')
        prompt = "".join(texts)
        message_id = newest.get("id")
        if message_id is not None and (not isinstance(message_id, str) or len(message_id) > 128):
            raise InvalidRequest("a message id is a string of at most 128 characters")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest('"prompt" must be a non-empty string')
    return prompt, message_id


@app.post("/api/chat")
def chat() -> Response:
    svc, user_id = current()
    body = json_body(svc.settings.max_body_bytes)
    trigger = body.get("trigger", "submit-message")
    if trigger not in ("submit-message", "regenerate-message"):
        raise InvalidRequest('"trigger" must be "submit-message" or "regenerate-message"')
    prompt, message_id = newest_user_message(body)
    if len(prompt) > svc.settings.max_prompt_chars:
        raise PayloadTooLarge(f'"prompt" is over {svc.settings.max_prompt_chars} characters')
    named = body.get("id") if "messages" in body else body.get("chat_id")
    chat = DEFAULT_CHAT if named is None else chat_id(named)
    options = for_turn(svc.settings.agent, body.get("options"), svc.settings.client_options,
                       svc.settings.max_prompt_chars)
    try:
        turn = svc.turns.start(user_id, prompt, options, chat, message_id,
                               regenerate=trigger == "regenerate-message")
    except TurnInProgress as busy:  # name the running turn: a client can attach to it
        busy.details = {"chat_id": chat, "stream": f"/api/chat/{chat}/stream",
                        "stop": f"/api/chat/{chat}/stop"}
        raise
    wants_stream = request.accept_mimetypes.best_match(
        ["application/json", "text/event-stream"]) == "text/event-stream"
    if wants_stream or "messages" in body:
        response = Response(to_ui_stream(turn.events(), turn.message_id, turn.live),
                            mimetype="text/event-stream", headers=UI_STREAM_HEADERS)
        response.call_on_close(turn.close)
        response.call_on_close(turn.live.close)
        return response
    status, answer = to_json(turn.events(), turn.live)
    if status == 200:
        answer = {"chat_id": chat, "message_id": turn.message_id, **answer}
    response = json_response(answer, status)
    response.headers["Server-Timing"] = ", ".join(
        f"{phase};dur={ms}" for phase, ms in turn.timings.items())
    return response


@app.get("/api/chat/<chat>/stream")
def resume(chat: str) -> Response:
    svc, user_id = current()
    chat = chat_id(chat)
    seen = request.headers.get("Last-Event-ID", "")
    start = int(seen) + 1 if seen.isascii() and seen.isdigit() and len(seen) <= 9 else None
    user = user_hash(user_id, svc.settings)
    deadline = time.monotonic() + svc.settings.function_max_duration - 5
    parts = svc.streamlog.follow(user, chat, start, deadline)
    first = next(parts, None)
    if first is None:
        return Response(status=204)

    def stream():
        yield sse(first[1], first[0])
        for index, data in parts:
            yield sse(data, index)

    return Response(stream(), mimetype="text/event-stream", headers=UI_STREAM_HEADERS)


@app.post("/api/chat/<chat>/stop")
def stop(chat: str) -> Response:
    svc, user_id = current()
    chat = chat_id(chat)
    if not svc.streamlog.request_stop(user_hash(user_id, svc.settings), chat):
        return Response(status=204)  # nothing runs: nothing to stop
    return json_response({"stopping": True, "stream": f"/api/chat/{chat}/stream"}, 202)
