"""A fake SAP S/4HANA Cloud serving the OData V2 APIs the SAP connector reads, over real HTTP.

Faithful to SAP's documented APIs (api.sap.com, the services' EDMX as SAP publishes them):
- services under ``/sap/opu/odata/sap/<SERVICE>/``: ``API_BUSINESS_PARTNER`` (``A_BusinessPartner``,
  ``A_BusinessPartnerAddress``, ``A_Customer``), ``API_EQUIPMENT`` (``Equipment``,
  ``EquipmentPartner``, ``EquipmentWarranty``), ``API_SERVICE_CONTRACT_SRV`` (``A_ServiceContract``,
  OData V2, communication scenario SAP_COM_0558), ``API_BILLING_DOCUMENT_SRV``
  (``A_BillingDocument``, ``A_BillingDocumentItem``), ``API_SALES_ORDER_SRV`` (``A_SalesOrder``,
  ``A_SalesOrderItem``); property and navigation names as in SAP's metadata;
- ``$metadata`` as EDMX 1.0 / OData 2.0 (entity types ``<Set>Type``, keys, properties with Edm
  types and ``sap:label``, navigation properties with their associations);
- JSON in the V2 verbose format: ``{"d": {"results": [...], "__count": "N", "__next": "..."}}``,
  each result with ``__metadata``, navigation properties ``__deferred`` unless expanded;
  ``Edm.DateTime`` as ``/Date(ms)/``, ``Edm.DateTimeOffset`` as ``/Date(ms+0000)/``, ``Edm.Time``
  as ``PT14H30M05S``, ``Edm.Decimal`` as a string; change stamps are kept finer than a
  millisecond (to the microsecond here, 100 ns in SAP) and compared and sorted at that
  precision, but served cut to the millisecond, as V2 JSON carries no more;
- ``$orderby`` sorts a null first (ascending), as the database under Gateway does;
- query options ``$filter`` (``eq ne gt ge lt le``, ``and``/``or``, parentheses, literals
  ``datetimeoffset'..'``, ``datetime'..'``, ``'text'``, numbers, ``true``/``false``/``null``; a
  ``datetime`` literal against an ``Edm.DateTimeOffset`` property is refused as SAP does),
  ``$orderby`` (several, ``asc``/``desc``), ``$top``, ``$skip``, ``$skiptoken``, ``$select``
  (with ``nav/Property``), ``$expand``, ``$inlinecount=allpages``, ``$format=json``;
- server-driven paging: at most ``page_size`` results per answer, then ``__next`` with a
  ``$skiptoken`` (and the rest of a client ``$top``);
- ``GET /<EntitySet>/$count``: the number of records its ``$filter`` keeps, as ``text/plain``
  (what pyodata's ``count()`` asks);
- reads of one entity by key, ``/<EntitySet>('key')`` or ``/<EntitySet>(K1='a',K2=datetime'..')``
  (quoted or not), with ``$select``/``$expand``: ``{"d": {...}}``, or 404 with SAP's error body
  (``Resource not found for segment '<EntityType>'``) when no record has that key; a predicate
  that does not name exactly the set's key properties is a 400 (pyodata's ``get_entity``);
- Basic authentication of a communication user (401 otherwise, with SAP's HTML-ish body);
  CSRF protection: ``x-csrf-token: fetch`` on a GET returns a token, a modifying request
  without a valid one gets 403 with ``x-csrf-token: Required``;
- errors as ``{"error": {"code": "...", "message": {"lang": "en", "value": "..."}}}``;
  an unknown property in ``$filter``/``$select``/``$orderby`` is a 400.

Simplified: only the entity sets and properties the connector uses (plus a few neighbours);
no ``$batch``, no Atom/XML payloads, no function imports, no navigation paths
(``/A_BillingDocument('1')/to_Item``), no ``$count`` inside ``$expand`` or ``$filter``;
``$count`` ignores ``$top``/``$skip``; skiptokens are offsets (as SAP's are for these APIs, and
equally unstable when rows are deleted between pages); writes are limited to creating a record
with POST (enough to exercise the CSRF handshake), no PATCH, PUT or DELETE of an entity.

:class:`WorldLoader` puts a world directory's canonical records into the fake the way the
connector maps them back (docs/erp-sap.md); its docstring says what S/4HANA's APIs cannot carry
(contacts, machine models, renewals, survey answers, service orders, payment). ``oem-retention
demo erp sap --world DIR`` serves one until Ctrl-C and prints the settings for the connector.

Test hooks (Python, same process): :meth:`FakeS4.put` adds or changes a record and bumps its
change timestamp (for items: the header's), :meth:`FakeS4.delete`, :meth:`FakeS4.throttle`
(429 with ``Retry-After``), :meth:`FakeS4.unavailable` (503), :meth:`FakeS4.drop_property`
(a release without a property), :attr:`FakeS4.requests` (every request seen).
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import orjson

from demo.erp.records import ENTITIES, Records, amount, flag, moment

ROOT = "/sap/opu/odata/sap/"
EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Raw:
    """A value served verbatim, whatever the property's type (to serve malformed data)."""

    text: Any


@dataclass(frozen=True, slots=True)
class Nav:
    """A navigation property: the target set and how its records point back.

    ``join`` pairs each child field with the parent field it refers to.
    """

    target: str
    join: tuple[tuple[str, str], ...]
    many: bool = True


@dataclass(slots=True)
class EntitySet:
    """One entity set: its properties (name -> Edm type), keys and navigations."""

    service: str
    name: str
    keys: tuple[str, ...]
    properties: dict[str, str]
    navs: dict[str, Nav] = field(default_factory=dict)
    # How put() stamps a change: "offset" sets this DateTimeOffset property to now; "bp" sets
    # CreationDate/Time on create and LastChangeDate/Time on change; "parent" touches the parent.
    stamp: str | None = None
    stamp_field: str | None = None
    parent: tuple[str, tuple[tuple[str, str], ...]] | None = None
    rows: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        """The entity type's name in $metadata."""
        return f"{self.name}Type"


