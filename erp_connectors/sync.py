"""The sync engine: pages of source records in, idempotent upserts and a rejects report out.

A connector is a page source: called with the cursor stored for its source and entity (``None``
for the start), it yields :class:`Page` objects, each with the cursor to resume after it. The
engine validates every record with its model, resolves the parents a record names by external
id, and commits a page's upserts, its rejects and its cursor in one transaction: a sync that dies
between pages resumes after the last committed page, with no duplicates and nothing skipped.
Upserts are on (source, external_id) and touch a row only when a value differs, so syncing the
same data twice writes nothing.

Each run is a row of ``sync_runs`` (counts, status, error); each rejected record a row of
``sync_rejects`` with a reason a person can act on, and the line number when the source has
lines. One sync per source and entity runs at a time (an advisory lock); a run found still
``running`` under that lock was killed, and is marked failed by the run that takes over.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from core.errors import DatabaseUnavailableError, OemrError
from core.sql import queries
from erp_connectors.models import (
    ContactRecord,
    ContractRenewalRecord,
    CustomerRecord,
    InstalledBaseRecord,
    InvoiceLineRecord,
    InvoiceRecord,
    MachineModelRecord,
    OrderLineRecord,
    OrderRecord,
    ServiceContractRecord,
    SiteRecord,
    SourceRecord,
    SurveyResponseRecord,
    describe,
)

logger = logging.getLogger(__name__)

# Pending records are tried again in pages of this many.
_RETRY_PAGE = 1000

# Class of the two-key advisory locks of ERP syncs (the second key is the source/entity hash),
# apart from the one-key lock the migration runner takes.
LOCK_CLASS = 4_0001

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


class SyncError(OemrError):
    """Base of the sync engine's errors."""


class PermanentSyncError(SyncError):
    """The entity cannot be synced until a person fixes something; retrying will not help.

    Connectors raise it for a file that breaks its contract, a refused login, a 4xx that is not
    throttling. The run is marked failed with this message and the sync of other entities goes on.
    """


class SourceUnavailableError(SyncError):
    """The source did not answer usefully after retries (down, throttling for long).

    Like :class:`PermanentSyncError` it stops only this entity's run, which is marked failed;
    unlike it, the next scheduled run may well succeed, resuming from the stored cursor.
    """


class SyncBusyError(SyncError):
    """Another sync of the same source and entity is running."""


@dataclass(frozen=True, slots=True)
class SourceReject:
    """A record the connector could not even make into fields (a CSV line with too few cells)."""

    reason: str
    record: dict[str, Any]
    line_number: int | None = None
    external_id: str | None = None
    # Rejected only because a parent it names is not stored yet: kept in sync_pending and tried
    # again on every run until it binds (set by the engine, never by a connector).
    waits_for_parent: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """Records of one page and the cursor to resume after them.

    ``cursor`` is opaque to the engine: stored as given, handed back to the connector on the
    next run. ``None`` means "start from the beginning next time" (a file read to its end).
    ``line_numbers``, when the source has lines, runs parallel to ``records``.
    """

    records: list[dict[str, Any]]
    cursor: str | None
    line_numbers: list[int] | None = None
    rejects: list[SourceReject] = field(default_factory=list)
    # For a source whose paid_on is only an estimate that moves with later edits (Business
    # Central): an invoice still paid keeps the paid_on it was first stored with.
    paid_on_first_seen: bool = False

    def __post_init__(self) -> None:
        if self.line_numbers is not None and len(self.line_numbers) != len(self.records):
            msg = (f"page has {len(self.records)} records but {len(self.line_numbers)}"
                   " line numbers")
            raise ValueError(msg)


PageSource = Callable[[str | None], AsyncIterator[Page]]
"""A connector's pages for one entity, from a stored cursor (``None``: from the start)."""


class Connector(Protocol):
    """A source system: its name in every row's ``source`` and a page source per entity."""

    source: str

    def page_sources(self) -> dict[str, PageSource]:
        """The entities this source provides (keys of :data:`ENTITIES`), parents first."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one run did; the same numbers are in its ``sync_runs`` row."""

    run_id: int
    source: str
    entity: str
    status: Literal["succeeded", "failed"]
    pages: int = 0
    records_read: int = 0
    rows_upserted: int = 0
    rows_rejected: int = 0
    error: str | None = None
    rows_deleted: int = 0


@dataclass(frozen=True, slots=True)
class _Valid:
    record: Any  # the entity's SourceRecord subclass
    raw: dict[str, Any]
    line_number: int | None


