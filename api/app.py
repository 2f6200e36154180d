"""The API application.

Routers per concern under /api/v1, one pool per tenant opened in the lifespan, problem+json for
every error (docs/api.md).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response

from api import errors
from api.paging import set_cursor_key
from api.routers import (
    admin,
    auth,
    customers,
    finance,
    fleet,
    health,
    leakage,
    maintenance,
    quality,
    segments,
)
from api.security import OidcVerifier
from api.tenants import TenantPools
from core.settings import Settings

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")

DESCRIPTION = """\
After-sales retention for machine builders: installed-base health, maintenance planning,
renewals and revenue at risk, per customer and segment.

Authenticate with `POST /api/v1/auth/token` (a user's password) and send
`Authorization: Bearer <token>`, or send an API key (`oemr_...`) the same way. Lists are paged
with an opaque `cursor` (`next_cursor` of the previous page), sorted by `sort` (`-name` for
descending), and every list can be had as CSV or XLSX with `format=csv|xlsx` and the same
filters. Every error is `application/problem+json` (RFC 9457).
"""


def create_app(settings: Settings) -> FastAPI:
    """The API for ``settings``; its pools open when the app starts serving."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await app.state.pools.open()
        try:
            yield
        finally:
            await app.state.pools.close()

    app = FastAPI(title="oem-retention", version="1", description=DESCRIPTION,
                  lifespan=lifespan, openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=f"{PREFIX}/docs", redoc_url=None)
    app.state.settings = settings
    set_cursor_key(settings.api_secret_key.get_secret_value())
    app.state.pools = TenantPools(settings)
    app.state.oidc = OidcVerifier(settings) if settings.oidc_issuer else None
    errors.install(app)
    errors.document(app)

    @app.middleware("http")
    async def request_id(request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Every answer names its request, so a user's report can be found in the log.
        sent = request.headers.get("x-request-id", "")
        rid = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        request.scope["headers"] = [*[(k, v) for k, v in request.scope["headers"]
                                      if k != b"x-request-id"],
                                    (b"x-request-id", rid.encode())]
        response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response

    v1 = APIRouter(prefix=PREFIX)
    for module in (health, auth, admin, fleet, customers, segments, maintenance, leakage,
                   finance, quality):
        v1.include_router(module.router)
    app.include_router(v1)
    return app
