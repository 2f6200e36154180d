"""Microsoft Dynamics 365 Business Central through its standard API v2.0.

docs/erp-business-central.md says what is read, how it maps and what BC's API does not have.

Customers, machine models (items of a machine category), sales invoices and sales credit memos
with their lines (a credit memo is an invoice of negative amount) and after-sales orders with
their lines, read as OData v4 from
``{api_url}/v2.0/{tenant}/{environment}/api/v2.0/companies({company_id})/...`` with an OAuth2
client-credentials token from Microsoft Entra ID. Everything goes through
:class:`~erp_connectors.http.ErpHttp`: throttling (429 with ``Retry-After``) and gateway errors
are waited out there, a refusal stops the entity with :class:`PermanentSyncError`.

Incremental sync filters on ``lastModifiedDateTime ge <since>`` and follows
``@odata.nextLink``. BC pages by key, not by time, so the cursor committed with a page inside a
run is the run's own lower bound plus the next link: a run killed midway resumes at that link
or, if the link no longer works, re-reads from the same lower bound; nothing is skipped, and the
upserts absorb what is read twice. Only a completed run moves the lower bound forward (see
:func:`next_since`). The API reports no deletions: a full sync, whose sweep marks what it did not
see, catches them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson

from erp_connectors.http import ErpHttp, RetryPolicy
from erp_connectors.models import LineKind
from erp_connectors.sync import Page, PageSource, PermanentSyncError, SourceReject

logger = logging.getLogger(__name__)

API_URL = "https://api.businesscentral.dynamics.com"
SCOPE = "https://api.businesscentral.dynamics.com/.default"
PAGE_SIZE = 1000
# BC writes an empty date as the first day of year 1.
BLANK_DATE = "0001-01-01"
# Refresh a token this long before Entra ID says it ends: a page request must not race it.
TOKEN_MARGIN_S = 120.0

# BC's document status (the same for invoices and credit memos): `Canceled` is a document
# cancelled by a corrective one, `Corrective` the document posted to cancel another (the credit
# memo that cancels an invoice, the invoice that cancels a credit memo). Both halves of such a
# pair are `cancelled`: neither counts, and what remains adds up (docs/erp-business-central.md).
INVOICE_STATUS: dict[str, str] = {
    "Draft": "draft", "In Review": "draft", "Open": "open", "Paid": "paid",
    "Canceled": "cancelled", "Corrective": "cancelled",
}
CREDIT_MEMO_STATUS: dict[str, str] = {
    "Draft": "draft", "In Review": "draft", "Open": "credited", "Paid": "credited",
    "Canceled": "cancelled", "Corrective": "cancelled",
}
# Credit memos and their lines share the invoices' tables: their ids carry this prefix, so a
# credit memo can never take the row of an invoice (nor a credit line that of an invoice line).
CREDIT_MEMO_PREFIX = "credit-memo:"
ORDER_STATUS: dict[str, str] = {
    "Draft": "draft", "In Review": "draft", "Open": "confirmed", "Released": "confirmed",
}
OrderKind = Literal["spare_parts", "service"]


@dataclass(frozen=True, slots=True)
class _Documents:
    """One of the entity sets our invoices are read from, and how its documents map."""

    entity_set: str
    lines: str  # the $expand name of its lines
    what: str  # how a reject names one
    date_field: str
    statuses: Mapping[str, str]
    prefix: str = ""  # of external ids
    sign: Literal[1, -1] = 1  # of amounts

    def external_id(self, raw: dict[str, Any]) -> str | None:
        value = _text(raw.get("id"))
        return None if value is None else self.prefix + value


SALES_INVOICES = _Documents("salesInvoices", "salesInvoiceLines", "sales invoice", "invoiceDate",
                            INVOICE_STATUS)
SALES_CREDIT_MEMOS = _Documents("salesCreditMemos", "salesCreditMemoLines", "sales credit memo",
                                "creditMemoDate", CREDIT_MEMO_STATUS, CREDIT_MEMO_PREFIX, -1)
# Read in this order within one run of `invoices` (and of `invoice_lines`), one cursor each.
INVOICE_DOCUMENTS = (SALES_INVOICES, SALES_CREDIT_MEMOS)


@dataclass(frozen=True, slots=True)
class KindRules:
    """Which items are machines, and what kind of revenue a document line is.

    BC has no notion of either: both come from how the machine builder sets up item categories
    (``itemCategoryCode``) and, for lines without an item, the line type and G/L account.
    Codes are compared in upper case, as BC stores them. Pass your own instance to the
    connector to fit another setup.
    """

    machine_categories: frozenset[str] = frozenset({"MACHINE", "MACHINES"})
    item_categories: Mapping[str, LineKind] = field(default_factory=lambda: {
        "PARTS": "spare_parts", "SPAREPARTS": "spare_parts", "SPARE-PARTS": "spare_parts",
        "SERVICE": "field_service", "FIELD-SERVICE": "field_service",
        "CONTRACT": "service_contract", "SERVICE-CONTRACT": "service_contract",
        "RETROFIT": "retrofit", "UPGRADE": "retrofit",
    })
    # A Resource line is hours of a technician; Item lines are decided by category above.
    line_types: Mapping[str, LineKind] = field(default_factory=lambda: {
        "Resource": "field_service"})
    accounts: Mapping[str, LineKind] = field(default_factory=dict)  # G/L account no. -> kind
    default: LineKind = "other"

    def is_machine(self, category: str | None) -> bool:
        """Whether an item of this category is a machine model."""
        return category is not None and category.upper() in self.machine_categories

    def line_kind(self, line_type: str | None, object_number: str | None,
                  category: str | None) -> LineKind:
        """The kind of a line, from its item's category, its account or its type."""
        if line_type == "Item" and category is not None:
            if self.is_machine(category):
                return "new_machine"
            kind = self.item_categories.get(category.upper())
            if kind is not None:
                return kind
        if line_type == "Account" and object_number is not None:
            kind = self.accounts.get(object_number)
            if kind is not None:
                return kind
        return self.line_types.get(line_type or "", self.default)

    @staticmethod
    def order_kind(kinds: list[LineKind]) -> OrderKind | None:
        """The kind of an order, from the kinds of its lines.

        An order with a service line is a service order, else one with parts is a parts order;
        an order of neither (a machine sale) is not after-sales and is not synced.
        """
        if any(k in ("field_service", "service_contract") for k in kinds):
            return "service"
        if "spare_parts" in kinds:
            return "spare_parts"
        return None


