"""Who is calling: a user id from a verified JWT (`sub`), or, for local use only, `X-User-Id`.

A client never names a session or a sandbox: everything is derived from this id through
`user_hash`, a keyed hash, so ids never appear in Redis keys or sandbox names.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

import jwt

from lib.config import Settings
from lib.errors import Unauthorized

_DEV_USER_ID = re.compile(r"^[A-Za-z0-9._@:+-]{1,128}$")
MAX_SUBJECT_CHARS = 256


def identify(headers: Mapping[str, str], settings: Settings) -> str:
    if settings.auth_mode == "dev":
        user_id = headers.get("X-User-Id", "")
        if not _DEV_USER_ID.match(user_id):
            raise Unauthorized(
                "AUTH_MODE=dev: send X-User-Id with 1-128 characters of A-Z a-z 0-9 . _ @ : + -"
            )
        return user_id
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <JWT>")
    try:
        claims = jwt.decode(
            token.strip(),
            settings.jwt_secret,
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway,
            options={"require": ["sub", "exp"], "verify_aud": settings.jwt_audience is not None},
        )
    except jwt.PyJWTError as error:
        raise Unauthorized(f"invalid token: {error}") from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_CHARS:
        raise Unauthorized(f"invalid token: sub must be a string of 1-{MAX_SUBJECT_CHARS} chars")
    return subject


def user_hash(user_id: str, settings: Settings) -> str:
    return hmac.new(settings.user_hash_key.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:32]
