"""HTTP to an ERP: retries what is transient, stops with a clear message on what is not.

Every API connector talks through :class:`ErpHttp`. A dropped connection, a timeout, a 5xx
gateway error or throttling (429, or 503 with ``Retry-After``) is retried with exponential
backoff and jitter, honouring ``Retry-After`` up to a cap; when the attempts run out the entity
stops with :class:`SourceUnavailableError` and the next run resumes from its cursor. A refused
login, a missing permission, a bad request or an unknown path cannot heal by waiting: it raises
:class:`PermanentSyncError` at once, with the ERP's own message in it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from erp_connectors.sync import PermanentSyncError, SourceUnavailableError

logger = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class _Transient(Exception):  # noqa: N818 - internal retry signal, never escapes this module
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before giving up on one request."""

    attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    # A Retry-After beyond this is not waited for: the run stops and the schedule tries later.
    max_retry_after_s: float = 120.0
    # How a wait between attempts is spent; a test passes one that records the waits asked for
    # (the delays are the behaviour, not the wall clock).
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), if any.

    >>> retry_after_seconds("7")
    7.0
    >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT",
    ...                     now=datetime(2015, 10, 21, 7, 28, tzinfo=UTC))
    10.0
    >>> retry_after_seconds("soon") is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _body_message(response: httpx.Response) -> str:
    """The ERP's own words from an error body (OData, JSON-RPC or plain text), shortened."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            if isinstance(message, dict):  # OData V2: {"error": {"message": {"value": ...}}}
                message = message.get("value")
            code = error.get("code")
            if message:
                return f"{code}: {message}" if code else str(message)
    return response.text.strip()[:500]


class ErpHttp:
    """An httpx client with the retry rules above; one per connector, closed with it."""

    def __init__(self, base_url: str, *, name: str, timeout_s: float = 60.0,
                 policy: RetryPolicy | None = None,
                 auth: Callable[[httpx.Request], Any] | httpx.Auth | None = None,
                 headers: dict[str, str] | None = None, verify: bool = True) -> None:
        self.name = name
        self.policy = policy or RetryPolicy()
        self.client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, auth=auth,
                                        headers=headers, verify=verify)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        backoff = min(self.policy.max_delay_s,
                      self.policy.base_delay_s * 2 ** (state.attempt_number - 1))
        delay = backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not secrecy
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return float(delay)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request; a 2xx/3xx response, or the errors the module docstring names."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.attempts), wait=self._wait,
            sleep=self.policy.sleep, retry=retry_if_exception_type(_Transient), reraise=True,
            before_sleep=lambda s: logger.warning(
                "%s: %s %s: %s; retry %s of %s", self.name, method, url,
                s.outcome.exception() if s.outcome else "?", s.attempt_number,
                self.policy.attempts - 1))
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(method, url, **kwargs)
        except _Transient as exc:
            raise SourceUnavailableError(
                f"{self.name}: {method} {url} failed {self.policy.attempts} times,"
                f" last: {exc}") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.client.request(method, url, **kwargs)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code < 400:
            return response
        message = _body_message(response)
        if response.status_code in TRANSIENT_STATUS:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is not None and wait > self.policy.max_retry_after_s:
                raise SourceUnavailableError(
                    f"{self.name}: {method} {url}: HTTP {response.status_code}, asked to wait"
                    f" {wait:.0f} s (more than {self.policy.max_retry_after_s:.0f} s): {message}")
            raise _Transient(f"HTTP {response.status_code}: {message}", wait)
        hint = {401: " (check the credentials)", 403: " (the user lacks a permission)",
                404: " (check the URL, company or service)"}.get(response.status_code, "")
        raise PermanentSyncError(
            f"{self.name}: {method} {url}: HTTP {response.status_code}{hint}: {message}")
