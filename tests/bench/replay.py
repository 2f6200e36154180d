"""Dead-letter replay rate: dead letters decoded again and stored, per second.

Run from the repository root with the services' addresses in the environment::

    set -a && . /var/lib/oem-retention/env && set +a
    .venv/bin/python -m tests.bench.replay [--dead-letters N] [--machines M] [--chunk C]

Figures, not pass/fail. In a freshly migrated database of its own (dropped afterwards), N dead
letters are planted as an ingester with ``OEMR_INGEST_MAX_CLOCK_SKEW_S=60`` makes them from the
ingest benchmark's messages (ten metrics and a state each, M machines) sent ten minutes ahead of
the clock: the reason is the one the JSON decoder gives. Then ``ingest.replay.replay``, as
``oem-retention ingest replay`` runs it:

1. with the bound raised to an hour (the fix): every dead letter decodes and is stored;
2. again: nothing is left to replay;
3. on N planted again, with the bound still at 60 s: a dry run, then a replay in which every
   dead letter stays bad (decoding and judging, no rows stored).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from datetime import UTC, datetime, timedelta

import psycopg

from core.settings import Settings
from ingest import json_contract, topics
from ingest.models import Rejected
from ingest.replay import ReplayReport, replay
from tests.bench.ingest import METRICS, Workload, fresh_database

AHEAD_MS = 600_000
PLANT_SKEW = timedelta(seconds=60)


def plant(url: str, w: Workload) -> float:
    """N dead letters as the ingester writes them; returns seconds taken."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(
            "COPY dead_letters (topic, payload, payload_size, reason, digest)"
            " FROM STDIN") as copy:
        for k in range(w.messages):
            topic, body = w.topic(k), w.payload(k)
            route = topics.parse(topic)
            assert isinstance(route, topics.JsonTopic)
            try:
                json_contract.decode(route, body, now=now, max_skew=PLANT_SKEW)
            except Rejected as exc:
                reason = exc.reason
            else:
                raise AssertionError("a planted message decodes: it would not be a dead letter")
            digest = hashlib.sha256(topic.encode() + b"\0" + body).digest()
            copy.write_row((topic, body, len(body), reason, digest))
    return time.perf_counter() - started


def workload(n: int, machines: int) -> Workload:
    # From AHEAD_MS ahead of the clock on, a tick (10 s) per `machines` messages: within the
    # fixed bound of an hour while n / machines stays under 300.
    ticks = -(-n // machines)
    if AHEAD_MS + ticks * 10_000 >= 3_600_000:
        raise SystemExit(f"{n:,} messages of {machines:,} machines span {ticks * 10:,} s: more"
                         " machines, or fewer dead letters")
    w = Workload.new(messages=n, machines=machines, publishers=1)
    return Workload(w.tenant, n, machines, 1, int(time.time() * 1000) + AHEAD_MS)


def run(settings: Settings, url: str, **kwargs: object) -> ReplayReport:
    return asyncio.run(replay(settings.model_copy(update={"database_url": url}), **kwargs))


def show(title: str, report: ReplayReport) -> None:
    rate = report.selected / report.seconds if report.seconds else 0.0
    print(f"{title}: {report.selected:,} dead letters in {report.seconds:.2f} s ="
          f" {rate:,.0f} dead letters/s")
    for line in report.lines():
        print(f"    {line}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.bench.replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dead-letters", type=int, default=100_000)
    p.add_argument("--machines", type=int, default=1000)
    p.add_argument("--chunk", type=int, default=2000, help="dead letters per transaction")
    a = p.parse_args(argv)
    base = Settings()
    fixed = Settings(ingest_max_clock_skew_s=3600)
    unfixed = Settings(ingest_max_clock_skew_s=int(PLANT_SKEW.total_seconds()))
    print(f"replay bench: {a.dead_letters:,} dead letters of {len(METRICS)} metrics and a state"
          f" each, {a.machines:,} machines, chunks of {a.chunk:,}")
    with fresh_database(base) as url:
        w = workload(a.dead_letters, a.machines)
        print(f"planted in {plant(url, w):.1f} s")
        stored = run(fixed, url, chunk=a.chunk)
        show("1. replay after the fix (all decode, stored)", stored)
        print(f"    = {stored.written.telemetry_rows / stored.seconds:,.0f} telemetry rows/s")
        show("2. replay again (nothing left)", run(fixed, url, chunk=a.chunk))
        w = workload(a.dead_letters, a.machines)
        print(f"planted again in {plant(url, w):.1f} s")
        show("3a. dry run without the fix (all still bad)",
             run(unfixed, url, chunk=a.chunk, dry_run=True))
        show("3b. replay without the fix (all still bad, reasons kept)",
             run(unfixed, url, chunk=a.chunk))


if __name__ == "__main__":
    main()
