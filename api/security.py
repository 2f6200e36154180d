"""Who is calling.

Passwords (argon2id), the API's bearer tokens (JWT, HS256), API keys for programs, and tokens of
an OEM's own identity provider (OIDC, verified against its JWKS).

Roles: ``admin`` (everything, users and keys), ``service`` (fleet and maintenance, writes
maintenance), ``finance`` (renewals, invoices, value), ``viewer`` (reads what staff read) and
``customer`` (the portal: its own company's machines, contracts and invoices, enforced in the
database by row-level security, docs/tenancy.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.settings import Settings

Role = Literal["admin", "service", "finance", "viewer", "customer"]
ROLES: tuple[Role, ...] = get_args(Role)
STAFF: tuple[Role, ...] = ("admin", "service", "finance", "viewer")

ISSUER = "oem-retention"
AUDIENCE = "oem-retention-api"
KEY_PREFIX = "oemr"

_hasher = PasswordHasher()
# A hash to verify against when the user does not exist, so that a wrong username takes as long
# as a wrong password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Principal:
    """The caller of a request, after authentication."""

    subject: str  # username, key name or the identity provider's subject
    role: Role
    tenant: str
    customer_id: int | None = None
    user_id: int | None = None
    key_id: int | None = None

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        if self.key_id is not None:
            return f"key:{self.key_id}:{self.subject}"
        if self.user_id is not None:
            return f"user:{self.user_id}:{self.subject}"
        return f"oidc:{self.subject}"


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``, with its parameters and salt."""
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> tuple[bool, str | None]:
    """Whether ``password`` matches ``stored``, and a new hash when the parameters changed."""
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False, None
    if stored is None:
        return False, None
    return True, (_hasher.hash(password) if _hasher.check_needs_rehash(stored) else None)


def issue_token(settings: Settings, principal: Principal, *, now: datetime | None = None) -> str:
    """A bearer token for a logged-in user, valid ``api_token_minutes``."""
    now = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": str(principal.user_id), "name": principal.subject,
        "role": principal.role, "tenant": principal.tenant, "iat": now,
        "exp": now + timedelta(minutes=settings.api_token_minutes), "jti": uuid.uuid4().hex}
    if principal.customer_id is not None:
        claims["customer_id"] = principal.customer_id
    return jwt.encode(claims, settings.api_secret_key.get_secret_value(), algorithm="HS256")


class CredentialsError(Exception):
    """Credentials that are malformed, wrong, expired or revoked (the message says which)."""


def read_token(settings: Settings, token: str) -> dict[str, Any]:
    """The claims of one of our own tokens; :class:`CredentialsError` for anything else."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, settings.api_secret_key.get_secret_value(), algorithms=["HS256"],
            audience=AUDIENCE, issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "role", "tenant"]})
    except jwt.ExpiredSignatureError:
        raise CredentialsError("the token has expired: log in again") from None
    except jwt.PyJWTError as exc:
        raise CredentialsError(f"the token is not valid: {exc}") from None
    if claims["role"] not in ROLES:
        raise CredentialsError("the token names no known role")
    return claims


def token_issuer(token: str) -> str | None:
    """The ``iss`` of a JWT, unverified (to choose the key that verifies it)."""
    try:
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return issuer if isinstance(issuer, str) else None


class OidcVerifier:
    """Tokens of the OEM's identity provider, checked against its published keys (RS256/ES256)."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.oidc_issuer and settings.oidc_jwks_url):
            msg = "OIDC needs both OEMR_OIDC_ISSUER and OEMR_OIDC_JWKS_URL"
            raise ValueError(msg)
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.role_claim = settings.oidc_role_claim
        self.tenant_claim = settings.oidc_tenant_claim
        self._keys = jwt.PyJWKClient(settings.oidc_jwks_url, cache_keys=True, lifespan=300)

    def principal(self, token: str, *, default_tenant: str) -> Principal:
        """The staff principal a valid token of the provider stands for."""
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=["RS256", "ES256"], issuer=self.issuer,
                audience=self.audience, options={"require": ["exp", "sub"],
                                                 "verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError:
            raise CredentialsError("the identity provider's token has expired") from None
        except jwt.PyJWTError as exc:
            raise CredentialsError(f"the identity provider's token is not valid: {exc}") from None
        granted = claims.get(self.role_claim)
        names = granted if isinstance(granted, list) else [granted]
        # The strongest staff role the provider grants; portal users are the API's own.
        role = next((r for r in STAFF if r in names), None)
        if role is None:
            raise CredentialsError(f"the token's {self.role_claim!r} claim grants no role of "
                                   f"this API ({', '.join(STAFF)})")
        tenant = claims.get(self.tenant_claim, default_tenant)
        return Principal(subject=str(claims.get("preferred_username") or claims["sub"]),
                         role=role, tenant=str(tenant))


@dataclass(frozen=True)
class NewKey:
    """An API key as shown once to its creator, and what is stored of it."""

    token: str
    prefix: str
    secret_hash: bytes


def new_api_key(tenant: str) -> NewKey:
    """A fresh key ``oemr_<tenant>_<prefix>_<secret>``; the prefix and the secret's hash are kept.

    The tenant is in the key because it says which database holds the key.
    """
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(f"{KEY_PREFIX}_{tenant}_{prefix}_{secret}", prefix, key_hash(secret))


def key_hash(secret: str) -> bytes:
    """SHA-256 of a key's secret part."""
    return hashlib.sha256(secret.encode()).digest()


def split_api_key(token: str) -> tuple[str, str, str] | None:
    """``(tenant, prefix, secret)`` of something shaped like one of our keys, else None."""
    parts = token.split("_", 3)
    if len(parts) != 4 or parts[0] != KEY_PREFIX or not all(parts[1:]):
        return None
    return parts[1], parts[2], parts[3]


def key_matches(stored_hash: bytes, secret: str) -> bool:
    """Whether ``secret`` is the key's, in constant time."""
    return hmac.compare_digest(stored_hash, key_hash(secret))
