"""A fake Microsoft Dynamics 365 Business Central (API v2.0) on loopback, for tests and the demo.

Business Central is a commercial cloud service that cannot run here, so this server plays it over
real HTTP, following what Microsoft documents (learn.microsoft.com, "Business Central API (v2.0)"
and "Service-to-service authentication"):

Faithful
    - OAuth2 client credentials at ``POST /{tenant}/oauth2/v2.0/token`` (form fields
      ``grant_type=client_credentials``, ``client_id``, ``client_secret``,
      ``scope=https://api.businesscentral.dynamics.com/.default``), answering
      ``{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token"}``;
      a wrong secret is a 401 with Entra ID's body (``invalid_client``, ``AADSTS7000215``).
    - The API under ``/v2.0/{tenant}/{environment}/api/v2.0/``: ``companies`` and, per company,
      ``companies({id})/customers``, ``items``, ``salesInvoices`` (``$expand=salesInvoiceLines``),
      ``salesCreditMemos`` (``$expand=salesCreditMemoLines``) and ``salesOrders``
      (``$expand=salesOrderLines``), with the field names of the v2.0 resource types (a subset
      of them: the ones listed in :data:`FIELDS`). A credit memo's amounts are positive, as BC
      serves them; ``invoiceId``/``invoiceNumber`` name the invoice it applies to. Document
      statuses are the v2.0 aggregate status: ``Draft``, ``In Review``, ``Open``, ``Paid``,
      ``Canceled`` (cancelled by a corrective document) and ``Corrective`` (a document posted to
      cancel another: the credit memo that cancels an invoice, the invoice that cancels a
      credit memo).
    - OData v4 JSON: ``{"@odata.context", "value": [...], "@odata.nextLink"}``, an
      ``@odata.etag`` per entity; server-driven paging whose page size a client sets with
      ``Prefer: odata.maxpagesize=N`` (acknowledged in ``Preference-Applied``); the next link
      carries a ``$skiptoken`` naming the last key served, so paging is by key, not by time,
      and rows changed while a client pages stay where they are.
    - ``$filter`` on ``lastModifiedDateTime`` with ``gt``/``ge``/``lt``/``le``/``eq`` and
      ``and``; ``$top``; ``$select``. A change to a document's lines changes the document's
      ``lastModifiedDateTime`` (its totals change with them). A deleted record is simply gone:
      the API reports no deletions.
    - Errors as ``{"error": {"code", "message"}}``: 401 ``Authentication_InvalidCredentials``
      for a missing, invalid or expired token, 404 ``BadRequest_ResourceNotFound``/
      ``BadRequest_NotFound``, 400 ``BadRequest`` for a query it cannot parse, 429
      ``Application_TooManyRequests`` with ``Retry-After``.

Simplified
    - Entities are held in memory and served in the order of their ``id`` (BC serves in the
      order of the table's primary key, also unrelated to time); ``$orderby``, ``$count``,
      ``$expand`` beyond the document lines, writes over HTTP and bound actions are not served
      (tests change data through the Python hooks). Filters on other fields answer 400.
    - Posting is not played: a credit memo does not change its invoice's ``remainingAmount``
      or status, and cancelling a document does not create its corrective one; the test sets
      both documents as BC would leave them.
    - The default page size is 200 (Business Central online serves up to 20,000 entities a
      page); tokens are opaque random strings, not JWTs.
    - A skip token stays valid until :meth:`FakeBusinessCentral.expire_next_links` (BC's
      tokens name a key too; the hook plays a link that no longer works).

:class:`WorldLoader` puts a world directory's canonical records into the fake the way the
connector maps them back (docs/erp-business-central.md); what BC's standard API cannot carry
(installed base, service contracts and renewals, sites, contacts, survey answers, cancelled
orders) is left out, as its docstring says. ``oem-retention demo erp business-central --world
DIR`` serves one until Ctrl-C and prints the settings for the connector.

Test hooks, in Python: :meth:`add`, :meth:`modify`, :meth:`delete` (and the ``_line``
variants), :meth:`throttle`, :meth:`fail`, :meth:`expire_tokens`, :meth:`expire_next_links`,
:meth:`remove_entity_set`, :meth:`hold_after`, :meth:`garble_line` (a line that is not a JSON
object: what no BC sends, to test that one bad line costs only itself), and :attr:`requests`
(what was asked, in order).
"""

from __future__ import annotations

import copy
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import orjson

