"""Odoo 17/18 through its external API (JSON-RPC ``execute_kw``), incremental by ``write_date``.

Every entity is one ``search_read`` per page on one Odoo model. Odoo stores ``write_date`` with
microseconds (``cr.now()``, a ``timestamp`` column) but JSON-RPC serves it cut to whole seconds,
so a served stamp ``w`` stands for the second ``[w, w + 1s)``: ``write_date = w`` matches
nothing and ``write_date > w`` matches the rest of that second. Paging therefore keeps a
position ``(second, last id)``: the rest of a second is read by id (``write_date >= w``,
``write_date < w + 1s``, ``id > last``, ordered by ``id``), then everything later by
``write_date, id`` (``write_date >= w + 1s``). A full page's last second may go on beyond the
page in microsecond order, which ids cannot resume from, so that second is read again by id;
the seconds before it are complete. A page that would end where it started (a server not
applying the domain) stops the entity with :class:`PermanentSyncError`: the same question gets
the same answer on every retry. The position is the cursor stored with each page (JSON
``[second, id]``). A run resuming from a cursor first re-reads ``overlap_s`` seconds before
it: Odoo stamps ``write_date`` when a transaction starts, not when it commits, so a long
transaction can make a record visible after later stamps were read. Re-reading is cheap: the
engine writes only rows whose values changed.

Archived records (``active = False``) are read too and marked deleted. Which Odoo module and
field each value comes from, and the custom ``x_`` fields a machine builder's Odoo needs, are in
docs/erp-odoo.md; :class:`OdooFields` renames them for a deployment whose fields differ.

Errors: a refused login and Odoo's ``AccessError``/``AccessDenied``/``ValueError``/
``UserError``/``MissingError`` stop the entity with :class:`PermanentSyncError` carrying Odoo's
message; a database error on Odoo's side (serialization, lost connection) with
:class:`SourceUnavailableError`; transport errors, 5xx and 429 are retried by
:class:`erp_connectors.http.ErpHttp`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from erp_connectors.http import ErpHttp, RetryPolicy
from erp_connectors.sync import (
    Page,
    PageSource,
    PermanentSyncError,
    SourceReject,
    SourceUnavailableError,
)

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
ORDER = "write_date asc, id asc"
SECOND = timedelta(seconds=1)
ODOO_DATETIME = "%Y-%m-%d %H:%M:%S"
# Odoo exceptions that mean "a person must change something": login, rights, a field name.
PERMANENT = ("odoo.exceptions.AccessDenied", "odoo.exceptions.AccessError",
             "odoo.exceptions.UserError", "odoo.exceptions.MissingError",
             "odoo.exceptions.ValidationError", "builtins.ValueError", "builtins.KeyError",
             "builtins.AttributeError", "builtins.TypeError")
# Product category (last segment of its complete name) -> invoice line kind.
LINE_KINDS: dict[str, str] = {
    "Service Contracts": "service_contract", "Field Service": "field_service",
    "Spare Parts": "spare_parts", "Retrofits": "retrofit", "Machines": "new_machine",
}
# Periods of a subscription plan per year (Odoo 17 sale.subscription.plan billing_period_unit).
PERIODS_PER_YEAR = {"year": Decimal(1), "month": Decimal(12), "week": Decimal(52)}
# An upsell order (Odoo 17+: subscription_id = the subscription it adds to) is neither a
# contract, nor a renewal, nor an order: confirming it adds its recurring lines to its parent,
# whose recurring_total (so its annual value) grows, and Odoo's own sales report leaves it out
# for that reason. Its invoice is an invoice like any other.
UPSELL = "7_upsell"
NOT_UPSELL = ("subscription_state", "!=", UPSELL)
# The close reason Odoo's set_close gives a subscription that reached its end date (its XML id).
END_OF_CONTRACT = ("sale_subscription", "close_reason_end_of_contract")
_CODE = re.compile(r"^\[([^\]]+)\]\s*")


@dataclass(frozen=True, slots=True)
class OdooFields:
    """Names of the fields that are not standard Odoo, per deployment.

    The defaults are the custom fields docs/erp-odoo.md asks a machine builder to add (Studio
    names them ``x_studio_...``; give those here). ``None`` means the deployment has no such
    field: the value is left out (or derived as the documentation says).
    """

    customer_size_class: str | None = "x_size_class"
    customer_key_account: str | None = "x_key_account"
    customer_since: str | None = "x_customer_since"
    machine_model_flag: str = "x_is_machine_model"
    machine_service_hours: str | None = "x_service_interval_hours"
    machine_service_days: str | None = "x_service_interval_days"
    machine_parts_value: str | None = "x_parts_value_per_1000h"
    # maintenance.equipment's own partner_id is the equipment's *vendor*; the customer a
    # machine builder sold it to needs a field of its own.
    equipment_customer: str = "x_customer_id"
    equipment_site: str | None = "x_site_id"
    contract_equipment: str | None = "x_equipment_id"
    contract_notice_days: str | None = "x_notice_period_days"
    contract_auto_renew: str | None = "x_auto_renew"
    contract_tier: str | None = "sale_order_template_id"
    invoice_paid_on: str | None = "x_paid_date"
    invoice_line_equipment: str | None = "x_equipment_id"
    order_kind: str | None = "x_order_kind"
    order_line_equipment: str | None = "x_equipment_id"
    survey_comment: str | None = "x_comment"


class _Unmappable(Exception):  # noqa: N818 - internal signal: the record becomes a reject
    pass


def ref(model: str, record_id: int) -> str:
    """The external id of an Odoo record: Odoo's own reference notation, ``res.partner,42``."""
    return f"{model},{record_id}"