@dataclass(slots=True)
class _Bound:
    """Column arrays for an upsert, and the records whose parents could not be found."""

    columns: dict[str, list[Any]]
    rejects: list[SourceReject]


@dataclass(frozen=True, slots=True)
class _Parent:
    """A parent a record names by its external id, resolved to our id in the same source."""

    field: str  # the record's field: "customer_external_id"
    column: str  # the column written: "customer_id"
    lookup: str  # sync.sql block: (external_id, id, owning customer's external_id or NULL)
    label: str  # how a reason names it: "customer"


class _Missing(str):
    """Why a record cannot bind: a parent it names is not stored in its source (yet)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class _Entity:
    table: str  # also the entity's name
    label: str  # how a reason names one record: "installed base SN-9 ..."
    model: type[SourceRecord]
    parents: tuple[_Parent, ...] = ()

    def own_fields(self) -> list[str]:
        """Fields copied as they are: all but the parents' external ids and the deleted flag."""
        named = {p.field for p in self.parents}
        return [name for name in self.model.model_fields if name not in named | {"deleted"}]


def _q() -> dict[str, str]:
    return queries("erp_connectors", "sql/sync.sql")


async def _lookup(conn: Connection, block: str, source: str,
                  external_ids: set[str]) -> dict[str, tuple[Any, ...]]:
    if not external_ids:
        return {}
    cur = await conn.execute(_q()[block], {"source": source,
                                           "external_ids": sorted(external_ids)})
    return {row[0]: tuple(row[1:]) for row in await cur.fetchall()}


def _parent_ids(spec: _Entity, record: Any, source: str,
                found: dict[str, dict[str, tuple[Any, ...]]]) -> dict[str, Any] | _Missing | str:
    """The parents' ids of a record by column, or why they cannot be had.

    A parent not stored (yet) is a :class:`_Missing`: it may come on a later run. A parent of
    another customer is a plain reason: the source mixed something up.
    """
    ids: dict[str, Any] = {}
    customer = getattr(record, "customer_external_id", None)
    for parent in spec.parents:
        named = getattr(record, parent.field)
        if named is None:
            ids[parent.column] = None
            continue
        row = found[parent.field].get(named)
        if row is None:
            return _Missing(f"{spec.label} {record.external_id} names {parent.label} {named},"
                            f" which is not in {source}")
        parent_id, owner = row
        # A site or machine of another customer is a mix-up in the source, not a choice.
        if (customer is not None and owner is not None and parent.field != "customer_external_id"
                and owner != customer):
            return (f"{spec.label} {record.external_id} names customer {customer} but"
                    f" {parent.label} {named}, which belongs to customer {owner}")
        ids[parent.column] = parent_id
    return ids


async def _bind(conn: Connection, spec: _Entity, source: str, items: list[_Valid]) -> _Bound:
    found = {parent.field: await _lookup(
                 conn, parent.lookup, source,
                 {value for item in items
                  if (value := getattr(item.record, parent.field)) is not None})
             for parent in spec.parents}
    own = spec.own_fields()
    names = [*own, *(p.column for p in spec.parents), "deleted"]
    bound = _Bound(columns={name: [] for name in names}, rejects=[])
    for item in items:
        ids = _parent_ids(spec, item.record, source, found)
        if isinstance(ids, _Missing | str):
            bound.rejects.append(SourceReject(
                reason=str(ids), record=item.raw, line_number=item.line_number,
                external_id=item.record.external_id, waits_for_parent=isinstance(ids, _Missing)))
            continue
        for name in own:
            bound.columns[name].append(getattr(item.record, name))
        for column, value in ids.items():
            bound.columns[column].append(value)
        bound.columns["deleted"].append(item.record.deleted)
    return bound


_CUSTOMER = _Parent("customer_external_id", "customer_id", "customer_ids", "customer")
_SITE = _Parent("site_external_id", "site_id", "site_ids", "site")
_MACHINE = _Parent("installed_base_external_id", "installed_base_id", "installed_base_ids",
                   "installed base")

