"""Requests and answers of logging in and of the admin's users, keys and audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.security import Role


class Login(BaseModel):
    """A user's credentials; ``tenant`` may be left out where the API serves one tenant."""

    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)
    tenant: str | None = Field(default=None, max_length=40)


class Token(BaseModel):
    """A bearer token (RFC 6750) and what it grants."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the RFC 6750 scheme name)
    expires_in: int = Field(description="seconds")
    role: Role
    tenant: str
    customer_id: int | None = None


class Me(BaseModel):
    """The caller, as the API sees it."""

    subject: str
    role: Role
    tenant: str
    customer_id: int | None
    user_id: int | None
    key_id: int | None


def _portal_needs_customer(role: Role | None, customer_id: int | None) -> None:
    if role == "customer" and customer_id is None:
        msg = "a customer (portal) user needs customer_id"
        raise ValueError(msg)
    if role not in (None, "customer") and customer_id is not None:
        msg = "only customer (portal) users belong to a customer"
        raise ValueError(msg)


class NewUser(BaseModel):
    """A user to create (or to reset, when the username exists)."""

    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=r"^[A-Za-z0-9._@-]{1,100}$")
    password: str = Field(min_length=12, max_length=1000)
    role: Role
    customer_id: int | None = Field(default=None, ge=1, le=2**31 - 1)

    @model_validator(mode="after")
    def _customer(self) -> NewUser:
        _portal_needs_customer(self.role, self.customer_id)
        return self


class UserChange(BaseModel):
    """What to change of a user; what is left out stays."""

    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    customer_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=12, max_length=1000)

    @model_validator(mode="after")
    def _customer(self) -> UserChange:
        if self.role is not None:
            _portal_needs_customer(self.role, self.customer_id)
        return self


class User(BaseModel):
    """A user (never its password hash)."""

    id: int
    username: str
    role: Role
    customer_id: int | None
    disabled: bool
    created_at: datetime


class NewApiKey(BaseModel):
    """A key to create for a program."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: Role
    customer_id: int | None = Field(default=None, ge=1, le=2**31 - 1)

    @model_validator(mode="after")
    def _customer(self) -> NewApiKey:
        _portal_needs_customer(self.role, self.customer_id)
        return self


class ApiKey(BaseModel):
    """A key as listed: its public prefix, never its secret."""

    id: int
    prefix: str
    name: str
    role: Role
    customer_id: int | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class CreatedApiKey(ApiKey):
    """A key just created: ``key`` is shown this once and cannot be read again."""

    key: str


class AuditEntry(BaseModel):
    """One write through the API."""

    id: int
    at: datetime
    actor: str
    actor_role: str
    action: str
    entity: str
    entity_id: str | None
    before: Any
    after: Any
    request_id: str | None