# -- time and cursors -----------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """A BC time (``2026-01-15T08:30:00.123Z``) as an aware datetime; ValueError if it is not."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(when: datetime) -> str:
    """A time as an OData DateTimeOffset literal, in UTC with milliseconds."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def next_since(since: str | None, newest: str | None, started: str | None,
               overlap: timedelta) -> str | None:
    """The lower bound of the next run, once a run has read everything from ``since`` on.

    A completed run has seen every record changed before it started (``started``, the
    server's clock) and the newest ``lastModifiedDateTime`` among them (``newest``). A record
    changed while the run paged may sit on a page already read, with a time below ``newest``
    from records changed even later: so the next run starts no later than ``started`` minus
    ``overlap`` (clock slack between BC's front end and its database), and no later than
    ``newest``. It never moves backwards.

    >>> next_since("2026-01-01T00:00:00.000Z", "2026-01-05T00:00:00.000Z",
    ...            "2026-02-01T00:00:00.000Z", timedelta(minutes=5))
    '2026-01-05T00:00:00.000Z'
    >>> next_since(None, "2026-02-01T00:03:00.000Z", "2026-02-01T00:04:00.000Z",
    ...            timedelta(minutes=5))
    '2026-01-31T23:59:00.000Z'
    """
    candidates = []
    if newest is not None:
        candidates.append(parse_time(newest))
    if started is not None:
        candidates.append(parse_time(started) - overlap)
    if not candidates:
        return since
    bound = min(candidates)
    if since is not None and bound < parse_time(since):
        return since
    return format_time(bound)


@dataclass(frozen=True, slots=True)
class Cursor:
    """What a page commits: the run's lower bound, and inside a run where it got to."""

    since: str | None = None  # lastModifiedDateTime ge this; None: everything
    next_link: str | None = None  # the page after the committed one
    newest: str | None = None  # newest lastModifiedDateTime seen by the run so far
    started: str | None = None  # server time of the run's first answer

    def dumps(self) -> str:
        """The cursor as stored in ``sync_cursors``."""
        return orjson.dumps({k: v for k, v in (
            ("since", self.since), ("next", self.next_link), ("newest", self.newest),
            ("started", self.started)) if v is not None}).decode()

    @classmethod
    def loads(cls, text: str | None) -> Cursor:
        """A stored cursor; one that cannot be read starts from the beginning."""
        if text is None:
            return cls()
        try:
            data = orjson.loads(text)
            cursor = cls(since=data.get("since"), next_link=data.get("next"),
                         newest=data.get("newest"), started=data.get("started"))
            for stamp in (cursor.since, cursor.newest, cursor.started):
                if stamp is not None:
                    parse_time(stamp)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            logger.warning("business central cursor %r cannot be read; reading from the start",
                           text)
            return cls()
        return cursor


def split_cursor(stored: str | None, entity_sets: list[str]) -> dict[str, str | None]:
    """The cursor of each entity set read by one entity, from what the entity stored.

    An entity read from several sets stores ``{"sets": {set: cursor}}``. A plain cursor (stored
    before the entity read more than one set) is the first set's; the others start over.
    """
    cursors: dict[str, str | None] = dict.fromkeys(entity_sets)
    if stored is None:
        return cursors
    try:
        data = orjson.loads(stored)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("sets"), dict):
        for name in entity_sets:
            inner = data["sets"].get(name)
            cursors[name] = orjson.dumps(inner).decode() if inner is not None else None
    else:
        cursors[entity_sets[0]] = stored  # Cursor.loads copes with whatever it is
    return cursors


def join_cursors(cursors: dict[str, str | None]) -> str:
    """The cursor an entity read from several sets stores (see :func:`split_cursor`)."""
    return orjson.dumps({"sets": {name: orjson.loads(text) for name, text in cursors.items()
                                  if text is not None}}).decode()


# -- OAuth2 ---------------------------------------------------------------------------------


class ClientCredentials(httpx.Auth):
    """Bearer tokens from Entra ID's client-credentials grant, reused until near their end.

    A 401 from the API (a token revoked or expired early) fetches a new token and sends the
    request once more; a second 401 goes back to the caller as it is.
    """

    def __init__(self, *, token_url: str, client_id: str, client_secret: str, scope: str,
                 source: str, policy: RetryPolicy | None = None) -> None:
        self._form = {"grant_type": "client_credentials", "client_id": client_id,
                      "client_secret": client_secret, "scope": scope}
        self._token_url = token_url
        self._client_id = client_id
        self._source = source
        parts = urlsplit(token_url)
        self._http = ErpHttp(f"{parts.scheme}://{parts.netloc}", name=f"{source} token",
                             policy=policy)
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0

    async def aclose(self) -> None:
        """Close the token endpoint's connections."""
        await self._http.aclose()

    async def token(self, *, stale: str | None = None) -> str:
        """A valid token; a new one if the current one is ``stale`` or near its end."""
        async with self._lock:
            fresh = self._token is not None and self._token != stale and (
                time.monotonic() < self._expires_at)
            if not fresh:
                self._token, self._expires_at = await self._fetch()
            assert self._token is not None
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        try:
            response = await self._http.request("POST", self._token_url, data=self._form)
        except PermanentSyncError as exc:
            raise PermanentSyncError(
                f"{self._source}: the token endpoint refused app {self._client_id} (check"
                f" tenant, client_id and client_secret, and that the app is registered in"
                f" Business Central): {exc}") from exc
        try:
            body = orjson.loads(response.content)
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 3599))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise PermanentSyncError(f"{self._source}: the token endpoint {self._token_url}"
                                     " answered without an access_token") from None
        self.fetched += 1
        logger.info("%s: new access token, valid for %.0f s", self._source, lifetime)
        return str(token), time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN_S)

    async def async_auth_flow(
            self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send with a token; after a 401, once more with a new one."""
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            await response.aread()
            logger.info("%s: token refused (%s); fetching a new one", self._source,
                        response.text[:200])
            request.headers["Authorization"] = f"Bearer {await self.token(stale=token)}"
            yield request


# -- mapping --------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A BC string, ``None`` when empty (BC sends ``""`` for an empty field)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    return str(value)


def _date(value: Any) -> str | None:
    text = _text(value)
    return None if text is None or text == BLANK_DATE else text


def _present(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its absent values: the models read absence as 'not given'."""
    return {k: v for k, v in record.items() if v is not None}


class _Unmappable(Exception):  # noqa: N818 - carries a reject's reason, never escapes
    pass


def _id(raw: dict[str, Any], what: str) -> str:
    value = _text(raw.get("id"))
    if value is None:
        raise _Unmappable(f"{what} without an id")
    return value


def _label(raw: dict[str, Any], what: str) -> str:
    number = _text(raw.get("number"))
    ident = _text(raw.get("id")) or "(without id)"
    return f"{what} {number} ({ident})" if number else f"{what} {ident}"


# -- the connector --------------------------------------------------------------------------


class BusinessCentralConnector:
    """One Business Central company as a :class:`~erp_connectors.sync.Connector`.

    Parameters
    ----------
    api_url
        The API host, ``https://api.businesscentral.dynamics.com`` for BC online.
    tenant
        The Entra ID tenant (GUID or domain) the environment belongs to.
    environment
        The BC environment name (``production``, ``sandbox``...).
    company_id
        The company's id (GUID), as ``GET .../api/v2.0/companies`` lists it.
    client_id, client_secret
        The Entra ID app registered in BC (page "Microsoft Entra Applications") with the
        permission sets to read customers, items, sales invoices and orders.
    token_url
        The token endpoint; ``None`` is
        ``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token``.
    source
        The name in every row's ``source``.
    page_size
        Entities per page, asked for with ``Prefer: odata.maxpagesize`` (each page is one
        committed transaction).
    kinds
        Which item categories are machines and what kind each line is (:class:`KindRules`).
    model_field
        Which item field names a machine model: ``number`` (default) or ``displayName``.
    local_currency
        ISO code used where BC leaves ``currencyCode`` empty (the company's local currency);
        ``None`` rejects such documents with a reason saying so.
    overlap
        Clock slack between BC's front end and its database; each incremental run re-reads
        changes this far back (harmless: unchanged rows are not written).
    retry
        Retry policy of every request (tests shorten it).
    """

    # The six coordinates of a BC company are positional, in the order BC's URLs and Entra ID
    # name them (the process wiring calls it so); every option after them is keyword-only.
    def __init__(self, api_url: str, tenant: str, environment: str,  # noqa: PLR0917
                 company_id: str, client_id: str, client_secret: str, *,
                 token_url: str | None = None, source: str = "business_central",
                 page_size: int = PAGE_SIZE,
                 kinds: KindRules | None = None,
                 model_field: Literal["number", "displayName"] = "number",
                 local_currency: str | None = None,
                 overlap: timedelta = timedelta(minutes=5),
                 retry: RetryPolicy | None = None, timeout_s: float = 60.0) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self.source = source
        self.kinds = kinds or KindRules()
        self.model_field = model_field
        self.local_currency = local_currency
        self.overlap = overlap
        root = api_url.rstrip("/")
        self.company_url = (f"{root}/v2.0/{tenant}/{environment}/api/v2.0/"
                            f"companies({company_id})")
        self._auth = ClientCredentials(
            token_url=token_url or f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
            client_id=client_id, client_secret=client_secret, scope=SCOPE, source=source,
            policy=retry)
        self._http = ErpHttp(self.company_url, name=source, policy=retry, auth=self._auth,
                             timeout_s=timeout_s,
                             headers={"Accept": "application/json",
                                      "Prefer": f"odata.maxpagesize={page_size}"})

    @property
    def tokens_fetched(self) -> int:
        """Access tokens fetched so far (a reused token is not fetched again)."""
        return self._auth.fetched

    def page_sources(self) -> dict[str, PageSource]:
        """customers, machine_models, invoices, invoice_lines, orders, order_lines."""
        return {"customers": self._customers, "machine_models": self._machine_models,
                "invoices": self._invoices, "invoice_lines": self._invoice_lines,
                "orders": self._orders, "order_lines": self._order_lines}

    async def aclose(self) -> None:
        """Close the API's and the token endpoint's connections."""
        await self._http.aclose()
        await self._auth.aclose()

    # -- paging ----------------------------------------------------------------------------

    def _first_request(self, entity_set: str, since: str | None,
                       params: dict[str, str]) -> tuple[str, dict[str, str]]:
        query = dict(params)
        if since is not None:
            # `ge`, not `gt`: records sharing the newest time of the last run are read again
            # rather than lost when more of them appear later with the same time.
            query["$filter"] = f"lastModifiedDateTime ge {since}"
        return f"{self.company_url}/{entity_set}", query

    def _check_link(self, link: str) -> str:
        # The bearer token goes wherever the link points: only to the API we were given.
        ours, theirs = urlsplit(self.company_url), urlsplit(link)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc) or not (
                theirs.path.startswith(ours.path)):
            raise PermanentSyncError(f"{self.source}: next link {link!r} leaves"
                                     f" {self.company_url}; refusing to follow it")
        return link

    async def _get(self, url: str, params: dict[str, str] | None) -> tuple[
            list[Any], str | None, str | None]:
        """One page: its entities, the next link and the server's time."""
        response = await self._http.request("GET", url, params=params)
        try:
            body = orjson.loads(response.content)
            value = body["value"] if isinstance(body, dict) else None
        except (orjson.JSONDecodeError, KeyError):
            value = None
        if not isinstance(value, list):
            raise PermanentSyncError(f"{self.source}: GET {url} answered without an OData"
                                     " value list")
        link = body.get("@odata.nextLink")
        return value, (self._check_link(link) if link else None), _server_time(response)

    async def _pages(self, entity_set: str, stored: str | None,
                     params: dict[str, str]) -> AsyncIterator[tuple[list[Any], str]]:
        """Raw entities of a set, page by page, each with the cursor to commit after it."""
        cursor = Cursor.loads(stored)
        resuming = cursor.next_link is not None
        url: str
        query: dict[str, str] | None
        url, query = self._first_request(entity_set, cursor.since, params)
        if cursor.next_link is not None:
            url, query = cursor.next_link, None
        while True:
            try:
                value, link, server_time = await self._get(url, query)
            except PermanentSyncError as exc:
                if not resuming:
                    raise
                # A link from a run that died may no longer work; its lower bound does.
                logger.warning("%s/%s: the stored next link failed (%s); reading again from"
                               " %s", self.source, entity_set, exc, cursor.since)
                cursor = Cursor(since=cursor.since)
                resuming = False
                url, query = self._first_request(entity_set, cursor.since, params)
                continue
            resuming = False
            newest = _newest(cursor.newest, value)
            started = cursor.started or server_time
            if link is not None:
                cursor = Cursor(since=cursor.since, next_link=link, newest=newest,
                                started=started)
            else:
                cursor = Cursor(since=next_since(cursor.since, newest, started, self.overlap))
            yield value, cursor.dumps()
            if link is None:
                return
            url, query = link, None

    async def _item_categories(self) -> dict[str, str | None]:
        """Every item's category, by item id: what an invoice or order line's kind hangs on."""
        categories: dict[str, str | None] = {}
        async for value, _cursor in self._pages("items", None,
                                                {"$select": "id,itemCategoryCode"}):
            for raw in value:
                if isinstance(raw, dict) and _text(raw.get("id")):
                    categories[str(raw["id"])] = _text(raw.get("itemCategoryCode"))
        return categories

    async def _mapped(self, entity_set: str, stored: str | None, params: dict[str, str],
                      mapper: Callable[[dict[str, Any]], list[dict[str, Any] | SourceReject]],
                      what: str, *,
                      reject_id: Callable[[dict[str, Any]], str | None] | None = None,
                      ) -> AsyncIterator[Page]:
        """Entities of a set, mapped page by page.

        A document the mapper cannot map is rejected under ``reject_id(raw)``: its own id by
        default. For a line entity that must be ``None`` (the mapper rejects lines it cannot
        map under their own ids): a full sync's sweep spares the rows a reject names, and a
        document's id names no line, so its lines would be swept while it still exists.
        """
        def default_id(raw: dict[str, Any]) -> str | None:
            return _text(raw.get("id"))

        name_of = reject_id or default_id
        async for value, cursor in self._pages(entity_set, stored, params):
            records: list[dict[str, Any]] = []
            rejects: list[SourceReject] = []
            for raw in value:
                if not isinstance(raw, dict):
                    rejects.append(SourceReject(reason=f"{what} is not a JSON object",
                                                record={"value": raw}))
                    continue
                try:
                    for mapped in mapper(raw):
                        if isinstance(mapped, SourceReject):
                            rejects.append(mapped)
                        else:
                            records.append(mapped)
                except _Unmappable as exc:
                    rejects.append(SourceReject(
                        reason=f"{_label(raw, what)}: {exc}", record=_plain(raw),
                        external_id=name_of(raw)))
            yield Page(records=records, cursor=cursor, rejects=rejects)

    async def _from_sets(self, stored: str | None, documents: tuple[_Documents, ...],
                         read: Callable[[_Documents, str | None], AsyncIterator[Page]],
                         ) -> AsyncIterator[Page]:
        """Pages of one entity read from several entity sets in turn, under one cursor.

        Each set keeps its own cursor inside the entity's: a run killed in the second set
        resumes it there, and re-reads the first only from where that one completed.
        """
        cursors = split_cursor(stored, [d.entity_set for d in documents])
        for docs in documents:
            async for page in read(docs, cursors[docs.entity_set]):
                cursors[docs.entity_set] = page.cursor
                yield Page(records=page.records, cursor=join_cursors(cursors),
                           rejects=page.rejects)

    # -- entities --------------------------------------------------------------------------

    def _customers(self, cursor: str | None) -> AsyncIterator[Page]:
        return self._mapped("customers", cursor, {}, _customer, "customer")

    def _machine_models(self, cursor: str | None) -> AsyncIterator[Page]:
        def mapper(raw: dict[str, Any]) -> list[dict[str, Any] | SourceReject]:
            if not self.kinds.is_machine(_text(raw.get("itemCategoryCode"))):
                return []  # a part, a service: not a machine model
            return [_present({"external_id": _id(raw, "item"),
                              "model": _text(raw.get(self.model_field)),
                              "source_updated_at": _text(raw.get("lastModifiedDateTime"))})]

        return self._mapped("items", cursor, {}, mapper, "item")

    def _invoices(self, cursor: str | None) -> AsyncIterator[Page]:
        def read(docs: _Documents, stored: str | None) -> AsyncIterator[Page]:
            return self._mapped(docs.entity_set, stored, {},
                                lambda raw: [self._invoice(raw, docs)], docs.what)

        return self._paid_on_first_seen(self._from_sets(cursor, INVOICE_DOCUMENTS, read))

    @staticmethod
    async def _paid_on_first_seen(pages: AsyncIterator[Page]) -> AsyncIterator[Page]:
        # paid_on is the day a paid invoice was last modified: the engine keeps the first one.
        async for page in pages:
            yield replace(page, paid_on_first_seen=True)

    def _invoice(self, raw: dict[str, Any], docs: _Documents) -> dict[str, Any]:
        status = _text(raw.get("status"))
        mapped = docs.statuses.get(status or "")
        if mapped is None:
            raise _Unmappable(f"status {status!r} is not one of {', '.join(docs.statuses)}")
        _id(raw, docs.what)
        modified = _text(raw.get("lastModifiedDateTime"))
        record = _present({
            "external_id": docs.external_id(raw),
            "customer_external_id": _text(raw.get("customerId")),
            "number": _text(raw.get("number")),
            "issued_on": _date(raw.get(docs.date_field)),
            "due_on": _date(raw.get("dueDate")),
            "currency": self._currency(raw),
            "net_amount": _signed(raw.get("totalAmountExcludingTax"), docs.sign,
                                  "totalAmountExcludingTax"),
            "status": mapped,
            "source_updated_at": modified,
        })
        if mapped == "paid" and modified:
            # API v2.0 has no payment date; a Paid invoice was last changed when its ledger
            # entry closed, the best date it offers, until a later edit moves it: so it is
            # given only for a Paid invoice and absent otherwise (docs/erp-business-central.md,
            # "Paid date").
            record["paid_on"] = modified[:10]
        return record

    def _currency(self, raw: dict[str, Any]) -> str:
        code = _text(raw.get("currencyCode"))
        if code is not None:
            return code
        if self.local_currency is None:
            raise _Unmappable("currencyCode is empty (the company's local currency): set"
                              " local_currency for this source")
        return self.local_currency

    async def _invoice_lines(self, cursor: str | None) -> AsyncIterator[Page]:
        categories = await self._item_categories()

        def read(docs: _Documents, stored: str | None) -> AsyncIterator[Page]:
            def mapper(raw: dict[str, Any]) -> list[dict[str, Any] | SourceReject]:
                return self._document_lines(
                    raw, docs.lines, docs.what, lambda line: self._invoice_line(
                        line, raw, docs, categories), prefix=docs.prefix)

            return self._mapped(docs.entity_set, stored, {"$expand": docs.lines}, mapper,
                                docs.what, reject_id=_no_id)

        async for page in self._from_sets(cursor, INVOICE_DOCUMENTS, read):
            yield page

    @staticmethod
    def _document_lines(raw: dict[str, Any], name: str, what: str,
                        mapper: Callable[[dict[str, Any]], dict[str, Any]], *,
                        prefix: str = "") -> list[dict[str, Any] | SourceReject]:
        """A document's billable lines, each mapped or rejected on its own."""
        out: list[dict[str, Any] | SourceReject] = []
        for position, line in enumerate(_lines(raw, name), start=1):
            if not isinstance(line, dict):
                # Nothing names this line: the reject carries no id (see `_mapped`).
                out.append(SourceReject(
                    reason=f"{_label(raw, what)}: line {position} is not a JSON object",
                    record={"document": _plain(raw) | {name: None}, "line": line}))
            elif _billable(line):
                try:
                    out.append(mapper(line))
                except _Unmappable as exc:
                    ident = _text(line.get("id"))
                    out.append(SourceReject(
                        reason=f"{_label(raw, what)}: line {position}"
                               f" ({ident or 'without id'}): {exc}",
                        record=line, external_id=None if ident is None else prefix + ident))
        return out

    def _invoice_line(self, line: dict[str, Any], document: dict[str, Any], docs: _Documents,
                      categories: dict[str, str | None]) -> dict[str, Any]:
        number = _text(line.get("lineObjectNumber"))
        kind = self.kinds.line_kind(_text(line.get("lineType")), number,
                                    categories.get(_text(line.get("itemId")) or ""))
        line_id = _text(line.get("id"))
        return _present({
            **_line_fields(line),
            "external_id": None if line_id is None else docs.prefix + line_id,
            "net_amount": _signed(line.get("netAmount"), docs.sign, "netAmount"),
            # A document without an id leaves this empty: the engine rejects each of its lines
            # under the line's own id.
            "invoice_external_id": docs.external_id(document),
            "kind": kind,
            "product_code": number})

    def _order_kind(self, raw: dict[str, Any],
                    categories: dict[str, str | None]) -> OrderKind | None:
        # A line that is not an object is rejected in order_lines; the others decide the kind.
        kinds = [self.kinds.line_kind(_text(ln.get("lineType")), _text(ln.get("lineObjectNumber")),
                                      categories.get(_text(ln.get("itemId")) or ""))
                 for ln in _lines(raw, "salesOrderLines")
                 if isinstance(ln, dict) and _billable(ln)]
        return self.kinds.order_kind(kinds)

    async def _orders(self, cursor: str | None) -> AsyncIterator[Page]:
        categories = await self._item_categories()

        def mapper(raw: dict[str, Any]) -> list[dict[str, Any] | SourceReject]:
            kind = self._order_kind(raw, categories)
            if kind is None:
                return []  # a machine sale, not an after-sales order
            return [self._order(raw, kind)]

        async for page in self._mapped("salesOrders", cursor, {"$expand": "salesOrderLines"},
                                       mapper, "sales order"):
            yield page

    def _order(self, raw: dict[str, Any], kind: OrderKind) -> dict[str, Any]:
        status = _text(raw.get("status"))
        mapped = ORDER_STATUS.get(status or "")
        if mapped is None:
            raise _Unmappable(f"status {status!r} is not one of {', '.join(ORDER_STATUS)}")
        if raw.get("fullyShipped") is True:
            mapped = "delivered"
        return _present({
            "external_id": _id(raw, "sales order"),
            "customer_external_id": _text(raw.get("customerId")),
            "kind": kind,
            "number": _text(raw.get("number")),
            "ordered_on": _date(raw.get("orderDate")),
            "status": mapped,
            "currency": self._currency(raw),
            "net_amount": raw.get("totalAmountExcludingTax"),
            "source_updated_at": _text(raw.get("lastModifiedDateTime")),
        })

    async def _order_lines(self, cursor: str | None) -> AsyncIterator[Page]:
        categories = await self._item_categories()

        def mapper(raw: dict[str, Any]) -> list[dict[str, Any] | SourceReject]:
            if self._order_kind(raw, categories) is None:
                return []
            return self._document_lines(raw, "salesOrderLines", "sales order", lambda line: (
                _present({**_line_fields(line), "external_id": _text(line.get("id")),
                          "net_amount": line.get("netAmount"),
                          "order_external_id": _text(raw.get("id")),
                          "part_number": _text(line.get("lineObjectNumber"))})))

        async for page in self._mapped("salesOrders", cursor, {"$expand": "salesOrderLines"},
                                       mapper, "sales order", reject_id=_no_id):
            yield page


