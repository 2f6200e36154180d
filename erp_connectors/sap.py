"""SAP S/4HANA (Cloud) through its OData V2 APIs (docs/erp-sap.md).

Business partners (customers, their addresses as sites), equipment (the installed base), service
contracts, billing documents (invoices and lines) and sales orders (parts orders and lines).

Like any OData client, the connector reads a service's ``$metadata`` first (once per connector)
and checks that every property it maps exists: a system of another release that lacks one stops
that entity with a :class:`~erp_connectors.sync.PermanentSyncError` naming the entity set and the
property, instead of syncing records with silent holes.

Reads are incremental by each entity set's change timestamp (``LastChangeDateTime`` where SAP
has one) with ``ge``, so records sharing the last timestamp are read again rather than skipped;
the upserts make that re-read free. Pages are ``$top`` requests ordered by the timestamp and the
key, following the server's ``__next`` links when it pages on its own. While a run is under way
the cursor holds where it is (the run's start timestamp, and the change timestamp and key of the
last record committed), so a process killed between pages resumes right after that record; a run
read to its end leaves only the newest timestamp seen. OData V2 deltas do not report deletions:
a full sync (``full=True``) reads everything and the engine marks what it did not see as deleted.

Only reads: a read-only integration needs no CSRF token (SAP asks for one on writes only).
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import orjson

from erp_connectors.http import ErpHttp, RetryPolicy
from erp_connectors.sync import Page, PageSource, PermanentSyncError, SourceReject

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
OVERLAP = timedelta(minutes=5)
_DATE = re.compile(r"^\\?/Date\((-?\d+)(?:([+-])(\d{4}))?\)\\?/$")
_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")
_EDM = "{http://schemas.microsoft.com/ado/2008/09/edm}"
_EDMX = "{http://schemas.microsoft.com/ado/2007/06/edmx}"


# ---------------------------------------------------------------------------------------------
# OData V2 values


def parse_odata_datetime(value: Any) -> datetime | None:
    """A V2 JSON date (``/Date(ms)/``, ``/Date(ms+0000)/``) as an aware UTC datetime.

    ``Edm.DateTime`` carries no zone and SAP writes it as UTC; ``Edm.DateTimeOffset`` carries an
    offset in minutes, which is already applied to the milliseconds (they count from the epoch in
    UTC). ``None`` stays ``None``; anything else raises ``ValueError``.

    >>> parse_odata_datetime("/Date(1700000000000)/")
    datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.timezone.utc)
    >>> parse_odata_datetime("/Date(1700000000000+0060)/").hour
    22
    """
    if value is None:
        return None
    match = _DATE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"'{value}' is not an OData date (/Date(milliseconds)/)")
    try:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(match.group(1)))
    except OverflowError:
        raise ValueError(f"'{value}' is outside the calendar") from None


def parse_odata_date(value: Any) -> date | None:
    """The day of an ``Edm.DateTime`` that holds a date (SAP's ``sap:display-format="Date"``)."""
    moment = parse_odata_datetime(value)
    return None if moment is None else moment.date()


def parse_odata_time(value: Any) -> time | None:
    """An ``Edm.Time`` (``PT14H30M05S``) as a time of day."""
    if value is None:
        return None
    match = _DURATION.match(str(value).strip())
    if match is None or not any(match.groups()):
        raise ValueError(f"'{value}' is not an OData time (PT14H30M05S)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    moment = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if moment >= timedelta(days=1):
        raise ValueError(f"'{value}' is not a time of day")
    return (datetime.min + moment).time()


def odata_datetimeoffset(moment: datetime) -> str:
    """A ``datetimeoffset'...'`` filter literal (UTC, to the microsecond when it has one)."""
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return f"datetimeoffset'{text}Z'"


def odata_text(value: str) -> str:
    """A string filter literal."""
    return "'" + value.replace("'", "''") + "'"


def odata_datetime(moment: datetime) -> str:
    """A ``datetime'...'`` filter literal (UTC, no zone)."""
    return f"datetime'{moment.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S')}'"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _partner(value: Any) -> str | None:
    """A customer number as one form across APIs: SAP pads numeric ids with zeros in some."""
    text = _text(value)
    if text is not None and text.isdigit():
        text = text.lstrip("0") or "0"
    return text


# ---------------------------------------------------------------------------------------------
# $metadata


@dataclass(frozen=True, slots=True)
class EntityType:
    """What ``$metadata`` says of one entity set: its properties and navigation targets."""

    name: str
    properties: dict[str, str]  # name -> Edm type
    navigations: dict[str, str]  # name -> target entity type name


def parse_metadata(xml: bytes) -> dict[str, EntityType]:
    """Entity sets of an EDMX document by name."""
    root = ET.fromstring(xml)  # noqa: S314 - the ERP's own metadata, over an authenticated link
    schemas = root.iter(f"{_EDM}Schema")
    raw_types: dict[str, tuple[dict[str, str], dict[str, tuple[str, str]]]] = {}
    ends: dict[tuple[str, str], str] = {}
    sets: dict[str, str] = {}
    for schema in schemas:
        namespace = schema.get("Namespace", "")
        for association in schema.iter(f"{_EDM}Association"):
            for end in association.iter(f"{_EDM}End"):
                ends[(f"{namespace}.{association.get('Name')}", end.get("Role", ""))] = (
                    end.get("Type", "").rpartition(".")[2])
        for entity_type in schema.iter(f"{_EDM}EntityType"):
            raw_types[entity_type.get("Name", "")] = (
                {p.get("Name", ""): p.get("Type", "") for p in entity_type.iter(f"{_EDM}Property")},
                {n.get("Name", ""): (n.get("Relationship", ""), n.get("ToRole", ""))
                 for n in entity_type.iter(f"{_EDM}NavigationProperty")})
        for entity_set in schema.iter(f"{_EDM}EntitySet"):
            sets[entity_set.get("Name", "")] = entity_set.get("EntityType", "").rpartition(".")[2]
    resolved = {name: EntityType(name, properties, {nav: ends.get(target, "")
                                                    for nav, target in navs.items()})
                for name, (properties, navs) in raw_types.items()}
    return {name: resolved[type_name] for name, type_name in sets.items()
            if type_name in resolved}


# ---------------------------------------------------------------------------------------------
# What to read and how to map it


@dataclass(frozen=True, slots=True)
class SapServices:
    """Where the services live; override for a system with other service names or versions."""

    root: str = "/sap/opu/odata/sap/"
    business_partner: str = "API_BUSINESS_PARTNER"
    equipment: str = "API_EQUIPMENT"
    service_contract: str = "API_SERVICE_CONTRACT_SRV"
    billing_document: str = "API_BILLING_DOCUMENT_SRV"
    sales_order: str = "API_SALES_ORDER_SRV"


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class BillingType:
    """What a billing document type is: its invoice status and the direction of its amounts.

    ``reduces_revenue``: its amounts (header and items, positive in SAP) are stored negative: a
    credit memo, and the cancellation of an invoice. The cancellation of a credit memo adds
    revenue back and stays positive. A cancelled document keeps its own sign with status
    ``cancelled``, its cancellation document has the opposite one, also ``cancelled``: the pair
    nets to zero, so revenue comes out right whether a report sums every document or leaves
    the cancelled ones out.
    """

    status: str
    reduces_revenue: bool = False

    @property
    def sign(self) -> int:
        """-1 for a type that reduces revenue, else 1."""
        return -1 if self.reduces_revenue else 1


@dataclass(frozen=True, slots=True)
class SapMappings:
    """The customising-dependent parts of the mapping, with SAP's standard values as defaults.

    ``billing_types``: billing document type -> its invoice status and sign (F2 invoice, L2 debit
    memo: open, positive; G2/RE credit memo: credited, negative; S1 invoice cancellation:
    cancelled, negative; S2 credit memo cancellation: cancelled, positive). SAP keeps amounts
    positive on every document and carries the direction in the type; our contract is net
    negative for what reduces revenue. A type not listed is rejected with its code, so a
    customer's own types are added here rather than guessed. ``line_kinds_by_material_group`` wins
    over ``line_kinds_by_item_category`` (SD item categories: TAN standard item, TAD service
    item, WVN maintenance contract item); anything else is ``default_line_kind``.
    ``order_kinds``: sales order type -> order kind; only these types are read.
    ``customer_partner_functions``: equipment partner functions naming the customer (AG, sold-to,
    in SAP's internal code). ``warranty_type``: the equipment warranty that is the customer's (1).
    """

    billing_types: Mapping[str, BillingType] = field(default_factory=lambda: MappingProxyType({
        "F2": BillingType("open"), "L2": BillingType("open"),
        "G2": BillingType("credited", reduces_revenue=True),
        "RE": BillingType("credited", reduces_revenue=True),
        "S1": BillingType("cancelled", reduces_revenue=True), "S2": BillingType("cancelled")}))
    line_kinds_by_material_group: Mapping[str, str] = field(
        default_factory=lambda: _frozen({}))
    line_kinds_by_item_category: Mapping[str, str] = field(default_factory=lambda: _frozen({
        "TAN": "spare_parts", "TAD": "field_service", "WVN": "service_contract"}))
    default_line_kind: str = "other"
    order_kinds: Mapping[str, str] = field(default_factory=lambda: _frozen({
        "OR": "spare_parts", "SO": "spare_parts"}))
    customer_partner_functions: tuple[str, ...] = ("AG",)
    warranty_type: str = "1"


_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class _After:
    """Where a run's next request starts (a key set position, see :class:`_Timestamp`).

    ``key``: after this key (ordered by key alone); ``null``: the records without a stamp after
    this key, then every stamped one; ``from``: every record stamped at or after ``stamp``;
    ``bucket``: the records of the millisecond ``stamp`` in key order, after ``key`` if set.
    """

    mode: Literal["key", "null", "from", "bucket"]
    stamp: datetime | None = None
    key: str | None = None


class _Delta(Protocol):
    @property
    def properties(self) -> tuple[str, ...]: ...

    def filter(self, since: datetime) -> str: ...

    def resume(self, after: _After | None, key_name: str) -> tuple[str | None, tuple[str, ...]]:
        ...

    def advance(self, at_start: _After | None,
                seen: list[tuple[datetime | None, str]]) -> _After | None: ...

    def exhausted(self, after: _After | None) -> _After | None: ...

    def stamp(self, raw: dict[str, Any]) -> datetime | None: ...

    def since(self, newest: datetime) -> datetime: ...


def _millisecond(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True, slots=True)
class _Timestamp:
    """A DateTimeOffset change timestamp (LastChangeDateTime and kin).

    SAP stamps to 100 ns but V2 JSON carries milliseconds (cut, not rounded), so a stamp read
    names a millisecond, not a point: ``eq`` on it never matches the stored value, and the
    server's order inside one millisecond is not the key order. A position is therefore never
    "after this record" but "from this millisecond" (``ge``: the records of that millisecond
    already read come again, the upserts make that free), and a full answer that lies inside
    one millisecond is read again as that millisecond alone, in key order, whose key set is
    exact. Records without a stamp come first in SAP's order (nulls first) and are paged by key.
    """

    name: str

    @property
    def properties(self) -> tuple[str, ...]:
        return (self.name,)

    def filter(self, since: datetime) -> str:
        return f"{self.name} ge {odata_datetimeoffset(since)}"

    def resume(self, after: _After | None, key_name: str) -> tuple[str | None, tuple[str, ...]]:
        name, ordered = self.name, (self.name, key_name)
        if after is None:
            return None, ordered
        if after.mode == "null" and after.key is not None:
            # Never drop the stamp from the condition: the stamped records follow the nulls.
            return (f"(({name} eq null and {key_name} gt {odata_text(after.key)})"
                    f" or {name} ne null)"), ordered
        assert after.stamp is not None
        at = odata_datetimeoffset(after.stamp)
        if after.mode == "from":
            return f"{name} ge {at}", ordered
        within = (f"{name} ge {at} and {name} lt"
                  f" {odata_datetimeoffset(after.stamp + _MILLISECOND)}")
        if after.key is not None:
            within += f" and {key_name} gt {odata_text(after.key)}"
        return f"({within})", (key_name,)

    def advance(self, at_start: _After | None,
                seen: list[tuple[datetime | None, str]]) -> _After | None:
        """The position after the records of one request so far (in the server's order)."""
        if not seen:
            return at_start
        last_stamp, last_key = seen[-1]
        if at_start is not None and at_start.mode == "bucket":
            return _After("bucket", at_start.stamp, last_key)
        if last_stamp is None:
            return _After("null", key=last_key)
        last = _millisecond(last_stamp)
        first = seen[0][0]
        if first is None or _millisecond(first) < last:
            return _After("from", last)  # everything before this millisecond is read
        return _After("bucket", last)  # one millisecond filled the answer: read it by key

    def exhausted(self, after: _After | None) -> _After | None:
        """Where to go on when a request's answer ran out: past a millisecond read by key."""
        if after is not None and after.mode == "bucket" and after.stamp is not None:
            return _After("from", after.stamp + _MILLISECOND)
        return None

    def stamp(self, raw: dict[str, Any]) -> datetime | None:
        return parse_odata_datetime(raw.get(self.name))

    def since(self, newest: datetime) -> datetime:
        return newest


@dataclass(frozen=True, slots=True)
class _DayAndTime:
    """A business partner's change date and time, or its creation's while it was never changed.

    SAP filters these by day (``Edm.DateTime``), so each run reads the whole last day again.
    """

    properties: tuple[str, ...] = ("LastChangeDate", "LastChangeTime", "CreationDate",
                                   "CreationTime")

    def filter(self, since: datetime) -> str:
        day = odata_datetime(since)
        return f"(LastChangeDate ge {day} or CreationDate ge {day})"

    def resume(self, after: _After | None, key_name: str) -> tuple[str | None, tuple[str, ...]]:
        # Ordered by key: a record changed while the run reads stays where it was.
        if after is None or after.key is None:
            return None, (key_name,)
        return f"{key_name} gt {odata_text(after.key)}", (key_name,)

    def advance(self, at_start: _After | None,
                seen: list[tuple[datetime | None, str]]) -> _After | None:
        return _After("key", key=seen[-1][1]) if seen else at_start

    def exhausted(self, _after: _After | None) -> _After | None:
        return None

    def stamp(self, raw: dict[str, Any]) -> datetime | None:
        for day_name, time_name in (("LastChangeDate", "LastChangeTime"),
                                    ("CreationDate", "CreationTime")):
            day = parse_odata_datetime(raw.get(day_name))
            if day is not None:
                moment = parse_odata_time(raw.get(time_name)) or time()
                return datetime.combine(day.date(), moment, tzinfo=UTC)
        return None

    def since(self, newest: datetime) -> datetime:
        # The day before the newest change: a partner changed behind the read position of a
        # run that crossed midnight has a change date of the day before.
        return datetime.combine(newest.date() - timedelta(days=1), time(), tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Context:
    """What a mapper needs beyond the record: the customising and the system's time zone."""

    mappings: SapMappings
    zone: ZoneInfo


Mapped = dict[str, Any] | SourceReject
Mapper = Callable[[dict[str, Any], _Context, datetime | None], Iterable[Mapped]]


@dataclass(frozen=True, slots=True)
class _Query:
    """One entity set read: what to select, expand and check, and how its records map."""

    service: str  # attribute of SapServices
    entity_set: str
    keys: tuple[str, ...]
    properties: tuple[str, ...]
    delta: _Delta
    mapper: Mapper
    expand: tuple[tuple[str, tuple[str, ...]], ...] = ()
    fixed_filter: Callable[[SapMappings], str | None] = lambda _m: None
    lines: _Lines | None = None  # the mapper, when the entity is a document's items


class _UnmappableError(ValueError):
    """A record that cannot be made into fields; becomes a SourceReject."""


def _day(raw: dict[str, Any], name: str) -> str | None:
    try:
        day = parse_odata_date(raw.get(name))
    except ValueError as exc:
        raise _UnmappableError(f"{name}: {exc}") from None
    return None if day is None else day.isoformat()


def _moment(raw: dict[str, Any], name: str) -> datetime | None:
    try:
        return parse_odata_datetime(raw.get(name))
    except ValueError as exc:
        raise _UnmappableError(f"{name}: {exc}") from None


def _present(record: dict[str, Any]) -> dict[str, Any]:
    """Absent values are absent keys (the models' rule)."""
    return {k: v for k, v in record.items() if v is not None}


def _guard(label: str, raw: dict[str, Any], key: str | None,
           build: Callable[[], Iterable[Mapped]]) -> list[Mapped]:
    try:
        return list(build())
    except _UnmappableError as exc:
        return [SourceReject(reason=f"{label} {key or '(without key)'}: {exc}",
                             record=_plain(raw), external_id=key)]


def _plain(raw: dict[str, Any]) -> dict[str, Any]:
    """A record as stored with a reject: without OData's __metadata and __deferred noise."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "__metadata" or (isinstance(value, dict) and "__deferred" in value):
            continue
        out[key] = ([_plain(v) for v in value["results"]]
                    if isinstance(value, dict) and "results" in value else value)
    return out


def _updated(stamp: datetime | None) -> str | None:
    return None if stamp is None else stamp.isoformat()


def _map_customer(raw: dict[str, Any], _c: _Context,
                  stamp: datetime | None) -> Iterable[Mapped]:
    customer = _partner(raw.get("Customer"))

    def build() -> Iterable[Mapped]:
        if customer is None:
            raise _UnmappableError("business partner has no customer number (Customer is empty)")
        addresses = raw.get("to_BusinessPartnerAddress", {}).get("results", [])
        country = next((_text(a.get("Country")) for a in addresses if _text(a.get("Country"))),
                       None)
        yield _present({
            "external_id": customer,
            "name": _text(raw.get("BusinessPartnerFullName")) or _text(
                raw.get("BusinessPartnerName")),
            "industry": _text(raw.get("Industry")),
            "country": country,
            "customer_since": _day(raw, "CreationDate"),
            "source_updated_at": _updated(stamp),
            "deleted": True if raw.get("IsMarkedForArchiving") is True else None,
        })

    return _guard("business partner", raw, customer or _text(raw.get("BusinessPartner")), build)


def _map_sites(raw: dict[str, Any], _c: _Context,
               stamp: datetime | None) -> Iterable[Mapped]:
    customer = _partner(raw.get("Customer"))
    if customer is None:
        return [SourceReject(reason=f"business partner {_text(raw.get('BusinessPartner'))}:"
                                    " has no customer number (Customer is empty)",
                             record=_plain(raw))]
    name = _text(raw.get("BusinessPartnerFullName")) or customer
    out: list[Mapped] = []
    for address in raw.get("to_BusinessPartnerAddress", {}).get("results", []):
        city = _text(address.get("CityName"))
        out.append(_present({
            "external_id": f"{customer}/{_text(address.get('AddressID'))}",
            "customer_external_id": customer,
            "name": f"{name}, {city}" if city else name,
            "country": _text(address.get("Country")),
            "city": city,
            "source_updated_at": _updated(stamp),
        }))
    return out


def _map_equipment(raw: dict[str, Any], c: _Context,
                   stamp: datetime | None) -> Iterable[Mapped]:
    m = c.mappings
    equipment = _text(raw.get("Equipment"))

    def build() -> Iterable[Mapped]:
        partners = raw.get("to_Partner", {}).get("results", [])
        customers = sorted({_partner(p.get("Partner")) or "" for p in partners
                            if p.get("PartnerFunction") in m.customer_partner_functions} - {""})
        if not customers:
            raise _UnmappableError(f"no customer among its partners (partner function"
                              f" {' or '.join(m.customer_partner_functions)})")
        if len(customers) > 1:
            raise _UnmappableError(
                f"more than one customer among its partners: {', '.join(customers)}")
        warranty: dict[str, Any] = next((w for w in raw.get("to_Warranty", {}).get("results", [])
                         if w.get("WarrantyType") == m.warranty_type), {})
        yield _present({
            "external_id": equipment,
            "serial": _text(raw.get("SerialNumber")),
            "model": _text(raw.get("Material")) or _text(raw.get("ManufacturerPartTypeName")),
            "customer_external_id": customers[0],
            "commissioned_on": _day(raw, "OperationStartDate"),
            "warranty_end": _day(warranty, "WarrantyEndDate") if warranty else None,
            "source_updated_at": _updated(stamp),
            "deleted": True if raw.get("EquipmentIsMarkedForDeletion") is True else None,
        })

    return _guard("equipment", raw, equipment, build)


def _months(starts: date, ends: date) -> int:
    """Whole months from a start to the day after an end (a year Jan 1 - Dec 31 is 12)."""
    after = ends + timedelta(days=1)
    return (after.year - starts.year) * 12 + after.month - starts.month - (
        1 if after.day < starts.day else 0)


def _annual(net: Decimal, starts: date, ends: date) -> Decimal:
    months = _months(starts, ends)
    if months < 1:
        return net
    return (net * 12 / months).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _contract_status(raw: dict[str, Any]) -> str:
    if raw.get("ServiceContractIsRejected") is True:
        return "cancelled"
    if _text(raw.get("ServiceContractCanclnSts")):
        return "terminated"
    return "active" if raw.get("ServiceContractIsReleased") is True else "draft"


def _decimal(raw: dict[str, Any], name: str) -> Decimal | None:
    value = raw.get(name)
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _UnmappableError(f"{name}: '{value}' is not a decimal") from None
    if not number.is_finite():
        raise _UnmappableError(f"{name}: '{value}' is not a finite number")
    return number


def _local_day(raw: dict[str, Any], name: str, zone: ZoneInfo) -> date | None:
    """The calendar day a DateTimeOffset that means a day names, in the system's time zone.

    A contract starting on January 1 in Germany is stored as 2024-12-31T23:00Z; its day is the
    first of January, not the UTC date.
    """
    moment = _moment(raw, name)
    return None if moment is None else moment.astimezone(zone).date()


def _map_contract(raw: dict[str, Any], c: _Context,
                  stamp: datetime | None) -> Iterable[Mapped]:
    contract = _text(raw.get("ServiceContract"))

    def build() -> Iterable[Mapped]:
        starts = _local_day(raw, "ServiceContractStartDateTime", c.zone)
        ends = _local_day(raw, "ServiceContractEndDateTime", c.zone)
        net = _decimal(raw, "ServiceContractNetAmount")
        annual = (_annual(net, starts, ends)
                  if net is not None and starts and ends and ends >= starts else net)
        yield _present({
            "external_id": contract,
            "customer_external_id": _partner(raw.get("SoldToParty")),
            "scope": "customer",
            "contract_number": contract,
            "tier": _text(raw.get("ServiceContractType")),
            "starts_on": None if starts is None else starts.isoformat(),
            "ends_on": None if ends is None else ends.isoformat(),
            "annual_value": None if annual is None else str(annual),
            "currency": _text(raw.get("TransactionCurrency")),
            "status": _contract_status(raw),
            "source_updated_at": _updated(stamp),
        })

    return _guard("service contract", raw, contract, build)


def _billing_type(raw: dict[str, Any], m: SapMappings) -> BillingType:
    kind = _text(raw.get("BillingDocumentType")) or ""
    if kind not in m.billing_types:
        raise _UnmappableError(f"billing document type {kind} has no mapping"
                               f" (known: {', '.join(sorted(m.billing_types))})")
    return m.billing_types[kind]


def _signed(amount: Decimal | None, sign: int) -> str | None:
    # + 0 turns a negated zero into zero.
    return None if amount is None else str(amount * sign + 0)


def _map_invoice(raw: dict[str, Any], c: _Context,
                 stamp: datetime | None) -> Iterable[Mapped]:
    document = _text(raw.get("BillingDocument"))

    def build() -> Iterable[Mapped]:
        billing_type = _billing_type(raw, c.mappings)
        # A cancelled document keeps its type's sign; its cancellation document reverses it.
        status = ("cancelled" if raw.get("BillingDocumentIsCancelled") is True
                  else billing_type.status)
        net = _decimal(raw, "TotalNetAmount")
        yield _present({
            "external_id": document,
            "customer_external_id": _partner(raw.get("SoldToParty")),
            "number": document,
            "issued_on": _day(raw, "BillingDocumentDate"),
            "currency": _text(raw.get("TransactionCurrency")),
            "net_amount": _signed(net, billing_type.sign),
            "status": status,
            "source_updated_at": _updated(stamp),
        })

    return _guard("billing document", raw, document, build)


def _line_kind(item: dict[str, Any], m: SapMappings) -> str:
    group = _text(item.get("MaterialGroup")) or ""
    if group in m.line_kinds_by_material_group:
        return m.line_kinds_by_material_group[group]
    category = _text(item.get("SalesDocumentItemCategory"))
    return m.line_kinds_by_item_category.get(category or "", m.default_line_kind)


def _order_status(raw: dict[str, Any]) -> str:
    if _text(raw.get("OverallSDDocumentRejectionSts")) == "C":
        return "cancelled"
    if _text(raw.get("OverallDeliveryStatus")) == "C":
        return "delivered"
    return "confirmed" if _text(raw.get("OverallSDProcessStatus")) else "draft"


def _map_order(raw: dict[str, Any], c: _Context,
               stamp: datetime | None) -> Iterable[Mapped]:
    m = c.mappings
    order = _text(raw.get("SalesOrder"))

    def build() -> Iterable[Mapped]:
        order_type = _text(raw.get("SalesOrderType")) or ""
        if order_type not in m.order_kinds:
            raise _UnmappableError(f"sales order type {order_type} has no kind mapping")
        net = _decimal(raw, "TotalNetAmount")
        yield _present({
            "external_id": order,
            "customer_external_id": _partner(raw.get("SoldToParty")),
            "kind": m.order_kinds[order_type],
            "number": order,
            "ordered_on": _day(raw, "SalesOrderDate"),
            "status": _order_status(raw),
            "currency": _text(raw.get("TransactionCurrency")),
            "net_amount": None if net is None else str(net),
            "source_updated_at": _updated(stamp),
        })

    return _guard("sales order", raw, order, build)


@dataclass(frozen=True, slots=True)
class _Lines:
    """A document's items (``to_Item``) as lines: billing document items and sales order items.

    Every reject of a line entity names the line (or nothing): the engine's sweep after a full
    read keeps the rows a reject names, so naming the header would let it mark the lines of a
    document that still exists as deleted.
    """

    label: str  # "billing document item"
    header: str  # the header's key property
    item: str  # the item's key property within the header
    parent_field: str  # the record field naming the header
    product_field: str
    description: str
    quantity: str
    kind: Callable[[dict[str, Any], SapMappings], dict[str, Any]]
    sign: Callable[[dict[str, Any], SapMappings], int]

    def keys(self, raw: dict[str, Any]) -> list[str]:
        """The external ids of a header's lines."""
        return [self._key(raw, item) for item in _items(raw)]

    def _key(self, raw: dict[str, Any], item: dict[str, Any]) -> str:
        return f"{_text(raw.get(self.header))}/{_text(item.get(self.item))}"

    def __call__(self, raw: dict[str, Any], c: _Context,
                 _stamp: datetime | None) -> Iterable[Mapped]:
        document = _text(raw.get(self.header))
        try:
            sign = self.sign(raw, c.mappings)
        except _UnmappableError as exc:
            return [SourceReject(reason=f"{self.label} {self._key(raw, item)}: {exc}",
                                 record=_plain(item), external_id=self._key(raw, item))
                    for item in _items(raw)]
        out: list[Mapped] = []
        for item in _items(raw):
            key = self._key(raw, item)

            def build(item: dict[str, Any] = item, key: str = key) -> Iterable[Mapped]:
                quantity = _decimal(item, self.quantity)
                yield _present({
                    "external_id": key,
                    self.parent_field: document,
                    **self.kind(item, c.mappings),
                    self.product_field: _text(item.get("Material")),
                    "description": _text(item.get(self.description)),
                    "quantity": None if quantity is None else str(quantity),
                    "net_amount": _signed(_decimal(item, "NetAmount"), sign),
                })

            out.extend(_guard(self.label, item, key, build))
        return out


def _items(raw: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (raw.get("to_Item") or {}).get("results", [])
    return items


_INVOICE_LINES = _Lines(
    "billing document item", "BillingDocument", "BillingDocumentItem", "invoice_external_id",
    "product_code", "BillingDocumentItemText", "BillingQuantity",
    kind=lambda item, m: {"kind": _line_kind(item, m)},
    sign=lambda raw, m: _billing_type(raw, m).sign)
_ORDER_LINES = _Lines(
    "sales order item", "SalesOrder", "SalesOrderItem", "order_external_id", "part_number",
    "SalesOrderItemText", "RequestedQuantity", kind=lambda _item, _m: {},
    sign=lambda _raw, _m: 1)


def _order_types(m: SapMappings) -> str | None:
    if not m.order_kinds:
        return None
    return "(" + " or ".join(f"SalesOrderType eq '{t}'" for t in sorted(m.order_kinds)) + ")"


_BP = ("BusinessPartner", "Customer", "BusinessPartnerFullName", "BusinessPartnerName",
       "Industry", "IsMarkedForArchiving")
_BP_ADDRESS = ("AddressID", "CityName", "Country")
_BILLING = ("BillingDocument", "BillingDocumentType", "BillingDocumentDate",
            "BillingDocumentIsCancelled", "TotalNetAmount", "TransactionCurrency", "SoldToParty")
_BILLING_ITEM = ("BillingDocumentItem", "SalesDocumentItemCategory", "Material",
                 "MaterialGroup", "BillingDocumentItemText", "BillingQuantity", "NetAmount")
_ORDER = ("SalesOrder", "SalesOrderType", "SoldToParty", "SalesOrderDate", "TotalNetAmount",
          "TransactionCurrency", "OverallSDProcessStatus", "OverallDeliveryStatus",
          "OverallSDDocumentRejectionSts")
_ORDER_ITEM = ("SalesOrderItem", "Material", "SalesOrderItemText", "RequestedQuantity",
               "NetAmount")

# Entity names are the engine's (table names), parents first.
QUERIES: dict[str, _Query] = {
    "customers": _Query(
        "business_partner", "A_BusinessPartner", ("BusinessPartner",), (*_BP, "CreationDate"),
        _DayAndTime(), _map_customer, (("to_BusinessPartnerAddress", _BP_ADDRESS),),
        lambda _m: "Customer ne ''"),
    "sites": _Query(
        "business_partner", "A_BusinessPartner", ("BusinessPartner",), _BP, _DayAndTime(),
        _map_sites, (("to_BusinessPartnerAddress", _BP_ADDRESS),), lambda _m: "Customer ne ''"),
    "installed_base": _Query(
        "equipment", "Equipment", ("Equipment",),
        ("Equipment", "ValidityEndDate", "SerialNumber", "Material", "ManufacturerPartTypeName",
         "OperationStartDate", "EquipmentIsMarkedForDeletion"),
        _Timestamp("LastChangeDateTime"), _map_equipment,
        (("to_Partner", ("PartnerFunction", "Partner")),
         ("to_Warranty", ("WarrantyType", "WarrantyEndDate"))),
        # Equipment is time-dependent: only its current usage period.
        lambda _m: "ValidityEndDate eq datetime'9999-12-31T00:00:00'"),
    "service_contracts": _Query(
        "service_contract", "A_ServiceContract", ("ServiceContract",),
        ("ServiceContract", "ServiceContractType", "SoldToParty", "ServiceContractStartDateTime",
         "ServiceContractEndDateTime", "ServiceContractNetAmount", "TransactionCurrency",
         "ServiceContractIsReleased", "ServiceContractIsRejected", "ServiceContractCanclnSts"),
        _Timestamp("ServiceDocChangedDateTime"), _map_contract),
    "invoices": _Query(
        "billing_document", "A_BillingDocument", ("BillingDocument",), _BILLING,
        _Timestamp("LastChangeDateTime"), _map_invoice),
    "invoice_lines": _Query(
        "billing_document", "A_BillingDocument", ("BillingDocument",),
        ("BillingDocument", "BillingDocumentType"), _Timestamp("LastChangeDateTime"),
        _INVOICE_LINES, (("to_Item", _BILLING_ITEM),), lines=_INVOICE_LINES),
    "orders": _Query(
        "sales_order", "A_SalesOrder", ("SalesOrder",), _ORDER,
        _Timestamp("LastChangeDateTime"), _map_order, fixed_filter=_order_types),
    "order_lines": _Query(
        "sales_order", "A_SalesOrder", ("SalesOrder",), ("SalesOrder",),
        _Timestamp("LastChangeDateTime"), _ORDER_LINES, (("to_Item", _ORDER_ITEM),),
        _order_types, lines=_ORDER_LINES),
}


# ---------------------------------------------------------------------------------------------
# Cursor and paging


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a read is: its filter's start, the newest stamp seen, where the next request starts.

    A position is a key set (:class:`_After`), not an offset: records changed while a run reads
    move behind it and are read in the same run, and a run killed between pages resumes there
    whatever changed meanwhile. The server's own ``__next`` links (``$skiptoken`` offsets) are
    followed within one request's answer only.
    """

    since: datetime | None = None
    newest: datetime | None = None
    after: _After | None = None

    def dump(self) -> str:
        after = self.after
        return orjson.dumps({
            "since": _iso(self.since), "newest": _iso(self.newest),
            "after": None if after is None else [after.mode, _iso(after.stamp), after.key],
        }).decode()

    @classmethod
    def load(cls, cursor: str | None) -> _Position:
        if cursor is None:
            return cls()
        try:
            data = orjson.loads(cursor)
            return cls(since=_from_iso(data.get("since")), newest=_from_iso(data.get("newest")),
                       after=_load_after(data.get("after")))
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError, IndexError):
            logger.warning("SAP cursor %r is not one of ours; reading from the start", cursor)
            return cls()

    def finished(self, delta: _Delta, overlap: timedelta) -> str:
        """The cursor after a complete read: an overlap before the newest change.

        A change stamped earlier but committed after the read (a long SAP LUW) is read then.
        """
        since = self.since
        if self.newest is not None:
            since = delta.since(self.newest - overlap)
            if self.since is not None:
                since = max(since, self.since)  # never back behind where this run started
        return orjson.dumps({"since": _iso(since)}).decode()


def _load_after(after: Any) -> _After | None:
    if after is None:
        return None
    if len(after) == 2:  # a cursor of the previous release: [stamp, key]
        stamp, key = _from_iso(after[0]), str(after[1])
        return _After("null", key=key) if stamp is None else _After("from", stamp)
    mode, stamp, key = after
    if mode not in ("key", "null", "from", "bucket") or (
            mode in ("from", "bucket") and stamp is None):
        raise ValueError(f"unknown position {after}")
    return _After(mode, _from_iso(stamp), None if key is None else str(key))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _from_iso(text: Any) -> datetime | None:
    return None if text is None else datetime.fromisoformat(str(text))


class SapConnector:
    """SAP S/4HANA Cloud as a source: a page source per entity, for the sync engine.

    Parameters
    ----------
    base_url
        Scheme and host of the system (``https://my123456-api.s4hana.cloud.sap``).
    user, password
        The communication user of the communication arrangements (Basic authentication).
    source
        The name in every synced row's ``source``.
    page_size
        Records per request (``$top``); the server may page further with ``__next``.
    services
        Service names and root path, for systems that differ from SAP's standard.
    mappings
        Billing types, line kinds, order types, partner functions (:class:`SapMappings`).
    timezone
        IANA name of the system's time zone (``Europe/Berlin``): DateTimeOffset values that mean
        calendar days (service contract start and end) are read as days there.
    overlap
        How far before the newest change seen a finished run's next incremental read starts.
    policy, timeout_s, verify
        HTTP retry policy, timeout and TLS verification, passed to :class:`ErpHttp`.
    transport
        An httpx transport (tests); ``None`` for the network.
    """

    def __init__(self, base_url: str, user: str, password: str, *, source: str = "sap",
                 page_size: int = PAGE_SIZE, services: SapServices | None = None,
                 mappings: SapMappings | None = None, timezone: str = "UTC",
                 overlap: timedelta = OVERLAP, policy: RetryPolicy | None = None,
                 timeout_s: float = 120.0, verify: bool = True) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if overlap < timedelta(0):
            raise ValueError("overlap must not be negative")
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone '{timezone}' is not an IANA time zone name") from exc
        self.source = source
        self.page_size = page_size
        self.services = services or SapServices()
        self.mappings = mappings or SapMappings()
        self.overlap = overlap
        self._context = _Context(self.mappings, zone)
        self.http = ErpHttp(base_url.rstrip("/"), name=f"SAP {source}", timeout_s=timeout_s,
                            policy=policy, auth=httpx.BasicAuth(user, password), verify=verify,
                            headers={"Accept": "application/json"})
        self._metadata: dict[str, dict[str, EntityType]] = {}

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.http.aclose()

    def page_sources(self) -> dict[str, PageSource]:
        """The entities SAP provides, parents first."""
        return {entity: self.pages(entity) for entity in QUERIES}

    def pages(self, entity: str) -> PageSource:
        """The page source of one entity (a key of :data:`QUERIES`)."""
        query = QUERIES[entity]

        def pages(cursor: str | None) -> AsyncIterator[Page]:
            return self._pages(query, _Position.load(cursor))

        return pages

    def _service_path(self, query: _Query) -> str:
        return f"{self.services.root}{getattr(self.services, query.service)}/"

    async def metadata(self, service: str) -> dict[str, EntityType]:
        """A service's entity sets from its ``$metadata``, read once per connector."""
        if service not in self._metadata:
            response = await self.http.request("GET", f"{service}$metadata",
                                               headers={"Accept": "application/xml"})
            try:
                self._metadata[service] = parse_metadata(response.content)
            except ET.ParseError as exc:
                raise PermanentSyncError(f"SAP {service}$metadata is not EDMX: {exc}") from exc
        return self._metadata[service]

    async def check(self, query: _Query) -> None:
        """Refuse to read an entity set whose metadata lacks a property the mapping uses."""
        path = self._service_path(query)
        sets = await self.metadata(path)
        entity_type = sets.get(query.entity_set)
        if entity_type is None:
            raise PermanentSyncError(
                f"SAP {path}: the service has no entity set {query.entity_set}"
                f" (has: {', '.join(sorted(sets)) or 'none'})")
        wanted = {*query.properties, *query.keys, *query.delta.properties}
        missing = sorted(wanted - set(entity_type.properties))
        for nav, properties in query.expand:
            target = next((t for t in sets.values() if t.name == entity_type.navigations.get(nav)),
                          None)
            if target is None:
                missing.append(nav)
                continue
            missing += [f"{nav}/{p}" for p in properties if p not in target.properties]
        if missing:
            raise PermanentSyncError(
                f"SAP {path}{query.entity_set}: property {', '.join(missing)} is not in the"
                f" service's $metadata; this system's release or configuration differs from"
                f" what the connector maps (docs/erp-sap.md)")

    def _params(self, query: _Query, position: _Position) -> dict[str, str]:
        key = query.keys[0]
        resume, orderby = query.delta.resume(position.after, key)
        filters = [query.fixed_filter(self.mappings)]
        if position.since is not None:
            filters.append(query.delta.filter(position.since))
        filters.append(resume)
        select = [*dict.fromkeys((*query.keys, *query.properties, *query.delta.properties))]
        select += [f"{nav}/{p}" for nav, props in query.expand for p in props]
        params = {
            "$select": ",".join(select + [nav for nav, _ in query.expand]),
            "$orderby": ",".join(orderby),
            "$top": str(self.page_size),
            "$format": "json",
        }
        if any(filters):
            params["$filter"] = " and ".join(f for f in filters if f)
        if query.expand:
            params["$expand"] = ",".join(nav for nav, _ in query.expand)
        if position.after is None:
            params["$inlinecount"] = "allpages"
        return params

    async def _get(self, query: _Query, position: _Position,
                   next_url: str | None) -> dict[str, Any]:
        if next_url is not None:
            response = await self.http.request("GET", next_url)
        else:
            url = self._service_path(query) + query.entity_set
            response = await self.http.request("GET", url, params=self._params(query, position))
        try:
            d = response.json()["d"]
        except (ValueError, KeyError, TypeError) as exc:
            d = exc
        if not isinstance(d, dict) or not isinstance(d.get("results"), list):
            raise PermanentSyncError(
                f"SAP {query.entity_set}: the answer is not OData V2 JSON with d.results:"
                f" {response.text[:200]}")
        return d

    async def _pages(self, query: _Query, position: _Position) -> AsyncIterator[Page]:
        await self.check(query)
        logger.info("SAP %s from %s after %s", query.entity_set, position.since, position.after)
        next_url: str | None = None
        at_start = position.after  # where the current $top request started
        seen: list[tuple[datetime | None, str]] = []  # its records so far, across __next links
        answered = 0  # and their number, those with an unreadable stamp included
        # Stamped records handed over in this run from the position's millisecond on: read again
        # (a position is a millisecond), they are not handed over twice in one run. A change
        # within the same millisecond is caught by the next run's overlap.
        handed: set[tuple[datetime, str]] = set()
        while True:
            d = await self._get(query, position, next_url)
            results: list[dict[str, Any]] = d["results"]
            if "__count" in d:
                logger.info("SAP %s: %s records to read", query.entity_set, d["__count"])
            records, rejects, newest = self._map(query, results, position.newest, seen, handed)
            answered += len(results)
            position = _Position(position.since, newest, query.delta.advance(at_start, seen))
            _forget_before(handed, position.after)
            next_url = d.get("__next")
            if next_url is not None and not results:
                raise PermanentSyncError(f"SAP {query.entity_set}: an empty page with a next"
                                         f" link ({next_url}); the server's paging is broken")
            if next_url is not None:
                yield Page(records=records, rejects=rejects, cursor=position.dump())
                continue
            if answered < self.page_size:
                onward = query.delta.exhausted(position.after)
                if onward is None:
                    yield Page(records=records, rejects=rejects,
                               cursor=position.finished(query.delta, self.overlap))
                    return
                position = _Position(position.since, position.newest, onward)
            elif position.after == at_start:
                raise PermanentSyncError(
                    f"SAP {query.entity_set}: a full page without one readable change"
                    " timestamp; cannot page past it (see the rejects)")
            # A full $top answer, or a millisecond read by key to its end: ask again.
            at_start, seen, answered = position.after, [], 0
            yield Page(records=records, rejects=rejects, cursor=position.dump())

    def _map(self, query: _Query, results: list[dict[str, Any]], newest: datetime | None,
             seen: list[tuple[datetime | None, str]], handed: set[tuple[datetime, str]],
             ) -> tuple[list[dict[str, Any]], list[SourceReject], datetime | None]:
        """Records and rejects of one answer and the newest stamp.

        ``seen`` gets every readable record's stamp and key, ``handed`` those of the stamped
        records handed over; a record already in ``handed`` is not handed over again.
        """
        records: list[dict[str, Any]] = []
        rejects: list[SourceReject] = []
        for raw in results:
            key = "/".join(str(raw.get(k)) for k in query.keys)
            try:
                stamp = query.delta.stamp(raw)
            except ValueError as exc:
                rejects += _stamp_rejects(query, raw, key, exc)
                continue
            if stamp is not None and (newest is None or stamp > newest):
                newest = stamp
            seen.append((stamp, str(raw.get(query.keys[0]))))
            if stamp is not None:
                if (stamp, key) in handed:
                    continue
                handed.add((stamp, key))
            for mapped in query.mapper(raw, self._context, stamp):
                if isinstance(mapped, SourceReject):
                    rejects.append(mapped)
                else:
                    records.append(mapped)
        return records, rejects, newest


def _forget_before(handed: set[tuple[datetime, str]], after: _After | None) -> None:
    """Drop what no later request of the run can answer again: stamps before the position."""
    if after is not None and after.stamp is not None:
        handed -= {entry for entry in handed if entry[0] < after.stamp}


def _stamp_rejects(query: _Query, raw: dict[str, Any], key: str,
                   exc: ValueError) -> list[SourceReject]:
    """A record whose change stamp cannot be read: rejected as itself, or as each of its lines."""
    reason = f"{query.entity_set} {key}: change timestamp: {exc}"
    if query.lines is None:
        return [SourceReject(reason=reason, record=_plain(raw), external_id=key)]
    line_keys = query.lines.keys(raw)
    return ([SourceReject(reason=reason, record=_plain(raw), external_id=line)
             for line in line_keys]
            or [SourceReject(reason=reason, record=_plain(raw))])


__all__ = ["OVERLAP", "QUERIES", "BillingType", "EntityType", "SapConnector", "SapMappings",
           "SapServices", "odata_datetime", "odata_datetimeoffset", "odata_text", "parse_metadata",
           "parse_odata_date", "parse_odata_datetime", "parse_odata_time"]
