"""Who is calling: a user id from a verified JWT (`sub`), or, for local use only, `X-User-Id`.

A client never names a session or a sandbox: everything is derived from this id through
`user_hash`, a keyed hash, so ids never appear in Redis keys or sandbox names.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from lib.config import Settings
from lib.errors import AuthUnavailable, Unauthorized

_DEV_USER_ID = re.compile(r"^[A-Za-z0-9._@:+-]{1,128}$")
MAX_SUBJECT_CHARS = 256
_ALGORITHMS = {"RSA": ["RS256"], "EC": ["ES256"]}


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
    return _verified_subject(token.strip(), settings)


def _verified_subject(token: str, settings: Settings) -> str:
    import jwt  # ~30 ms (cryptography): only where tokens are checked

    try:
        key, algorithms = _key_for(token, settings)
    except jwt.PyJWKClientConnectionError as error:  # the identity provider, not the caller
        raise AuthUnavailable(f"could not fetch the signing keys: {error}") from None
    except (jwt.PyJWKClientError, jwt.PyJWKSetError) as error:
        if "matches" in str(error):  # no key with the token's kid: the caller's token
            raise Unauthorized(f"invalid token: {error}") from None
        # An empty or unusable key set: no caller can be verified, and none is to blame.
        raise AuthUnavailable(f"the identity provider's keys are unusable: {error}") from None
    except jwt.PyJWTError as error:
        raise Unauthorized(f"invalid token: {error}") from None
    except ValueError:  # AUTH_JWKS_URL answered, but not with JSON (an HTML error page...)
        raise AuthUnavailable("AUTH_JWKS_URL did not answer with a JSON key set") from None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway,
            options={"require": ["sub", "exp"], "verify_aud": settings.jwt_audience is not None},
        )
    except jwt.PyJWTError as error:
        raise Unauthorized(f"invalid token: {error}") from None
    subject = claims["sub"]
    if (not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_CHARS
            or not _encodable(subject)):
        raise Unauthorized(f"invalid token: sub must be a string of 1-{MAX_SUBJECT_CHARS} chars")
    return subject


def _encodable(text: str) -> bool:
    """Not a lone surrogate (JSON allows "\\ud800"; UTF-8, and so the user hash, does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@lru_cache(maxsize=4)
def _jwks(url: str) -> Any:
    """One client per process and URL (a jwt.PyJWKClient): it caches the key set (5 min)."""
    import jwt

    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)


def _key_for(token: str, settings: Settings) -> tuple[Any, list[str]]:
    """HS256 tokens are checked with AUTH_JWT_SECRET; RS256/ES256 ones with the JWKS key their
    `kid` names. The algorithm list is fixed per key type, so `alg` cannot be switched."""
    import jwt

    header = jwt.get_unverified_header(token)
    if header.get("alg") == "HS256" and settings.jwt_secret:
        return settings.jwt_secret, ["HS256"]
    if settings.jwks_url:
        jwk = _jwks(settings.jwks_url).get_signing_key_from_jwt(token)
        # Only the algorithm of the key's own type: an RS256 token naming an EC key fails here.
        return jwk.key, _ALGORITHMS.get(jwk.key_type, [])
    raise jwt.InvalidAlgorithmError(f"algorithm {header.get('alg')!r} is not accepted")


def user_hash(user_id: str, settings: Settings) -> str:
    return hmac.new(settings.user_hash_key.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:32]
