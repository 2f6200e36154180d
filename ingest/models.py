"""What the decoders make of a message: plain values, named, not yet bound to database ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

MachineStateName = Literal["running", "idle", "fault", "off"]
MACHINE_STATES: frozenset[str] = frozenset({"running", "idle", "fault", "off"})
EVENT_KINDS: frozenset[str] = frozenset(
    {"fault", "fault_cleared", "alarm", "maintenance", "part_replaced"}
)


class Rejected(Exception):  # noqa: N818  (a verdict on a message, not a program error)
    """A message that cannot be stored; ``reason`` is written to dead_letters for a person.

    ``keep`` is what the message still taught us and is stored beside the dead letter (a
    Sparkplug seq gap found in a message whose data could not be resolved).
    """

    def __init__(self, reason: str, *, keep: Decoded | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.keep = keep


@dataclass(frozen=True, slots=True)
class MachineRef:
    """How a message names its machine: a serial, and for Sparkplug its namespace position."""

    tenant: str
    serial: str
    protocol: Literal["json", "sparkplug"] = "json"
    spb_group: str | None = None
    spb_edge_node: str | None = None
    spb_device: str = ""


@dataclass(slots=True)  # not frozen: built for every message, and frozen init is slow
class Samples:
    """Numeric samples of one machine at one time."""

    machine: MachineRef
    time: datetime
    values: dict[str, float]
    state: MachineStateName | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A service, alarm or connectivity event of one machine."""

    machine: MachineRef
    time: datetime
    kind: str
    code: str | None
    key: str
    payload: bytes  # JSON text, stored as jsonb


@dataclass(frozen=True, slots=True)
class Gap:
    """Sparkplug messages of an edge node were lost (or came without a birth)."""

    spb_group: str
    spb_edge_node: str
    cause: Literal["seq_gap", "no_birth"]
    expected_seq: int | None
    received_seq: int
    missing: int | None
    rebirth_requested: bool


@dataclass(slots=True)
class Decoded:
    """Everything one message asks to store."""

    samples: list[Samples] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    # Sparkplug BIRTH/DEATH: machine -> online (True) or offline (False), at a time.
    connectivity: list[tuple[MachineRef, bool, datetime]] = field(default_factory=list)