async def _settle(task: asyncio.Task[Any]) -> None:
    """Cancel a prefetch nobody will read and wait for it to end, its exception retrieved.

    Run when the page generator closes (done, failed, or closed by the engine on an error),
    so no request outlives its run and asyncio logs no "exception was never retrieved".
    """
    if not task.done():
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


def _m2o(value: Any) -> int | None:
    if isinstance(value, list) and value and isinstance(value[0], int):
        return value[0]
    return None


def _m2o_name(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str):
        return value[1]
    return None


def _text(value: Any) -> str | None:
    """A char/text/selection value, or None for Odoo's false and blanks."""
    if value is False or value is None:
        return None
    text = str(value).strip()
    return text or None


def _timestamp(value: Any) -> str | None:
    """An Odoo datetime (UTC, no zone) as ISO 8601 with its zone."""
    text = _text(value)
    return None if text is None else f"{text.replace(' ', 'T')}Z"


def _day(value: Any) -> str | None:
    """An Odoo date, or the day of an Odoo datetime."""
    text = _text(value)
    return None if text is None else text[:10]


def _number(value: Any) -> Any:
    """A number as sent (the models read floats through str, keeping 0.1 as 0.1)."""
    if value is False or value is None:
        return None
    return value


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    """Leave out empty values: an absent value is an absent key."""
    return {k: v for k, v in record.items() if v is not None and v is not False and v != ""}


def _money(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, False) else Decimal(0)


def _second(served: Any) -> datetime:
    """The whole second a served ``write_date`` stands for (Odoo cuts the microseconds)."""
    return datetime.strptime(str(served)[:19], ODOO_DATETIME).replace(tzinfo=UTC)


def _served(row: dict[str, Any]) -> str:
    """A row's ``write_date`` as served, to the second."""
    return str(row["write_date"])[:19]


def _text_of(second: datetime) -> str:
    return second.strftime(ODOO_DATETIME)


@dataclass(frozen=True, slots=True)
class _Position:
    """How far an entity is read; stored as the cursor.

    Every record stamped before ``second`` is read, and of those stamped within that second,
    every one whose id is at most ``last_id``.
    """

    second: datetime
    last_id: int

    def cursor(self) -> str:
        return orjson.dumps([_text_of(self.second), self.last_id]).decode()


@dataclass(frozen=True, slots=True)
class _Step:
    """One ``search_read``.

    Either the rest of one second by id (``within``), or everything from ``since`` on
    (``None``: from the start) by ``write_date, id``.
    """

    within: _Position | None = None
    since: datetime | None = None

    def query(self) -> tuple[list[Any], str]:
        """The keyset domain and the order of this step."""
        if self.within is not None:
            start = self.within.second
            return ([("write_date", ">=", _text_of(start)),
                     ("write_date", "<", _text_of(start + SECOND)),
                     ("id", ">", self.within.last_id)], "id asc")
        if self.since is None:
            return [], ORDER
        return [("write_date", ">=", _text_of(self.since))], ORDER


@dataclass(slots=True)
class _Spec:
    """How one entity is read: model, filter, fields, and how a row becomes records."""

    model: str
    domain: list[Any]
    fields: list[str]
    convert: Callable[[list[dict[str, Any]]], Awaitable[list[list[dict[str, Any]] | str]]]
    archivable: bool = False
    optional: list[str | None] = field(default_factory=list)


