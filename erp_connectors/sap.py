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
from typing import Any, Protocol

import httpx
import orjson

from erp_connectors.http import ErpHttp, RetryPolicy
from erp_connectors.sync import Page, PageSource, PermanentSyncError, SourceReject

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
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
class SapMappings:
    """The customising-dependent parts of the mapping, with SAP's standard values as defaults.

    ``billing_statuses``: billing document type -> invoice status (F2 invoice, L2 debit memo,
    G2/RE credit memo, S1/S2 cancellation); a type not listed is rejected with its code, so a
    customer's own types are added here rather than guessed. ``line_kinds_by_material_group`` wins
    over ``line_kinds_by_item_category`` (SD item categories: TAN standard item, TAD service
    item, WVN maintenance contract item); anything else is ``default_line_kind``.
    ``order_kinds``: sales order type -> order kind; only these types are read.
    ``customer_partner_functions``: equipment partner functions naming the customer (AG, sold-to,
    in SAP's internal code). ``warranty_type``: the equipment warranty that is the customer's (1).
    """

    billing_statuses: Mapping[str, str] = field(default_factory=lambda: _frozen({
        "F2": "open", "L2": "open", "G2": "credited", "RE": "credited", "S1": "cancelled",
        "S2": "cancelled"}))
    line_kinds_by_material_group: Mapping[str, str] = field(
        default_factory=lambda: _frozen({}))
    line_kinds_by_item_category: Mapping[str, str] = field(default_factory=lambda: _frozen({
        "TAN": "spare_parts", "TAD": "field_service", "WVN": "service_contract"}))
    default_line_kind: str = "other"
    order_kinds: Mapping[str, str] = field(default_factory=lambda: _frozen({
        "OR": "spare_parts", "SO": "spare_parts"}))
    customer_partner_functions: tuple[str, ...] = ("AG",)
    warranty_type: str = "1"


class _Delta(Protocol):
    @property
    def properties(self) -> tuple[str, ...]: ...

    @property
    def orderby(self) -> tuple[str, ...]: ...

    def filter(self, since: datetime) -> str: ...

    def after(self, stamp: datetime | None, key_name: str, key: str) -> str: ...

    def stamp(self, raw: dict[str, Any]) -> datetime | None: ...

    def since(self, newest: datetime) -> datetime: ...


@dataclass(frozen=True, slots=True)
class _Timestamp:
    """A DateTimeOffset change timestamp (LastChangeDateTime and kin)."""

    name: str

    @property
    def properties(self) -> tuple[str, ...]:
        return (self.name,)

    @property
    def orderby(self) -> tuple[str, ...]:
        return (self.name,)

    def filter(self, since: datetime) -> str:
        return f"{self.name} ge {odata_datetimeoffset(since)}"

    def after(self, stamp: datetime | None, key_name: str, key: str) -> str:
        if stamp is None:
            return f"{key_name} gt {odata_text(key)}"
        at = odata_datetimeoffset(stamp)
        return (f"({self.name} gt {at} or ({self.name} eq {at} and"
                f" {key_name} gt {odata_text(key)}))")

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
    orderby: tuple[str, ...] = ()

    def filter(self, since: datetime) -> str:
        day = odata_datetime(since)
        return f"(LastChangeDate ge {day} or CreationDate ge {day})"

    def after(self, _stamp: datetime | None, key_name: str, key: str) -> str:
        # Ordered by key: a record changed while the run reads stays where it was.
        return f"{key_name} gt {odata_text(key)}"

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


Mapped = dict[str, Any] | SourceReject
Mapper = Callable[[dict[str, Any], SapMappings, datetime | None], Iterable[Mapped]]


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