# Entity names are the table names. Parents come before children: a sync of sites resolves
# customers already stored, so syncing in this order resolves every reference within a source.
ENTITIES: dict[str, _Entity] = {spec.table: spec for spec in (
    _Entity("customers", "customer", CustomerRecord),
    _Entity("sites", "site", SiteRecord, (_CUSTOMER,)),
    _Entity("contacts", "contact", ContactRecord, (_CUSTOMER, _SITE)),
    _Entity("machine_models", "machine model", MachineModelRecord),
    _Entity("installed_base", "installed base", InstalledBaseRecord, (_CUSTOMER, _SITE)),
    _Entity("service_contracts", "service contract", ServiceContractRecord,
            (_CUSTOMER, _MACHINE)),
    _Entity("contract_renewals", "contract renewal", ContractRenewalRecord, (
        _Parent("contract_external_id", "contract_id", "contract_ids", "service contract"),)),
    _Entity("invoices", "invoice", InvoiceRecord, (_CUSTOMER,)),
    _Entity("invoice_lines", "invoice line", InvoiceLineRecord, (
        _Parent("invoice_external_id", "invoice_id", "invoice_ids", "invoice"), _MACHINE,
        _Parent("contract_external_id", "contract_id", "contract_ids", "service contract"))),
    _Entity("orders", "order", OrderRecord, (_CUSTOMER,)),
    _Entity("order_lines", "order line", OrderLineRecord, (
        _Parent("order_external_id", "order_id", "order_ids", "order"), _MACHINE)),
    _Entity("survey_responses", "survey response", SurveyResponseRecord, (
        _CUSTOMER, _Parent("contact_external_id", "contact_id", "contact_ids", "contact"))),
)}


@contextmanager
def _database_boundary(what: str) -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise DatabaseUnavailableError(f"{what}: {exc}") from exc


def _validate(spec: _Entity, page: Page) -> tuple[list[_Valid], list[SourceReject]]:
    """Valid records (the last of each external id) and the invalid ones, with reasons."""
    valid: dict[str, _Valid] = {}
    rejects = list(page.rejects)
    for i, raw in enumerate(page.records):
        line = page.line_numbers[i] if page.line_numbers is not None else None
        try:
            record = spec.model.model_validate(raw)
        except ValidationError as exc:
            external_id = raw.get("external_id")
            named = external_id if isinstance(external_id, str) and external_id.strip() else None
            rejects.append(SourceReject(
                reason=f"{spec.label} {named or '(without external_id)'}: {describe(exc)}",
                record=raw, line_number=line, external_id=named))
            continue
        # An API page may carry a record twice (paging over changing data): the later one is
        # the newer, and one statement cannot upsert the same key twice.
        valid.pop(record.external_id, None)
        valid[record.external_id] = _Valid(record, raw, line)
    return list(valid.values()), rejects


async def _apply_page(conn: Connection, *, run_id: int, source: str, entity: str,
                      page: Page, sweeping: bool, retrying: bool = False) -> tuple[int, int]:
    """Write one page in one transaction; rows upserted and rejects reported.

    ``retrying``: the page is the entity's pending records, tried again before the source is
    read. Those still waiting for their parent stay pending without a new reject row, and the
    page moves neither the cursor nor the sweep's record of what the source holds.
    """
    spec = ENTITIES[entity]
    valid, rejects = _validate(spec, page)
    q = _q()
    keys = {"source": source, "entity": entity}
    try:
        with _database_boundary(f"sync of {source}/{entity}"):
            async with conn.transaction():
                bound = await _bind(conn, spec, source, valid)
                rejects.extend(bound.rejects)
                upserted = 0
                if bound.columns["external_id"]:
                    cur = await conn.execute(q[f"upsert_{spec.table}"], {
                        "source": source, "keep_paid_on": page.paid_on_first_seen,
                        **bound.columns})
                    upserted = cur.rowcount
                waiting = [r for r in rejects if r.waits_for_parent]
                reported = [r for r in rejects if not (retrying and r.waits_for_parent)]
                await conn.execute(q["forget_pending"], {**keys, "external_ids": [
                    *(item.record.external_id for item in valid),
                    *(r.external_id for r in rejects if r.external_id is not None)]})
                if waiting:
                    await conn.execute(q["keep_pending"], {
                        **keys, "external_id": [r.external_id for r in waiting],
                        "record": [orjson.dumps(r.record, default=str).decode()
                                   for r in waiting],
                        "line_number": [r.line_number for r in waiting],
                        "reason": [r.reason for r in waiting]})
                if reported:
                    await conn.execute(q["insert_rejects"], {
                        "run_id": run_id, **keys,
                        "external_id": [r.external_id for r in reported],
                        "line_number": [r.line_number for r in reported],
                        "reason": [r.reason for r in reported],
                        "record": [orjson.dumps(r.record, default=str).decode()
                                   for r in reported]})
                if sweeping and not retrying:
                    # A rejected record is still in the source: its old row is not deleted.
                    await conn.execute(q["mark_seen"], {"external_ids": [
                        *(item.record.external_id for item in valid),
                        *(r.external_id for r in rejects if r.external_id is not None)]})
                await conn.execute(q["count_page"], {
                    "run_id": run_id,
                    "read": 0 if retrying else len(page.records) + len(page.rejects),
                    "upserted": upserted, "rejected": len(reported)})
                if not retrying:
                    await conn.execute(q["write_cursor"], {**keys, "cursor": page.cursor})
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        # The models mirror the table's rules; a refusal here is a gap between the two.
        raise PermanentSyncError(
            f"the database refused a page of {entity} from {source}: {exc}") from exc
    return upserted, len(reported)


