"""The demo world: a believable machine builder with planted churn and its ground truth.

``World.generate`` draws it (deterministic by seed, end date and size), ``write_world`` writes
it as the files connector's CSVs plus truth.json and machines.json (``generate_world`` both,
``world_once`` once per directory), ``load_history`` bulk-loads its telemetry history
(``load_world_history`` from a world directory). ``oem-retention demo`` is their command line;
docs/demo-world.md says what is planted and how truth.json reads.
"""

from demo.world.files import (
    Generated,
    generate_world,
    read_world,
    truth,
    world_once,
    world_size,
    write_world,
)
from demo.world.generator import SIZES, MachinePlan, World, WorldSize
from demo.world.history import HistoryExistsError, Loaded, load_history, load_world_history

__all__ = ["SIZES", "Generated", "HistoryExistsError", "Loaded", "MachinePlan", "World",
           "WorldSize", "generate_world", "load_history", "load_world_history", "read_world",
           "truth", "world_once", "world_size", "write_world"]
