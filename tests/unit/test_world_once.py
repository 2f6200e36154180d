"""A world kept in a directory across runs (what `demo up` and deploy/local/run.sh rely on)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson
import pytest

from demo.world import World, WorldSize, world_once, world_size
from demo.world.files import MACHINES, TRUTH

END = date(2026, 5, 1)


def test_sizes_are_presets_with_overrides() -> None:
    assert world_size("small") == WorldSize(120, 500, 2)
    assert world_size("large", machines=4000) == WorldSize(1000, 4000, 3)
    with pytest.raises(ValueError, match="size 'huge' is not one of small, standard, large"):
        world_size("huge")


def test_a_world_is_generated_once_then_reused(tmp_path: Path) -> None:
    directory = tmp_path / "world-small"
    size = world_size("small", customers=12, machines=20, years=1)
    # What an interrupted run left behind is not taken for a world.
    (tmp_path / "world-small.tmp").mkdir()
    (tmp_path / "world-small.tmp" / "customers.csv").write_text("half")
    first = world_once(directory, seed=3, size=size, end_date=END)
    assert not first.reused
    assert not (tmp_path / "world-small.tmp").exists()
    world = World.generate(3, END, customers=12, machines=20, years=1)
    # The window's churners: the former customers were lost before it.
    assert first.churners == sum(p.churned and p.churn_date is not None
                                 and p.churn_date >= world.window_start
                                 for p in world.plans.values())
    assert [m["serial"] for m in orjson.loads((directory / MACHINES).read_bytes())] == [
        m.serial for m in world.machines]
    written = (directory / TRUTH).stat().st_mtime_ns
    # Later runs (without an end date: the day it was first made) take it as it is.
    again = world_once(directory, seed=3, size=size)
    assert again.reused
    assert (again.end_date, again.churners) == (END, first.churners)
    assert (directory / TRUTH).stat().st_mtime_ns == written


def test_another_world_in_the_directory_is_refused_with_what_differs(tmp_path: Path) -> None:
    size = world_size("small", customers=12, machines=20, years=1)
    world_once(tmp_path / "w", seed=3, size=size, end_date=END)
    with pytest.raises(ValueError, match=r"holds another world: seed 3 \(asked: 4\), machines 20"
                                         r" \(asked: 30\); remove it"):
        world_once(tmp_path / "w", seed=4, size=world_size("small", customers=12, machines=30,
                                                          years=1))