from demo.erp.records import Records, amount, flag, moment

SCOPE = "https://api.businesscentral.dynamics.com/.default"
DEFAULT_PAGE_SIZE = 200

# The v2.0 fields served (Microsoft's resource types have more; a connector must ignore extras).
FIELDS: dict[str, tuple[str, ...]] = {
    "customers": ("id", "number", "displayName", "type", "addressLine1", "city", "country",
                  "postalCode", "currencyCode", "blocked", "lastModifiedDateTime"),
    "items": ("id", "number", "displayName", "type", "itemCategoryCode", "unitPrice",
              "blocked", "lastModifiedDateTime"),
    "salesInvoices": ("id", "number", "invoiceDate", "postingDate", "dueDate", "customerId",
                      "customerNumber", "customerName", "currencyCode", "orderNumber",
                      "totalAmountExcludingTax", "totalAmountIncludingTax", "remainingAmount",
                      "status", "lastModifiedDateTime"),
    "salesCreditMemos": ("id", "number", "externalDocumentNumber", "creditMemoDate",
                         "postingDate", "dueDate", "customerId", "customerNumber", "customerName",
                         "currencyCode", "totalAmountExcludingTax", "totalTaxAmount",
                         "totalAmountIncludingTax", "status", "lastModifiedDateTime",
                         "invoiceId", "invoiceNumber"),
    "salesOrders": ("id", "number", "orderDate", "customerId", "customerNumber", "customerName",
                    "currencyCode", "totalAmountExcludingTax", "totalAmountIncludingTax",
                    "fullyShipped", "status", "lastModifiedDateTime"),
}
LINES = {"salesInvoices": "salesInvoiceLines", "salesCreditMemos": "salesCreditMemoLines",
         "salesOrders": "salesOrderLines"}
LINE_FIELDS = ("id", "documentId", "sequence", "itemId", "lineType", "lineObjectNumber",
               "description", "quantity", "unitPrice", "netAmount")

_API_PATH = re.compile(
    r"^/v2\.0/(?P<tenant>[^/]+)/(?P<env>[^/]+)/api/v2\.0/"
    r"(?:companies\((?P<company>[^)]+)\)/(?P<set>\w+)|(?P<companies>companies))$")
_TOKEN_PATH = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
_COMPARISON = re.compile(
    r"^\s*lastModifiedDateTime\s+(?P<op>gt|ge|lt|le|eq)\s+(?P<value>\S+)\s*$")


