r"""A fake Odoo 17 speaking the documented external API (JSON-RPC), over real HTTP.

Faithful to Odoo's external API as documented ("External API", developer docs, 17.0/18.0):

- one endpoint, ``POST /jsonrpc``, body ``{"jsonrpc": "2.0", "method": "call", "params":
  {"service": ..., "method": ..., "args": [...]}, "id": ...}``;
- ``common.version()``; ``common.authenticate(db, login, api_key, {})`` (and ``login``) answer
  the uid, or ``false`` for wrong credentials (not an error, as in Odoo);
- ``object.execute_kw(db, uid, api_key, model, method, args, kwargs)`` with ``search_read``,
  ``search``, ``search_count``, ``read``, ``fields_get`` and ``check_access_rights`` (reads
  only: every call of the documentation example up to its writes); a wrong uid/key is
  ``odoo.exceptions.AccessDenied``;
- domains in Polish (prefix) notation: leaves ``(field, op, value)`` with ``=``, ``!=``, ``>``,
  ``>=``, ``<``, ``<=``, ``in``, ``not in``, one level of dotted path over a many2one
  (``order_id.is_subscription``), the operators ``&``, ``|``, ``!`` and the implicit AND;
- ``active_test``: on models with an ``active`` field, archived records are left out unless the
  domain names ``active``;
- ``fields``, ``offset``, ``limit``, ``order`` (``"write_date asc, id asc"``; default ``id``);
- values as Odoo serialises them: datetimes ``YYYY-MM-DD HH:MM:SS`` in UTC without a zone,
  dates ``YYYY-MM-DD``, many2one ``[id, "display name"]``, ``false`` for any empty value;
- errors as Odoo's JSON-RPC dispatcher sends them: HTTP 200 with ``{"jsonrpc": "2.0", "id":
  .., "error": {"code": 200, "message": "Odoo Server Error", "data": {"name":
  "odoo.exceptions.AccessError", "message": .., "arguments": [..], "debug": .., "context":
  {}}}}``; an unknown field is ``builtins.ValueError`` ("Invalid field ..."), as in Odoo;
- ``write_date`` and ``create_date`` as Odoo keeps them: stored with microseconds (Odoo writes
  ``cr.now()`` into a ``timestamp`` column) and served cut to whole seconds (JSON-RPC sends
  ``Datetime.to_string``, ``%Y-%m-%d %H:%M:%S``); a domain value ``'YYYY-MM-DD HH:MM:SS'``
  compares with the stored microsecond value as PostgreSQL compares a timestamp, so ``=`` with a
  served stamp almost never matches and ``>`` matches the rest of that same second. Records
  written in one second therefore come back in microsecond order, not id order (what keyset
  paging must handle).

Simplified: one database and one user; no access rules except the injected AccessError; the
display name in a many2one is the one the parent had when the child was written (Odoo computes
it at read time); computed and related fields (``commercial_partner_id``, ``move_type`` on
lines, ``product_category_id``) are stored values the loader fills in; 503/429 answers and
dropped connections happen only when a test injects them (a real Odoo behind a proxy answers
them under load); ``ignore_leaves`` (a server that drops a domain condition, as a faulty
customisation of ``_search`` would) exists only to test the connector's no-progress guard.

The same calls are served over XML-RPC, the protocol of Odoo's own documentation example:
``POST /xmlrpc/2/common`` (``version``, ``authenticate``, ``login``) and ``POST
/xmlrpc/2/object`` (``execute_kw``), with the same semantics; errors are XML-RPC faults as
Odoo's ``/xmlrpc/2/`` endpoints send them (``xmlrpc.client.Fault``: code 4 for an AccessError,
3 for AccessDenied with ``Access Denied``, 2 for a UserError, 1 with the traceback's text
otherwise). Not served: the older ``/xmlrpc/<service>`` endpoints (string fault codes), the
``db`` service, ``/web/...`` routes, writes (``create``, ``write``, ``unlink``).

``WorldLoader`` puts a world directory's canonical records (erp_connectors/models.py, as
demo/world/files.py writes them) into the fake; ``oem-retention demo erp odoo --world DIR``
serves one until Ctrl-C and prints the settings that point the Odoo connector at it.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import xmlrpc.client
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from demo.erp.records import ENTITIES, Records

logger = logging.getLogger(__name__)

UID = 2  # Odoo's admin user id in a fresh database
SERVER_VERSION = "17.0"

# Fields of each model the fake knows (standard Odoo 17 names; x_ ones are the custom fields
# docs/erp-odoo.md documents) and the comodel of each many2one.
MODELS: dict[str, dict[str, str | None]] = {
    "res.country": {"name": None, "code": None},
    "res.currency": {"name": None, "active": None},
    "res.partner.industry": {"name": None, "full_name": None, "active": None},
    "res.partner": {
        "name": None, "active": None, "is_company": None, "type": None,
        "parent_id": "res.partner", "commercial_partner_id": "res.partner", "ref": None,
        "industry_id": "res.partner.industry", "country_id": "res.country", "city": None,
        "function": None, "email": None, "phone": None, "mobile": None,
        "customer_rank": None, "x_size_class": None, "x_key_account": None,
        "x_customer_since": None, "comment": None},
    "product.category": {"name": None, "complete_name": None, "parent_id": "product.category"},
    "product.template": {
        "name": None, "active": None, "default_code": None, "categ_id": "product.category",
        "currency_id": "res.currency", "list_price": None, "x_is_machine_model": None,
        "x_service_interval_hours": None, "x_service_interval_days": None,
        "x_parts_value_per_1000h": None},
    "product.product": {
        "name": None, "active": None, "default_code": None,
        "product_tmpl_id": "product.template", "categ_id": "product.category"},
    "maintenance.equipment": {
        "name": None, "active": None, "serial_no": None, "model": None,
        "partner_id": "res.partner", "effective_date": None, "warranty_date": None,
        "location": None, "x_customer_id": "res.partner", "x_site_id": "res.partner"},
    "sale.subscription.plan": {"name": None, "active": None, "billing_period_value": None,
                               "billing_period_unit": None},
    "sale.order.template": {"name": None, "active": None},
    "sale.order.close.reason": {"name": None, "active": None},
    "ir.model.data": {"module": None, "name": None, "model": None, "res_id": None},
    "sale.order": {
        "name": None, "state": None, "partner_id": "res.partner", "date_order": None,
        "currency_id": "res.currency", "amount_untaxed": None, "is_subscription": None,
        "subscription_state": None, "plan_id": "sale.subscription.plan",
        "sale_order_template_id": "sale.order.template", "start_date": None,
        "end_date": None, "next_invoice_date": None, "recurring_monthly": None,
        "recurring_total": None, "subscription_id": "sale.order",
        "origin_order_id": "sale.order", "delivery_status": None,
        "close_reason_id": "sale.order.close.reason",
        "x_equipment_id": "maintenance.equipment", "x_notice_period_days": None,
        "x_auto_renew": None, "x_order_kind": None},
    "sale.order.line": {
        "order_id": "sale.order", "product_id": "product.product", "name": None,
        "display_type": None, "product_uom_qty": None, "price_unit": None,
        "price_subtotal": None, "x_equipment_id": "maintenance.equipment"},
    "account.move": {
        "name": None, "move_type": None, "state": None, "payment_state": None,
        "partner_id": "res.partner", "commercial_partner_id": "res.partner",
        "invoice_date": None, "invoice_date_due": None, "date": None,
        "currency_id": "res.currency", "amount_untaxed": None, "amount_total": None,
        "x_paid_date": None},
    "account.move.line": {
        "move_id": "account.move", "move_type": None, "parent_state": None,
        "display_type": None, "product_id": "product.product",
        "product_category_id": "product.category", "name": None, "quantity": None,
        "price_unit": None, "price_subtotal": None, "subscription_id": "sale.order",
        "x_equipment_id": "maintenance.equipment"},
    "survey.survey": {"title": None, "active": None},
    "survey.user_input": {
        "survey_id": "survey.survey", "partner_id": "res.partner", "state": None,
        "end_datetime": None, "scoring_total": None, "x_comment": None},
}
MAGIC = ("id", "create_date", "write_date", "display_name")
# sale_subscription's close reasons (XML id -> name); set_close picks one.
CLOSE_REASONS = {"close_reason_end_of_contract": "Subscription reached its end date",
                 "close_reason_unknown": "Unknown", "close_reason_renew": "Renewed",
                 "close_reason_cancel": "Cancelled"}
# Human names of models, as Odoo's AccessError message uses them.
DESCRIPTIONS = {"account.move.line": "Journal Item", "account.move": "Journal Entry",
                "res.partner": "Contact", "sale.order": "Sales Order",
                "sale.order.line": "Sales Order Line", "maintenance.equipment": "Equipment",
                "product.template": "Product", "survey.user_input": "Survey User Input"}


class OdooError(Exception):
    """An exception the fake answers as Odoo's JSON-RPC error object."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


