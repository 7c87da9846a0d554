"""Every /api/... path that no function serves (vercel.json's last rewrite sends them here): the
JSON 404 the endpoints give, instead of Vercel's own NOT_FOUND page. Vercel applies rewrites
after its filesystem (static files, then functions), so this catches only what nothing else
does; the dev server routes the same way (lib/devtools/dev_server.py)."""

from flask import Response
from werkzeug.exceptions import NotFound

from api._http import create_app

app = create_app(__name__)

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@app.route("/api/<path:anything>", methods=_METHODS)
def not_found(anything: str) -> Response:
    raise NotFound(f"no endpoint at /api/{anything}; see /api/openapi.json")
