"""ERP sync throughput: 100,000 Odoo invoice lines from the fake Odoo into a fresh database.

Run from the repository root::

    set -a && . /var/lib/oem-retention/env && set +a
    .venv/bin/python -m tests.bench.erp [--lines N] [--invoices N] [--customers N]

Figures, not pass/fail:

a. fetch limit: rows/s of paging every invoice line out of the fake Odoo with the connector
   (JSON-RPC over loopback, keyset pages of 500, records mapped) and writing nothing; with the
   time spent in the fake's request handler (wall and CPU of its threads) and the CPU of the
   event loop's thread (the connector, httpx, the mapping), so the fake's share and the
   connector's are apart (they overlap: the next page is asked for while one is mapped);
b. write limit: rows/s of writing those same records with one plain ``INSERT .. SELECT
   unnest`` per page (no upsert, no validation, parents resolved beforehand), same process;
c. end to end: a full sync of invoice lines through the engine (validation, parent lookup,
   upsert with change detection, cursor per page), its rows/s and its ratio to min(a, b);
d. incremental: 1% of the lines changed in Odoo, then a sync from the stored cursor: its time
   and the rows it wrote.

The fake Odoo runs in this process (a thread), so (a) and (c) share the two cores with it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from core.settings import Settings
from core.sql import queries
from demo.erp.odoo import KIND_CATEGORIES, FakeOdoo
from erp_connectors.models import InvoiceLineRecord
from erp_connectors.odoo import OdooConnector
from erp_connectors.sync import Page, sync_entity
from tests.bench.ingest import fresh_database

PAGE_SIZE = 500
KEY = "bench-key"


def populate(fake: FakeOdoo, *, customers: int, invoices: int, lines: int) -> None:
    """Customers, invoices and lines written over the past 30 days; a line shares its
    invoice's write_date (posted together), so ten lines share each."""
    rng = random.Random(7)
    base = datetime.now(UTC) - timedelta(days=31)

    def stamp(i: int, per_second: int) -> str:
        return (base + timedelta(seconds=i // per_second)).strftime("%Y-%m-%d %H:%M:%S")

    eur = fake.create("res.currency", {"name": "EUR"}, write_date=stamp(0, 1))
    categories = [fake.create("product.category", {"name": name, "complete_name": f"All / {name}"},
                              write_date=stamp(0, 1)) for name in KIND_CATEGORIES.values()]
    products = [fake.create("product.product", {"name": f"Part {p}", "default_code": f"SP-{p}",
                                                "categ_id": fake.m2o("product.category",
                                                                     categories[p % 6])},
                            write_date=stamp(0, 1)) for p in range(200)]
    partners = []
    for c in range(customers):
        rid = fake.create("res.partner", {"name": f"Customer {c}", "is_company": True,
                                          "customer_rank": 1}, write_date=stamp(c, 100))
        fake.write("res.partner", rid, {"commercial_partner_id": [rid, f"Customer {c}"]},
                   write_date=stamp(c, 100))
        partners.append(rid)
    spacing = max(1, 30 * 86_400 // invoices)
    moves = []
    for i in range(invoices):
        partner = fake.m2o("res.partner", partners[i % customers])
        moves.append(fake.create("account.move", {
            "name": f"INV/{i:06d}", "move_type": "out_invoice", "state": "posted",
            "payment_state": "not_paid", "commercial_partner_id": partner,
            "partner_id": partner, "invoice_date": "2025-06-01", "date": "2025-06-01",
            "currency_id": fake.m2o("res.currency", eur), "amount_untaxed": 0.0},
            write_date=stamp(i * spacing, 1)))
    for n in range(lines):
        product = products[rng.randrange(len(products))]
        p = fake.get("product.product", product)
        quantity = float(rng.randint(1, 9))
        price = round(rng.uniform(5, 2000), 2)
        fake.create("account.move.line", {
            "move_id": fake.m2o("account.move", moves[n % invoices]), "move_type": "out_invoice",
            "parent_state": "posted", "display_type": "product",
            "product_id": fake.m2o("product.product", product),
            "product_category_id": p["categ_id"], "name": f"Line {n}", "quantity": quantity,
            "price_unit": price, "price_subtotal": round(quantity * price, 2)},
            write_date=stamp((n % invoices) * spacing, 1))


def connector(fake: FakeOdoo) -> OdooConnector:
    return OdooConnector(fake.url, "bench", "admin", KEY, page_size=PAGE_SIZE)


@dataclass(frozen=True, slots=True)
class Fetch:
    """(a): the pages, the seconds they took, and the fake's share of those seconds."""

    pages: list[Page]
    seconds: float
    requests: int
    fake_s: float  # wall clock in the fake's request handler (its threads, GIL waits included)
    fake_cpu_s: float  # CPU of the fake's handler threads: the work the fake did
    client_cpu_s: float  # CPU of this thread (the event loop): connector, httpx, mapping


async def fetch_all(fake: FakeOdoo) -> Fetch:
    """(a) every page of invoice lines, timed."""
    odoo = connector(fake)
    requests, busy, busy_cpu = fake.request_count, fake.busy_s, fake.busy_cpu_s
    started, started_cpu = time.perf_counter(), time.thread_time()
    pages = [page async for page in odoo.page_sources()["invoice_lines"](None)]
    elapsed, client_cpu = time.perf_counter() - started, time.thread_time() - started_cpu
    await odoo.aclose()
    return Fetch(pages, elapsed, fake.request_count - requests, fake.busy_s - busy,
                 fake.busy_cpu_s - busy_cpu, client_cpu)


def write_baseline(url: str, pages: list[Page]) -> float:
    """(b) the pages written with a plain INSERT .. SELECT unnest each; seconds."""
    q = queries("tests.bench", "sql/erp.sql")
    with psycopg.connect(url) as conn:
        invoice_ids: dict[str, int] = dict(
            conn.execute(q["invoice_ids"], {"source": "odoo"}).fetchall())
        batches = []
        for page in pages:
            recs = [InvoiceLineRecord.model_validate(r) for r in page.records]
            batches.append({
                "source": "baseline", "external_id": [r.external_id for r in recs],
                "invoice_id": [invoice_ids[r.invoice_external_id] for r in recs],
                "kind": [r.kind for r in recs], "product_code": [r.product_code for r in recs],
                "description": [r.description for r in recs],
                "quantity": [r.quantity for r in recs], "unit_price": [r.unit_price for r in recs],
                "net_amount": [r.net_amount for r in recs]})
        conn.commit()
        started = time.perf_counter()
        for batch in batches:
            conn.execute(q["insert_invoice_lines"], batch)
            conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DELETE FROM invoice_lines WHERE source = 'baseline'")
        conn.commit()
    return elapsed


async def sync(url: str, fake: FakeOdoo, entity: str, *, full: bool = False) -> tuple[Any, float]:
    odoo = connector(fake)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        started = time.perf_counter()
        result = await sync_entity(conn, source="odoo", entity=entity, full=full,
                                   pages=odoo.page_sources()[entity])
        elapsed = time.perf_counter() - started
    await odoo.aclose()
    if result.status != "succeeded":
        raise RuntimeError(f"sync of {entity} failed: {result.error}")
    return result, elapsed


async def run(args: argparse.Namespace) -> None:
    settings = Settings()
    with FakeOdoo(db="bench", login="admin", api_key=KEY) as fake, \
            fresh_database(settings) as url:
        started = time.perf_counter()
        populate(fake, customers=args.customers, invoices=args.invoices, lines=args.lines)
        print(f"fake Odoo: {args.customers:,} customers, {args.invoices:,} invoices,"
              f" {args.lines:,} lines loaded in {time.perf_counter() - started:.1f} s")
        for entity in ("customers", "invoices"):
            await sync(url, fake, entity)

        fetch = await fetch_all(fake)
        pages, fetch_s = fetch.pages, fetch.seconds
        fetched = sum(len(p.records) for p in pages)
        assert fetched == args.lines, f"fetched {fetched} of {args.lines}"
        write_s = write_baseline(url, pages)
        result, sync_s = await sync(url, fake, "invoice_lines")
        assert result.rows_upserted == args.lines, result

        line_ids = fake.ids("account.move.line")
        changed = random.Random(11).sample(line_ids, len(line_ids) // 100)
        for rid in changed:
            line = fake.get("account.move.line", rid)
            fake.write("account.move.line", rid, {"price_subtotal": line["price_subtotal"] + 1,
                                                  "price_unit": line["price_unit"]})
        incremental, incremental_s = await sync(url, fake, "invoice_lines")

    fetch_rate, write_rate, sync_rate = (args.lines / fetch_s, args.lines / write_s,
                                         args.lines / sync_s)
    limit = min(fetch_rate, write_rate)
    print()
    print(f"{'measure':<46}{'seconds':>10}{'rows/s':>12}")
    print(f"{'(a) fetch limit: page all lines, no writes':<46}{fetch_s:>10.2f}{fetch_rate:>12,.0f}")
    print(f"    {len(pages)} pages in {fetch.requests} requests; fake Odoo's handler:"
          f" {fetch.fake_s:.2f} s wall, {fetch.fake_cpu_s:.2f} s CPU")
    print(f"    connector (event loop: connector, httpx, mapping): {fetch.client_cpu_s:.2f} s"
          " CPU")
    print(f"{'(b) write limit: INSERT..SELECT unnest/page':<46}{write_s:>10.2f}"
          f"{write_rate:>12,.0f}")
    print(f"{'(c) full sync end to end':<46}{sync_s:>10.2f}{sync_rate:>12,.0f}")
    print(f"    ratio (c) / min(a, b) = {sync_rate / limit:.2f}")
    print(f"{'(d) incremental sync, 1% changed':<46}{incremental_s:>10.2f}"
          f"{incremental.records_read / incremental_s:>12,.0f}")
    print(f"    {len(changed):,} lines changed; read {incremental.records_read:,},"
          f" wrote {incremental.rows_upserted:,} rows in {incremental.pages} pages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=1_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
