"""``python -m demo.world generate|load-history``: the demo world for deploy scripts.

python -m demo.world generate --seed 7 --size standard --out DIR
python -m demo.world load-history --world DIR      # into OEMR_DATABASE_URL
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

from core.settings import Settings
from demo.world.files import read_params, read_world, write_world
from demo.world.generator import SIZES, World
from demo.world.history import HistoryExistsError, load_history


def _say(line: str) -> None:
    print(line, flush=True)


def _generate(args: argparse.Namespace) -> int:
    size = SIZES[args.size]
    customers = args.customers or size.customers
    machines = args.machines or size.machines
    years = args.years or size.years
    end = date.fromisoformat(args.end_date) if args.end_date else datetime.now(UTC).date()
    started = time.perf_counter()
    world = World.generate(args.seed, end, customers=customers, machines=machines, years=years)
    generated = time.perf_counter() - started
    written = write_world(world, args.out)
    churners = sum(p.churned for p in world.plans.values())
    _say(f"world: seed {args.seed}, {customers} customers, {machines} machines, {years} years"
         f" to {end} ({churners} churners), generated in {generated:.1f}s")
    _say(f"world: wrote {sum(written.values()):,} rows into {args.out} in"
         f" {time.perf_counter() - started:.1f}s")
    return 0


def _load_history(args: argparse.Namespace) -> int:
    url = args.database_url or Settings().database_url
    started = time.perf_counter()
    params = read_params(args.world)
    _say(f"history: drawing world seed {params['seed']} to {params['end_date']} again")
    world = read_world(args.world)
    try:
        loaded = load_history(url, world, process_days=args.process_days, progress=_say)
    except HistoryExistsError as exc:
        _say(f"history: {exc}; nothing loaded")
        return 0
    _say(f"history: {loaded.machines} machines, {loaded.telemetry_rows:,} telemetry,"
         f" {loaded.state_rows:,} state, {loaded.event_rows:,} event rows in"
         f" {loaded.seconds:.1f}s ({loaded.rows_per_second:,.0f} rows/s);"
         f" {time.perf_counter() - started:.1f}s in all")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI."""
    parser = argparse.ArgumentParser(prog="python -m demo.world")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write a world's files, truth and machines")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--size", choices=sorted(SIZES), default="standard")
    gen.add_argument("--customers", type=int)
    gen.add_argument("--machines", type=int)
    gen.add_argument("--years", type=int)
    gen.add_argument("--end-date", help="YYYY-MM-DD, the world's today (default: today, UTC)")
    gen.add_argument("--out", type=Path, required=True)
    gen.set_defaults(run=_generate)
    hist = commands.add_parser("load-history", help="bulk-load a world's telemetry history")
    hist.add_argument("--world", type=Path, required=True)
    hist.add_argument("--database-url", help="default: OEMR_DATABASE_URL")
    hist.add_argument("--process-days", type=int, default=90)
    hist.set_defaults(run=_load_history)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
