"""A world on disk: the files connector's CSVs, exchange rates, truth.json and machines.json.

The CSVs follow docs/erp-files.md (one file per entity, header = the model's fields, dates
``YYYY-MM-DD``, times ISO 8601 with ``Z``, flags ``true``/``false``, a point as decimal
separator, an absent value an empty cell), so ``erp_connectors.files.sync_files`` reads the
directory as it would a machine builder's export. ``read_world`` draws the world again from the
parameters in truth.json (generation is deterministic) and checks it against the files' serials.
``generate_world`` draws and writes one; ``world_once`` keeps one in a directory across runs.
"""

from __future__ import annotations

import csv
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from demo.world.generator import (
    GENERATOR_VERSION,
    RENEWAL_ALPHA,
    RENEWAL_BETA,
    SIZES,
    World,
    WorldSize,
)
from demo.world.plan import CAUSES
from erp_connectors.files import ENTITY_MODELS

TENANT = "demo"
TRUTH = "truth.json"
MACHINES = "machines.json"
RATES = "exchange_rates.csv"


def cell(value: Any) -> str:
    """A value as the files contract writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date | Decimal | int | str):
        return str(value)
    raise TypeError(f"no file form for {type(value).__name__}")


def write_world(world: World, directory: Path) -> dict[str, int]:
    """Write the world's files into ``directory``; returns rows written per file."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for entity, model in ENTITY_MODELS.items():
        columns = list(model.model_fields)
        records = world.records[entity]
        with (directory / f"{entity}.csv").open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([cell(r.get(c)) for c in columns] for r in records)
        written[f"{entity}.csv"] = len(records)
    with (directory / RATES).open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["currency", "valid_from", "rate"])
        writer.writerows([currency, day.isoformat(), str(rate)]
                         for currency, day, rate in world.exchange_rates)
    written[RATES] = len(world.exchange_rates)
    (directory / TRUTH).write_bytes(orjson.dumps(truth(world), option=orjson.OPT_INDENT_2))
    machines = machine_list(world)
    (directory / MACHINES).write_bytes(orjson.dumps(machines, option=orjson.OPT_INDENT_2))
    written[TRUTH] = len(world.plans)
    written[MACHINES] = len(machines)
    return written


def truth(world: World) -> dict[str, Any]:
    """The ground truth: who churns, when, why, and how early it showed."""
    customers = {}
    for ext, plan in world.plans.items():
        w = plan.warning
        customers[ext] = {
            "churned": plan.churned,
            "churn_date": plan.churn_date.isoformat() if plan.churn_date else None,
            "causes": list(w.causes) if w else [],
            "warning_start": w.start.isoformat() if w else None,
            "lead_days": (plan.churn_date - w.start).days if w and plan.churn_date else None,
            "silent_churn": plan.silent_churn,
            "false_alarm": plan.false_alarm,
            "false_alarm_recovered_on": (w.recovered_on.isoformat()
                                         if w and w.recovered_on else None),
            "former": plan.churn_date is not None and plan.churn_date < world.window_start,
            "churn_probability": (None if plan.churn_probability is None
                                  else round(plan.churn_probability, 6)),
            "traits": {"shifts": plan.traits.shifts,
                       "parts_capture": round(plan.traits.parts_capture, 3),
                       "maintenance_adherence": round(plan.traits.adherence, 3),
                       "pay_delay_days": round(plan.traits.pay_delay_days, 1),
                       "survey_response_rate": round(plan.traits.response_rate, 3),
                       "satisfaction": round(plan.traits.satisfaction, 2),
                       "auto_renew": plan.traits.auto_renew},
        }
    return {
        "world": {"seed": world.seed, "end_date": world.end_date.isoformat(),
                  "window_start": world.window_start.isoformat(),
                  "customers": world.size.customers, "machines": world.size.machines,
                  "years": world.size.years, "tenant": TENANT,
                  "generator_version": GENERATOR_VERSION,
                  "renewals": {"alpha": RENEWAL_ALPHA, "beta": RENEWAL_BETA}},
        "definitions": {
            "churn_date": "end of the last contract term that was not renewed: every service"
                          " contract of the customer lapsed on it",
            "warning_start": "first day the causes begin to show (they ramp up to the churn"
                             " date)",
            "lead_days": "churn_date - warning_start",
            "causes": list(CAUSES),
            "silent_churn": "churned with no warning at all",
            "false_alarm": "showed warnings (causes, warning_start) but did not churn",
            "former": "lost before window_start: a record and its expired contracts only",
            "churn_probability": "the customer's chance of letting its contracts lapse at a"
                                 " renewal in the window, drawn from beta(alpha, beta + n)"
                                 " after n renewals before it (world.renewals)",
        },
        "customers": customers,
    }


