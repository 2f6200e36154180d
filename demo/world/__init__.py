"""The demo world: a believable machine builder with planted churn and its ground truth.

``World.generate`` draws it (deterministic by seed, end date and size), ``write_world`` writes
it as the files connector's CSVs plus truth.json and machines.json, ``load_history`` bulk-loads
its telemetry history. docs/demo-world.md says what is planted and how truth.json reads.
"""

from demo.world.files import read_world, truth, write_world
from demo.world.generator import SIZES, MachinePlan, World, WorldSize
from demo.world.history import HistoryExistsError, Loaded, load_history

__all__ = ["SIZES", "HistoryExistsError", "Loaded", "MachinePlan", "World", "WorldSize",
           "load_history", "read_world", "truth", "write_world"]
