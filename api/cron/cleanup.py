"""GET /api/cron/cleanup: the scheduled sweep (vercel.json `crons`). Vercel sends
`Authorization: Bearer $CRON_SECRET`; anything else gets 401 and changes nothing."""

import hmac
from dataclasses import asdict

from flask import Response, request

from api._http import create_app, json_response, services_for_request
from lib.errors import ConfigError, Unauthorized

app = create_app(__name__)


@app.get("/api/cron/cleanup")
def cleanup() -> Response:
    svc = services_for_request()
    secret = svc.settings.cron_secret
    if not secret:
        raise ConfigError("CRON_SECRET is not set: the cleanup endpoint refuses to run without it")
    given = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(given, f"Bearer {secret}".encode()):
        raise Unauthorized("send Authorization: Bearer <CRON_SECRET>")
    return json_response(asdict(svc.cleanup.run()))
