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


class IdentityProviderUnavailableError(Exception):
    """The identity provider's keys cannot be fetched: no token of it can be checked now."""


class OidcVerifier:
    """Tokens of the OEM's identity provider, checked against its published keys (RS256/ES256).

    The issuer, the audience (this API's client id at the provider) and the expiry are required
    and checked; the signing key is the provider's key of the token's ``kid``, from its JWKS
    (cached five minutes, fetched again for a ``kid`` it does not hold, at most once a cooldown).
    The role is the strongest staff role named in the role claim, a dotted path for nested claims
    (Entra ID: ``roles``; Keycloak: ``realm_access.roles``); portal users are the API's own.
    """

    def __init__(self, settings: Settings) -> None:
        if not (settings.oidc_issuer and settings.oidc_jwks_url and settings.oidc_audience):
            msg = "OIDC needs OEMR_OIDC_ISSUER, OEMR_OIDC_JWKS_URL and OEMR_OIDC_AUDIENCE"
            raise ValueError(msg)
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.role_claim = settings.oidc_role_claim
        self.tenant_claim = settings.oidc_tenant_claim
        self._keys = jwt.PyJWKClient(settings.oidc_jwks_url, cache_keys=True, lifespan=300,
                                     timeout=5)

    def principal(self, token: str, *, tenants: list[str]) -> Principal:
        """The staff principal a valid token of the provider stands for.

        Blocking (the keys may be fetched over HTTP): call it from a thread. ``tenants`` are
        those this API serves; a token must name one in its tenant claim unless there is one.
        """
        claims = self._claims(token)
        names = _claim(claims, self.role_claim)
        granted = names if isinstance(names, list) else [names]
        role = next((r for r in STAFF if r in granted), None)
        if role is None:
            raise CredentialsError(f"the token's {self.role_claim!r} claim grants no role of "
                                   f"this API ({', '.join(STAFF)})")
        tenant = claims.get(self.tenant_claim)
        if tenant is None and len(tenants) != 1:
            # Never a default among several: the token would land in whichever sorts first.
            raise CredentialsError(f"the token names no tenant (claim {self.tenant_claim!r}) and "
                                   "this API serves several")
        return Principal(subject=str(claims.get("preferred_username") or claims["sub"]),
                         role=role, tenant=str(tenant if tenant is not None else tenants[0]))

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=["RS256", "ES256"], issuer=self.issuer,
                audience=self.audience, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.PyJWKClientConnectionError as exc:
            raise IdentityProviderUnavailableError(str(exc)) from None
        except jwt.ExpiredSignatureError:
            raise CredentialsError("the identity provider's token has expired") from None
        except jwt.PyJWTError as exc:
            raise CredentialsError(f"the identity provider's token is not valid: {exc}") from None
        return claims


def _claim(claims: dict[str, Any], path: str) -> Any:
    """The claim at a dotted ``path`` (``realm_access.roles``), None where there is none."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


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
