"""An OEM's own identity provider, made by the test.

An RSA key pair whose public half is served as a JWKS document by a real HTTP server on loopback,
and an API started with its issuer, JWKS address and audience. Its tokens with a staff role are
let in with that role; every other token of it is a 401 problem+json.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.api_server import ApiServer, fresh_database, problem, running_api
from tests.integration.identity_provider import (
    AUDIENCE,
    ISSUER,
    KID,
    IdentityProvider,
    identity_provider,
)


@dataclass(frozen=True)
class Provider:
    """The test's identity provider and an API that trusts it."""

    idp: IdentityProvider
    api: ApiServer

    def token(self, **kwargs: Any) -> str:
        """A token of the provider."""
        return self.idp.token(**kwargs)


@pytest.fixture(scope="module")
def provider(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """The provider's JWKS on loopback and an API over a database of its own that trusts it."""
    log: Path = tmp_path_factory.mktemp("oidc") / "api.log"
    with identity_provider() as idp, fresh_database(template_db) as url, running_api(
            url, log=log, **idp.settings()) as api:
        yield Provider(idp, api)


def test_a_token_of_the_provider_with_a_staff_role_is_let_in(provider: Provider) -> None:
    with provider.api.client(token=provider.token()) as client:
        me = client.get("/auth/me")
        assert me.status_code == 200, me.text
        assert me.json() == {"subject": "jane.fitter@example-oem.test", "role": "service",
                             "tenant": "default", "customer_id": None, "user_id": None,
                             "key_id": None}
        # The role's reach, not more: service reads data quality, not the admin's users.
        assert client.get("/quality/dead-letters").status_code == 200
        assert "may not" in problem(client.get("/admin/users"), 403)["detail"]
    assert provider.idp.fetched >= 1


def test_the_strongest_staff_role_granted_counts(provider: Provider) -> None:
    token = provider.token(roles=["viewer", "admin", "offline_access"])
    with provider.api.client(token=token) as client:
        assert client.get("/auth/me").json()["role"] == "admin"
        assert client.get("/admin/users").status_code == 200


def test_a_nested_role_claim_is_not_read_unless_configured(provider: Provider) -> None:
    # Keycloak's realm roles sit under realm_access; this API was set up with 'roles'.
    token = provider.token(roles=None, realm_access={"roles": ["admin"]})
    with provider.api.client(token=token) as client:
        assert "grants no role" in problem(client.get("/auth/me"), 401)["detail"]


def test_other_tokens_of_the_provider_are_refused(provider: Provider) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    public_pem = provider.idp.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    cases = {
        "wrong audience": (provider.token(aud="another-application"), "Audience"),
        "expired": (provider.token(exp=now - 60, iat=now - 400), "expired"),
        "unknown kid": (provider.token(kid="rotated-away"), "not valid"),
        "role of no staff": (provider.token(roles=["customer", "offline_access"]),
                             "grants no role"),
        "no role claim": (provider.token(roles=None), "grants no role"),
        "another key": (provider.token(key=other_key), "not valid"),
        "no audience": (provider.token(aud=None), "not valid"),
        # The public key used as an HMAC secret: the old algorithm-confusion forgery.
        "HS256 with the public key": (_hs256_forgery(public_pem, now), "not valid"),
    }
    for name, (token, why) in cases.items():
        with provider.api.client(token=token) as client:
            body = problem(client.get("/auth/me"), 401)
        assert why in body["detail"], (name, body)


def _hs256_forgery(public_pem: bytes, now: int) -> str:
    """A token signed with HMAC keyed by the provider's public key.

    PyJWT refuses to make one itself, so it is put together by hand.
    """

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
    claims = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 300,
                             "roles": ["admin"]}).encode())
    signature = hmac.new(public_pem, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


def test_a_provider_whose_keys_cannot_be_fetched_is_a_503(provider: Provider,
                                                          tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}/certs"
    settings = {**provider.idp.settings(), "oidc_jwks_url": nowhere}
    with running_api(provider.api.database_url, log=tmp_path / "api.log", **settings) as api, \
            api.client(token=provider.token()) as client:
        answer = client.get("/auth/me")
        body = problem(answer, 503)
        assert "identity provider" in body["detail"] and answer.headers["retry-after"]
        # The API's own users are not held up by it.
        with api.client("viewer") as own:
            assert own.get("/auth/me").status_code == 200