async def _retry_pending(conn: Connection, *, run_id: int, source: str, entity: str) -> int:
    """Try the records waiting for a parent again; rows they wrote."""
    with _database_boundary(f"sync of {source}/{entity}"):
        cur = await conn.execute(_q()["pending_records"], {"source": source, "entity": entity})
        rows = await cur.fetchall()
    written = 0
    for start in range(0, len(rows), _RETRY_PAGE):
        chunk = rows[start:start + _RETRY_PAGE]
        page = Page(records=[row[1] for row in chunk], cursor=None,
                    line_numbers=[row[2] for row in chunk])
        upserted, _ = await _apply_page(conn, run_id=run_id, source=source, entity=entity,
                                        page=page, sweeping=False, retrying=True)
        written += upserted
    if rows:
        logger.info("sync %s/%s: %s of %s records waiting for a parent could be written",
                    source, entity, written, len(rows))
    return written


@asynccontextmanager
async def _connection(target: Connection | AsyncConnectionPool) -> AsyncIterator[Connection]:
    if isinstance(target, AsyncConnectionPool):
        async with target.connection() as conn:
            yield conn
    else:
        yield target


@asynccontextmanager
async def _entity_session(target: Connection | AsyncConnectionPool, *, source: str,
                          entity: str) -> AsyncIterator[Connection]:
    """A connection in autocommit mode holding the entity's sync lock."""
    keys = {"lock_class": LOCK_CLASS, "source": source, "entity": entity}
    async with _connection(target) as conn:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            msg = "sync_entity needs a connection outside a transaction: each page commits"
            raise ValueError(msg)
        was_autocommit = conn.autocommit
        with _database_boundary(f"sync of {source}/{entity}"):
            # Every page is its own transaction; outside autocommit the first statement would
            # open one that held them all.
            await conn.set_autocommit(True)
            cur = await conn.execute(_q()["lock_entity"], keys)
            row = await cur.fetchone()
        if row is None or not row[0]:
            await conn.set_autocommit(was_autocommit)
            raise SyncBusyError(f"another sync of {source}/{entity} is running")
        try:
            yield conn
        finally:
            if not conn.closed:
                try:
                    await conn.execute(_q()["unlock_entity"], keys)
                    await conn.set_autocommit(was_autocommit)
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    # The lock ends with the session anyway.
                    logger.warning("could not release the sync lock of %s/%s: %s",
                                   source, entity, exc)


async def _start(conn: Connection, *, source: str, entity: str,
                 full: bool) -> tuple[int, str | None]:
    q = _q()
    with _database_boundary(f"sync of {source}/{entity}"):
        cur = await conn.execute(q["start_run"], {"source": source, "entity": entity,
                                                  "full": full})
        row = await cur.fetchone()
        assert row is not None
        run_id = int(row[0])
        abandoned = await conn.execute(q["abandon_runs"], {"source": source, "entity": entity,
                                                           "run_id": run_id})
        if abandoned.rowcount:
            logger.warning("sync of %s/%s: %s earlier run(s) had been interrupted; resuming",
                           source, entity, abandoned.rowcount)
        if full:
            return run_id, None
        cur = await conn.execute(q["read_cursor"], {"source": source, "entity": entity})
        stored = await cur.fetchone()
    return run_id, None if stored is None else stored[0]


async def _finish(conn: Connection, run_id: int, error: str | None) -> None:
    with _database_boundary(f"finishing sync run {run_id}"):
        await conn.execute(_q()["finish_run"], {
            "run_id": run_id, "status": "failed" if error else "succeeded", "error": error})