def timestamp(when: datetime) -> str:
    """BC's form of a time: UTC, milliseconds, ``Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class _ODataError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


@dataclass
class _Faults:
    throttled: int = 0
    retry_after: str = "1"
    failing: int = 0
    fail_status: int = 503
    hold_after: int | None = None
    served_pages: int = 0
    link_generation: int = 0
    removed: set[str] = field(default_factory=set)


class FakeBusinessCentral:
    """One tenant, one environment, one company of Business Central, served on 127.0.0.1."""

    def __init__(self, *, tenant: str | None = None, environment: str = "production",
                 company_id: str | None = None, client_id: str | None = None,
                 client_secret: str = "s3cr3t~value",  # noqa: S107 - a fake's test secret
                 page_size: int = DEFAULT_PAGE_SIZE,
                 token_lifetime_s: int = 3599, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tenant = tenant or str(uuid.uuid4())
        self.environment = environment
        self.company_id = company_id or str(uuid.uuid4())
        self.client_id = client_id or str(uuid.uuid4())
        self.client_secret = client_secret
        self.page_size = page_size
        self.token_lifetime_s = token_lifetime_s
        self.data: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in FIELDS}
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.tokens_issued = 0
        self.requests: list[tuple[str, str]] = []  # (method, path with query) in arrival order
        self.faults = _Faults()
        self.lock = threading.RLock()
        self.held = threading.Event()
        self.release = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-business-central")

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the API host and, in tests, the token host too."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def token_url(self) -> str:
        """The tenant's token endpoint."""
        return f"{self.url}/{self.tenant}/oauth2/v2.0/token"

    def settings(self) -> dict[str, str]:
        """The settings (environment) that point the platform's BC connector at this fake."""
        return {"OEMR_ERP_BC_API_URL": self.url, "OEMR_ERP_BC_TOKEN_URL": self.token_url,
                "OEMR_ERP_BC_TENANT": self.tenant, "OEMR_ERP_BC_ENVIRONMENT": self.environment,
                "OEMR_ERP_BC_COMPANY_ID": self.company_id,
                "OEMR_ERP_BC_CLIENT_ID": self.client_id,
                "OEMR_ERP_BC_CLIENT_SECRET": self.client_secret}

    def start(self) -> FakeBusinessCentral:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (a held request is released first)."""
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeBusinessCentral:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- data hooks ------------------------------------------------------------------------

    def add(self, entity_set: str, record: dict[str, Any], *,
            modified: datetime | str | None = None) -> dict[str, Any]:
        """Store a record (an ``id`` and ``lastModifiedDateTime`` are made if absent)."""
        with self.lock:
            rec = copy.deepcopy(record)
            rec.setdefault("id", str(uuid.uuid4()))
            stamp = modified if modified is not None else rec.get("lastModifiedDateTime")
            rec["lastModifiedDateTime"] = (
                stamp if isinstance(stamp, str) else timestamp(stamp or _now_ms()))
            if entity_set in LINES:
                lines = rec.setdefault(LINES[entity_set], [])
                for number, line in enumerate(lines, start=1):
                    self._complete_line(rec, line, number)
            self.data[entity_set][rec["id"]] = rec
            return copy.deepcopy(rec)

    def modify(self, entity_set: str, record_id: str, *,
               modified: datetime | str | None = None, **changes: Any) -> dict[str, Any]:
        """Change fields of a record; its ``lastModifiedDateTime`` moves to now or ``modified``."""
        with self.lock:
            rec = self.data[entity_set][record_id]
            rec.update(copy.deepcopy(changes))
            self._touch(rec, modified)
            return copy.deepcopy(rec)

    def delete(self, entity_set: str, record_id: str) -> None:
        """Delete a record: it disappears from every answer, as in BC."""
        with self.lock:
            del self.data[entity_set][record_id]

    def add_line(self, entity_set: str, document_id: str,
                 line: dict[str, Any]) -> dict[str, Any]:
        """Add a line to a document; the document's ``lastModifiedDateTime`` moves."""
        with self.lock:
            doc = self.data[entity_set][document_id]
            lines = doc[LINES[entity_set]]
            new = copy.deepcopy(line)
            self._complete_line(doc, new, len(lines) + 1)
            lines.append(new)
            self._touch(doc, None)
            return copy.deepcopy(new)

    def modify_line(self, entity_set: str, document_id: str, line_id: str,
                    **changes: Any) -> None:
        """Change a line; the document's ``lastModifiedDateTime`` moves."""
        with self.lock:
            doc = self.data[entity_set][document_id]
            [line] = [ln for ln in doc[LINES[entity_set]] if ln["id"] == line_id]
            line.update(copy.deepcopy(changes))
            self._touch(doc, None)

    def delete_line(self, entity_set: str, document_id: str, line_id: str) -> None:
        """Remove a line; the document's ``lastModifiedDateTime`` moves."""
        with self.lock:
            doc = self.data[entity_set][document_id]
            doc[LINES[entity_set]] = [ln for ln in doc[LINES[entity_set]]
                                      if ln["id"] != line_id]
            self._touch(doc, None)

    def garble_line(self, entity_set: str, document_id: str, line_id: str, value: Any) -> None:
        """Serve ``value`` (not a JSON object) in place of a line; the document's time moves."""
        with self.lock:
            doc = self.data[entity_set][document_id]
            doc[LINES[entity_set]] = [value if isinstance(ln, dict) and ln["id"] == line_id
                                      else ln for ln in doc[LINES[entity_set]]]
            self._touch(doc, None)

    def records(self, entity_set: str) -> list[dict[str, Any]]:
        """A copy of every record of a set, with its lines."""
        with self.lock:
            return copy.deepcopy(list(self.data[entity_set].values()))

    @staticmethod
    def _complete_line(doc: dict[str, Any], line: dict[str, Any], number: int) -> None:
        line.setdefault("id", str(uuid.uuid4()))
        line["documentId"] = doc["id"]
        line.setdefault("sequence", number * 10000)

    @staticmethod
    def _touch(rec: dict[str, Any], modified: datetime | str | None) -> None:
        if isinstance(modified, str):
            rec["lastModifiedDateTime"] = modified
            return
        stamp = modified or _now_ms()
        # Two changes within one millisecond must still be told apart by a later `gt`.
        previous = _parse_time(rec["lastModifiedDateTime"])
        if modified is None and stamp <= previous:
            stamp = previous + timedelta(milliseconds=1)
        rec["lastModifiedDateTime"] = timestamp(stamp)

    # -- fault hooks -----------------------------------------------------------------------

    def throttle(self, count: int, *, retry_after: int | str = 1) -> None:
        """Answer the next ``count`` API requests with 429 and ``Retry-After``."""
        with self.lock:
            self.faults.throttled = count
            self.faults.retry_after = str(retry_after)

    def fail(self, count: int, *, status: int = 503) -> None:
        """Answer the next ``count`` API requests with ``status`` (a gateway error)."""
        with self.lock:
            self.faults.failing = count
            self.faults.fail_status = status

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (401), as at the end of its lifetime."""
        with self.lock:
            self.tokens.clear()

    def expire_next_links(self) -> None:
        """Every next link handed out so far stops working (400)."""
        with self.lock:
            self.faults.link_generation += 1

    def remove_entity_set(self, entity_set: str) -> None:
        """Answer 404 for an entity set (an API page not published in this environment)."""
        with self.lock:
            self.faults.removed.add(entity_set)

    def hold_after(self, pages: int) -> None:
        """Serve ``pages`` more entity-set requests, then hold the next one.

        The held request waits until :attr:`release` is set (it then gets a 503); :attr:`held`
        is set while it waits.
        """
        with self.lock:
            self.faults.hold_after = pages
            self.faults.served_pages = 0
            self.held.clear()
            self.release.clear()

    def count(self, entity_set: str | None = None) -> int:
        """API requests received (for one entity set, if given), token requests excluded."""
        with self.lock:
            return sum(1 for _m, path in self.requests if "/api/v2.0/" in path
                       and (entity_set is None
                            or urlsplit(path).path.endswith(f"/{entity_set}")))

    # -- serving ---------------------------------------------------------------------------

    def issue_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint's answer to a form."""
        def refuse(status: int, error: str, code: int, text: str) -> tuple[int, dict[str, Any]]:
            trace = str(uuid.uuid4())
            return status, {
                "error": error, "error_description": f"AADSTS{code}: {text} Trace ID: {trace}"
                f" Correlation ID: {uuid.uuid4()} Timestamp: {timestamp(_now_ms())}",
                "error_codes": [code], "timestamp": timestamp(_now_ms()), "trace_id": trace,
                "correlation_id": str(uuid.uuid4()), "error_uri":
                "https://login.microsoftonline.com/error?code=" + str(code)}

        if form.get("grant_type") != "client_credentials":
            return refuse(400, "unsupported_grant_type", 70003,
                          "The app requested an unsupported grant type.")
        if form.get("client_id") != self.client_id:
            return refuse(400, "unauthorized_client", 700016,
                          f"Application with identifier '{form.get('client_id')}' was not found"
                          f" in the directory '{self.tenant}'.")
        if form.get("client_secret") != self.client_secret:
            return refuse(401, "invalid_client", 7000215,
                          "Invalid client secret provided. Ensure the secret being sent in the"
                          " request is the client secret value, not the client secret ID, for a"
                          f" secret added to app '{self.client_id}'.")
        if form.get("scope") != SCOPE:
            return refuse(400, "invalid_scope", 1002012,
                          f"The provided value for scope {form.get('scope')} is not valid.")
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = time.monotonic() + self.token_lifetime_s
            self.tokens_issued += 1
        return 200, {"token_type": "Bearer", "expires_in": self.token_lifetime_s,
                     "ext_expires_in": self.token_lifetime_s, "access_token": token}

    def answer(self, path: str, query: str, headers: dict[str, str]) -> tuple[
            int, dict[str, Any], dict[str, str]]:
        """Status, body and extra headers of an API GET."""
        self._authorize(headers.get("authorization", ""))
        match = _API_PATH.match(path)
        if match is None or match["tenant"] != self.tenant or match["env"] != self.environment:
            raise _ODataError(404, "BadRequest_NotFound",
                              "No HTTP resource was found that matches the request URI.")
        self._transient_faults()
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if match["companies"]:
            return 200, self._companies(), {}
        if match["company"] != self.company_id:
            raise _ODataError(404, "BadRequest_ResourceNotFound",
                              "Resource not found for the segment 'companies'.")
        entity_set = match["set"]
        if entity_set not in FIELDS or entity_set in self.faults.removed:
            raise _ODataError(404, "BadRequest_ResourceNotFound",
                              f"Resource not found for the segment '{entity_set}'.")
        self._hold()
        return self._page(entity_set, params, headers)

    def _authorize(self, header: str) -> None:
        scheme, _, token = header.partition(" ")
        with self.lock:
            expiry = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if expiry is None or expiry < time.monotonic():
            raise _ODataError(401, "Authentication_InvalidCredentials",
                              "The server has rejected the client credentials.",
                              {"WWW-Authenticate": 'Bearer authorization_uri='
                               '"https://login.microsoftonline.com/common/oauth2/authorize"'})

    def _transient_faults(self) -> None:
        with self.lock:
            if self.faults.throttled > 0:
                self.faults.throttled -= 1
                raise _ODataError(429, "Application_TooManyRequests",
                                  "Too many requests reached. Actual (101). Maximum (100).",
                                  {"Retry-After": self.faults.retry_after})
            if self.faults.failing > 0:
                self.faults.failing -= 1
                raise _ODataError(self.faults.fail_status, "ServiceUnavailable",
                                  "The service is temporarily unavailable.")

    def _hold(self) -> None:
        with self.lock:
            hold = (self.faults.hold_after is not None
                    and self.faults.served_pages >= self.faults.hold_after)
            self.faults.served_pages += 1
            if hold:
                self.faults.hold_after = None  # once
        if hold:
            self.held.set()
            self.release.wait(timeout=120)
            raise _ODataError(503, "ServiceUnavailable", "held by the test, then released")

    def _companies(self) -> dict[str, Any]:
        return {"@odata.context": f"{self._context_base()}#companies", "value": [{
            "id": self.company_id, "systemVersion": "25.0.23364.26243", "name": "CRONUS",
            "displayName": "CRONUS Machines", "businessProfileId": "",
            "systemCreatedAt": "2024-01-01T00:00:00Z", "systemCreatedBy": str(uuid.UUID(int=0)),
            "systemModifiedAt": "2024-01-01T00:00:00Z",
            "systemModifiedBy": str(uuid.UUID(int=0))}]}

    def _context_base(self) -> str:
        return (f"https://api.businesscentral.dynamics.com/v2.0/{self.tenant}/"
                f"{self.environment}/api/v2.0/$metadata")

    def _page(self, entity_set: str, params: dict[str, str],
              headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        unknown = set(params) - {"$filter", "$top", "$skiptoken", "$expand", "$select",
                                 "aid"}
        if unknown:
            raise _ODataError(400, "BadRequest",
                              f"The query parameter '{sorted(unknown)[0]}' is not supported.")
        predicate = _filter(params.get("$filter"))
        expand = self._expand(entity_set, params.get("$expand"))
        page_size, applied = self._page_size(headers.get("prefer", ""))
        top = _whole(params["$top"], "$top") if "$top" in params else None
        after = self._skiptoken(params.get("$skiptoken"))
        with self.lock:
            matching = [rec for key, rec in sorted(self.data[entity_set].items())
                        if (after is None or key > after) and predicate(rec)]
            if top is not None:
                matching = matching[:top]
            page = matching[:page_size]
            more = len(matching) > page_size
            value = [self._entity(entity_set, rec, expand, params.get("$select"))
                     for rec in page]
            generation = self.faults.link_generation
        body: dict[str, Any] = {"@odata.context": f"{self._context_base()}#companies("
                                                  f"{self.company_id})/{entity_set}",
                                "value": value}
        if more:
            rest = {k: v for k, v in params.items() if k != "$skiptoken"}
            if top is not None:
                rest["$top"] = str(top - len(page))
            rest["$skiptoken"] = f"'{generation}:{page[-1]['id']}'"
            body["@odata.nextLink"] = (
                f"{self.url}/v2.0/{self.tenant}/{self.environment}/api/v2.0/companies("
                f"{self.company_id})/{entity_set}?{urlencode(rest, quote_via=quote, safe='$')}")
        extra = {"Preference-Applied": f"odata.maxpagesize={page_size}"} if applied else {}
        return 200, body, extra

    def _expand(self, entity_set: str, expand: str | None) -> bool:
        if expand is None:
            return False
        if expand.strip() != LINES.get(entity_set):
            raise _ODataError(400, "BadRequest",
                              f"Could not find a property named '{expand}' on type"
                              f" 'Microsoft.NAV.{entity_set[:-1]}'.")
        return True

    def _page_size(self, prefer: str) -> tuple[int, bool]:
        found = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        if found is None:
            return self.page_size, False
        return max(1, int(found[1])), True

    def _skiptoken(self, token: str | None) -> str | None:
        if token is None:
            return None
        generation, _, key = token.strip("'").partition(":")
        if generation != str(self.faults.link_generation) or not key:
            raise _ODataError(400, "BadRequest",
                              "The skip token is not valid: the request has to be repeated"
                              " from its first page.")
        return key

    def _entity(self, entity_set: str, rec: dict[str, Any], expand: bool,
                select: str | None) -> dict[str, Any]:
        names = FIELDS[entity_set]
        if select is not None:
            wanted = {s.strip() for s in select.split(",")}
            names = tuple(n for n in names if n in wanted or n == "id")
        out: dict[str, Any] = {"@odata.etag": f'W/"JzE5OzE{abs(hash(str(rec))) % 10**12}Jw=="'}
        out.update({name: rec[name] for name in names if name in rec})
        if expand:
            out[LINES[entity_set]] = [
                {name: line[name] for name in LINE_FIELDS if name in line}
                if isinstance(line, dict) else line for line in rec[LINES[entity_set]]]
        return out


def _whole(text: str, name: str) -> int:
    if not text.isdigit():
        raise _ODataError(400, "BadRequest", f"Invalid value '{text}' for {name}.")
    return int(text)


def _filter(text: str | None) -> Any:
    """A predicate for ``lastModifiedDateTime <op> <time> [and ...]``; 400 for anything else."""
    if text is None or not text.strip():
        return lambda _rec: True
    tests = []
    for part in re.split(r"\s+and\s+", text.strip()):
        match = _COMPARISON.match(part)
        if match is None:
            raise _ODataError(400, "BadRequest",
                              f"The filter '{part}' is not supported by this service.")
        try:
            bound = _parse_time(match["value"])
        except ValueError:
            raise _ODataError(400, "BadRequest",
                              f"'{match['value']}' is not a valid DateTimeOffset.") from None
        if bound.tzinfo is None:
            raise _ODataError(400, "BadRequest", f"'{match['value']}' has no time zone.")
        tests.append((match["op"], bound))
    ops = {"gt": lambda a, b: a > b, "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b,
           "le": lambda a, b: a <= b, "eq": lambda a, b: a == b}

    def predicate(rec: dict[str, Any]) -> bool:
        when = _parse_time(rec["lastModifiedDateTime"])
        return all(ops[op](when, bound) for op, bound in tests)

    return predicate


def _handler(fake: FakeBusinessCentral) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test reads fake.requests

        def _send(self, status: int, body: dict[str, Any],
                  headers: dict[str, str] | None = None) -> None:
            data = orjson.dumps(body)
            try:
                self.send_response(status)
                self.send_header("Content-Type",
                                 "application/json; odata.metadata=minimal; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client was killed while we held its request

        def do_POST(self) -> None:
            with fake.lock:
                fake.requests.append(("POST", self.path))
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length).decode()
            match = _TOKEN_PATH.match(urlsplit(self.path).path)
            if match is None or match["tenant"] != fake.tenant:
                self._send(400, {"error": "invalid_request", "error_description":
                                 "AADSTS90002: Tenant not found.", "error_codes": [90002]})
                return
            form = {k: v[-1] for k, v in parse_qs(raw).items()}
            status, body = fake.issue_token(form)
            self._send(status, body)

        def do_GET(self) -> None:
            with fake.lock:
                fake.requests.append(("GET", self.path))
            parts = urlsplit(self.path)
            try:
                status, body, headers = fake.answer(
                    unquote(parts.path), parts.query,
                    {k.lower(): v for k, v in self.headers.items()})
            except _ODataError as exc:
                self._send(exc.status, {"error": {"code": exc.code, "message": str(exc)}},
                           exc.headers)
                return
            self._send(status, body, headers)

    return Handler


@contextmanager
def serving(**kwargs: Any) -> Iterator[FakeBusinessCentral]:
    """A started fake, stopped after the block."""
    fake = FakeBusinessCentral(**kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()


# -- a world in the fake: canonical records -> BC API v2.0 records ----------------------------

# Ids are GUIDs, derived from the world's ids: the same world served again has the same ids.
WORLD_NAMESPACE = uuid.UUID("6f0d3a52-5b8e-4c59-9d8a-0e6b1f7c2a41")
# Item categories by line kind: the connector's default KindRules read them back.
ITEM_CATEGORIES = {"spare_parts": "PARTS", "field_service": "SERVICE",
                   "service_contract": "CONTRACT", "retrofit": "RETROFIT",
                   "new_machine": "MACHINE", "other": ""}
INVOICE_STATUSES = {"draft": "Draft", "open": "Open", "paid": "Paid", "cancelled": "Canceled",
                    "credited": "Open"}
ORDER_STATUSES = {"draft": "Draft", "confirmed": "Open", "delivered": "Open"}
BLANK_DATE = "0001-01-01"  # how BC writes an empty date
# The connector's external ids of credit memos and their lines (docs/erp-business-central.md).
CREDIT_MEMO = "credit-memo:"


class WorldLoader:
    """Puts a world's canonical records into a :class:`FakeBusinessCentral` as BC keeps them.

    Customers, machine models (items of category ``MACHINE``), invoices with their lines (a
    credited invoice becomes a sales credit memo with positive amounts), after-sales orders with
    their lines; every product or part number becomes an item whose category tells the line's
    kind (:data:`ITEM_CATEGORIES`). :attr:`ids` maps (entity, world id) to the external id our
    connector stores (a GUID; ``credit-memo:<GUID>`` for credit memos and their lines).

    What BC's standard API v2.0 cannot carry is left out and counted in :attr:`left_out`:
    sites, contacts, the installed base, service contracts and renewals, survey answers,
    cancelled orders (BC deletes them). Carried but changed on the way: a customer's industry,
    size class, key-account flag and customer-since date (not in v2.0), a machine model's
    service plan and parts value, a line's machine and contract, an order's unit prices only
    where the world has them. A paid invoice's ``paid_on`` comes back as the day of its
    ``lastModifiedDateTime``, which the loader sets to the payment day.
    """

    def __init__(self, fake: FakeBusinessCentral) -> None:
        self.fake = fake
        self.ids: dict[tuple[str, str], str] = {}
        self.left_out: Counter[str] = Counter()
        self._customers: dict[str, dict[str, str]] = {}
        self._items: dict[str, str] = {}  # number -> id

    @staticmethod
    def _id(entity: str, world_id: str) -> str:
        return str(uuid.uuid5(WORLD_NAMESPACE, f"{entity}:{world_id}"))

    def load(self, world: Records) -> WorldLoader:
        """Load every entity BC carries, parents first (a document with its lines)."""
        for r in world.get("customers", []):
            self._customer(r)
        for r in world.get("machine_models", []):
            self.ids[("machine_models", r["external_id"])] = self._item(
                r["model"], "new_machine", r["model"])
        invoice_lines = _by_parent(world.get("invoice_lines", []), "invoice_external_id")
        for r in world.get("invoices", []):
            self._invoice(r, invoice_lines.pop(r["external_id"], []))
        order_lines = _by_parent(world.get("order_lines", []), "order_external_id")
        for r in world.get("orders", []):
            self._order(r, order_lines.pop(r["external_id"], []))
        for entity in ("sites", "contacts", "installed_base", "service_contracts",
                       "contract_renewals", "survey_responses"):
            self.left_out[entity] += len(world.get(entity, []))
        self.left_out["invoice_lines"] += sum(map(len, invoice_lines.values()))
        self.left_out["order_lines"] += sum(map(len, order_lines.values()))
        return self

    def _customer(self, r: dict[str, str]) -> None:
        ext = r["external_id"]
        if flag(r.get("deleted")):
            self.left_out["customers"] += 1  # BC deletes a customer: nothing is left to read
            return
        record = {"id": self._id("customers", ext), "number": ext, "displayName": r["name"],
                  "type": "Company", "addressLine1": "", "city": "",
                  "country": r.get("country", ""), "postalCode": "", "currencyCode": "",
                  "blocked": ""}
        self.fake.add("customers", record, modified=moment(r.get("source_updated_at")))
        self._customers[ext] = record
        self.ids[("customers", ext)] = record["id"]

    def _item(self, number: str, kind: str, name: str) -> str:
        """The id of the item of this number, created with the kind's category if new."""
        if number not in self._items:
            self._items[number] = self._id("items", number)
            service = kind in ("field_service", "service_contract")
            self.fake.add("items", {
                "id": self._items[number], "number": number, "displayName": name,
                "type": "Service" if service else "Inventory",
                "itemCategoryCode": ITEM_CATEGORIES[kind], "unitPrice": 0.0,
                "blocked": False})
        return self._items[number]

    def _line(self, r: dict[str, str], *, kind: str, sign: int, code: str | None,
              prefix: str, entity: str) -> dict[str, Any]:
        line: dict[str, Any] = {
            "id": self._id(entity, r["external_id"]),
            "description": r.get("description", ""),
            "quantity": float(amount(r.get("quantity"), "1")),
            "netAmount": float(amount(r["net_amount"]) * sign)}
        if code:
            line.update(itemId=self._item(code, kind, r.get("description") or code),
                        lineType="Item", lineObjectNumber=code)
        else:
            # Technician hours are a Resource line; anything else without a number an account.
            line.update(lineType="Resource" if kind == "field_service" else "Account",
                        lineObjectNumber="")
        if r.get("unit_price"):
            line["unitPrice"] = float(amount(r["unit_price"]))
        self.ids[(entity, r["external_id"])] = prefix + line["id"]
        return line

    def _invoice(self, r: dict[str, str], lines: list[dict[str, str]]) -> None:
        ext, status = r["external_id"], r["status"]
        customer = self._customers.get(r["customer_external_id"])
        if customer is None:
            self.left_out["invoices"] += 1
            self.left_out["invoice_lines"] += len(lines)
            return
        credit = status == "credited"
        sign, prefix = (-1, CREDIT_MEMO) if credit else (1, "")
        net = float(amount(r["net_amount"]) * sign)
        document: dict[str, Any] = {
            "id": self._id("invoices", ext), "number": r.get("number", ""),
            "creditMemoDate" if credit else "invoiceDate": r["issued_on"],
            "postingDate": r["issued_on"], "dueDate": r.get("due_on", BLANK_DATE),
            "customerId": customer["id"], "customerNumber": customer["number"],
            "customerName": customer["displayName"], "currencyCode": r["currency"],
            "totalAmountExcludingTax": net, "totalAmountIncludingTax": net,
            "status": INVOICE_STATUSES[status],
            LINES["salesCreditMemos" if credit else "salesInvoices"]: [
                self._line(line, kind=line["kind"], sign=sign, code=line.get("product_code"),
                           prefix=prefix, entity="invoice_lines") for line in lines]}
        if credit:
            document.update(externalDocumentNumber="", totalTaxAmount=0.0, invoiceId="",
                            invoiceNumber="")
        else:
            document.update(orderNumber="", remainingAmount=0.0 if status in (
                "paid", "cancelled") else net)
        changed = moment(r.get("source_updated_at"))
        if status == "paid" and (changed is None or changed.date().isoformat() != r["paid_on"]):
            # BC's Paid invoice was last changed when the payment closed it.
            changed = datetime.fromisoformat(f"{r['paid_on']}T16:00:00+00:00")
        self.fake.add("salesCreditMemos" if credit else "salesInvoices", document,
                      modified=changed)
        self.ids[("invoices", ext)] = prefix + document["id"]

    def _order(self, r: dict[str, str], lines: list[dict[str, str]]) -> None:
        ext, status = r["external_id"], r["status"]
        customer = self._customers.get(r["customer_external_id"])
        if status not in ORDER_STATUSES or customer is None:
            self.left_out["orders"] += 1
            self.left_out["order_lines"] += len(lines)
            return
        kind = "field_service" if r["kind"] == "service" else "spare_parts"
        net = float(amount(r["net_amount"]))
        self.fake.add("salesOrders", {
            "id": self._id("orders", ext), "number": r.get("number", ""),
            "orderDate": r["ordered_on"], "customerId": customer["id"],
            "customerNumber": customer["number"], "customerName": customer["displayName"],
            "currencyCode": r["currency"], "totalAmountExcludingTax": net,
            "totalAmountIncludingTax": net, "fullyShipped": status == "delivered",
            "status": ORDER_STATUSES[status],
            "salesOrderLines": [self._line(line, kind=kind, sign=1, code=line.get("part_number"),
                                           prefix="", entity="order_lines") for line in lines]},
            modified=moment(r.get("source_updated_at")))
        self.ids[("orders", ext)] = self._id("orders", ext)


def _by_parent(records: list[dict[str, str]], parent: str) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = {}
    for record in records:
        grouped.setdefault(record[parent], []).append(record)
    return grouped