def _map_customer(raw: dict[str, Any], _m: SapMappings,
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


def _map_sites(raw: dict[str, Any], _m: SapMappings,
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


def _map_equipment(raw: dict[str, Any], m: SapMappings,
                   stamp: datetime | None) -> Iterable[Mapped]:
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


def _map_contract(raw: dict[str, Any], _m: SapMappings,
                  stamp: datetime | None) -> Iterable[Mapped]:
    contract = _text(raw.get("ServiceContract"))

    def build() -> Iterable[Mapped]:
        starts = _moment(raw, "ServiceContractStartDateTime")
        ends = _moment(raw, "ServiceContractEndDateTime")
        net = _decimal(raw, "ServiceContractNetAmount")
        annual = (_annual(net, starts.date(), ends.date())
                  if net is not None and starts and ends and ends >= starts else net)
        yield _present({
            "external_id": contract,
            "customer_external_id": _partner(raw.get("SoldToParty")),
            "scope": "customer",
            "contract_number": contract,
            "tier": _text(raw.get("ServiceContractType")),
            "starts_on": None if starts is None else starts.date().isoformat(),
            "ends_on": None if ends is None else ends.date().isoformat(),
            "annual_value": None if annual is None else str(annual),
            "currency": _text(raw.get("TransactionCurrency")),
            "status": _contract_status(raw),
            "source_updated_at": _updated(stamp),
        })

    return _guard("service contract", raw, contract, build)


def _map_invoice(raw: dict[str, Any], m: SapMappings,
                 stamp: datetime | None) -> Iterable[Mapped]:
    document = _text(raw.get("BillingDocument"))

    def build() -> Iterable[Mapped]:
        kind = _text(raw.get("BillingDocumentType")) or ""
        if raw.get("BillingDocumentIsCancelled") is True:
            status = "cancelled"
        elif kind in m.billing_statuses:
            status = m.billing_statuses[kind]
        else:
            raise _UnmappableError(f"billing document type {kind} has no status mapping"
                              f" (known: {', '.join(sorted(m.billing_statuses))})")
        net = _decimal(raw, "TotalNetAmount")
        yield _present({
            "external_id": document,
            "customer_external_id": _partner(raw.get("SoldToParty")),
            "number": document,
            "issued_on": _day(raw, "BillingDocumentDate"),
            "currency": _text(raw.get("TransactionCurrency")),
            "net_amount": None if net is None else str(net),
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


def _map_invoice_lines(raw: dict[str, Any], m: SapMappings,
                       _stamp: datetime | None) -> Iterable[Mapped]:
    document = _text(raw.get("BillingDocument"))
    out: list[Mapped] = []
    for item in raw.get("to_Item", {}).get("results", []):
        key = f"{document}/{_text(item.get('BillingDocumentItem'))}"

        def build(item: dict[str, Any] = item, key: str = key) -> Iterable[Mapped]:
            quantity = _decimal(item, "BillingQuantity")
            net = _decimal(item, "NetAmount")
            yield _present({
                "external_id": key,
                "invoice_external_id": document,
                "kind": _line_kind(item, m),
                "product_code": _text(item.get("Material")),
                "description": _text(item.get("BillingDocumentItemText")),
                "quantity": None if quantity is None else str(quantity),
                "net_amount": None if net is None else str(net),
            })

        out.extend(_guard("billing document item", item, key, build))
    return out


def _order_status(raw: dict[str, Any]) -> str:
    if _text(raw.get("OverallSDDocumentRejectionSts")) == "C":
        return "cancelled"
    if _text(raw.get("OverallDeliveryStatus")) == "C":
        return "delivered"
    return "confirmed" if _text(raw.get("OverallSDProcessStatus")) else "draft"


def _map_order(raw: dict[str, Any], m: SapMappings,
               stamp: datetime | None) -> Iterable[Mapped]:
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


def _map_order_lines(raw: dict[str, Any], _m: SapMappings,
                     _stamp: datetime | None) -> Iterable[Mapped]:
    order = _text(raw.get("SalesOrder"))
    out: list[Mapped] = []
    for item in raw.get("to_Item", {}).get("results", []):
        key = f"{order}/{_text(item.get('SalesOrderItem'))}"

        def build(item: dict[str, Any] = item, key: str = key) -> Iterable[Mapped]:
            quantity = _decimal(item, "RequestedQuantity")
            net = _decimal(item, "NetAmount")
            yield _present({
                "external_id": key,
                "order_external_id": order,
                "part_number": _text(item.get("Material")),
                "description": _text(item.get("SalesOrderItemText")),
                "quantity": None if quantity is None else str(quantity),
                "net_amount": None if net is None else str(net),
            })

        out.extend(_guard("sales order item", item, key, build))
    return out


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
        "billing_document", "A_BillingDocument", ("BillingDocument",), ("BillingDocument",),
        _Timestamp("LastChangeDateTime"), _map_invoice_lines, (("to_Item", _BILLING_ITEM),)),
    "orders": _Query(
        "sales_order", "A_SalesOrder", ("SalesOrder",), _ORDER,
        _Timestamp("LastChangeDateTime"), _map_order, fixed_filter=_order_types),
    "order_lines": _Query(
        "sales_order", "A_SalesOrder", ("SalesOrder",), ("SalesOrder",),
        _Timestamp("LastChangeDateTime"), _map_order_lines, (("to_Item", _ORDER_ITEM),),
        _order_types),
}


# ---------------------------------------------------------------------------------------------
# Cursor and paging


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a read is: its filter's start, the newest stamp seen, the last record committed.

    A position is a key set, (change stamp, key) of the last record handed over, not an offset:
    records changed while a run reads move behind it and are read in the same run, and a run
    killed between pages resumes after that record whatever changed meanwhile. The server's own
    ``__next`` links (``$skiptoken`` offsets) are followed within one request's answer only.
    """

    since: datetime | None = None
    newest: datetime | None = None
    after: tuple[datetime | None, str] | None = None

    def dump(self) -> str:
        return orjson.dumps({
            "since": _iso(self.since), "newest": _iso(self.newest),
            "after": None if self.after is None else [_iso(self.after[0]), self.after[1]],
        }).decode()

    @classmethod
    def load(cls, cursor: str | None) -> _Position:
        if cursor is None:
            return cls()
        try:
            data = orjson.loads(cursor)
            after = data.get("after")
            return cls(since=_from_iso(data.get("since")), newest=_from_iso(data.get("newest")),
                       after=None if after is None else (_from_iso(after[0]), str(after[1])))
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError, IndexError):
            logger.warning("SAP cursor %r is not one of ours; reading from the start", cursor)
            return cls()

    def finished(self, delta: _Delta) -> str:
        """The cursor after a complete read: the next run starts at the newest change."""
        since = self.since if self.newest is None else delta.since(self.newest)
        return orjson.dumps({"since": _iso(since)}).decode()


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
    policy, timeout_s, verify
        HTTP retry policy, timeout and TLS verification, passed to :class:`ErpHttp`.
    transport
        An httpx transport (tests); ``None`` for the network.
    """

    def __init__(self, base_url: str, user: str, password: str, *, source: str = "sap",
                 page_size: int = PAGE_SIZE, services: SapServices | None = None,
                 mappings: SapMappings | None = None, policy: RetryPolicy | None = None,
                 timeout_s: float = 120.0, verify: bool = True) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.source = source
        self.page_size = page_size
        self.services = services or SapServices()
        self.mappings = mappings or SapMappings()
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
        filters = [query.fixed_filter(self.mappings)]
        if position.since is not None:
            filters.append(query.delta.filter(position.since))
        if position.after is not None:
            filters.append(query.delta.after(position.after[0], key, position.after[1]))
        select = [*dict.fromkeys((*query.keys, *query.properties, *query.delta.properties))]
        select += [f"{nav}/{p}" for nav, props in query.expand for p in props]
        params = {
            "$select": ",".join(select + [nav for nav, _ in query.expand]),
            "$orderby": ",".join(dict.fromkeys((*query.delta.orderby, key))),
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
        answered = 0  # records of the current $top request, across its __next links
        while True:
            before = position.after
            d = await self._get(query, position, next_url)
            results: list[dict[str, Any]] = d["results"]
            if "__count" in d:
                logger.info("SAP %s: %s records to read", query.entity_set, d["__count"])
            records, rejects, position = self._map(query, results, position)
            answered += len(results)
            next_url = d.get("__next")
            if next_url is not None and not results:
                raise PermanentSyncError(f"SAP {query.entity_set}: an empty page with a next"
                                         f" link ({next_url}); the server's paging is broken")
            if next_url is None and answered < self.page_size:
                yield Page(records=records, rejects=rejects,
                           cursor=position.finished(query.delta))
                return
            if next_url is None:
                answered = 0  # a full $top answer: ask again after the last record
                if position.after == before:
                    raise PermanentSyncError(
                        f"SAP {query.entity_set}: a full page without one readable change"
                        " timestamp; cannot page past it (see the rejects)")
            yield Page(records=records, rejects=rejects, cursor=position.dump())

    def _map(self, query: _Query, results: list[dict[str, Any]], position: _Position,
             ) -> tuple[list[dict[str, Any]], list[SourceReject], _Position]:
        """Records and rejects of one answer, and the position after it."""
        records: list[dict[str, Any]] = []
        rejects: list[SourceReject] = []
        newest, after = position.newest, position.after
        for raw in results:
            key = "/".join(str(raw.get(k)) for k in query.keys)
            try:
                stamp = query.delta.stamp(raw)
            except ValueError as exc:
                rejects.append(SourceReject(
                    reason=f"{query.entity_set} {key}: change timestamp: {exc}",
                    record=_plain(raw), external_id=key))
                continue
            if stamp is not None and (newest is None or stamp > newest):
                newest = stamp
            after = (stamp, str(raw.get(query.keys[0])))
            for mapped in query.mapper(raw, self.mappings, stamp):
                if isinstance(mapped, SourceReject):
                    rejects.append(mapped)
                else:
                    records.append(mapped)
        return records, rejects, _Position(position.since, newest, after)


__all__ = ["QUERIES", "EntityType", "SapConnector", "SapMappings", "SapServices",
           "odata_datetime", "odata_datetimeoffset", "odata_text", "parse_metadata",
           "parse_odata_date", "parse_odata_datetime", "parse_odata_time"]
