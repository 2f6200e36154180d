"""Every error the API answers is RFC 9457 problem+json, and no input produces a 500.

A route raises :class:`Problem` (or one of its kinds below); FastAPI's own validation errors and
HTTP errors are turned into the same shape; a database refusal of bad input (a value out of
range, a foreign key to nothing) is a 4xx with the database's reason; anything else is logged
with the request id and answered 500 without internals.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import DatabaseUnavailableError, first_line

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# What a list answers with format=csv and format=xlsx (api/responses.py writes them).
EXPORT_CONTENT = {
    "text/csv": {"schema": {"type": "string"}},
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
        "schema": {"type": "string", "format": "binary"}}}
TYPE_BASE = "https://oem-retention.dev/problems/"


class ProblemDetail(BaseModel):
    """An error, as RFC 9457 has it (``errors`` lists each invalid field of a request)."""

    type: str = "about:blank"
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class Problem(Exception):  # noqa: N818 (it is the problem, not an error about one)
    """An answer of 4xx or 5xx with a title and a detail a user can act on."""

    def __init__(self, status: int, title: str, detail: str | None = None, *,
                 kind: str | None = None, headers: dict[str, str] | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind
        self.headers = headers or {}
        self.errors = errors


class NotFound(Problem):
    """Nothing of that kind with that id is visible to the caller (the same answer either way)."""

    def __init__(self, what: str, key: object) -> None:
        super().__init__(404, "Not found", f"no {what} {key}", kind="not-found")


class BadRequest(Problem):
    """A request the API understood but cannot act on: the detail says why."""

    def __init__(self, detail: str, *, kind: str = "bad-request") -> None:
        super().__init__(400, "Bad request", detail, kind=kind)


class Unauthorized(Problem):
    """No credentials, or credentials that are wrong, expired or revoked."""

    def __init__(self, detail: str) -> None:
        super().__init__(401, "Unauthorized", detail, kind="unauthorized",
                         headers={"WWW-Authenticate": "Bearer"})


class Forbidden(Problem):
    """Credentials that are good but whose role may not do this."""

    def __init__(self, detail: str) -> None:
        super().__init__(403, "Forbidden", detail, kind="forbidden")


def problem_response(status: int, title: str, detail: str | None, *, request: Request,
                     kind: str | None = None, headers: dict[str, str] | None = None,
                     errors: list[dict[str, Any]] | None = None) -> Response:
    """The problem+json response itself."""
    body = ProblemDetail(type=TYPE_BASE + kind if kind else "about:blank", title=title,
                         status=status, detail=detail, instance=request.url.path, errors=errors)
    return Response(orjson.dumps(body.model_dump(exclude_none=True)), status_code=status,
                    media_type=PROBLEM_JSON, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))} for e in exc.errors()]


# SQLSTATE classes a request's own values can cause: data exceptions (22: out of range, bad
# format) and integrity violations (23: a foreign key to nothing, a duplicate, a CHECK).
_CLIENT_SQLSTATES = ("22", "23")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc.status, exc.title, exc.detail, request=request,
                                kind=exc.kind, headers=exc.headers, errors=exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = _validation_errors(exc)
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        return problem_response(422, "Invalid request", detail, request=request,
                                kind="invalid-request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(exc.status_code, _title(exc.status_code), detail,
                                request=request, headers=dict(exc.headers or {}))

    @app.exception_handler(psycopg.Error)
    async def _database(request: Request, exc: psycopg.Error) -> Response:
        state = exc.sqlstate or ""
        # A DataError without a SQLSTATE is psycopg's own refusal to send a value (a NUL
        # character in text, which PostgreSQL cannot store): the request's, like class 22.
        if state.startswith(_CLIENT_SQLSTATES) or (
                not state and isinstance(exc, psycopg.DataError)):
            return problem_response(409 if state.startswith("23") else 422,
                                    "Refused by the database", first_line(exc),
                                    request=request, kind="refused")
        if isinstance(exc, psycopg.OperationalError):
            return _unavailable(request, exc)
        return _internal(request, exc)

    @app.exception_handler(DatabaseUnavailableError)
    async def _down(request: Request, exc: DatabaseUnavailableError) -> Response:
        return _unavailable(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return _internal(request, exc)


# What every operation may answer, and what those behind credentials may answer besides.
_EVERY = {400: "A request the API understood but cannot act on (a body that is not JSON, a "
               "cursor of another list)",
          422: "The request's parameters or body are not valid (`errors` names each field)",
          503: "A database cannot be reached; retry"}
_SECURED = {401: "No credentials, or wrong, expired or revoked ones",
            403: "The caller's role may not do this",
            404: "Nothing of that kind with that id is visible to the caller",
            409: "Refused by the database: a duplicate, or a reference to nothing"}


def document(app: FastAPI) -> None:
    """Name in ``app``'s OpenAPI document the problems each operation may answer.

    As problem+json: FastAPI would document its own 422 body, which this API never sends.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ProblemDetail"] = ProblemDetail.model_json_schema()
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                # Every list exports with format=csv|xlsx: its 200 has those bodies too.
                if any(p.get("name") == "format" and p.get("in") == "query"
                       for p in operation.get("parameters", ())):
                    ok = operation.setdefault("responses", {}).setdefault("200", {})
                    ok.setdefault("content", {}).update(EXPORT_CONTENT)
                statuses = {**_EVERY, **(_SECURED if operation.get("security") else {})}
                responses = operation.setdefault("responses", {})
                for status, description in statuses.items():
                    responses.setdefault(str(status), {"description": description})
                # Those a route declares itself too (a 404, a login's 401): problem+json all.
                for status, documented in responses.items():
                    if status[0] in "45":
                        documented["content"] = content
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _unavailable(request: Request, exc: BaseException) -> Response:
    logger.warning("database unavailable on %s: %s", request.url.path, first_line(exc))
    return problem_response(503, "Service unavailable", "the database cannot be reached; retry",
                            request=request, kind="unavailable", headers={"Retry-After": "5"})


def _internal(request: Request, exc: BaseException) -> Response:
    request_id = request.headers.get("x-request-id", "")
    logger.error("unexpected error on %s %s (request %s)", request.method, request.url.path,
                 request_id, exc_info=exc)
    return problem_response(500, "Internal server error",
                            "the error is logged on the server" +
                            (f" with request id {request_id}" if request_id else ""),
                            request=request, kind="internal",
                            # An unexpected error is answered outside the middleware that names
                            # every other answer's request: named here.
                            headers={"X-Request-ID": request_id} if request_id else None)


def _title(status: int) -> str:
    from http import HTTPStatus
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
