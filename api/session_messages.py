"""GET /api/session/messages: the `default` conversation's messages (the one bodies without a
chat id go to), as `GET /api/chats/default/messages` answers them.

vercel.json rewrites /api/session/messages here; both paths are routed because Vercel may show
the function either the original path or the rewritten one.
"""

from flask import Response

from api._http import create_app, current, messages_page
from lib.state import DEFAULT_CHAT

app = create_app(__name__)


@app.get("/api/session/messages")
@app.get("/api/session_messages")
def messages() -> Response:
    svc, user_id = current()
    return messages_page(svc.chats.messages(user_id, DEFAULT_CHAT))