async def sync_entity(target: Connection | AsyncConnectionPool, *, source: str, entity: str,
                      pages: PageSource, full: bool = False,
                      on_page: Callable[[int], None] | None = None) -> SyncResult:
    """Sync one entity of one source from a connector's pages.

    Parameters
    ----------
    target
        A connection outside a transaction (it is put in autocommit mode for the run and put
        back after) or the process's pool (a connection is taken for the run).
    source
        The source system as stored in every row's ``source`` (``odoo``, ``files``...).
    entity
        A key of :data:`ENTITIES`: ``customers``, ``sites``, ``installed_base``.
    pages
        The connector, called with the stored cursor (``None`` if there is none or ``full``).
    full
        Ignore the stored cursor and read the source from its start.
    on_page
        Called with the number of records of each page once it is committed (progress).

    Returns
    -------
    SyncResult
        ``status`` is ``failed`` with ``error`` set when the connector raised
        :class:`PermanentSyncError`; any other exception marks the run failed and propagates.

    Raises
    ------
    SyncBusyError
        Another sync of this source and entity holds the lock.
    DatabaseUnavailableError
        The database could not be reached; whatever pages were committed stay, and the next
        run resumes after them.
    """
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; known: {', '.join(ENTITIES)}")
    async with _entity_session(target, source=source, entity=entity) as conn:
        run_id, cursor = await _start(conn, source=source, entity=entity, full=full)
        logger.info("sync %s/%s run %s from cursor %r", source, entity, run_id, cursor)
        n_pages = read = upserted = rejected = deleted = 0
        # Only a read from the very start sees everything the source has: then what it did not
        # see is gone. A run resumed from a cursor saw only the rest.
        sweeping = cursor is None
        if sweeping:
            with _database_boundary(f"sync of {source}/{entity}"):
                await conn.execute(_q()["create_seen"])
                await conn.execute(_q()["clear_seen"])
        try:
            upserted += await _retry_pending(conn, run_id=run_id, source=source, entity=entity)
            stream = pages(cursor)
            try:
                async for page in stream:
                    page_upserted, page_rejected = await _apply_page(
                        conn, run_id=run_id, source=source, entity=entity, page=page,
                        sweeping=sweeping)
                    n_pages += 1
                    read += len(page.records) + len(page.rejects)
                    upserted += page_upserted
                    rejected += page_rejected
                    if on_page is not None:
                        on_page(len(page.records) + len(page.rejects))
            finally:
                # A connector's generator (and what it prefetches) ends with the run, also
                # when a page failed.
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
            if sweeping:
                deleted = await _sweep(conn, run_id=run_id, source=source, entity=entity,
                                       read=read)
        except (PermanentSyncError, SourceUnavailableError) as exc:
            await _finish(conn, run_id, str(exc))
            logger.error("sync %s/%s run %s failed: %s", source, entity, run_id, exc)
            return SyncResult(run_id, source, entity, "failed", n_pages, read, upserted,
                              rejected, str(exc))
        except BaseException as exc:
            await _finish_after_crash(conn, run_id, exc)
            raise
        await _finish(conn, run_id, None)
    logger.info("sync %s/%s run %s: %s pages, %s records, %s rows written, %s rejected,"
                " %s marked deleted", source, entity, run_id, n_pages, read, upserted, rejected,
                deleted)
    return SyncResult(run_id, source, entity, "succeeded", n_pages, read, upserted, rejected,
                      rows_deleted=deleted)


async def _sweep(conn: Connection, *, run_id: int, source: str, entity: str, read: int) -> int:
    """Mark deleted the rows of a source/entity a complete read did not see; how many."""
    with _database_boundary(f"sync of {source}/{entity}"):
        async with conn.transaction():
            sweep = sql.SQL(_q()["sweep"]).format(table=sql.Identifier(ENTITIES[entity].table))
            cur = await conn.execute(sweep, {"source": source})
            deleted = cur.rowcount
            if read:
                await conn.execute(_q()["sweep_pending"], {"source": source, "entity": entity})
            if read == 0 and deleted:
                # An empty answer from a source that had rows is far likelier a filter, a
                # permission or an empty export than everything deleted at once.
                logger.warning("sync %s/%s: the source returned nothing but %s rows are stored;"
                               " not marking them deleted", source, entity, deleted)
                deleted = 0
                raise psycopg.Rollback
            await conn.execute(_q()["count_deleted"], {"run_id": run_id, "deleted": deleted})
    return deleted


async def _finish_after_crash(conn: Connection, run_id: int, exc: BaseException) -> None:
    """Mark the run failed if the database still answers; if not, the next run will."""
    try:
        await _finish(conn, run_id, f"{type(exc).__name__}: {exc}")
    except DatabaseUnavailableError as finish_exc:
        logger.warning("sync run %s: could not record its failure: %s", run_id, finish_exc)
