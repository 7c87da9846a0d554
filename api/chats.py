"""The caller's conversations:
  GET    /api/chats                  newest activity first: `?limit=` (1-100, default 20),
                                     `?offset=`; answers {chats, total, next_offset}
  GET    /api/chats/{id}             one conversation
  PATCH  /api/chats/{id}             rename it: {"title": ...}
  DELETE /api/chats/{id}             delete it (its transcript and its entry; the sandbox stays)
  POST   /api/chats/{id}/fork        a new conversation whose history ends at a message:
                                     {"message_id", "chat_id"?}; answers 201 with it
  GET    /api/chats/{id}/messages    its messages, paged like /api/session/messages

vercel.json rewrites /api/chats/* here; the function sees the original path.
"""

from dataclasses import asdict

from flask import Response

from api._http import create_app, current, int_arg, json_body, json_response, messages_page
from lib.chats import chat_id
from lib.errors import NotFound

app = create_app(__name__)


def _missing(chat: str) -> NotFound:
    return NotFound(f"no conversation {chat!r}: POST /api/chat with this id starts it")


@app.get("/api/chats")
def index() -> Response:
    svc, user_id = current()
    limit = int_arg("limit", 20, 1, 100) or 20
    offset = int_arg("offset", 0, 0, 10**6) or 0
    chats, total = svc.chats.list(user_id, offset, limit)
    following = offset + len(chats)
    return json_response({"chats": [asdict(c) for c in chats], "total": total,
                          "next_offset": following if following < total else None})


@app.get("/api/chats/<chat>")
def show(chat: str) -> Response:
    svc, user_id = current()
    view = svc.chats.get(user_id, chat_id(chat))
    if view is None:
        raise _missing(chat)
    return json_response(asdict(view))


@app.patch("/api/chats/<chat>")
def rename(chat: str) -> Response:
    svc, user_id = current()
    body = json_body(svc.settings.max_body_bytes)
    view = svc.chats.rename(user_id, chat_id(chat), body.get("title"))
    if view is None:
        raise _missing(chat)
    return json_response(asdict(view))


@app.delete("/api/chats/<chat>")
def delete(chat: str) -> Response:
    svc, user_id = current()
    if not svc.chats.delete(user_id, chat_id(chat)):
        raise _missing(chat)
    return Response(status=204)


@app.post("/api/chats/<chat>/fork")
def fork(chat: str) -> Response:
    svc, user_id = current()
    body = json_body(svc.settings.max_body_bytes)
    new_chat = None if body.get("chat_id") is None else chat_id(body["chat_id"])
    view = svc.chats.fork(user_id, chat_id(chat), body.get("message_id"), new_chat)
    if view is None:
        raise _missing(chat)
    return json_response(asdict(view), 201)


@app.get("/api/chats/<chat>/messages")
def messages(chat: str) -> Response:
    svc, user_id = current()
    return messages_page(svc.chats.messages(user_id, chat_id(chat)))