def machine_list(world: World) -> list[dict[str, Any]]:
    """What the live simulator needs per machine: where its counter stands at the end."""
    machines = []
    for m in world.machines:
        recent = m.weekly_hours[-5:-1] or m.weekly_hours or [0.0]
        machines.append({
            "serial": m.serial, "model": m.model, "tenant": TENANT,
            "customer_external_id": m.customer_external_id,
            "commissioned_on": m.commissioned_on.isoformat(),
            "operating_hours": m.hours_at_end,
            "utilisation": round(sum(recent) / len(recent) / 168, 4),
            "silent": m.silent_from is not None and m.silent_from < world.end_date,
        })
    return machines


def read_params(directory: Path) -> dict[str, Any]:
    """The parameters a world directory was generated with."""
    path = directory / TRUTH
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {directory} a generated world?")
    params: dict[str, Any] = orjson.loads(path.read_bytes())["world"]
    return params


def read_world(directory: Path) -> World:
    """The world in ``directory``, drawn again from its parameters and checked."""
    params = read_params(directory)
    if params["generator_version"] != GENERATOR_VERSION:
        raise ValueError(f"{directory} was written by generator version"
                         f" {params['generator_version']}, this is {GENERATOR_VERSION}:"
                         " generate it again")
    world = World.generate(params["seed"], date.fromisoformat(params["end_date"]),
                           customers=params["customers"], machines=params["machines"],
                           years=params["years"])
    on_disk = [m["serial"] for m in orjson.loads((directory / MACHINES).read_bytes())]
    if on_disk != [m.serial for m in world.machines]:
        raise ValueError(f"{directory / MACHINES} does not match its parameters")
    return world


def world_size(preset: str, *, customers: int | None = None, machines: int | None = None,
               years: int | None = None) -> WorldSize:
    """A preset's size (small, standard, large) with any of its numbers overridden."""
    if preset not in SIZES:
        raise ValueError(f"size {preset!r} is not one of {', '.join(SIZES)}")
    base = SIZES[preset]
    return WorldSize(customers or base.customers, machines or base.machines,
                     years or base.years)


@dataclass(frozen=True, slots=True)
class Generated:
    """A world on disk: where, what it was drawn with, and what drawing it took."""

    directory: Path
    seed: int
    size: WorldSize
    end_date: date
    churners: int
    rows: int  # rows written, 0 when reused
    seconds: float
    reused: bool = False


def generate_world(directory: Path, *, seed: int, size: WorldSize,
                   end_date: date | None = None) -> Generated:
    """Draw a world (its today ``end_date``, default today in UTC) and write it into ``directory``.

    Raises ``ValueError`` for a size too small for a world (fewer than 10 customers, fewer
    machines than customers, no year).
    """
    end = end_date or datetime.now(UTC).date()
    started = time.perf_counter()
    world = World.generate(seed, end, customers=size.customers, machines=size.machines,
                           years=size.years)
    written = write_world(world, directory)
    # Churners of the window; the former customers, lost before it, are not churn to find.
    churners = sum(p.churn_date is not None and p.churn_date >= world.window_start
                   for p in world.plans.values())
    return Generated(directory, seed, size, end, churners, sum(written.values()),
                     time.perf_counter() - started)


def world_once(directory: Path, *, seed: int, size: WorldSize,
               end_date: date | None = None) -> Generated:
    """The world in ``directory``, generated the first time and reused after.

    It is written into ``<directory>.tmp`` and renamed when complete, so an interrupted run
    leaves no half world behind. A world already there must be the one asked for (seed, size,
    generator version, and the end date if one is given): else ``ValueError`` says what differs.
    """
    if (directory / TRUTH).exists():
        params = read_params(directory)
        asked: dict[str, Any] = {"seed": seed, "customers": size.customers,
                                 "machines": size.machines, "years": size.years,
                                 "generator_version": GENERATOR_VERSION}
        if end_date is not None:
            asked["end_date"] = end_date.isoformat()
        differs = [f"{k} {params.get(k)} (asked: {v})" for k, v in asked.items()
                   if params.get(k) != v]
        if differs:
            raise ValueError(f"{directory} holds another world: {', '.join(differs)}; remove"
                             " it (and its history from the database) or choose another"
                             " directory")
        customers = orjson.loads((directory / TRUTH).read_bytes())["customers"]
        return Generated(directory, seed, size, date.fromisoformat(params["end_date"]),
                         sum(1 for c in customers.values()
                             if c["churned"] and not c.get("former")), 0, 0.0,
                         reused=True)
    partial = directory.with_name(f"{directory.name}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    generated = generate_world(partial, seed=seed, size=size, end_date=end_date)
    partial.rename(directory)
    return replace(generated, directory=directory)