class OdooConnector:
    """An Odoo database as a :class:`erp_connectors.sync.Connector`.

    Parameters
    ----------
    url
        The Odoo server, e.g. ``https://erp.example.com`` (``/jsonrpc`` is appended).
    db
        The database name (Odoo.sh and multi-database servers need it).
    login
        The user's login (usually an e-mail address).
    api_key
        An API key of that user (Preferences > Account Security > New API Key); the password
        works too but an API key can be revoked alone.
    source
        The name every synced row carries in ``source``.
    page_size
        Records per ``search_read`` (and per committed page).
    fields
        Names of the non-standard fields in this deployment (:class:`OdooFields`).
    line_kinds
        Product category name (last segment of its path) -> invoice line kind; others are
        ``other``.
    nps_survey
        Title of the survey whose score (``scoring_total``, 0-10) is the NPS answer.
    overlap_s
        Seconds re-read before a stored cursor (see the module docstring).
    policy, timeout_s, verify
        HTTP retry policy, per-request timeout and TLS verification, passed to ErpHttp.
    """

    def __init__(self, url: str, db: str, login: str, api_key: str, *, source: str = "odoo",
                 page_size: int = PAGE_SIZE, fields: OdooFields | None = None,
                 line_kinds: Mapping[str, str] | None = None,
                 nps_survey: str = "Net Promoter Score", overlap_s: float = 300.0,
                 policy: RetryPolicy | None = None, timeout_s: float = 60.0,
                 verify: bool = True) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.source = source
        self.url = url.rstrip("/")
        self.db, self.login, self._api_key = db, login, api_key
        self.page_size = page_size
        self.fields = fields or OdooFields()
        self.line_kinds = dict(LINE_KINDS if line_kinds is None else line_kinds)
        self.nps_survey = nps_survey
        self.overlap = timedelta(seconds=overlap_s)
        self._http = ErpHttp(self.url, name=f"Odoo {self.url}", timeout_s=timeout_s,
                             policy=policy, verify=verify)
        self._uid: int | None = None
        self._login_lock = asyncio.Lock()
        self._rpc_id = 0
        self._countries: dict[int, str] | None = None
        self._plans: dict[int, Decimal] | None = None
        self._ended: set[int] | None = None

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    # -- JSON-RPC -----------------------------------------------------------------------------

    async def _rpc(self, service: str, method: str, args: list[Any], what: str) -> Any:
        self._rpc_id += 1
        body = {"jsonrpc": "2.0", "method": "call", "id": self._rpc_id,
                "params": {"service": service, "method": method, "args": args}}
        response = await self._http.request("POST", "/jsonrpc", content=orjson.dumps(body),
                                            headers={"Content-Type": "application/json"})
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise PermanentSyncError(
                f"Odoo {self.url}: {what}: the answer is not JSON-RPC (is this the Odoo"
                f" server's address?): {response.text[:200]!r}") from None
        if not isinstance(answer, dict):
            raise PermanentSyncError(f"Odoo {self.url}: {what}: unexpected answer {answer!r}")
        error = answer.get("error")
        if error is not None:
            raise self._error(error, what)
        return answer.get("result")

    def _error(self, error: Any, what: str) -> PermanentSyncError | SourceUnavailableError:
        data = error.get("data") if isinstance(error, dict) else None
        data = data if isinstance(data, dict) else {}
        name = str(data.get("name") or "")
        message = str(data.get("message") or (error.get("message") if isinstance(error, dict)
                                              else error)).strip()
        text = f"Odoo {self.url}: {what}: {name or 'error'}: {message}"
        if name.startswith("psycopg2.") and "does not exist" not in message:
            # Odoo's own database hiccuped (serialization failure, connection lost).
            return SourceUnavailableError(text)
        if name and name not in PERMANENT:
            logger.warning("Odoo error %s treated as permanent: %s", name, message)
        return PermanentSyncError(text)

    async def _authenticate(self) -> int:
        async with self._login_lock:
            if self._uid is None:
                uid = await self._rpc("common", "authenticate",
                                      [self.db, self.login, self._api_key, {}],
                                      f"login of {self.login!r}")
                if not isinstance(uid, int) or isinstance(uid, bool):
                    raise PermanentSyncError(
                        f"Odoo refused login {self.login!r} on database {self.db!r} at"
                        f" {self.url}: check the login and the API key")
                self._uid = uid
            return self._uid

    async def execute_kw(self, model: str, method: str, args: list[Any],
                         kwargs: dict[str, Any] | None = None) -> Any:
        """Call ``model.method(*args, **kwargs)`` in Odoo as the connector's user."""
        uid = await self._authenticate()
        return await self._rpc("object", "execute_kw", [
            self.db, uid, self._api_key, model, method, args, kwargs or {}], f"{model}.{method}")

    async def search_read(self, model: str, domain: list[Any], fields: list[str], *,
                          limit: int | None = None, order: str | None = None) -> list[Any]:
        """``search_read`` with its keyword arguments, as a list of rows."""
        kwargs: dict[str, Any] = {"fields": fields}
        if limit is not None:
            kwargs["limit"] = limit
        if order is not None:
            kwargs["order"] = order
        rows = await self.execute_kw(model, "search_read", [domain], kwargs)
        if not isinstance(rows, list):
            raise PermanentSyncError(f"Odoo {model}.search_read answered {type(rows).__name__}")
        return rows

    # -- paging -------------------------------------------------------------------------------

    def page_sources(self) -> dict[str, PageSource]:
        """Every entity Odoo provides, parents first."""
        specs = self._specs()
        return {entity: self._page_source(entity, spec) for entity, spec in specs.items()}

    def _page_source(self, entity: str, spec: _Spec) -> PageSource:
        def pages(cursor: str | None) -> AsyncIterator[Page]:
            return self._pages(entity, spec, cursor)
        return pages

    def _first_step(self, cursor: str | None) -> _Step:
        """Where a run starts: from its cursor (less the overlap), or from the start."""
        if cursor is None:
            return _Step()
        try:
            stamp, last_id = orjson.loads(cursor)
            position = _Position(_second(stamp), int(last_id))
        except (orjson.JSONDecodeError, ValueError, TypeError):
            logger.warning("Odoo cursor %r is not [write_date, id]; reading from the start",
                           cursor)
            return _Step()
        if not self.overlap:
            return _Step(within=position)
        return _Step(since=position.second - self.overlap)

    def _advance(self, entity: str, step: _Step, rows: list[dict[str, Any]]
                 ) -> tuple[list[dict[str, Any]], _Position | None, _Step | None]:
        """What one answer completes.

        The rows to hand on, the position they reach (``None``: none) and the next step
        (``None``: done).

        A served stamp is a whole second: Odoo orders by the stored microseconds, so within one
        second ids come in any order and only ``id > last`` over the whole second is a keyset.
        """
        full = len(rows) == self.page_size
        if step.within is not None:
            at = step.within
            if not full:
                # The second is done; rows of a later one come by write_date again.
                reached = _Position(at.second, rows[-1]["id"]) if rows else None
                return rows, reached, _Step(since=at.second + SECOND)
            reached = _Position(at.second, rows[-1]["id"])
            if reached.last_id <= at.last_id:
                raise self._stuck(entity, step, reached)
            return rows, reached, _Step(within=reached)
        if not full:
            if not rows:
                return rows, None, None
            last = _served(rows[-1])
            return rows, _Position(_second(last), max(
                r["id"] for r in rows if _served(r) == last)), None
        # A full page: its last second may go on beyond it, in an order ids cannot resume
        # from. The seconds before it are complete; that one is read again by id.
        last = _served(rows[-1])
        second = _second(last)
        if step.since is not None and second < step.since:
            raise self._stuck(entity, step, _Position(second, rows[-1]["id"]))
        # Served stamps have one fixed format: as texts they order as instants (no parsing).
        done = [r for r in rows if _served(r) < last]
        return done, _Position(second, 0) if done else None, _Step(
            within=_Position(second, 0))

    def _stuck(self, entity: str, step: _Step, reached: _Position) -> PermanentSyncError:
        # Permanent, not unavailable: the same question gets the same answer on every retry
        # and every run, so only a person (a customised search, a proxy) can change it.
        domain, order = step.query()
        return PermanentSyncError(
            f"Odoo {self.url}: {entity}: paging makes no progress: search_read with {domain!r}"
            f" ordered by {order!r} answered a page ending at write_date"
            f" {_text_of(reached.second)}, id {reached.last_id}, not after where it started;"
            " the server does not apply the domain (a customised search?)")

    async def _pages(self, entity: str, spec: _Spec, cursor: str | None) -> AsyncIterator[Page]:
        fields = [*spec.fields, *(f for f in spec.optional if f), "write_date"]
        if spec.archivable:
            fields.append("active")
        archived = [("active", "in", [True, False])] if spec.archivable else []

        def fetch(step: _Step) -> asyncio.Task[list[Any]]:
            keyset, order = step.query()
            return asyncio.ensure_future(self.search_read(
                spec.model, [*keyset, *spec.domain, *archived], fields, limit=self.page_size,
                order=order))

        # The next page is asked for while the engine writes this one: Odoo and the database
        # work at the same time.
        step: _Step | None = self._first_step(cursor)
        assert step is not None
        pending = fetch(step)
        # After a full page its last second is read again by id, usually a few rows; what
        # follows that second is asked for at the same time, so the big request still overlaps
        # the engine's writing. Dropped if the second fills a page by itself.
        ahead: tuple[_Step, asyncio.Task[list[Any]]] | None = None
        try:
            while step is not None:
                came_from = step
                rows, reached, step = self._advance(entity, step, await pending)
                if ahead is not None and ahead[0] == step:
                    pending, ahead = ahead[1], None
                else:
                    if ahead is not None:
                        await _settle(ahead[1])
                        ahead = None
                    if step is not None:
                        pending = fetch(step)
                        if step.within is not None and came_from.within is None:
                            later = _Step(since=step.within.second + SECOND)
                            ahead = (later, fetch(later))
                if reached is not None:
                    logger.debug("odoo %s: %s rows up to %s", entity, len(rows), reached)
                    yield await self._page(spec, rows, reached)
        finally:
            await _settle(pending)
            if ahead is not None:
                await _settle(ahead[1])

    @staticmethod
    async def _page(spec: _Spec, rows: list[dict[str, Any]], reached: _Position) -> Page:
        records, rejects = [], []
        for row, mapped in zip(rows, await spec.convert(rows), strict=True):
            if isinstance(mapped, str):
                rejects.append(SourceReject(reason=mapped, record=row,
                                            external_id=ref(spec.model, row["id"])))
                continue
            for record in mapped:
                if spec.archivable and row.get("active") is False:
                    record["deleted"] = True
                records.append(record)
        return Page(records=records, rejects=rejects, cursor=reached.cursor())

    def _each(self, model: str, one: Callable[[dict[str, Any]], dict[str, Any]]
              ) -> Callable[[list[dict[str, Any]]], Awaitable[list[list[dict[str, Any]] | str]]]:
        """A converter applying ``one`` to every row; ``_Unmappable`` makes a reject reason."""
        async def convert(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]] | str]:
            out: list[list[dict[str, Any]] | str] = []
            for row in rows:
                try:
                    out.append([_compact(one(row))])
                except _Unmappable as exc:
                    out.append(f"{ref(model, row['id'])}: {exc}")
            return out
        return convert

    # -- lookups ------------------------------------------------------------------------------

    async def _country_codes(self) -> dict[int, str]:
        if self._countries is None:
            rows = await self.search_read("res.country", [], ["code"])
            self._countries = {r["id"]: str(r["code"]).upper() for r in rows if r.get("code")}
        return self._countries

    async def _plan_factors(self) -> dict[int, Decimal]:
        """Billing periods per year of each subscription plan."""
        if self._plans is None:
            rows = await self.search_read(
                "sale.subscription.plan", [("active", "in", [True, False])],
                ["billing_period_value", "billing_period_unit"])
            self._plans = {}
            for r in rows:
                per_year = PERIODS_PER_YEAR.get(str(r.get("billing_period_unit")))
                every = r.get("billing_period_value") or 1
                if per_year is not None:
                    self._plans[r["id"]] = per_year / Decimal(str(every))
        return self._plans

    async def _read(self, model: str, ids: set[int], fields: list[str]) -> dict[int, Any]:
        if not ids:
            return {}
        rows = await self.execute_kw(model, "read", [sorted(ids)], {"fields": fields})
        return {r["id"]: r for r in rows}

    # -- the entities -------------------------------------------------------------------------

    def _specs(self) -> dict[str, _Spec]:
        f = self.fields
        customer_only = [("commercial_partner_id.customer_rank", ">", 0)]
        return {
            "customers": _Spec(
                "res.partner", [("is_company", "=", True), ("customer_rank", ">", 0)],
                ["name", "industry_id", "country_id"], self._customers, archivable=True,
                optional=[f.customer_size_class, f.customer_key_account, f.customer_since]),
            "sites": _Spec(
                "res.partner", [("is_company", "=", False), ("type", "in", ["delivery", "other"]),
                                ("parent_id", "!=", False), *customer_only],
                ["name", "commercial_partner_id", "country_id", "city"], self._sites,
                archivable=True),
            "contacts": _Spec(
                "res.partner", [("is_company", "=", False), ("type", "=", "contact"),
                                ("parent_id", "!=", False), *customer_only],
                ["name", "parent_id", "commercial_partner_id", "function", "email", "phone",
                 "mobile"], self._each("res.partner", self._contact), archivable=True),
            "machine_models": _Spec(
                "product.template", [(f.machine_model_flag, "=", True)],
                ["name", "default_code", "currency_id"],
                self._each("product.template", self._machine_model), archivable=True,
                optional=[f.machine_service_hours, f.machine_service_days,
                          f.machine_parts_value]),
            "installed_base": _Spec(
                "maintenance.equipment", [("serial_no", "!=", False)],
                ["name", "serial_no", "model", "effective_date", "warranty_date"],
                self._each("maintenance.equipment", self._equipment), archivable=True,
                optional=[f.equipment_customer, f.equipment_site]),
            "service_contracts": _Spec(
                "sale.order", [("is_subscription", "=", True), NOT_UPSELL],
                ["name", "state", "subscription_state", "partner_id", "plan_id", "start_date",
                 "end_date", "next_invoice_date", "recurring_total", "currency_id",
                 "close_reason_id"],
                self._contracts, optional=[f.contract_equipment, f.contract_notice_days,
                                           f.contract_auto_renew, f.contract_tier]),
            "contract_renewals": _Spec(
                "sale.order", [("is_subscription", "=", True), NOT_UPSELL, "|",
                               ("subscription_id", "!=", False),
                               ("subscription_state", "=", "6_churn")],
                ["state", "subscription_state", "subscription_id", "plan_id", "date_order",
                 "start_date", "end_date", "next_invoice_date", "recurring_total"],
                self._renewals),
            "invoices": _Spec(
                "account.move", [("move_type", "in", ["out_invoice", "out_refund"])],
                ["name", "move_type", "state", "payment_state", "commercial_partner_id",
                 "invoice_date", "invoice_date_due", "date", "currency_id", "amount_untaxed"],
                self._each("account.move", self._invoice), optional=[f.invoice_paid_on]),
            "invoice_lines": _Spec(
                "account.move.line", [("display_type", "=", "product"),
                                      ("move_type", "in", ["out_invoice", "out_refund"])],
                ["move_id", "move_type", "product_id", "product_category_id", "name",
                 "quantity", "price_unit", "price_subtotal", "subscription_id"],
                self._each("account.move.line", self._invoice_line),
                optional=[f.invoice_line_equipment]),
            "orders": _Spec(
                "sale.order", [("is_subscription", "=", False), NOT_UPSELL],
                ["name", "state", "partner_id", "date_order", "currency_id", "amount_untaxed",
                 "delivery_status"], self._each("sale.order", self._order),
                optional=[f.order_kind]),
            "order_lines": _Spec(
                "sale.order.line", [("display_type", "=", False),
                                    ("order_id.is_subscription", "=", False),
                                    ("order_id.subscription_state", "!=", UPSELL)],
                ["order_id", "product_id", "name", "product_uom_qty", "price_unit",
                 "price_subtotal"], self._each("sale.order.line", self._order_line),
                optional=[f.order_line_equipment]),
            "survey_responses": _Spec(
                "survey.user_input", [("survey_id.title", "=", self.nps_survey),
                                      ("state", "=", "done")],
                ["partner_id", "end_datetime", "create_date", "scoring_total"],
                self._surveys, optional=[f.survey_comment]),
        }

    @staticmethod
    def _base(model: str, row: dict[str, Any]) -> dict[str, Any]:
        return {"external_id": ref(model, row["id"]),
                "source_updated_at": _timestamp(row.get("write_date"))}

    def _parent(self, row: dict[str, Any], name: str, model: str, what: str) -> str:
        parent = _m2o(row.get(name))
        if parent is None:
            raise _Unmappable(f"{what} is empty ({name})")
        return ref(model, parent)

    async def _customers(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]] | str]:
        countries = await self._country_codes()
        f = self.fields
        out: list[list[dict[str, Any]] | str] = []
        for row in rows:
            out.append([_compact({
                **self._base("res.partner", row), "name": _text(row.get("name")),
                "industry": _m2o_name(row.get("industry_id")),
                "country": countries.get(_m2o(row.get("country_id")) or 0),
                "size_class": _text(row.get(f.customer_size_class))
                if f.customer_size_class else None,
                "key_account": bool(row.get(f.customer_key_account))
                if f.customer_key_account else None,
                "customer_since": _day(row.get(f.customer_since)) if f.customer_since else None,
            })])
        return out

    async def _sites(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]] | str]:
        countries = await self._country_codes()

        def one(row: dict[str, Any]) -> dict[str, Any]:
            return {**self._base("res.partner", row), "name": _text(row.get("name")),
                    "customer_external_id": self._parent(row, "commercial_partner_id",
                                                         "res.partner", "the company"),
                    "country": countries.get(_m2o(row.get("country_id")) or 0),
                    "city": _text(row.get("city"))}
        return await self._each("res.partner", one)(rows)

    def _contact(self, row: dict[str, Any]) -> dict[str, Any]:
        customer = _m2o(row.get("commercial_partner_id"))
        parent = _m2o(row.get("parent_id"))
        if customer is None:
            raise _Unmappable("the company is empty (commercial_partner_id)")
        return {**self._base("res.partner", row), "name": _text(row.get("name")),
                "customer_external_id": ref("res.partner", customer),
                # A contact filed under a delivery address works at that site.
                "site_external_id": ref("res.partner", parent)
                if parent is not None and parent != customer else None,
                "role": _text(row.get("function")), "email": _text(row.get("email")),
                "phone": _text(row.get("phone")) or _text(row.get("mobile"))}

    def _machine_model(self, row: dict[str, Any]) -> dict[str, Any]:
        f = self.fields
        model = _text(row.get("default_code")) or _text(row.get("name"))
        return {**self._base("product.template", row), "model": model,
                "service_interval_hours": _number(row.get(f.machine_service_hours))
                if f.machine_service_hours else None,
                "service_interval_days": _number(row.get(f.machine_service_days))
                if f.machine_service_days else None,
                "parts_value_per_1000h": _number(row.get(f.machine_parts_value))
                if f.machine_parts_value else None,
                "currency": _m2o_name(row.get("currency_id"))}

    def _equipment(self, row: dict[str, Any]) -> dict[str, Any]:
        f = self.fields
        site = _m2o(row.get(f.equipment_site)) if f.equipment_site else None
        return {**self._base("maintenance.equipment", row), "serial": _text(row.get("serial_no")),
                "model": _text(row.get("model")) or _text(row.get("name")),
                "customer_external_id": self._parent(row, f.equipment_customer, "res.partner",
                                                     "the customer"),
                "site_external_id": ref("res.partner", site) if site else None,
                "commissioned_on": _day(row.get("effective_date")),
                "warranty_end": _day(row.get("warranty_date"))}

    @staticmethod
    def _contract_status(row: dict[str, Any], ended: set[int]) -> str:
        """The canonical status from Odoo's own state, never from the day of the sync.

        A churned subscription ran to its end (``expired``) when Odoo closed it with the
        end-of-contract reason, and was ended early (``terminated``) with any other reason.
        Without a reason (data from before close reasons, a state set by hand) its end date is
        compared with the day the churn was written (``write_date``, UTC): Odoo's ``set_close``
        overwrites ``end_date`` with the closing day, so the dates alone cannot say more.
        """
        if row.get("state") == "cancel":
            return "cancelled"
        state = row.get("subscription_state")
        if state in ("1_draft", "2_renewal"):
            return "draft"
        if state in ("3_progress", "4_paused"):
            return "active"
        if state == "5_renewed":
            return "expired"  # replaced by its renewal order, a contract of its own
        if state == "6_churn":
            reason = _m2o(row.get("close_reason_id"))
            if reason is not None:
                return "expired" if reason in ended else "terminated"
            end, closed = _day(row.get("end_date")), _day(row.get("write_date"))
            return "expired" if end is not None and closed is not None and end <= closed \
                else "terminated"
        raise _Unmappable(f"subscription_state {state!r} is not a contract state")

    async def _end_of_contract_reasons(self) -> set[int]:
        """Ids of the close reason "end of contract" (by XML id: its name is translated)."""
        if self._ended is None:
            module, name = END_OF_CONTRACT
            rows = await self.search_read("ir.model.data", [
                ("module", "=", module), ("name", "=", name),
                ("model", "=", "sale.order.close.reason")], ["res_id"])
            self._ended = {int(r["res_id"]) for r in rows if r.get("res_id")}
        return self._ended

    def _annual(self, row: dict[str, Any], plans: dict[int, Decimal]) -> Decimal:
        plan = _m2o(row.get("plan_id"))
        if plan is None or plan not in plans:
            raise _Unmappable(f"plan {row.get('plan_id')!r} has no known billing period")
        return (_money(row.get("recurring_total")) * plans[plan]).quantize(Decimal("0.01"))

    async def _contracts(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]] | str]:
        plans = await self._plan_factors()
        ended = await self._end_of_contract_reasons()
        f = self.fields

        def one(row: dict[str, Any]) -> dict[str, Any]:
            machine = _m2o(row.get(f.contract_equipment)) if f.contract_equipment else None
            ends = _day(row.get("end_date"))
            auto = row.get(f.contract_auto_renew) if f.contract_auto_renew else None
            return {
                **self._base("sale.order", row),
                "customer_external_id": self._parent(row, "partner_id", "res.partner",
                                                     "the customer"),
                "installed_base_external_id": ref("maintenance.equipment", machine)
                if machine else None,
                "scope": "machine" if machine else "customer",
                "contract_number": _text(row.get("name")),
                "tier": _m2o_name(row.get(f.contract_tier)) if f.contract_tier else None,
                "starts_on": _day(row.get("start_date")),
                # An open-ended subscription runs period by period: its current one ends on
                # the next invoice date, and it renews by itself.
                "ends_on": ends or _day(row.get("next_invoice_date")),
                "notice_period_days": _number(row.get(f.contract_notice_days))
                if f.contract_notice_days else None,
                "auto_renew": bool(auto) if auto is not None else ends is None,
                "annual_value": self._annual(row, plans),
                "currency": _m2o_name(row.get("currency_id")),
                "status": self._contract_status(row, ended)}
        return await self._each("sale.order", one)(rows)

    async def _renewals(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]] | str]:
        """A confirmed renewal order is a decision on its parent; a churn one on itself."""
        plans = await self._plan_factors()
        parents = await self._read("sale.order", {
            p for r in rows if (p := _m2o(r.get("subscription_id"))) is not None},
            ["end_date", "next_invoice_date", "recurring_total", "plan_id"])
        out: list[list[dict[str, Any]] | str] = []
        for row in rows:
            try:
                out.append(self._renewal_records(row, parents, plans))
            except _Unmappable as exc:
                out.append(f"{ref('sale.order', row['id'])}: {exc}")
        return out

    def _renewal_records(self, row: dict[str, Any], parents: dict[int, Any],
                         plans: dict[int, Decimal]) -> list[dict[str, Any]]:
        records = []
        base = self._base("sale.order", row)
        parent_id = _m2o(row.get("subscription_id"))
        if parent_id is not None and row.get("state") == "sale":
            parent = parents.get(parent_id)
            if parent is None:
                raise _Unmappable(f"renews sale.order,{parent_id}, which cannot be read")
            before, after = self._annual(parent, plans), self._annual(row, plans)
            starts = _day(row.get("start_date"))
            previous_end = _day(parent.get("end_date")) or (
                (date.fromisoformat(starts) - timedelta(days=1)).isoformat() if starts else None)
            records.append(_compact({
                **base, "contract_external_id": ref("sale.order", parent_id),
                "decided_on": _day(row.get("date_order")),
                "outcome": "renewed" if after == before else
                           "upgraded" if after > before else "downgraded",
                "previous_ends_on": previous_end,
                "new_ends_on": _day(row.get("end_date")) or _day(row.get("next_invoice_date")),
                "previous_value": before, "new_value": after}))
        if row.get("subscription_state") == "6_churn":
            end = _day(row.get("end_date")) or _day(row.get("next_invoice_date"))
            cancelled = row.get("state") == "cancel"
            records.append(_compact({
                **base, "external_id": f"{base['external_id']}:churn",
                "contract_external_id": base["external_id"],
                # Odoo keeps no close date on the order; the churn was written at write_date.
                "decided_on": _day(row.get("write_date")) if cancelled else end,
                "outcome": "cancelled" if cancelled else "lapsed",
                "previous_ends_on": end,
                "previous_value": self._annual(row, plans)}))
        return records

    def _invoice(self, row: dict[str, Any]) -> dict[str, Any]:
        credit = row.get("move_type") == "out_refund"
        state, payment = row.get("state"), row.get("payment_state")
        if state == "draft":
            status = "draft"
        elif state == "cancel":
            status = "cancelled"
        elif credit or payment == "reversed":
            status = "credited"
        elif payment in ("paid", "in_payment"):
            status = "paid"
        else:
            status = "open"
        if not _m2o_name(row.get("currency_id")):
            raise _Unmappable("the currency is empty (currency_id)")
        amount = _money(row.get("amount_untaxed"))
        paid_field = self.fields.invoice_paid_on
        paid = _day(row.get(paid_field)) if paid_field else None
        if status == "paid" and paid is None:
            # Odoo stores no payment date on the invoice: without the custom field, the last
            # write (when reconciliation set payment_state) is the closest.
            paid = _day(row.get("write_date"))
        return {**self._base("account.move", row),
                "customer_external_id": self._parent(row, "commercial_partner_id",
                                                     "res.partner", "the customer"),
                "number": None if row.get("name") in ("/", False) else _text(row.get("name")),
                "issued_on": _day(row.get("invoice_date")) or _day(row.get("date")),
                "due_on": _day(row.get("invoice_date_due")),
                "paid_on": paid if status == "paid" else None,
                "currency": _m2o_name(row.get("currency_id")),
                "net_amount": -amount if credit else amount, "status": status}

    def _kind(self, category: Any) -> str:
        name = _m2o_name(category)
        leaf = name.rsplit("/", 1)[-1].strip() if name else ""
        return self.line_kinds.get(leaf, "other")

    def _invoice_line(self, row: dict[str, Any]) -> dict[str, Any]:
        f = self.fields
        credit = row.get("move_type") == "out_refund"
        product = _m2o_name(row.get("product_id"))
        code = _CODE.match(product) if product else None
        machine = _m2o(row.get(f.invoice_line_equipment)) if f.invoice_line_equipment else None
        contract = _m2o(row.get("subscription_id"))
        subtotal = _money(row.get("price_subtotal"))
        return {**self._base("account.move.line", row),
                "invoice_external_id": self._parent(row, "move_id", "account.move",
                                                    "the invoice"),
                "kind": self._kind(row.get("product_category_id")),
                "product_code": code.group(1) if code else None,
                "description": _text(row.get("name")),
                "quantity": _number(row.get("quantity")),
                "unit_price": _number(row.get("price_unit")),
                "net_amount": -subtotal if credit else subtotal,
                "installed_base_external_id": ref("maintenance.equipment", machine)
                if machine else None,
                "contract_external_id": ref("sale.order", contract) if contract else None}

    def _order(self, row: dict[str, Any]) -> dict[str, Any]:
        state = row.get("state")
        if state == "cancel":
            status = "cancelled"
        elif state in ("draft", "sent"):
            status = "draft"
        elif state in ("sale", "done"):
            status = "delivered" if row.get("delivery_status") == "full" else "confirmed"
        else:
            raise _Unmappable(f"state {state!r} is not a sales order state")
        kind = _text(row.get(self.fields.order_kind)) if self.fields.order_kind else None
        return {**self._base("sale.order", row),
                "customer_external_id": self._parent(row, "partner_id", "res.partner",
                                                     "the customer"),
                "kind": kind or "spare_parts", "number": _text(row.get("name")),
                "ordered_on": _day(row.get("date_order")), "status": status,
                "currency": _m2o_name(row.get("currency_id")),
                "net_amount": _number(row.get("amount_untaxed"))}

    def _order_line(self, row: dict[str, Any]) -> dict[str, Any]:
        f = self.fields
        product = _m2o_name(row.get("product_id"))
        code = _CODE.match(product) if product else None
        machine = _m2o(row.get(f.order_line_equipment)) if f.order_line_equipment else None
        return {**self._base("sale.order.line", row),
                "order_external_id": self._parent(row, "order_id", "sale.order", "the order"),
                "part_number": code.group(1) if code else None,
                "description": _text(row.get("name")),
                "quantity": _number(row.get("product_uom_qty")),
                "unit_price": _number(row.get("price_unit")),
                "net_amount": _number(row.get("price_subtotal")),
                "installed_base_external_id": ref("maintenance.equipment", machine)
                if machine else None}

    async def _surveys(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]] | str]:
        partners = await self._read("res.partner", {
            p for r in rows if (p := _m2o(r.get("partner_id"))) is not None},
            ["is_company", "commercial_partner_id"])
        comment_field = self.fields.survey_comment

        def one(row: dict[str, Any]) -> dict[str, Any]:
            who = _m2o(row.get("partner_id"))
            partner = partners.get(who) if who is not None else None
            if who is None or partner is None:
                raise _Unmappable("the answer has no known partner (partner_id)")
            company = _m2o(partner.get("commercial_partner_id")) or who
            score = row.get("scoring_total")
            if isinstance(score, float) and score.is_integer():
                score = int(score)
            return {**self._base("survey.user_input", row),
                    "customer_external_id": ref("res.partner", company),
                    "contact_external_id": None if partner.get("is_company") or who == company
                    else ref("res.partner", who),
                    "answered_at": _timestamp(row.get("end_datetime"))
                    or _timestamp(row.get("create_date")),
                    "score": score,
                    "comment": _text(row.get(comment_field)) if comment_field else None}
        return await self._each("survey.user_input", one)(rows)


__all__ = ["LINE_KINDS", "OdooConnector", "OdooFields", "ref"]