# Stored with microseconds, served in seconds (see the module docstring).
STAMPS = frozenset({"write_date", "create_date"})


def now_text(clock: datetime | None = None) -> str:
    """A datetime as Odoo serves it: UTC, seconds, no zone."""
    return (clock or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")


def stamp_text(value: str | datetime) -> str:
    """A timestamp as the fake stores it: ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC, no zone).

    Every stored value and every domain value on a stamp goes through here, so that comparing
    the texts compares the instants, as PostgreSQL compares ``timestamp`` values: a served
    ``'2026-03-01 10:00:00'`` is ``10:00:00.000000``, before ``10:00:00.400000``.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise OdooError("builtins.ValueError",
                            f"time data {value!r} does not match format"
                            " '%Y-%m-%d %H:%M:%S'") from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass
class _Model:
    name: str
    fields: dict[str, str | None]
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1
    # Keys (write_date, id) in order, rebuilt lazily after writes.
    _order: list[tuple[str, int]] = field(default_factory=list)
    _dirty: bool = False

    def ordered(self) -> list[tuple[str, int]]:
        if self._dirty:
            self._order = sorted((r["write_date"], i) for i, r in self.records.items())
            self._dirty = False
        return self._order


@dataclass
class _Faults:
    status: list[tuple[int, float | None]] = field(default_factory=list)
    drops: int = 0
    denied: set[str] = field(default_factory=set)
    ignored: set[str] = field(default_factory=set)
    slow_after: int | None = None
    slow_s: float = 0.0


# -- domains ---------------------------------------------------------------------------------

Predicate = Callable[[dict[str, Any]], bool]


def _key(value: Any) -> Any:
    """A comparable form: many2one by id, False as missing."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int):
        return value[0]
    return value


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda r: a(r) and b(r)


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda r: a(r) or b(r)


def _negate(a: Predicate) -> Predicate:
    return lambda r: not a(r)


def _compare(value: Any, op: str, target: Any) -> bool:  # noqa: PLR0911 - one per operator
    value = _key(value)
    if op == "=":
        return value is False if target is False else bool(value == target)
    if op == "!=":
        return value is not False if target is False else bool(value != target)
    if op == "in":
        return value in target or (value is False and False in target)
    if op == "not in":
        return value not in target
    if value is False or value is None:
        return False  # SQL: NULL compares to nothing
    if op == ">":
        return bool(value > target)
    if op == ">=":
        return bool(value >= target)
    if op == "<":
        return bool(value < target)
    if op == "<=":
        return bool(value <= target)
    raise OdooError("builtins.ValueError", f"Invalid leaf operator {op!r}")


class FakeOdoo:
    """An Odoo database behind a real HTTP server; test hooks are methods of this object.

    Parameters
    ----------
    db, login, api_key
        The only database, user and API key that authenticate.
    """

    def __init__(self, *, db: str = "demo", login: str = "admin", api_key: str = "secret-key",
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.db, self.login, self.api_key = db, login, api_key
        self.models = {name: _Model(name, dict(fields)) for name, fields in MODELS.items()}
        self._lock = threading.RLock()
        self.faults = _Faults()
        self.requests: Counter[str] = Counter()  # "model.method", "common.authenticate", ...
        self.request_count = 0
        # Seconds spent answering requests (reading the body to writing the answer), wall clock
        # and CPU of the answering threads: the fake's share of a benchmark's time.
        self.busy_s = 0.0
        self.busy_cpu_s = 0.0
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        # The clock new writes are stamped with; tests move it to make write_dates collide.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        # sale_subscription's data file: close reasons, found by XML id.
        self.close_reasons = {
            xml_id: self._data("sale_subscription", xml_id, "sale.order.close.reason", name)
            for xml_id, name in CLOSE_REASONS.items()}

    def _data(self, module: str, xml_id: str, model: str, name: str) -> int:
        rid = self.create(model, {"name": name}, write_date="2024-01-01 00:00:00")
        self.create("ir.model.data", {"module": module, "name": xml_id, "model": model,
                                      "res_id": rid}, write_date="2024-01-01 00:00:00")
        return rid

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def settings(self) -> dict[str, str]:
        """The settings (environment) that point the platform's Odoo connector at this fake."""
        return {"OEMR_ERP_ODOO_URL": self.url, "OEMR_ERP_ODOO_DB": self.db,
                "OEMR_ERP_ODOO_LOGIN": self.login, "OEMR_ERP_ODOO_API_KEY": self.api_key}

    def start(self) -> FakeOdoo:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-odoo",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOdoo:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- test hooks: data -------------------------------------------------------------------

    def create(self, model: str, values: dict[str, Any], *, write_date: str | None = None) -> int:
        """Create a record as Odoo would (write_date = now unless given); its id."""
        with self._lock:
            m = self.models[model]
            self._check_fields(m, values)
            rid = m.next_id
            m.next_id += 1
            stamp = stamp_text(write_date or self.clock())
            record = {"id": rid, "create_date": stamp, "write_date": stamp}
            if "active" in m.fields:
                record["active"] = True
            record.update(values)
            record["display_name"] = self._display(model, record)
            m.records[rid] = record
            m._dirty = True
            return rid

    def write(self, model: str, rid: int, values: dict[str, Any], *,
              write_date: str | None = None) -> None:
        """Change a record; write_date moves to now (or the given one)."""
        with self._lock:
            m = self.models[model]
            self._check_fields(m, values)
            record = m.records[rid]
            record.update(values)
            record["write_date"] = stamp_text(write_date or self.clock())
            record["display_name"] = self._display(model, record)
            m._dirty = True

    def archive(self, model: str, rid: int) -> None:
        """Set active = False, as the Archive action does."""
        self.write(model, rid, {"active": False})

    def unlink(self, model: str, rid: int) -> None:
        """Delete a record for good (no trace left for an incremental sync)."""
        with self._lock:
            del self.models[model].records[rid]
            self.models[model]._dirty = True

    def get(self, model: str, rid: int) -> dict[str, Any]:
        """A copy of one record."""
        with self._lock:
            return dict(self.models[model].records[rid])

    def ids(self, model: str) -> list[int]:
        """Ids of every record of ``model``, archived ones included."""
        with self._lock:
            return sorted(self.models[model].records)

    def m2o(self, model: str, rid: int | None) -> list[Any] | bool:
        """The ``[id, display name]`` pair a many2one to this record reads as."""
        if rid is None:
            return False
        with self._lock:
            return [rid, self.models[model].records[rid]["display_name"]]

    # -- test hooks: faults -----------------------------------------------------------------

    def fail_next(self, count: int, status: int = 503, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (429/503...), no Odoo involved."""
        with self._lock:
            self.faults.status.extend([(status, retry_after)] * count)

    def drop_next(self, count: int) -> None:
        """Close the connection without answering the next ``count`` requests."""
        with self._lock:
            self.faults.drops += count

    def deny(self, model: str) -> None:
        """Answer every call on ``model`` with Odoo's AccessError."""
        with self._lock:
            self.faults.denied.add(model)

    def ignore_leaves(self, name: str) -> None:
        """Drop every domain leaf on field ``name`` (a broken server; see the docstring)."""
        with self._lock:
            self.faults.ignored.add(name)

    def slow_down(self, *, after: int, seconds: float) -> None:
        """From request number ``after`` on, wait ``seconds`` before answering each."""
        with self._lock:
            self.faults.slow_after, self.faults.slow_s = after, seconds

    # -- the RPC ----------------------------------------------------------------------------

    def dispatch(self, params: dict[str, Any]) -> Any:
        """Run one JSON-RPC call's params; raises :class:`OdooError`."""
        service, method, args = params.get("service"), params.get("method"), params.get("args")
        if not isinstance(args, list):
            args = []
        if service == "common":
            self.requests[f"common.{method}"] += 1
            if method == "version":
                return {"server_version": SERVER_VERSION,
                        "server_version_info": [17, 0, 0, "final", 0, ""],
                        "server_serie": SERVER_VERSION, "protocol_version": 1}
            if method in ("authenticate", "login"):
                db, login, key = ([*args, None, None, None])[:3]
                self._check_db(db)
                return UID if (login, key) == (self.login, self.api_key) else False
            raise OdooError("builtins.NameError", f"method {method!r} is not available")
        if service == "object" and method == "execute_kw":
            if len(args) < 6:
                raise OdooError("builtins.TypeError",
                                "execute_kw() missing required positional arguments")
            db, uid, key, model, call, call_args = args[:6]
            kwargs = args[6] if len(args) > 6 and isinstance(args[6], dict) else {}
            self._check_db(db)
            if uid != UID or key != self.api_key:
                raise OdooError("odoo.exceptions.AccessDenied", "Access Denied")
            self.requests[f"{model}.{call}"] += 1
            return self._execute(str(model), str(call), list(call_args), kwargs)
        raise OdooError("builtins.Exception", f"unknown service {service!r}")

    def _check_db(self, db: Any) -> None:
        if db != self.db:
            raise OdooError("psycopg2.OperationalError",
                            f'connection to server failed: FATAL:  database "{db}" does not'
                            " exist")

    def _execute(self, model: str, call: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if model not in self.models:
            raise OdooError("builtins.KeyError", repr(model))
        if call == "check_access_rights" and (
                model not in self.faults.denied or not kwargs.get("raise_exception", True)):
            # The documentation example's first call: False instead of the error when asked so.
            return model not in self.faults.denied
        if model in self.faults.denied:
            description = DESCRIPTIONS.get(model, model)
            raise OdooError(
                "odoo.exceptions.AccessError",
                f"You are not allowed to access '{description}' ({model}) records.\n\nThis"
                " operation is allowed for the following groups:\n\t- Accounting/Billing\n\n"
                "Contact your administrator to request access if necessary.")
        m = self.models[model]
        with self._lock:
            if call == "search_read":
                domain = args[0] if args else kwargs.get("domain", [])
                fields = args[1] if len(args) > 1 else kwargs.get("fields")
                return self._read(m, self._search(m, domain, kwargs), fields)
            if call == "search":
                return self._search(m, args[0] if args else kwargs.get("domain", []), kwargs)
            if call == "search_count":
                return len(self._search(m, args[0] if args else kwargs.get("domain", []), {}))
            if call == "read":
                ids = args[0] if args else kwargs.get("ids", [])
                fields = args[1] if len(args) > 1 else kwargs.get("fields")
                return self._read(m, [i for i in ids if i in m.records], fields)
            if call == "fields_get":
                # Odoo gives a relation only for relational fields (XML-RPC has no None).
                return {name: ({"type": "many2one", "relation": comodel, "string": name}
                               if comodel else {"type": "char", "string": name})
                        for name, comodel in {**m.fields, **dict.fromkeys(MAGIC)}.items()}
        raise OdooError("builtins.AttributeError",
                        f"The method '{call}' does not exist on the model '{model}'")

    def _read(self, m: _Model, ids: list[int], fields: Any) -> list[dict[str, Any]]:
        names = list(fields) if fields else [*m.fields, *MAGIC]
        for name in names:
            if name not in m.fields and name not in MAGIC:
                raise OdooError("builtins.ValueError",
                                f"Invalid field {name!r} on model {m.name!r}")
        out = []
        for rid in ids:
            record = m.records[rid]
            row = {"id": rid}
            for name in names:
                value = record.get(name, False)
                # Datetime.to_string: whole seconds.
                row[name] = value[:19] if name in STAMPS and value else value
            out.append(row)
        return out

    def _search(self, m: _Model, domain: Any, kwargs: dict[str, Any]) -> list[int]:
        if not isinstance(domain, list):
            raise OdooError("builtins.ValueError", f"Invalid domain {domain!r}")
        predicate = self._compile(m, domain)
        mentions_active = any(isinstance(t, list | tuple) and t and t[0] == "active"
                              for t in domain)
        active_test = "active" in m.fields and not mentions_active
        order = _parse_order(kwargs.get("order") or "id", m)
        offset = int(kwargs.get("offset") or 0)
        limit = kwargs.get("limit")
        wanted = None if limit in (None, False, 0) else offset + int(limit)
        fast = order == [("write_date", False), ("id", False)]
        # A leading write_date bound is a range scan (PostgreSQL's index on write_date).
        ranged = self._write_date_range(m, domain)
        if ranged is None and fast:
            ranged = (rid for _, rid in m.ordered())
        candidates: Iterable[int] = m.records if ranged is None else ranged
        found = []
        for rid in candidates:
            record = m.records[rid]
            if active_test and record.get("active") is False:
                continue
            if predicate(record):
                found.append(rid)
                if fast and wanted is not None and len(found) >= wanted:
                    break
        if not fast:
            for name, desc in reversed(order):
                found.sort(key=_field_key(m, name), reverse=desc)
        return found[offset:wanted]

    def _write_date_range(self, m: _Model, domain: list[Any]) -> Iterator[int] | None:
        """Ids in (write_date, id) order within leading ``write_date`` bounds, if any.

        Only a speed-up: the predicate still checks every leaf. Bounds are the leading run of
        plain ``write_date`` leaves (an implicit AND), before any operator.
        """
        if "write_date" in self.faults.ignored:
            return None
        keys = m.ordered()
        start, stop, bounded = 0, len(keys), False
        for term in domain:
            if not (isinstance(term, list | tuple) and len(term) == 3
                    and term[0] == "write_date" and isinstance(term[2], str)):
                break
            value = stamp_text(term[2])
            if term[1] == ">=":
                start = max(start, bisect.bisect_left(keys, (value, -1)))
            elif term[1] == ">":
                start = max(start, bisect.bisect_right(keys, (value, 1 << 62)))
            elif term[1] == "<":
                stop = min(stop, bisect.bisect_left(keys, (value, -1)))
            elif term[1] == "<=":
                stop = min(stop, bisect.bisect_right(keys, (value, 1 << 62)))
            else:
                break
            bounded = True
        if not bounded:
            return None
        # Indexes, not a slice: a slice would copy the rest of the model for every page.
        return (keys[i][1] for i in range(start, stop))

    def _compile(self, m: _Model, domain: list[Any]) -> Predicate:
        stack: list[Predicate] = []
        for term in reversed(domain):
            if isinstance(term, str) and term in {"&", "|"}:
                if len(stack) < 2:
                    raise OdooError("builtins.ValueError", f"Invalid domain {domain!r}")
                a, b = stack.pop(), stack.pop()
                stack.append(_both(a, b) if term == "&" else _either(a, b))
            elif isinstance(term, str) and term == "!":
                a = stack.pop()
                stack.append(_negate(a))
            elif isinstance(term, list | tuple) and len(term) == 3:
                stack.append(self._leaf(m, *term))
            else:
                raise OdooError("builtins.ValueError", f"Invalid leaf {term!r}")
        return lambda r: all(p(r) for p in stack)

    def _leaf(self, m: _Model, name: str, op: str, target: Any) -> Predicate:
        head, _, rest = str(name).partition(".")
        if head not in m.fields and head not in MAGIC:
            raise OdooError("builtins.ValueError",
                            f"Invalid field {m.name}.{head} in leaf {(name, op, target)!r}")
        if head in self.faults.ignored:
            return lambda _r: True
        if op in ("in", "not in") and not isinstance(target, list):
            target = [target]
        if head in STAMPS and not rest:
            # PostgreSQL casts the text to a timestamp: compare instants, not texts.
            target = ([stamp_text(t) for t in target if t] if isinstance(target, list)
                      else stamp_text(target) if isinstance(target, str) else target)
        if rest:
            comodel = m.fields.get(head)
            if comodel is None:
                raise OdooError("builtins.ValueError",
                                f"Invalid field {m.name}.{name}: {head} is not relational")
            inner = self._leaf(self.models[comodel], rest, op, target)
            related = self.models[comodel].records

            def through(r: dict[str, Any]) -> bool:
                parent = _key(r.get(head, False))
                return parent is not False and parent in related and inner(related[parent])
            return through
        return lambda r: _compare(r.get(head, False), op, target)

    # -- helpers ----------------------------------------------------------------------------

    def _check_fields(self, m: _Model, values: dict[str, Any]) -> None:
        unknown = [k for k in values if k not in m.fields and k not in MAGIC]
        if unknown:
            raise KeyError(f"{m.name} has no field(s) {unknown}")

    def _display(self, model: str, record: dict[str, Any]) -> str:
        if model in {"res.currency", "res.country"}:
            return str(record.get("name"))
        if model == "product.product" and record.get("default_code"):
            return f"[{record['default_code']}] {record.get('name')}"
        if model == "res.partner" and record.get("parent_id") and not record.get("is_company"):
            return f"{record['parent_id'][1]}, {record.get('name')}"
        if model == "product.category":
            return str(record.get("complete_name") or record.get("name"))
        if model == "survey.survey":
            return str(record.get("title"))
        name = record.get("name")
        return str(name) if name else f"{model},{record.get('id')}"


def _parse_order(order: str, m: _Model) -> list[tuple[str, bool]]:
    out = []
    for part in order.split(","):
        words = part.split()
        if not words:
            continue
        name = words[0]
        if name not in m.fields and name not in MAGIC:
            raise OdooError("builtins.ValueError", f"Invalid order {order!r} for {m.name}")
        out.append((name, len(words) > 1 and words[1].lower() == "desc"))
    return out or [("id", False)]


def _field_key(m: _Model, name: str) -> Callable[[int], tuple[int, Any]]:
    """Sort key of a record id by one field's value."""
    return lambda rid: _sort_key(m.records[rid].get(name, False))


def _sort_key(value: Any) -> tuple[int, Any]:
    value = _key(value)
    return (0, 0) if value is False or value is None else (1, value)


# -- HTTP ------------------------------------------------------------------------------------


def _handler(fake: FakeOdoo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY on the answering socket. The headers and the body go out in two writes;
        # with Nagle's algorithm the body's last segment waits for the ACK of the headers,
        # which the client delays (up to 40 ms on Linux): ~25 ms per request, 80% of a
        # 400-page fetch, none of it Odoo's or the connector's. Odoo's usual front (nginx,
        # tcp_nodelay on by default) does not stall that way.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            started, started_cpu = time.perf_counter(), time.thread_time()
            try:
                self._answer()
            finally:
                wall, cpu = time.perf_counter() - started, time.thread_time() - started_cpu
                with fake._lock:
                    fake.busy_s += wall
                    fake.busy_cpu_s += cpu

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with fake._lock:
                fake.request_count += 1
                number = fake.request_count
                drop = fake.faults.drops > 0
                if drop:
                    fake.faults.drops -= 1
                status = fake.faults.status.pop(0) if fake.faults.status and not drop else None
                slow = (fake.faults.slow_s if fake.faults.slow_after is not None
                        and number > fake.faults.slow_after else 0.0)
            if slow:
                time.sleep(slow)
            if drop:
                self.close_connection = True
                self.connection.close()
                return
            if status is not None:
                code, retry_after = status
                headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
                self._send(code, b"<html><body><h1>Service Unavailable</h1></body></html>",
                           headers, "text/html")
                return
            if self.path.startswith(XMLRPC):
                answer = _xmlrpc(fake, self.path.removeprefix(XMLRPC), raw)
                self._send(200, answer, content_type="text/xml; charset=utf-8")
                return
            if self.path != "/jsonrpc":
                self._send(404, b"<h1>Not Found</h1>", content_type="text/html")
                return
            try:
                request = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self._send(400, b"<h1>Bad Request</h1>", content_type="text/html")
                return
            rpc_id = request.get("id") if isinstance(request, dict) else None
            params = request.get("params") if isinstance(request, dict) else None
            try:
                result = fake.dispatch(params if isinstance(params, dict) else {})
                body = {"jsonrpc": "2.0", "id": rpc_id, "result": result}
            except Exception as exc:
                if not isinstance(exc, OdooError):
                    logger.exception("fake Odoo: unexpected error")
                    exc = OdooError(f"builtins.{type(exc).__name__}", str(exc))
                body = {"jsonrpc": "2.0", "id": rpc_id, "error": {
                    "code": 200, "message": "Odoo Server Error",
                    "data": {"name": exc.name, "debug": f"Traceback (most recent call last):\n"
                             f"{exc.name}: {exc.message}\n", "message": exc.message,
                             "arguments": [exc.message], "context": {}}}}
            self._send(200, orjson.dumps(body))

    return Handler


# XML-RPC fault codes of Odoo's /xmlrpc/2/ endpoints (odoo/addons/base/controllers/rpc.py).
XMLRPC = "/xmlrpc/2/"
FAULT_APPLICATION_ERROR = 1
FAULT_WARNING = 2
FAULT_ACCESS_DENIED = 3
FAULT_ACCESS_ERROR = 4
_USER_ERRORS = frozenset({"odoo.exceptions.UserError", "odoo.exceptions.ValidationError",
                          "odoo.exceptions.MissingError", "odoo.exceptions.RedirectWarning"})


def _xmlrpc(fake: FakeOdoo, service: str, raw: bytes) -> bytes:
    """The answer to one XML-RPC call: the same dispatch as JSON-RPC, faults as Odoo sends them.

    Odoo's ``xmlrpc_handle_exception_int``: AccessError is fault 4, AccessDenied 3 (its
    message, ``Access Denied``), a UserError 2, anything else 1 with the formatted traceback,
    whose last line names the exception as Python prints it.
    """
    try:
        params, method = xmlrpc.client.loads(raw, use_datetime=True)
        result = fake.dispatch({"service": service, "method": method, "args": list(params)})
        return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=False).encode()
    except OdooError as exc:
        fault = _fault(exc.name, exc.message)
    except Exception as exc:
        # What Odoo itself would answer with a traceback: unreadable XML, an unmarshallable
        # value; logged, as it is the fake's fault or the client's, never the data's.
        logger.exception("fake Odoo: XML-RPC call failed")
        fault = _fault(f"builtins.{type(exc).__name__}", str(exc))
    return xmlrpc.client.dumps(fault, methodresponse=True, allow_none=False).encode()


def _fault(name: str, message: str) -> xmlrpc.client.Fault:
    if name == "odoo.exceptions.AccessError":
        return xmlrpc.client.Fault(FAULT_ACCESS_ERROR, message)
    if name == "odoo.exceptions.AccessDenied":
        return xmlrpc.client.Fault(FAULT_ACCESS_DENIED, message)
    if name in _USER_ERRORS:
        return xmlrpc.client.Fault(FAULT_WARNING, message)
    printed = name.removeprefix("builtins.")
    return xmlrpc.client.Fault(FAULT_APPLICATION_ERROR,
                               f"Traceback (most recent call last):\n{printed}: {message}\n")


# -- the loader: canonical records -> Odoo records --------------------------------------------

# Product categories of invoice line kinds (the connector's default mapping reads them back).
KIND_CATEGORIES = {"service_contract": "Service Contracts", "field_service": "Field Service",
                   "spare_parts": "Spare Parts", "retrofit": "Retrofits",
                   "new_machine": "Machines", "other": "Other"}
COUNTRY_NAMES = {"DE": "Germany", "IT": "Italy", "FR": "France", "US": "United States",
                 "AT": "Austria", "CH": "Switzerland", "PL": "Poland", "ES": "Spain",
                 "NL": "Netherlands", "GB": "United Kingdom", "CN": "China", "CZ": "Czechia"}
NPS_SURVEY = "Net Promoter Score"


def _num(value: Any) -> float:
    return float(Decimal(str(value)))


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "yes", "1")


def _stamp(record: dict[str, Any], default: str) -> str:
    """write_date from the record's source_updated_at (ISO) or the default."""
    value = record.get("source_updated_at")
    if not value:
        return default
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


class WorldLoader:
    """Turns canonical records (as erp_connectors.models describe them) into Odoo records.

    ``ids`` maps (entity, canonical external id) to the Odoo (model, id) it became, so a test
    or the demo can find the Odoo record of a world record. Records are loaded with
    ``write_date`` = their ``source_updated_at`` or ``at`` (default: one day ago).
    """

    def __init__(self, fake: FakeOdoo, *, at: str | None = None) -> None:
        self.fake = fake
        self.at = at or now_text(datetime.now(UTC) - timedelta(days=1))
        self.ids: dict[tuple[str, str], tuple[str, int]] = {}
        self._lookup: dict[tuple[str, str], int] = {}
        # The newest order of each world contract's chain: Odoo renews an order by a new order
        # whose subscription_id is the order it renews, not the first of the chain.
        self._tips: dict[str, int] = {}

    def _named(self, model: str, name: str, **extra: Any) -> list[Any] | bool:
        """A many2one to the record of ``model`` named ``name``, created when first needed."""
        if not name:
            return False
        key = (model, name)
        if key not in self._lookup:
            self._lookup[key] = self.fake.create(model, {"name": name, **extra},
                                                 write_date=self.at)
        return self.fake.m2o(model, self._lookup[key])

    def country(self, code: str | None) -> list[Any] | bool:
        """The res.country many2one of an ISO code."""
        if not code:
            return False
        return self._named("res.country", COUNTRY_NAMES.get(code, code), code=code)

    def close_reason(self, xml_id: str | None) -> list[Any] | bool:
        """The close reason many2one of an XML id."""
        if xml_id is None:
            return False
        return self.fake.m2o("sale.order.close.reason", self.fake.close_reasons[xml_id])

    def currency(self, code: str | None) -> list[Any] | bool:
        """The res.currency many2one of an ISO code."""
        return self._named("res.currency", code) if code else False

    def category(self, kind: str) -> list[Any] | bool:
        """The product category many2one of a line kind."""
        name = KIND_CATEGORIES.get(kind, kind)
        return self._named("product.category", name, complete_name=f"All / {name}")

    def product(self, code: str | None, description: str | None, kind: str) -> list[Any] | bool:
        """The product many2one of a part code, created on first use."""
        code = code or f"{kind.upper()}-GENERIC"
        key = ("product.product", code)
        if key not in self._lookup:
            self._lookup[key] = self.fake.create("product.product", {
                "name": description or code, "default_code": code,
                "categ_id": self.category(kind)}, write_date=self.at)
        return self.fake.m2o("product.product", self._lookup[key])

    def ref(self, entity: str, external_id: str | None) -> list[Any] | bool:
        """The many2one of another entity's record by its external id."""
        if not external_id:
            return False
        model, rid = self.ids[(entity, external_id)]
        return self.fake.m2o(model, rid)

    def _add(self, entity: str, model: str, record: dict[str, Any], values: dict[str, Any],
             **kw: Any) -> int:
        if "active" in MODELS[model]:
            values["active"] = not _flag(record.get("deleted", "false"))
        rid = self.fake.create(model, values, write_date=kw.get("at") or _stamp(record, self.at))
        self.ids[(entity, str(record["external_id"]))] = (model, rid)
        return rid

    def external_ids(self) -> dict[tuple[str, str], str]:
        """(entity, world id) -> the external id the Odoo connector stores (``model,id``)."""
        return {key: f"{model},{rid}" for key, (model, rid) in self.ids.items()}

    def load(self, world: Records) -> WorldLoader:
        """Load every entity present, parents first."""
        for entity in ENTITIES:
            records = world.get(entity, [])
            if entity == "contract_renewals":
                # A chain is built in the order its terms ended.
                records = sorted(records, key=lambda r: (r["contract_external_id"],
                                                         r["previous_ends_on"]))
            for record in records:
                getattr(self, f"_{entity}")(record)
        return self

    def _customers(self, r: dict[str, Any]) -> None:
        self._add("customers", "res.partner", r, {
            "name": r["name"], "is_company": True, "type": "contact", "ref": r["external_id"],
            "customer_rank": 1,
            "industry_id": self._named("res.partner.industry", r.get("industry") or "",
                                       full_name=r.get("industry")),
            "country_id": self.country(r.get("country")),
            "x_size_class": r.get("size_class") or False,
            "x_key_account": _flag(r.get("key_account", "false")),
            "x_customer_since": r.get("customer_since") or False})
        rid = self.ids[("customers", r["external_id"])][1]
        self.fake.write("res.partner", rid, {"commercial_partner_id": [rid, r["name"]]},
                        write_date=self.fake.get("res.partner", rid)["write_date"])

    def _sites(self, r: dict[str, Any]) -> None:
        parent = self.ref("customers", r["customer_external_id"])
        self._add("sites", "res.partner", r, {
            "name": r["name"], "is_company": False, "type": "delivery", "ref": r["external_id"],
            "parent_id": parent, "commercial_partner_id": parent,
            "country_id": self.country(r.get("country")), "city": r.get("city") or False})

    def _contacts(self, r: dict[str, Any]) -> None:
        customer = self.ref("customers", r["customer_external_id"])
        site = self.ref("sites", r.get("site_external_id"))
        self._add("contacts", "res.partner", r, {
            "name": r["name"], "is_company": False, "type": "contact",
            "ref": r["external_id"], "parent_id": site or customer,
            "commercial_partner_id": customer, "function": r.get("role") or False,
            "email": r.get("email") or False, "phone": r.get("phone") or False})

    def _machine_models(self, r: dict[str, Any]) -> None:
        self._add("machine_models", "product.template", r, {
            "name": r["model"], "default_code": r["model"], "x_is_machine_model": True,
            "categ_id": self.category("new_machine"),
            "currency_id": self.currency(r.get("currency")),
            "x_service_interval_hours": int(r["service_interval_hours"])
            if r.get("service_interval_hours") else False,
            "x_service_interval_days": int(r["service_interval_days"])
            if r.get("service_interval_days") else False,
            "x_parts_value_per_1000h": _num(r["parts_value_per_1000h"])
            if r.get("parts_value_per_1000h") else False})

    def _installed_base(self, r: dict[str, Any]) -> None:
        self._add("installed_base", "maintenance.equipment", r, {
            "name": f"{r['model']} {r['serial']}", "serial_no": r["serial"], "model": r["model"],
            "x_customer_id": self.ref("customers", r["customer_external_id"]),
            "x_site_id": self.ref("sites", r.get("site_external_id")),
            "effective_date": r.get("commissioned_on") or False,
            "warranty_date": r.get("warranty_end") or False})

    def plan(self) -> list[Any] | bool:
        """The yearly subscription plan many2one."""
        return self._named("sale.subscription.plan", "Yearly", billing_period_value=1,
                           billing_period_unit="year")

    def _service_contracts(self, r: dict[str, Any]) -> None:
        status = r["status"]
        state, sub_state = {"draft": ("draft", "1_draft"), "active": ("sale", "3_progress"),
                            "expired": ("sale", "6_churn"), "terminated": ("sale", "6_churn"),
                            "cancelled": ("cancel", "1_draft")}[status]
        reason = {"expired": "close_reason_end_of_contract",
                  "terminated": "close_reason_unknown"}.get(status)
        annual = _num(r["annual_value"])
        rid = self._add("service_contracts", "sale.order", r, {
            "name": r.get("contract_number") or f"SUB/{r['external_id']}",
            "is_subscription": True, "state": state, "subscription_state": sub_state,
            "partner_id": self.ref("customers", r["customer_external_id"]),
            "x_equipment_id": self.ref("installed_base", r.get("installed_base_external_id")),
            "plan_id": self.plan(),
            "sale_order_template_id": self._named("sale.order.template", r.get("tier") or ""),
            "start_date": r["starts_on"], "end_date": r["ends_on"],
            "date_order": f"{r['starts_on']} 00:00:00",
            "x_notice_period_days": int(r.get("notice_period_days") or 90),
            "x_auto_renew": _flag(r.get("auto_renew", "false")),
            "recurring_total": annual, "recurring_monthly": round(annual / 12, 2),
            "close_reason_id": self.close_reason(reason),
            "amount_untaxed": annual, "currency_id": self.currency(r["currency"])})
        self.fake.write("sale.order", rid, {"origin_order_id": self.fake.m2o("sale.order", rid)},
                        write_date=self.fake.get("sale.order", rid)["write_date"])

    def _contract_renewals(self, r: dict[str, Any]) -> None:
        """A renewal is a renewal order (subscription_id = the contract); a lapse a churn."""
        model, first_id = self.ids[("service_contracts", r["contract_external_id"])]
        parent_id = self._tips.get(r["contract_external_id"], first_id)
        parent = self.fake.get(model, parent_id)
        stamp = _stamp(r, self.at)
        if r["outcome"] in ("lapsed", "cancelled"):
            self.fake.write(model, parent_id, {
                "subscription_state": "6_churn", "end_date": r["previous_ends_on"],
                "close_reason_id": self.close_reason(
                    "close_reason_cancel" if r["outcome"] == "cancelled"
                    else "close_reason_end_of_contract"),
                "state": "cancel" if r["outcome"] == "cancelled" else parent["state"]},
                write_date=stamp)
            self.ids[("contract_renewals", r["external_id"])] = (model, parent_id)
            return
        value = _num(r.get("new_value") or parent["recurring_total"])
        start = date.fromisoformat(r["previous_ends_on"]) + timedelta(days=1)
        self.fake.write(model, parent_id, {"subscription_state": "5_renewed",
                                           "end_date": r["previous_ends_on"]}, write_date=stamp)
        self._tips[r["contract_external_id"]] = self._add("contract_renewals", "sale.order", r, {
            "name": f"{parent['name']}/R", "is_subscription": True, "state": "sale",
            "subscription_state": "3_progress", "partner_id": parent["partner_id"],
            "x_equipment_id": parent["x_equipment_id"], "plan_id": parent["plan_id"],
            "sale_order_template_id": parent["sale_order_template_id"],
            "start_date": start.isoformat(), "end_date": r["new_ends_on"],
            "date_order": f"{r['decided_on']} 00:00:00", "x_notice_period_days":
            parent["x_notice_period_days"], "x_auto_renew": parent["x_auto_renew"],
            "recurring_total": value, "recurring_monthly": round(value / 12, 2),
            "amount_untaxed": value, "currency_id": parent["currency_id"],
            "subscription_id": self.fake.m2o(model, parent_id),
            "origin_order_id": parent["origin_order_id"] or self.fake.m2o(model, parent_id)},
            at=stamp)

    def _invoices(self, r: dict[str, Any]) -> None:
        status = r["status"]
        credit = status == "credited"
        net = abs(_num(r["net_amount"])) if credit else _num(r["net_amount"])
        self._add("invoices", "account.move", r, {
            "name": r.get("number") or (False if status == "draft" else f"INV/{r['external_id']}"),
            "move_type": "out_refund" if credit else "out_invoice",
            "state": {"draft": "draft", "cancelled": "cancel"}.get(status, "posted"),
            "payment_state": "paid" if status == "paid" else "not_paid",
            "partner_id": self.ref("customers", r["customer_external_id"]),
            "commercial_partner_id": self.ref("customers", r["customer_external_id"]),
            "invoice_date": r["issued_on"], "date": r["issued_on"],
            "invoice_date_due": r.get("due_on") or False, "x_paid_date": r.get("paid_on") or False,
            "currency_id": self.currency(r["currency"]), "amount_untaxed": net,
            "amount_total": net})

    def _invoice_lines(self, r: dict[str, Any]) -> None:
        move_model, move_id = self.ids[("invoices", r["invoice_external_id"])]
        move = self.fake.get(move_model, move_id)
        kind = r["kind"]
        credit = move["move_type"] == "out_refund"
        subtotal = _num(r["net_amount"])
        contract = r.get("contract_external_id")
        self._add("invoice_lines", "account.move.line", r, {
            "move_id": self.fake.m2o(move_model, move_id), "move_type": move["move_type"],
            "parent_state": move["state"], "display_type": "product",
            "product_id": self.product(r.get("product_code"), r.get("description"), kind),
            "product_category_id": self.category(kind), "name": r.get("description") or False,
            "quantity": _num(r.get("quantity") or 1),
            "price_unit": _num(r["unit_price"]) if r.get("unit_price") else subtotal,
            "price_subtotal": abs(subtotal) if credit else subtotal,
            "x_equipment_id": self.ref("installed_base", r.get("installed_base_external_id")),
            "subscription_id": self.ref("service_contracts", contract) if contract else False})

    def _orders(self, r: dict[str, Any]) -> None:
        state, delivery = {"draft": ("draft", False), "confirmed": ("sale", "pending"),
                           "delivered": ("sale", "full"), "cancelled": ("cancel", False)
                           }[r["status"]]
        self._add("orders", "sale.order", r, {
            "name": r.get("number") or f"S/{r['external_id']}", "is_subscription": False,
            "state": state, "delivery_status": delivery,
            "partner_id": self.ref("customers", r["customer_external_id"]),
            "date_order": f"{r['ordered_on']} 08:00:00", "x_order_kind": r["kind"],
            "currency_id": self.currency(r["currency"]),
            "amount_untaxed": _num(r["net_amount"])})

    def _order_lines(self, r: dict[str, Any]) -> None:
        model, order_id = self.ids[("orders", r["order_external_id"])]
        self._add("order_lines", "sale.order.line", r, {
            "order_id": self.fake.m2o(model, order_id), "display_type": False,
            "product_id": self.product(r.get("part_number"), r.get("description"),
                                       "spare_parts"),
            "name": r.get("description") or False, "product_uom_qty": _num(r["quantity"]),
            "price_unit": _num(r["unit_price"]) if r.get("unit_price") else False,
            "price_subtotal": _num(r["net_amount"]),
            "x_equipment_id": self.ref("installed_base", r.get("installed_base_external_id"))})

    def _survey_responses(self, r: dict[str, Any]) -> None:
        key = ("survey.survey", NPS_SURVEY)
        if key not in self._lookup:
            self._lookup[key] = self.fake.create("survey.survey", {"title": NPS_SURVEY},
                                                 write_date=self.at)
        survey = self.fake.m2o("survey.survey", self._lookup[key])
        who = (self.ref("contacts", r["contact_external_id"]) if r.get("contact_external_id")
               else self.ref("customers", r["customer_external_id"]))
        answered = datetime.fromisoformat(str(r["answered_at"]).replace("Z", "+00:00"))
        if answered.tzinfo is not None:
            answered = answered.astimezone(UTC)
        self._add("survey_responses", "survey.user_input", r, {
            "survey_id": survey, "partner_id": who, "state": "done",
            "end_datetime": answered.strftime("%Y-%m-%d %H:%M:%S"),
            "scoring_total": float(int(r["score"])), "x_comment": r.get("comment") or False})