def _no_id(_raw: dict[str, Any]) -> str | None:
    return None


def _line_fields(line: dict[str, Any]) -> dict[str, Any]:
    # No source_updated_at: v2.0 lines have no time of their own, and the document's would
    # rewrite every line of a document whenever one of them changed.
    return {"description": _text(line.get("description")), "quantity": line.get("quantity"),
            "unit_price": line.get("unitPrice")}


def _signed(value: Any, sign: int, name: str) -> Any:
    """An amount with the document's sign: BC serves a credit memo's amounts positive."""
    if sign == 1 or value is None:
        return value  # the models judge it (and say when it is missing)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Unmappable(f"{name} {value!r} is not a number")
    return -value


def _customer(raw: dict[str, Any]) -> list[dict[str, Any] | SourceReject]:
    return [_present({
        "external_id": _id(raw, "customer"),
        "name": _text(raw.get("displayName")),
        "country": _text(raw.get("country")),
        "source_updated_at": _text(raw.get("lastModifiedDateTime")),
    })]


def _lines(raw: dict[str, Any], name: str) -> list[Any]:
    lines = raw.get(name)
    if not isinstance(lines, list):
        raise _Unmappable(f"{name} is missing or not a list (was $expand honoured?)")
    return lines


def _billable(line: dict[str, Any]) -> bool:
    # A Comment line is text between lines: no item, no quantity, no amount.
    return _text(line.get("lineType")) != "Comment"


def _newest(current: str | None, value: list[Any]) -> str | None:
    newest = parse_time(current) if current is not None else None
    for raw in value:
        text = _text(raw.get("lastModifiedDateTime")) if isinstance(raw, dict) else None
        if text is None:
            continue
        try:
            when = parse_time(text)
        except ValueError:
            continue  # the record is rejected by its model; the cursor ignores it
        if newest is None or when > newest:
            newest = when
    return None if newest is None else format_time(newest)


def _server_time(response: httpx.Response) -> str | None:
    """The server's clock from the ``Date`` header: the run's start on BC's side, not ours."""
    header = response.headers.get("Date")
    if header is None:
        return format_time(datetime.now(UTC))
    try:
        return format_time(parsedate_to_datetime(header))
    except (TypeError, ValueError):
        return format_time(datetime.now(UTC))


def _plain(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if not k.startswith("@odata.")}


__all__ = ["API_URL", "CREDIT_MEMO_PREFIX", "CREDIT_MEMO_STATUS", "INVOICE_STATUS",
           "ORDER_STATUS", "SCOPE", "BusinessCentralConnector", "ClientCredentials", "Cursor",
           "KindRules", "join_cursors", "next_since", "split_cursor"]
