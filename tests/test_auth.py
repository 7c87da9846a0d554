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
        bearer(token(sub="\ud800")),  # a lone surrogate: JSON allows it, the user hash not
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


class TestJwks:
    """RS256/ES256 tokens from an identity provider, checked against its JWKS URL (served here)."""

    @pytest.fixture
    def idp(self):
        import json as _json

        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        from lib.auth import _jwks
        from lib.devtools.serving import serve_in_background

        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        keys = []
        for kid, key, algorithm in (("r1", rsa_key, jwt.algorithms.RSAAlgorithm),
                                    ("e1", ec_key, jwt.algorithms.ECAlgorithm)):
            jwk = _json.loads(algorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig"})
        body = _json.dumps({"keys": keys}).encode()

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]

        server = serve_in_background(app)
        _jwks.cache_clear()
        yield server, rsa_key, ec_key
        server.stop()
        _jwks.cache_clear()

    def jwks_settings(self, url: str):
        return settings(AUTH_JWT_SECRET="", AUTH_JWKS_URL=url, USER_HASH_SECRET="h" * 40)

    def test_rs256_and_es256_tokens_are_accepted(self, idp):
        server, rsa_key, ec_key = idp
        s = self.jwks_settings(f"{server.url}/jwks.json")
        claims = {"sub": "idp-user", "exp": time.time() + 60}
        for key, alg, kid in ((rsa_key, "RS256", "r1"), (ec_key, "ES256", "e1")):
            signed = jwt.encode(claims, key, alg, headers={"kid": kid})
            assert identify(bearer(signed), s) == "idp-user"

    def test_unknown_keys_and_switched_algorithms_are_refused(self, idp):
        from cryptography.hazmat.primitives.asymmetric import rsa

        server, rsa_key, _ = idp
        s = self.jwks_settings(f"{server.url}/jwks.json")
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        claims = {"sub": "u", "exp": time.time() + 60}
        for forged in (jwt.encode(claims, stranger, "RS256", headers={"kid": "r1"}),
                       jwt.encode(claims, stranger, "RS256", headers={"kid": "nope"}),
                       jwt.encode(claims, "x" * 40, "HS256", headers={"kid": "r1"})):
            with pytest.raises(Unauthorized):
                identify(bearer(forged), s)

    def test_an_unreachable_jwks_is_503_not_401(self, idp):
        from lib.errors import AuthUnavailable
        from tests.conftest import free_port

        _, rsa_key, _ = idp
        s = self.jwks_settings(f"http://127.0.0.1:{free_port()}/jwks.json")
        signed = jwt.encode({"sub": "u", "exp": time.time() + 60}, rsa_key, "RS256",
                            headers={"kid": "r1"})
        with pytest.raises(AuthUnavailable):
            identify(bearer(signed), s)

    def test_a_kid_naming_a_key_of_another_type_is_401(self, idp):
        server, rsa_key, ec_key = idp
        s = self.jwks_settings(f"{server.url}/jwks.json")
        claims = {"sub": "u", "exp": time.time() + 60}
        for signed in (jwt.encode(claims, rsa_key, "RS256", headers={"kid": "e1"}),
                       jwt.encode(claims, ec_key, "ES256", headers={"kid": "r1"})):
            with pytest.raises(Unauthorized):
                identify(bearer(signed), s)

    @pytest.mark.parametrize("answer", [b"<html>Service Unavailable</html>", b'{"keys": []}',
                                        b'{"keys": "nope"}'])
    def test_a_jwks_that_is_not_a_usable_key_set_is_503_for_everyone(self, idp, answer):
        from lib.auth import _jwks
        from lib.devtools.serving import serve_in_background
        from lib.errors import AuthUnavailable

        _, rsa_key, _ = idp

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/html")])
            return [answer]

        server = serve_in_background(app)
        try:
            _jwks.cache_clear()
            s = self.jwks_settings(f"{server.url}/jwks.json")
            signed = jwt.encode({"sub": "u", "exp": time.time() + 60}, rsa_key, "RS256",
                                headers={"kid": "r1"})
            with pytest.raises(AuthUnavailable):
                identify(bearer(signed), s)
        finally:
            server.stop()
            _jwks.cache_clear()
