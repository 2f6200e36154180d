"""Exchange rates into the reporting currency, from ``exchange_rates.csv`` or a sheet of that name.

A rate says what one unit of ``currency`` is worth in the reporting currency from ``valid_from``
on: ``amount x rate = reporting amount``, and the rate of a day is the latest one on or before it
(the SQL function ``to_reporting``, erp_connectors/sql/definitions/to_reporting.sql). A day
before a currency's first rate has no rate: ``to_reporting`` gives NULL, never a guess.

Rates are upserted on (currency, valid_from), so a file can be loaded again after a correction.
A line that is not a valid rate is rejected with its line number and the others are loaded; the
load is recorded as a sync run of entity ``exchange_rates`` so its rejects show in the same
report as every other file's. A file that breaks the contract as a whole loads nothing
(:class:`~erp_connectors.files.FileContractError`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.sql import queries
from erp_connectors.files import (
    EXCHANGE_RATES,
    WORKBOOK,
    Columns,
    Contract,
    EntityFile,
    FileContractError,
    Row,
    locate,
)
from erp_connectors.models import Currency, IsoDate, Money, describe
from erp_connectors.sync import SourceReject

logger = logging.getLogger(__name__)


class ExchangeRateRecord(BaseModel):
    """One rate: ``amount x rate`` in ``currency`` is the amount in the reporting currency."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    currency: Currency
    valid_from: IsoDate
    # numeric(18, 8) in the table: more decimals would be rounded away without a word.
    rate: Annotated[Money, Field(gt=0, max_digits=18, decimal_places=8)]


CONTRACT = Contract(Columns.of_model(ExchangeRateRecord), "exchange rate", key=None)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load did; the same numbers are in its ``sync_runs`` row."""

    run_id: int
    rows_read: int
    rows_upserted: int
    rejects: list[SourceReject]


def _place(path: Path) -> EntityFile:
    """The rates of ``path``: a CSV file, a workbook, or a directory holding either."""
    if path.is_file():
        return EntityFile(EXCHANGE_RATES, path)
    if not path.exists():
        raise FileContractError(f"{path} does not exist")
    places = locate(path, [EXCHANGE_RATES]).get(EXCHANGE_RATES, [])
    if not places:
        raise FileContractError(
            f"{path} holds no exchange rates (exchange_rates.csv, exchange_rates{WORKBOOK} or a"
            " sheet named exchange_rates)")
    if len(places) > 1:
        raise FileContractError(
            f"exchange rates are given {len(places)} times"
            f" ({', '.join(p.name for p in places)}): keep one")
    return places[0]


def _read(found: EntityFile) -> list[Row]:
    rows = found.rows(CONTRACT)
    try:
        return list(rows)
    finally:
        rows.close()


def validate(rows: list[Row]) -> tuple[list[tuple[int, ExchangeRateRecord]], list[SourceReject]]:
    """Valid rates with their lines, and the rejects (a bad value, a day given twice)."""
    valid: list[tuple[int, ExchangeRateRecord]] = []
    rejects: list[SourceReject] = []
    first: dict[tuple[str, Any], int] = {}
    for row in rows:
        if row.record is None:
            assert row.reject is not None
            rejects.append(row.reject)
            continue
        try:
            rate = ExchangeRateRecord.model_validate(row.record)
        except ValidationError as exc:
            named = " ".join(row.record.get(c, "?") for c in ("currency", "valid_from"))
            rejects.append(SourceReject(reason=f"exchange rate {named}: {describe(exc)}",
                                        record=row.record, line_number=row.line_number))
            continue
        key = (rate.currency, rate.valid_from)
        if key in first:
            rejects.append(SourceReject(
                reason=f"exchange rate {rate.currency} {rate.valid_from} appears again (first"
                       f" at line {first[key]}, which is kept)",
                record=row.record, line_number=row.line_number))
            continue
        first[key] = row.line_number
        valid.append((row.line_number, rate))
    return valid, rejects


async def load_exchange_rates(conn: psycopg.AsyncConnection[Any], path: Path, *,
                              source: str = "files") -> LoadResult:
    """Load the exchange rates of ``path`` into ``exchange_rates``, in one transaction.

    Parameters
    ----------
    conn
        A connection outside a transaction; the load commits on it.
    path
        ``exchange_rates.csv``, a workbook (its sheet ``exchange_rates``, or its only sheet),
        or a directory holding one of them or a workbook with a sheet ``exchange_rates``.
    source
        The source recorded with the load's ``sync_runs`` row and rejects.

    Returns
    -------
    LoadResult
        Rows read, rates written (changed or new), and the rejected lines with their reasons.

    Raises
    ------
    FileContractError
        The file breaks the contract as a whole (no header, a column missing or unknown, not
        UTF-8, not a workbook); nothing is loaded.
    """
    found = await asyncio.to_thread(_place, path)
    rows = await asyncio.to_thread(_read, found)
    valid, rejects = validate(rows)
    rejects.sort(key=lambda r: r.line_number or 0)
    q = queries("erp_connectors", "sql/rates.sql")
    async with conn.transaction():
        cur = await conn.execute(q["start_run"], {"source": source})
        row = await cur.fetchone()
        assert row is not None
        run_id = int(row[0])
        cur = await conn.execute(q["upsert_exchange_rates"], {
            "currency": [r.currency for _, r in valid],
            "valid_from": [r.valid_from for _, r in valid],
            "rate": [r.rate for _, r in valid]})
        upserted = cur.rowcount
        if rejects:
            await conn.execute(q["insert_rejects"], {
                "run_id": run_id, "source": source,
                "line_number": [r.line_number for r in rejects],
                "reason": [r.reason for r in rejects],
                "record": [orjson.dumps(r.record, default=str).decode() for r in rejects]})
        await conn.execute(q["finish_run"], {"run_id": run_id, "upserted": upserted,
                                             "rejected": len(rejects)})
    logger.info("exchange rates from %s: %s read, %s written, %s rejected", found.name,
                len(rows), upserted, len(rejects))
    return LoadResult(run_id, len(rows), upserted, rejects)


__all__ = ["CONTRACT", "ExchangeRateRecord", "LoadResult", "load_exchange_rates", "validate"]