def _schema() -> dict[str, EntitySet]:
    s, dt, dto, dec, tm, b = ("Edm.String", "Edm.DateTime", "Edm.DateTimeOffset",
                              "Edm.Decimal", "Edm.Time", "Edm.Boolean")
    sets = [
        EntitySet("API_BUSINESS_PARTNER", "A_BusinessPartner", ("BusinessPartner",), {
            "BusinessPartner": s, "Customer": s, "Supplier": s, "BusinessPartnerCategory": s,
            "BusinessPartnerFullName": s, "BusinessPartnerName": s, "OrganizationBPName1": s,
            "Industry": s, "CreationDate": dt, "CreationTime": tm, "LastChangeDate": dt,
            "LastChangeTime": tm, "IsMarkedForArchiving": b, "BusinessPartnerIsBlocked": b},
            navs={"to_BusinessPartnerAddress": Nav("A_BusinessPartnerAddress",
                                                   (("BusinessPartner", "BusinessPartner"),)),
                  "to_Customer": Nav("A_Customer", (("Customer", "Customer"),), many=False)},
            stamp="bp"),
        EntitySet("API_BUSINESS_PARTNER", "A_BusinessPartnerAddress",
                  ("BusinessPartner", "AddressID"), {
                      "BusinessPartner": s, "AddressID": s, "CityName": s, "Country": s,
                      "PostalCode": s, "StreetName": s, "HouseNumber": s, "Region": s},
                  stamp="parent",
                  parent=("A_BusinessPartner", (("BusinessPartner", "BusinessPartner"),))),
        EntitySet("API_BUSINESS_PARTNER", "A_Customer", ("Customer",), {
            "Customer": s, "CustomerName": s, "CustomerFullName": s, "CustomerAccountGroup": s,
            "Industry": s, "CreationDate": dt, "DeletionIndicator": b}),
        EntitySet("API_EQUIPMENT", "Equipment", ("Equipment", "ValidityEndDate"), {
            "Equipment": s, "ValidityEndDate": dt, "ValidityStartDate": dt, "EquipmentName": s,
            "EquipmentCategory": s, "TechnicalObjectType": s, "Material": s, "SerialNumber": s,
            "ManufacturerPartTypeName": s, "OperationStartDate": dt, "CreationDate": dt,
            "LastChangeDateTime": dto, "EquipmentIsMarkedForDeletion": b,
            "EquipmentIsAtCustomer": b},
            navs={"to_Partner": Nav("EquipmentPartner", (("Equipment", "Equipment"),)),
                  "to_Warranty": Nav("EquipmentWarranty", (("Equipment", "Equipment"),))},
            stamp="offset", stamp_field="LastChangeDateTime"),
        EntitySet("API_EQUIPMENT", "EquipmentPartner",
                  ("Equipment", "PartnerFunction", "EquipmentPartnerObjectNmbr"), {
                      "Equipment": s, "PartnerFunction": s, "EquipmentPartnerObjectNmbr": s,
                      "Partner": s, "CreationDate": dt},
                  stamp="parent", parent=("Equipment", (("Equipment", "Equipment"),))),
        EntitySet("API_EQUIPMENT", "EquipmentWarranty", ("Equipment", "WarrantyType"), {
            "Equipment": s, "WarrantyType": s, "MasterWarranty": s, "WarrantyStartDate": dt,
            "WarrantyEndDate": dt},
            stamp="parent", parent=("Equipment", (("Equipment", "Equipment"),))),
        EntitySet("API_SERVICE_CONTRACT_SRV", "A_ServiceContract", ("ServiceContract",), {
            "ServiceContract": s, "ServiceContractType": s, "ServiceContractUUID": s,
            "ServiceContractDescription": s, "SoldToParty": s,
            "ServiceContractStartDateTime": dto, "ServiceContractEndDateTime": dto,
            "ServiceContractNetAmount": dec, "TransactionCurrency": s,
            "ServiceContractStatus": s, "ServiceContractIsReleased": b,
            "ServiceContractIsRejected": b, "ServiceContractCanclnSts": s,
            "ServiceDocCreationDateTime": dto, "ServiceDocChangedDateTime": dto},
            stamp="offset", stamp_field="ServiceDocChangedDateTime"),
        EntitySet("API_BILLING_DOCUMENT_SRV", "A_BillingDocument", ("BillingDocument",), {
            "BillingDocument": s, "SDDocumentCategory": s, "BillingDocumentCategory": s,
            "BillingDocumentType": s, "CreationDate": dt, "LastChangeDate": dt,
            "LastChangeDateTime": dto, "BillingDocumentDate": dt,
            "BillingDocumentIsCancelled": b, "CancelledBillingDocument": s,
            "TotalNetAmount": dec, "TotalGrossAmount": dec, "TransactionCurrency": s,
            "SoldToParty": s, "PayerParty": s, "CustomerPaymentTerms": s,
            "OverallBillingStatus": s, "AccountingPostingStatus": s},
            navs={"to_Item": Nav("A_BillingDocumentItem",
                                 (("BillingDocument", "BillingDocument"),))},
            stamp="offset", stamp_field="LastChangeDateTime"),
        EntitySet("API_BILLING_DOCUMENT_SRV", "A_BillingDocumentItem",
                  ("BillingDocument", "BillingDocumentItem"), {
                      "BillingDocument": s, "BillingDocumentItem": s,
                      "SalesDocumentItemCategory": s, "Material": s, "MaterialGroup": s,
                      "BillingDocumentItemText": s, "BillingQuantity": dec,
                      "BillingQuantityUnit": s, "NetAmount": dec, "TransactionCurrency": s,
                      "ReferenceSDDocument": s},
                  stamp="parent",
                  parent=("A_BillingDocument", (("BillingDocument", "BillingDocument"),))),
        EntitySet("API_SALES_ORDER_SRV", "A_SalesOrder", ("SalesOrder",), {
            "SalesOrder": s, "SalesOrderType": s, "SalesOrganization": s, "SoldToParty": s,
            "SalesOrderDate": dt, "CreationDate": dt, "LastChangeDate": dt,
            "LastChangeDateTime": dto, "PurchaseOrderByCustomer": s, "TotalNetAmount": dec,
            "TransactionCurrency": s, "OverallSDProcessStatus": s,
            "OverallDeliveryStatus": s, "OverallSDDocumentRejectionSts": s},
            navs={"to_Item": Nav("A_SalesOrderItem", (("SalesOrder", "SalesOrder"),))},
            stamp="offset", stamp_field="LastChangeDateTime"),
        EntitySet("API_SALES_ORDER_SRV", "A_SalesOrderItem", ("SalesOrder", "SalesOrderItem"), {
            "SalesOrder": s, "SalesOrderItem": s, "SalesOrderItemCategory": s,
            "SalesOrderItemText": s, "Material": s, "MaterialGroup": s,
            "RequestedQuantity": dec, "RequestedQuantityUnit": s, "NetAmount": dec,
            "TransactionCurrency": s},
            stamp="parent", parent=("A_SalesOrder", (("SalesOrder", "SalesOrder"),))),
    ]
    return {entity_set.name: entity_set for entity_set in sets}


# ---------------------------------------------------------------------------------------------
# Values: Python <-> OData V2 JSON and filter literals


def _ms(value: datetime) -> int:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return int((value - EPOCH) / timedelta(milliseconds=1))


