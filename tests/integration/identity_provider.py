"""An OEM's identity provider for tests: an RSA key pair whose public half a real HTTP server on
loopback serves as a JWKS document, and tokens signed with it (OIDC, as Keycloak or Entra ID
issue them)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://login.example-oem.test/realms/service"
AUDIENCE = "oem-retention"
KID = "oem-key-1"


class _Jwks(BaseHTTPRequestHandler):
    document: bytes = b""
    fetched = 0

    def do_GET(self) -> None:
        type(self).fetched += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.document)))
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's output is not the place for an access log."""


class IdentityProvider:
    """The provider: its signing key, where its keys are published, and its tokens."""

    def __init__(self, key: rsa.RSAPrivateKey, jwks_url: str, jwks: type[_Jwks]) -> None:
        self.key = key
        self.jwks_url = jwks_url
        self._jwks = jwks

    @property
    def fetched(self) -> int:
        """How often its JWKS was fetched."""
        return self._jwks.fetched

    def settings(self) -> dict[str, str]:
        """The API's settings that trust it (for ``running_api``)."""
        return {"oidc_issuer": ISSUER, "oidc_jwks_url": self.jwks_url,
                "oidc_audience": AUDIENCE}

    def token(self, *, key: rsa.RSAPrivateKey | None = None, kid: str = KID,
              **claims: Any) -> str:
        """A token of the provider (its key unless ``key``), with ``claims`` over the defaults."""
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "f3c1-77aa", "iat": now,
                "exp": now + 300, "preferred_username": "jane.fitter@example-oem.test",
                "roles": ["service"], **claims}
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": kid})


@contextmanager
def identity_provider() -> Iterator[IdentityProvider]:
    """A provider whose JWKS is served on loopback until the block ends."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    handler = type("Jwks", (_Jwks,), {"document": json.dumps(
        {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}).encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield IdentityProvider(key, f"http://127.0.0.1:{server.server_address[1]}"
                               "/protocol/openid-connect/certs", handler)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
