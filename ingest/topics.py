"""The topic contract (docs/mqtt.md): which topic carries what, and whose machine it is."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from ingest.models import Rejected

JSON_ROOT = "oem"
SPARKPLUG_ROOT = "spBv1.0"
SPARKPLUG_TYPES = frozenset(
    {"NBIRTH", "NDEATH", "NDATA", "NCMD", "DBIRTH", "DDEATH", "DDATA", "DCMD"}
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$")
MAX_SPARKPLUG_ID = 64  # group, edge node and device ids are keys of indexed columns


@dataclass(frozen=True, slots=True)
class JsonTopic:
    """``oem/<tenant>/machines/<serial>/telemetry|events``."""

    tenant: str
    serial: str
    kind: Literal["telemetry", "events"]


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """``spBv1.0/<group>/<type>/<edge node>[/<device>]`` (STATE topics have group ``STATE``)."""

    group: str
    message_type: str
    edge_node: str
    device: str | None


@lru_cache(maxsize=65536)  # a fleet repeats its topics; bad ones raise and are not cached
def parse(topic: str) -> JsonTopic | SparkplugTopic:
    """Route a topic, or reject it with the reason a person needs to fix the publisher."""
    levels = topic.split("/")
    if levels[0] == JSON_ROOT:
        return _json_topic(levels, topic)
    if levels[0] == SPARKPLUG_ROOT:
        return _sparkplug_topic(levels, topic)
    raise Rejected(f"unknown topic {topic!r}: expected oem/<tenant>/machines/<serial>/"
                   "telemetry|events or spBv1.0/...")


def _json_topic(levels: list[str], topic: str) -> JsonTopic:
    if len(levels) != 5 or levels[2] != "machines" or levels[4] not in ("telemetry", "events"):
        raise Rejected(
            f"unknown topic {topic!r}: expected oem/<tenant>/machines/<serial>/telemetry|events"
        )
    tenant, serial, kind = levels[1], levels[3], levels[4]
    for what, value in (("tenant", tenant), ("serial", serial)):
        if not _NAME.match(value):
            raise Rejected(
                f"{what} {value!r} in topic {topic!r} is not a valid name: 1-64 of letters,"
                " digits and . _ : -, starting with a letter or digit"
            )
    return JsonTopic(tenant, serial, "telemetry" if kind == "telemetry" else "events")


def _sparkplug_topic(levels: list[str], topic: str) -> SparkplugTopic:
    if len(levels) == 3 and levels[1] == "STATE":
        return SparkplugTopic("STATE", "STATE", levels[2], None)
    if len(levels) not in (4, 5) or levels[2] not in SPARKPLUG_TYPES:
        raise Rejected(
            f"not a Sparkplug B topic: {topic!r}; expected"
            " spBv1.0/<group>/<NBIRTH|NDATA|NDEATH|DBIRTH|DDATA|DDEATH>/<edge node>[/<device>]"
        )
    device_level = levels[2].startswith("D")
    if device_level != (len(levels) == 5):
        raise Rejected(f"Sparkplug topic {topic!r}: {levels[2]} "
                       + ("needs a device id" if device_level else "takes no device id"))
    if not all(levels[1:]):
        raise Rejected(f"Sparkplug topic {topic!r} has an empty level")
    for what, value in (("group id", levels[1]), ("edge node id", levels[3]),
                        ("device id", levels[4] if device_level else "")):
        if len(value) > MAX_SPARKPLUG_ID:
            raise Rejected(f"Sparkplug topic {topic[:200]!r}: {what} {value[:40]!r}... is"
                           f" {len(value)} characters long; at most {MAX_SPARKPLUG_ID}")
    return SparkplugTopic(levels[1], levels[2], levels[3], levels[4] if device_level else None)