def to_json(edm: str, value: Any) -> Any:  # noqa: PLR0911 - one return per Edm type
    """A stored value as SAP writes it in V2 JSON."""
    if value is None:
        return None
    if isinstance(value, Raw):
        return value.text
    if edm == "Edm.DateTime":
        moment = value if isinstance(value, datetime) else datetime.combine(value, time())
        return f"/Date({_ms(moment)})/"
    if edm == "Edm.DateTimeOffset":
        return f"/Date({_ms(value)}+0000)/"
    if edm == "Edm.Time":
        return f"PT{value.hour:02d}H{value.minute:02d}M{value.second:02d}S"
    if edm == "Edm.Decimal":
        return str(value)
    if edm == "Edm.Boolean":
        return bool(value)
    return str(value)


def _comparable(edm: str, value: Any) -> Any:
    if value is None or isinstance(value, Raw):
        return None
    if edm == "Edm.DateTime" and isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time())
    if edm == "Edm.DateTime" and isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


class ODataError(Exception):
    """An answer with SAP's error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad_request(message: str) -> ODataError:
    return ODataError(400, "/IWBEP/CM_MGW_RT/022", message)


_TOKEN = re.compile(r"""\s*(?:
    (?P<open>\() | (?P<close>\)) |
    (?P<typed>(?:datetimeoffset|datetime|guid|time)'[^']*') |
    (?P<text>'(?:[^']|'')*') |
    (?P<number>-?\d+(?:\.\d+)?[mMdDlL]?) |
    (?P<word>[A-Za-z_][A-Za-z0-9_/]*)
)""", re.VERBOSE)
_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise _bad_request(f"Invalid token at position {pos} in $filter '{text}'")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


@dataclass(frozen=True, slots=True)
class _Literal:
    kind: str  # text, number, datetime, datetimeoffset, bool, null
    value: Any


def _moment(prefix: str, body: str) -> datetime:
    try:
        moment = datetime.fromisoformat(body.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    # datetimeoffset literals carry a zone, datetime ones do not.
    if moment is None or (moment.tzinfo is None) == (prefix == "datetimeoffset"):
        raise _bad_request(f"Invalid {prefix} literal '{body}'")
    return moment


def _literal(kind: str, text: str) -> _Literal:
    if kind == "text":
        return _Literal("text", text[1:-1].replace("''", "'"))
    if kind == "number":
        return _Literal("number", Decimal(text.rstrip("mMdDlL")))
    if kind == "typed":
        prefix, _, rest = text.partition("'")
        body = rest[:-1]
        if prefix in ("datetimeoffset", "datetime"):
            return _Literal(prefix, _moment(prefix, body))
        return _Literal("text", body)
    if text in ("true", "false"):
        return _Literal("bool", text == "true")
    if text == "null":
        return _Literal("null", None)
    raise _bad_request(f"Invalid literal {text}")


_KEY_PART = re.compile(r"""\s*(?:(?P<name>[A-Za-z_]\w*)\s*=\s*)?(?P<value>
    (?P<typed>(?:datetimeoffset|datetime|guid|time)'[^']*') |
    (?P<text>'(?:[^']|'')*') |
    (?P<number>-?\d+(?:\.\d+)?[mMdDlL]?) |
    (?P<word>true|false)
)\s*(?:,|$)""", re.VERBOSE)


def _key_predicate(entity_set: EntitySet, text: str) -> dict[str, Any]:
    """The key values of ``('K')`` or ``(K1='a',K2=datetime'...')``, as :func:`_comparable`.

    A single value is allowed only for a single key; named values must name every key.
    """
    values: dict[str, Any] = {}
    pos = 0
    while pos < len(text):
        match = _KEY_PART.match(text, pos)
        if match is None or match.end() == pos:
            raise _bad_request(f"Invalid key predicate '({text})' for"
                               f" {entity_set.service}.{entity_set.type_name}")
        kind = next(k for k in ("typed", "text", "number", "word") if match.group(k))
        name = match.group("name") or (entity_set.keys[0] if len(entity_set.keys) == 1
                                       and not values else "")
        literal = _literal(kind, match.group("value"))
        edm = entity_set.properties.get(name, "")
        expected = {"Edm.String": "text", "Edm.DateTime": "datetime"}.get(edm)
        if name not in entity_set.keys or name in values or (
                expected is not None and literal.kind != expected):
            raise _bad_request(f"Invalid key predicate '({text})' for"
                               f" {entity_set.service}.{entity_set.type_name}")
        values[name] = literal.value
        pos = match.end()
    if set(values) != set(entity_set.keys):
        raise _bad_request(f"Invalid key predicate '({text})': the key of"
                           f" {entity_set.type_name} is {', '.join(entity_set.keys)}")
    return values


Predicate = Callable[[dict[str, Any]], bool]


class _FilterParser:
    """Recursive descent over $filter: or > and > comparison | (expression)."""

    def __init__(self, text: str, entity_set: EntitySet) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.entity_set = entity_set
        self.text = text

    def parse(self) -> Predicate:
        predicate = self._or()
        if self.pos != len(self.tokens):
            raise _bad_request(f"Unexpected '{self.tokens[self.pos][1]}' in $filter")
        return predicate

    def _peek_word(self, word: str) -> bool:
        return (self.pos < len(self.tokens) and self.tokens[self.pos][0] == "word"
                and self.tokens[self.pos][1] == word)

    def _next(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise _bad_request(f"Incomplete $filter '{self.text}'")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._peek_word("or"):
            self.pos += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def _and(self) -> Predicate:
        parts = [self._comparison()]
        while self._peek_word("and"):
            self.pos += 1
            parts.append(self._comparison())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def _comparison(self) -> Predicate:
        kind, text = self._next()
        if kind == "open":
            inner = self._or()
            if self._next()[0] != "close":
                raise _bad_request("Missing ')' in $filter")
            return inner
        if kind != "word" or text not in self.entity_set.properties:
            raise _bad_request(f"Property {text} not found in type"
                               f" {self.entity_set.service}.{self.entity_set.type_name}")
        name, edm = text, self.entity_set.properties[text]
        op_kind, op = self._next()
        if op_kind != "word" or op not in _OPS:
            raise _bad_request(f"Invalid operator {op} in $filter")
        literal = _literal(*self._next())
        if (edm == "Edm.DateTimeOffset" and literal.kind == "datetime") or (
                edm == "Edm.DateTime" and literal.kind == "datetimeoffset"):
            raise _bad_request(f"Invalid parametertype used at function '{op}' (property"
                               f" {name} is {edm})")
        wanted = literal.value
        if edm == "Edm.Decimal" and literal.kind == "number":
            wanted = Decimal(wanted)

        def compare(row: dict[str, Any]) -> bool:
            have = _comparable(edm, row.get(name))
            if wanted is None or have is None:
                return {"eq": have is wanted, "ne": have is not wanted}.get(op, False)
            try:
                return bool({"eq": have == wanted, "ne": have != wanted, "gt": have > wanted,
                             "ge": have >= wanted, "lt": have < wanted,
                             "le": have <= wanted}[op])
            except TypeError:
                return False

        return compare


# ---------------------------------------------------------------------------------------------
# The store and its test hooks


class FakeS4:
    """The fake system: data, switches for failure, and the HTTP server around them."""

    def __init__(self, *, user: str = "COMM_USER_OEMR", password: str = "S3cret-Pass",  # noqa: S107 - a fake's test password
                 page_size: int = 1000, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.user = user
        self.password = password
        self.page_size = page_size
        self.sets = _schema()
        self.now = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.csrf_tokens: set[str] = set()
        self._failures: list[tuple[int, float | None]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeS4:
        """Serve in a background thread (on a free loopback port unless given one)."""
        fake = self

        class Handler(_Handler):
            store = fake

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-s4")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        """Scheme, host and port: the connector's ``base_url``."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def settings(self, timezone: str = "UTC") -> dict[str, str]:
        """The settings (environment) that point the platform's SAP connector at this fake."""
        return {"OEMR_ERP_SAP_URL": self.url, "OEMR_ERP_SAP_USER": self.user,
                "OEMR_ERP_SAP_PASSWORD": self.password, "OEMR_ERP_SAP_TIMEZONE": timezone}

    # -- data hooks ---------------------------------------------------------------------------

    def advance(self, seconds: float = 1.0) -> datetime:
        """Move the system clock on; what put() stamps next."""
        self.now += timedelta(seconds=seconds)
        return self.now

    def put(self, entity_set: str, record: dict[str, Any], *, stamp: bool = True) -> dict[str, Any]:
        """Create or change a record (merged into the stored one) and stamp the change."""
        with self.lock:
            spec = self.sets[entity_set]
            unknown = set(record) - set(spec.properties)
            if unknown:
                raise KeyError(f"{entity_set} has no properties {sorted(unknown)}")
            key = tuple(record[k] for k in spec.keys)
            existing = spec.rows.get(key)
            row = {**(existing or _empty(spec)), **record}
            spec.rows[key] = row
            if stamp:
                self._stamp(spec, row, created=existing is None)
            return row

    def _stamp(self, spec: EntitySet, row: dict[str, Any], *, created: bool) -> None:
        if spec.stamp == "offset" and spec.stamp_field is not None:
            row[spec.stamp_field] = self.now
        elif spec.stamp == "bp":
            # SAP fills the change date of a business partner only once it is changed.
            day, moment = self.now.date(), self.now.time().replace(tzinfo=None, microsecond=0)
            if created:
                row["CreationDate"], row["CreationTime"] = day, moment
            else:
                row["LastChangeDate"], row["LastChangeTime"] = day, moment
        elif spec.stamp == "parent" and spec.parent is not None:
            parent_set, join = spec.parent
            parent = self.sets[parent_set]
            key = tuple(row[child] for child, _ in sorted(
                join, key=lambda pair: parent.keys.index(pair[1])))
            if key in parent.rows:
                self._stamp(parent, parent.rows[key], created=False)

    def delete(self, entity_set: str, *key: Any) -> None:
        """Delete a record (and, for a header, its items)."""
        with self.lock:
            spec = self.sets[entity_set]
            row = spec.rows.pop(tuple(key))
            for nav in spec.navs.values():
                child = self.sets[nav.target]
                if child.parent is not None and child.parent[0] == entity_set:
                    for child_key, child_row in list(child.rows.items()):
                        if all(child_row[c] == row[p] for c, p in nav.join):
                            del child.rows[child_key]

    def rows(self, entity_set: str) -> list[dict[str, Any]]:
        """The stored records of a set."""
        with self.lock:
            return [dict(row) for row in self.sets[entity_set].rows.values()]

    def drop_property(self, entity_set: str, name: str) -> None:
        """Behave like a release without this property (metadata and data)."""
        with self.lock:
            spec = self.sets[entity_set]
            del spec.properties[name]
            for row in spec.rows.values():
                row.pop(name, None)

    # -- failure hooks ------------------------------------------------------------------------

    def throttle(self, times: int = 1, retry_after: float | None = 1) -> None:
        """Answer the next ``times`` requests with 429 Too Many Requests."""
        with self.lock:
            self._failures.extend([(429, retry_after)] * times)

    def unavailable(self, times: int = 1) -> None:
        """Answer the next ``times`` requests with 503 Service Unavailable."""
        with self.lock:
            self._failures.extend([(503, None)] * times)

    def take_failure(self) -> tuple[int, float | None] | None:
        """The failure to answer the current request with, if one is queued."""
        with self.lock:
            return self._failures.pop(0) if self._failures else None

    def count(self, fragment: str = "") -> int:
        """Requests whose path and query contain ``fragment``."""
        with self.lock:
            return sum(1 for _, target in self.requests if fragment in target)

    # -- queries ------------------------------------------------------------------------------

    def _filtered(self, entity_set: EntitySet, params: dict[str, str]) -> list[dict[str, Any]]:
        rows = list(entity_set.rows.values())
        if "$filter" in params:
            predicate = _FilterParser(params["$filter"], entity_set).parse()
            rows = [row for row in rows if predicate(row)]
        return rows

    def count_of(self, entity_set: EntitySet, params: dict[str, str]) -> int:
        """What ``GET /<EntitySet>/$count`` answers: the records its ``$filter`` keeps."""
        with self.lock:
            return len(self._filtered(entity_set, params))

    def read(self, entity_set: EntitySet, key_text: str, params: dict[str, str],
             self_url: str) -> dict[str, Any]:
        """The ``d`` object of ``GET /<EntitySet>(<key>)``; a 404 with SAP's body if none."""
        wanted = _key_predicate(entity_set, key_text)
        with self.lock:
            row = next((r for r in entity_set.rows.values()
                        if all(_comparable(entity_set.properties[k], r.get(k)) == v
                               for k, v in wanted.items())), None)
            if row is None:
                raise ODataError(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment"
                                                              f" '{entity_set.type_name}'")
            expand = [n for n in params.get("$expand", "").split(",") if n]
            select = [n for n in params.get("$select", "").split(",") if n]
            self._check_paths(entity_set, expand, select)
            return self._entity(entity_set, row, self_url, expand, select,
                                children=self._children(entity_set, expand))

    def _children(self, entity_set: EntitySet,
                  expand: list[str]) -> dict[str, dict[tuple[Any, ...], list[dict[str, Any]]]]:
        """Each expanded navigation's target rows by the parent values they join on.

        One pass per navigation and request: matching children per parent row by scanning
        every child was quadratic (a standard world's billing documents with their items).
        """
        index: dict[str, dict[tuple[Any, ...], list[dict[str, Any]]]] = {}
        for nav_name in expand:
            nav = entity_set.navs[nav_name]
            grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
            for child in self.sets[nav.target].rows.values():
                grouped[tuple(child.get(c) for c, _ in nav.join)].append(child)
            index[nav_name] = grouped
        return index

    def query(self, entity_set: EntitySet, params: dict[str, str],
              self_url: str) -> dict[str, Any]:
        """The ``d`` object of a GET on an entity set."""
        with self.lock:
            rows = self._filtered(entity_set, params)
            rows = self._ordered(entity_set, rows, params.get("$orderby"))
            total = len(rows)
            start = _whole(params.get("$skiptoken") or params.get("$skip") or "0", "$skip")
            top = _whole(params["$top"], "$top") if "$top" in params else None
            wanted = rows[start:] if top is None else rows[start:start + top]
            page = wanted[:self.page_size]
            expand = [n for n in params.get("$expand", "").split(",") if n]
            select = [n for n in params.get("$select", "").split(",") if n]
            self._check_paths(entity_set, expand, select)
            children = self._children(entity_set, expand)
            d: dict[str, Any] = {"results": [self._entity(entity_set, row, self_url, expand,
                                                          select, children=children)
                                             for row in page]}
            if params.get("$inlinecount") == "allpages":
                d["__count"] = str(total)
            if len(wanted) > len(page):
                following = {k: v for k, v in params.items() if k not in ("$skip", "$skiptoken")}
                following["$skiptoken"] = str(start + len(page))
                if top is not None:
                    following["$top"] = str(top - len(page))
                d["__next"] = (f"{self_url}{ROOT}{entity_set.service}/{entity_set.name}?"
                               + urlencode(following, quote_via=quote, safe="$,'()/:"))
            return d

    def _ordered(self, entity_set: EntitySet, rows: list[dict[str, Any]],
                 orderby: str | None) -> list[dict[str, Any]]:
        clauses = [c.split() for c in (orderby or "").split(",") if c.strip()]
        # Gateway answers in key order without $orderby.
        clauses = clauses or [[k] for k in entity_set.keys]
        for clause in reversed(clauses):
            name, direction = clause[0], (clause[1] if len(clause) > 1 else "asc")
            if name not in entity_set.properties or direction not in ("asc", "desc"):
                raise _bad_request(f"Property {name} not found in type"
                                   f" {entity_set.service}.{entity_set.type_name}")
            edm = entity_set.properties[name]
            # Nulls first, as the database under Gateway sorts them ascending.

            def order(row: dict[str, Any], name: str = name, edm: str = edm) -> tuple[bool, Any]:
                value = _comparable(edm, row.get(name))
                return (value is not None, 0 if value is None else value)

            rows.sort(key=order, reverse=direction == "desc")
        return rows

    def _check_paths(self, entity_set: EntitySet, expand: list[str], select: list[str]) -> None:
        for nav in expand:
            if nav not in entity_set.navs:
                raise _bad_request(f"Navigation property {nav} not found in type"
                                   f" {entity_set.service}.{entity_set.type_name}")
        for path in select:
            nav, _, prop = path.rpartition("/")
            target = self.sets[entity_set.navs[nav].target] if nav in entity_set.navs else None
            if (nav and (target is None or prop not in target.properties)) or (
                    not nav and prop not in entity_set.properties
                    and prop not in entity_set.navs):
                raise _bad_request(f"Property {path} not found in type"
                                   f" {entity_set.service}.{entity_set.type_name}")

    def _uri(self, entity_set: EntitySet, row: dict[str, Any], self_url: str) -> str:
        parts = []
        for k in entity_set.keys:
            value = row[k]
            edm = entity_set.properties[k]
            if edm == "Edm.DateTime":
                literal = f"datetime'{_comparable(edm, value).isoformat()}'"
            else:
                literal = "'" + str(value).replace("'", "''") + "'"
            parts.append(f"{k}={quote(literal)}" if len(entity_set.keys) > 1 else quote(literal))
        return f"{self_url}{ROOT}{entity_set.service}/{entity_set.name}({','.join(parts)})"

    def _entity(self, entity_set: EntitySet, row: dict[str, Any], self_url: str,
                expand: list[str], select: list[str], *,
                children: dict[str, dict[tuple[Any, ...], list[dict[str, Any]]]] | None = None,
                ) -> dict[str, Any]:
        uri = self._uri(entity_set, row, self_url)
        own = [p for p in select if "/" not in p]
        out: dict[str, Any] = {"__metadata": {
            "id": uri, "uri": uri, "type": f"{entity_set.service}.{entity_set.type_name}"}}
        for name, edm in entity_set.properties.items():
            if not own or name in own:
                out[name] = to_json(edm, row.get(name))
        for nav_name, nav in entity_set.navs.items():
            if nav_name in expand:
                target = self.sets[nav.target]
                index = (children or self._children(entity_set, [nav_name]))[nav_name]
                mine = index.get(tuple(row.get(parent) for _, parent in nav.join), [])
                sub = [p.partition("/")[2] for p in select if p.startswith(nav_name + "/")]
                entities = [self._entity(target, c, self_url, [], sub) for c in mine]
                out[nav_name] = {"results": entities} if nav.many else (
                    entities[0] if entities else None)
            elif not own or nav_name in own:
                out[nav_name] = {"__deferred": {"uri": f"{uri}/{nav_name}"}}
        return out

    def metadata(self, service: str) -> str:
        """The service's EDMX document."""
        with self.lock:
            sets = [s for s in self.sets.values() if s.service == service]
            return _edmx(service, sets, self.sets)


