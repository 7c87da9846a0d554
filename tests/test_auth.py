from __future__ import annotations

import time

import jwt
import pytest

from lib.auth import identify, user_hash
from lib.errors import Unauthorized
from tests.test_config import settings

SECRET = "s" * 40


def token(secret: str = SECRET, **claims: object) -> str:
    return jwt.encode({"sub": "user-1", "exp": time.time() + 60, **claims}, secret, "HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_a_valid_token_gives_its_subject():
    assert identify(bearer(token()), settings(AUTH_JWT_SECRET=SECRET)) == "user-1"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic abc"},
        bearer("not-a-jwt"),
        bearer(token(secret="w" * 40)),
        bearer(token(exp=time.time() - 3600)),
        bearer(token(nbf=time.time() + 3600)),
        bearer(jwt.encode({"sub": "u"}, SECRET, "HS256")),  # no exp
        bearer(jwt.encode({"exp": time.time() + 60}, SECRET, "HS256")),  # no sub
        bearer(token(sub="")),
        bearer(jwt.encode({"sub": "u", "exp": time.time() + 60}, "", "none")),
    ],
)
def test_a_missing_or_bad_token_is_unauthorized(headers: dict[str, str]):
    with pytest.raises(Unauthorized):
        identify(headers, settings(AUTH_JWT_SECRET=SECRET))


def test_audience_and_issuer_are_checked_when_configured():
    s = settings(AUTH_JWT_SECRET=SECRET, AUTH_JWT_AUDIENCE="app", AUTH_JWT_ISSUER="idp")
    assert identify(bearer(token(aud="app", iss="idp")), s) == "user-1"
    with pytest.raises(Unauthorized):
        identify(bearer(token(aud="other", iss="idp")), s)
    with pytest.raises(Unauthorized):
        identify(bearer(token(aud="app")), s)


def test_dev_mode_takes_a_well_formed_header_only():
    s = settings(AUTH_MODE="dev", AUTH_JWT_SECRET="")
    assert identify({"X-User-Id": "alice@example.com"}, s) == "alice@example.com"
    for bad in ({}, {"X-User-Id": ""}, {"X-User-Id": "a/b"}, {"X-User-Id": "x" * 129}):
        with pytest.raises(Unauthorized):
            identify(bad, s)


def test_the_user_hash_is_keyed_and_stable():
    a, b = settings(AUTH_JWT_SECRET=SECRET), settings(AUTH_JWT_SECRET="t" * 40)
    assert user_hash("u", a) == user_hash("u", a) != user_hash("u", b)
    assert user_hash("u", a) != user_hash("v", a)