def _empty(spec: EntitySet) -> dict[str, Any]:
    # ABAP has no null text or flag: an empty CHAR field is '' and an unset flag false.
    return {name: "" if edm == "Edm.String" else False if edm == "Edm.Boolean" else None
            for name, edm in spec.properties.items()}


def _whole(text: str, option: str) -> int:
    if not text.isdigit():
        raise _bad_request(f"Invalid value '{text}' for system query option {option}")
    return int(text)


def _edmx(service: str, sets: list[EntitySet], every: dict[str, EntitySet]) -> str:
    types, associations, containers = [], [], []
    for spec in sets:
        lines = [f'<EntityType Name="{spec.type_name}" sap:content-version="1">', "<Key>"]
        lines += [f'<PropertyRef Name="{k}"/>' for k in spec.keys]
        lines.append("</Key>")
        for name, edm in spec.properties.items():
            nullable = "false" if name in spec.keys else "true"
            extra = ' Precision="16" Scale="3"' if edm == "Edm.Decimal" else ""
            extra += ' Precision="7"' if edm in ("Edm.DateTimeOffset",) else ""
            extra += ' Precision="0" sap:display-format="Date"' if edm == "Edm.DateTime" else ""
            lines.append(f'<Property Name="{name}" Type="{edm}" Nullable="{nullable}"{extra}'
                         f' sap:label="{escape(name)}"/>')
        for nav_name, nav in spec.navs.items():
            assoc = f"assoc_{spec.name}_{nav_name}"
            lines.append(f'<NavigationProperty Name="{nav_name}" Relationship="{service}.{assoc}"'
                         f' FromRole="FromRole_{assoc}" ToRole="ToRole_{assoc}"/>')
            target = every[nav.target]
            associations.append(
                f'<Association Name="{assoc}" sap:content-version="1">'
                f'<End Type="{service}.{spec.type_name}" Multiplicity="1"'
                f' Role="FromRole_{assoc}"/>'
                f'<End Type="{service}.{target.type_name}"'
                f' Multiplicity="{"*" if nav.many else "0..1"}" Role="ToRole_{assoc}"/>'
                "</Association>")
        lines.append("</EntityType>")
        types.append("".join(lines))
        containers.append(f'<EntitySet Name="{spec.name}" EntityType="{service}.{spec.type_name}"'
                          f' sap:content-version="1"/>')
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"'
        ' xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"'
        ' xmlns:sap="http://www.sap.com/Protocols/SAPData">'
        '<edmx:DataServices m:DataServiceVersion="2.0">'
        f'<Schema Namespace="{service}" xml:lang="en" sap:schema-version="1"'
        ' xmlns="http://schemas.microsoft.com/ado/2008/09/edm">'
        + "".join(types) + "".join(associations)
        + f'<EntityContainer Name="{service}_Entities" m:IsDefaultEntityContainer="true"'
        ' sap:supported-formats="atom json xlsx">' + "".join(containers)
        + "</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>")


# ---------------------------------------------------------------------------------------------
# HTTP


# An entity set, one entity of it by key, or the number of its entities.
_RESOURCE = re.compile(r"(?P<set>\w+)(?:\((?P<key>[^)]*)\))?(?P<count>/\$count)?")


class _Handler(BaseHTTPRequestHandler):
    store: FakeS4
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests count requests through store.requests

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        store = self.store
        with store.lock:
            store.requests.append((method, self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            self._authenticate()
            self._fail_if_asked()
            headers: dict[str, str] = {}
            if self.headers.get("x-csrf-token", "").lower() == "fetch" and method == "GET":
                token = base64.b64encode(secrets.token_bytes(18)).decode()
                with store.lock:
                    store.csrf_tokens.add(token)
                headers["x-csrf-token"] = token
            if method != "GET":
                self._check_csrf()
            self._route(method, body, headers)
        except (_HttpFailure, ODataError) as failure:
            _send_error(self, failure)

    def _fail_if_asked(self) -> None:
        failure = self.store.take_failure()
        if failure is not None:
            status, retry_after = failure
            headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
            text = "Rate limit exceeded" if status == 429 else "Service temporarily unavailable"
            raise _HttpFailure(status, headers, ODataError(status, f"/IWFND/CM_BEC/{status}",
                                                           text))

    def _authenticate(self) -> None:
        expected = base64.b64encode(f"{self.store.user}:{self.store.password}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            raise _HttpFailure(401, {"WWW-Authenticate": 'Basic realm="SAP NetWeaver Application'
                                                         ' Server [FAKE/100]"'},
                               None, html="<html><head><title>Logon Error Message</title></head>"
                                          "<body>Logon failed: the user or password is"
                                          " incorrect</body></html>")

    def _check_csrf(self) -> None:
        token = self.headers.get("x-csrf-token")
        with self.store.lock:
            valid = token is not None and token in self.store.csrf_tokens
        if not valid:
            raise _HttpFailure(403, {"x-csrf-token": "Required"}, None,
                               html="CSRF token validation failed")

    def _route(self, method: str, body: bytes, headers: dict[str, str]) -> None:
        split = urlsplit(self.path)
        # Clients quote the key predicate (pyodata sends A_Customer%28%27C1%27%29).
        path = unquote(split.path)
        if not path.startswith(ROOT):
            raise ODataError(404, "/IWFND/MED/170", f"No service found for namespace '',"
                                                    f" name '{path}'")
        service, _, rest = path[len(ROOT):].partition("/")
        known = {s.service for s in self.store.sets.values()}
        if service not in known:
            raise ODataError(404, "/IWFND/MED/170",
                             f"No service found for namespace '/SAP/', name '{service}',"
                             " version '0001'")
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if rest == "$metadata":
            self._send(200, self.store.metadata(service).encode(), "application/xml", headers)
            return
        if rest in ("", "/"):
            names = [s.name for s in self.store.sets.values() if s.service == service]
            self._json({"d": {"EntitySets": names}}, headers)
            return
        target = _RESOURCE.fullmatch(rest)
        name = target.group("set") if target else rest.split("(")[0].split("/")[0]
        spec = self.store.sets.get(name)
        if target is None or spec is None or spec.service != service:
            raise ODataError(404, "/IWBEP/CM_MGW_RT/021", f"Resource not found for segment"
                                                           f" '{name}'")
        key, count = target.group("key"), target.group("count")
        if method == "GET" and key is not None and not count:
            self._json({"d": self.store.read(spec, key, params, self._self_url())}, headers)
            return
        if method == "GET" and count and key is None:
            self._send(200, str(self.store.count_of(spec, params)).encode(),
                       "text/plain;charset=utf-8", {**headers, "dataserviceversion": "2.0"})
            return
        if key is not None or count:
            raise ODataError(405, "/IWBEP/CM_MGW_RT/005", "Method not supported by the fake")
        if method == "POST":
            record = orjson.loads(body or b"{}")
            row = self.store.put(name, record)
            self._json({"d": self.store._entity(spec, row, self._self_url(), [], [])}, headers,
                       status=201)
            return
        if method != "GET":
            raise ODataError(405, "/IWBEP/CM_MGW_RT/005", "Method not supported by the fake")
        if params.get("$format", "json") != "json":
            raise _bad_request("The fake serves JSON only ($format=json)")
        self._json({"d": self.store.query(spec, params, self._self_url())}, headers)

    def _self_url(self) -> str:
        return f"http://{self.headers.get('Host')}"

    def _json(self, payload: Any, headers: dict[str, str], status: int = 200) -> None:
        self._send(status, orjson.dumps(payload), "application/json; charset=utf-8",
                   {**headers, "dataserviceversion": "2.0"})

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _HttpFailure(Exception):  # noqa: N818 - internal control flow
    def __init__(self, status: int, headers: dict[str, str], error: ODataError | None,
                 html: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.error = error
        self.html = html


def _send_error(handler: _Handler, failure: _HttpFailure | ODataError) -> None:
    if isinstance(failure, _HttpFailure) and failure.error is None:
        handler._send(failure.status, (failure.html or "").encode(), "text/html",
                      failure.headers)
        return
    error = failure.error if isinstance(failure, _HttpFailure) else failure
    assert error is not None
    headers = failure.headers if isinstance(failure, _HttpFailure) else {}
    body = {"error": {"code": error.code, "message": {"lang": "en", "value": error.message},
                      "innererror": {"transactionid": secrets.token_hex(16).upper(),
                                     "timestamp": datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
                                     "errordetails": []}}}
    handler._send(error.status, orjson.dumps(body), "application/json; charset=utf-8", headers)


# ---------------------------------------------------------------------------------------------
# A world in the fake: canonical records -> S/4HANA records (docs/erp-sap.md's mapping backwards)

# How the line kinds are told apart in S/4HANA: SD item categories (what SapMappings reads by
# default) and material groups (which SapMappings.line_kinds_by_material_group can map). The
# standard categories have nothing for a machine sale or a retrofit: both are TAC (configurable
# material) here, read as `other` unless the material groups are mapped.
ITEM_CATEGORIES = {"spare_parts": "TAN", "field_service": "TAD", "service_contract": "WVN",
                   "new_machine": "TAC", "retrofit": "TAC", "other": "TAX"}
MATERIAL_GROUPS = {"spare_parts": "ZSPARES", "field_service": "ZSERVICE",
                   "service_contract": "ZCONTRACT", "new_machine": "ZMACHINES",
                   "retrofit": "ZRETROFIT", "other": "ZOTHER"}
ORDER_STATUSES = {"draft": ("", "", ""), "confirmed": ("A", "A", ""),
                  "delivered": ("C", "C", ""), "cancelled": ("C", "", "C")}
FOREVER = date(9999, 12, 31)


def whole_months(starts: date, ends: date) -> int:
    """Whole months from a start to the day after an end (a year Jan 1 - Dec 31 is 12)."""
    after = ends + timedelta(days=1)
    return (after.year - starts.year) * 12 + after.month - starts.month - (
        1 if after.day < starts.day else 0)


class WorldLoader:
    """Puts a world's canonical records into a :class:`FakeS4` as S/4HANA keeps them.

    Keys are the world's ids (a business partner, equipment, contract or document number may be
    any text of its length); items are numbered 10, 20, ... per document in the world's order,
    so a line's id becomes ``<document>/<item>``: :attr:`ids` maps (entity, world id) to the
    external id our connector stores. Change stamps are the records' ``source_updated_at``.

    What S/4HANA's APIs (as the connector reads them) cannot carry is left out and counted in
    :attr:`left_out`: contacts, machine models, contract renewals and survey answers (no entity
    set the connector reads), draft invoices (a billing document exists once billed), service
    orders (SAP's service orders live in another API). Carried but changed on the way: a site's
    name (an address has none: the connector names it after the partner and city), a machine's
    site and a contract's machine (the connector reads neither), an invoice's number, due and
    paid dates (the document number is its key; payment is in FI), an expired contract (SAP's
    released contract past its end reads as active), line kinds (see :data:`ITEM_CATEGORIES`),
    unit prices and a line's machine.
    """

    def __init__(self, fake: FakeS4, *, timezone: str = "UTC") -> None:
        self.fake = fake
        self.zone = ZoneInfo(timezone)
        self.ids: dict[tuple[str, str], str] = {}
        self.left_out: Counter[str] = Counter()
        self._addresses: Counter[str] = Counter()
        self._items: Counter[str] = Counter()
        self._documents: dict[str, tuple[int, str]] = {}  # invoice -> sign, currency
        self._orders: dict[str, str] = {}  # order -> currency

    def load(self, world: Records) -> WorldLoader:
        """Load every entity present, parents first."""
        loaders = {"customers": self._customer, "sites": self._site,
                   "installed_base": self._equipment, "service_contracts": self._contract,
                   "invoices": self._invoice, "invoice_lines": self._invoice_item,
                   "orders": self._order, "order_lines": self._order_item}
        with self.fake.lock:
            for entity in ENTITIES:
                load = loaders.get(entity)
                for record in world.get(entity, []):
                    if load is None or not load(record):
                        self.left_out[entity] += 1
        return self

    def _put(self, entity_set: str, record: dict[str, Any]) -> None:
        self.fake.put(entity_set, record, stamp=False)

    def _at(self, day: str | None, clock: time) -> datetime | None:
        """A day as the instant SAP stores for it, in the system's time zone."""
        return None if day is None else datetime.combine(date.fromisoformat(day), clock,
                                                         tzinfo=self.zone)

    def _customer(self, r: dict[str, str]) -> bool:
        ext, name = r["external_id"], r["name"]
        since = r.get("customer_since")
        changed = moment(r.get("source_updated_at"))
        self._put("A_BusinessPartner", {
            "BusinessPartner": ext, "Customer": ext, "BusinessPartnerCategory": "2",
            "BusinessPartnerFullName": name, "BusinessPartnerName": name,
            "OrganizationBPName1": name[:40], "Industry": r.get("industry", ""),
            # The partner was created when it became a customer: customer_since.
            "CreationDate": date.fromisoformat(since) if since else None,
            "CreationTime": time() if since else None,
            "LastChangeDate": changed.astimezone(UTC).date() if changed else None,
            "LastChangeTime": changed.astimezone(UTC).time().replace(microsecond=0)
            if changed else None,
            "IsMarkedForArchiving": flag(r.get("deleted"))})
        self._put("A_Customer", {
            "Customer": ext, "CustomerName": name[:35], "CustomerFullName": name,
            "CustomerAccountGroup": "CUST", "Industry": r.get("industry", ""),
            "CreationDate": date.fromisoformat(since) if since else None,
            "DeletionIndicator": flag(r.get("deleted"))})
        self.ids[("customers", ext)] = ext
        return True

    def _site(self, r: dict[str, str]) -> bool:
        customer = r["customer_external_id"]
        self._addresses[customer] += 1
        address = str(self._addresses[customer])
        # The first address's country is the customer's (the connector reads it so).
        self._put("A_BusinessPartnerAddress", {
            "BusinessPartner": customer, "AddressID": address, "CityName": r.get("city", ""),
            "Country": r.get("country", "")})
        self.ids[("sites", r["external_id"])] = f"{customer}/{address}"
        return True

    def _equipment(self, r: dict[str, str]) -> bool:
        ext = r["external_id"]
        commissioned = r.get("commissioned_on")
        self._put("Equipment", {
            "Equipment": ext, "ValidityEndDate": FOREVER,
            "ValidityStartDate": date.fromisoformat(commissioned) if commissioned else None,
            "EquipmentName": f"{r['model']} {r['serial']}"[:40], "EquipmentCategory": "M",
            "TechnicalObjectType": "MACHINE", "Material": r["model"],
            "SerialNumber": r["serial"], "ManufacturerPartTypeName": r["model"],
            "OperationStartDate": date.fromisoformat(commissioned) if commissioned else None,
            "LastChangeDateTime": moment(r.get("source_updated_at")),
            "EquipmentIsMarkedForDeletion": flag(r.get("deleted")),
            "EquipmentIsAtCustomer": True})
        self._put("EquipmentPartner", {
            "Equipment": ext, "PartnerFunction": "AG", "EquipmentPartnerObjectNmbr": "1",
            "Partner": r["customer_external_id"]})
        if r.get("warranty_end"):
            self._put("EquipmentWarranty", {
                "Equipment": ext, "WarrantyType": "1", "MasterWarranty": "STANDARD",
                "WarrantyStartDate": date.fromisoformat(commissioned) if commissioned else None,
                "WarrantyEndDate": date.fromisoformat(r["warranty_end"])})
        self.ids[("installed_base", ext)] = ext
        return True

    def _contract(self, r: dict[str, str]) -> bool:
        ext, status = r["external_id"], r["status"]
        starts, ends = date.fromisoformat(r["starts_on"]), date.fromisoformat(r["ends_on"])
        months = whole_months(starts, ends)
        annual = amount(r["annual_value"])
        # The net value of the whole term: the connector divides it back to a year (to the
        # cent; three decimals make that exact from two months on).
        net = (annual * months / 12).quantize(Decimal("0.001")) if months >= 1 else annual
        self._put("A_ServiceContract", {
            "ServiceContract": ext, "ServiceContractType": r.get("tier", ""),
            "ServiceContractDescription": r.get("contract_number", ""),
            "SoldToParty": r["customer_external_id"],
            "ServiceContractStartDateTime": self._at(r["starts_on"], time()),
            "ServiceContractEndDateTime": self._at(r["ends_on"], time(23, 59, 59)),
            "ServiceContractNetAmount": net, "TransactionCurrency": r["currency"],
            "ServiceContractStatus": {"expired": "E0004"}.get(status, ""),
            "ServiceContractIsReleased": status in ("active", "expired", "terminated"),
            "ServiceContractIsRejected": status == "cancelled",
            "ServiceContractCanclnSts": "C" if status == "terminated" else "",
            "ServiceDocCreationDateTime": self._at(r["starts_on"], time()),
            "ServiceDocChangedDateTime": moment(r.get("source_updated_at"))})
        self.ids[("service_contracts", ext)] = ext
        return True

    def _invoice(self, r: dict[str, str]) -> bool:
        ext, status = r["external_id"], r["status"]
        if status == "draft":
            return False
        credit = status == "credited"
        sign = -1 if credit else 1
        changed = moment(r.get("source_updated_at"))
        issued = date.fromisoformat(r["issued_on"])
        net = amount(r["net_amount"]) * sign
        self._put("A_BillingDocument", {
            "BillingDocument": ext, "SDDocumentCategory": "O" if credit else "M",
            "BillingDocumentCategory": "L", "BillingDocumentType": "G2" if credit else "F2",
            "CreationDate": issued, "BillingDocumentDate": issued,
            "LastChangeDate": changed.astimezone(UTC).date() if changed else None,
            "LastChangeDateTime": changed, "BillingDocumentIsCancelled": status == "cancelled",
            "TotalNetAmount": net, "TotalGrossAmount": net,
            "TransactionCurrency": r["currency"], "SoldToParty": r["customer_external_id"],
            "PayerParty": r["customer_external_id"], "OverallBillingStatus": "C",
            "AccountingPostingStatus": "C"})
        self._documents[ext] = (sign, r["currency"])
        self.ids[("invoices", ext)] = ext
        return True

    def _invoice_item(self, r: dict[str, str]) -> bool:
        document = r["invoice_external_id"]
        if document not in self._documents:
            return False  # its invoice was not loaded
        sign, currency = self._documents[document]
        self._items[document] += 1
        item = str(self._items[document] * 10)
        kind = r["kind"]
        self._put("A_BillingDocumentItem", {
            "BillingDocument": document, "BillingDocumentItem": item,
            "SalesDocumentItemCategory": ITEM_CATEGORIES[kind],
            "MaterialGroup": MATERIAL_GROUPS[kind], "Material": r.get("product_code", ""),
            "BillingDocumentItemText": r.get("description", ""),
            "BillingQuantity": amount(r.get("quantity"), "1"), "BillingQuantityUnit": "EA",
            "NetAmount": amount(r["net_amount"]) * sign, "TransactionCurrency": currency})
        self.ids[("invoice_lines", r["external_id"])] = f"{document}/{item}"
        return True

    def _order(self, r: dict[str, str]) -> bool:
        ext = r["external_id"]
        if r["kind"] != "spare_parts":
            return False
        process, delivery, rejection = ORDER_STATUSES[r["status"]]
        changed = moment(r.get("source_updated_at"))
        ordered = date.fromisoformat(r["ordered_on"])
        self._put("A_SalesOrder", {
            "SalesOrder": ext, "SalesOrderType": "OR", "SalesOrganization": "1010",
            "SoldToParty": r["customer_external_id"], "SalesOrderDate": ordered,
            "CreationDate": ordered,
            "LastChangeDate": changed.astimezone(UTC).date() if changed else None,
            "LastChangeDateTime": changed, "PurchaseOrderByCustomer": r.get("number", ""),
            "TotalNetAmount": amount(r["net_amount"]), "TransactionCurrency": r["currency"],
            "OverallSDProcessStatus": process, "OverallDeliveryStatus": delivery,
            "OverallSDDocumentRejectionSts": rejection})
        self._orders[ext] = r["currency"]
        self.ids[("orders", ext)] = ext
        return True

    def _order_item(self, r: dict[str, str]) -> bool:
        order = r["order_external_id"]
        if order not in self._orders:
            return False
        self._items[order] += 1
        item = str(self._items[order] * 10)
        self._put("A_SalesOrderItem", {
            "SalesOrder": order, "SalesOrderItem": item, "SalesOrderItemCategory": "TAN",
            "SalesOrderItemText": r.get("description", ""), "Material": r.get("part_number", ""),
            "MaterialGroup": MATERIAL_GROUPS["spare_parts"],
            "RequestedQuantity": amount(r["quantity"]), "RequestedQuantityUnit": "EA",
            "NetAmount": amount(r["net_amount"]), "TransactionCurrency": self._orders[order]})
        self.ids[("order_lines", r["external_id"])] = f"{order}/{item}"
        return True
