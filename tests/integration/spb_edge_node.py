"""A Sparkplug B edge node built with pysparkplug (a library we did not write), for interop tests.

Runs in its own venv (``.venv-spb``: pysparkplug 0.6.1 needs paho-mqtt < 2), never imports our
code. Usage::

    spb_edge_node.py HOST PORT GROUP NODE DEVICE SPEC

``SPEC`` is JSON: ``{"birth_ms": int, "data_ms": int, "metrics": [{"name", "datatype" (a
pysparkplug DataType name), "alias", "birth", "data"}]}``. The node connects (NBIRTH with bdSeq,
then the device's DBIRTH with the ``birth`` values), publishes one DDATA with the ``data``
values, waits until the broker has routed each of them back to it, prints ``published`` and
then reads one command from stdin: ``disconnect`` (pysparkplug's clean disconnect, which
publishes an NDEATH) or ``die`` (the process ends without a DISCONNECT, so the broker publishes
the node's will NDEATH).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from pysparkplug import (
    Client,
    DataType,
    Device,
    EdgeNode,
    MessageType,
    Metric,
    QoS,
    Topic,
    get_current_timestamp,
)

TIMEOUT_S = 15


def _metrics(spec: dict[str, Any], phase: str) -> list[Metric]:
    timestamp = spec[f"{phase}_ms"]
    return [Metric(timestamp=timestamp, name=m["name"], datatype=DataType[m["datatype"]],
                   value=m[phase], alias=m.get("alias")) for m in spec["metrics"]]


def _echo(node: EdgeNode, message_type: MessageType, device: str) -> threading.Event:
    """Set when the broker routes our own message of ``message_type`` back to us."""
    seen = threading.Event()
    topic = Topic(message_type=message_type, group_id=node.group_id,
                  edge_node_id=node.edge_node_id, device_id=device)
    node.subscribe(topic, QoS.AT_MOST_ONCE, lambda _node, _message: seen.set())
    return seen


def main(argv: list[str]) -> int:
    host, port, group, node_id, device_id, spec_json = argv
    spec = json.loads(spec_json)
    rebirth = Metric(timestamp=get_current_timestamp(), name="Node Control/Rebirth",
                     datatype=DataType.BOOLEAN, value=False)
    node = EdgeNode(group, node_id, metrics=[rebirth],
                    client=Client(client_id=f"spb-{node_id}-{os.getpid()}"),
                    cmd_callback=lambda _node, message: print(f"command {message.topic}",
                                                              flush=True))
    node.register(Device(device_id, metrics=_metrics(spec, "birth")))
    # Subscribed before connecting: pysparkplug subscribes again, then publishes the births.
    dbirth = _echo(node, MessageType.DBIRTH, device_id)
    ddata = _echo(node, MessageType.DDATA, device_id)
    node.connect(host, port=int(port), blocking=False)
    if not dbirth.wait(TIMEOUT_S):
        print("no DBIRTH came back", file=sys.stderr)
        return 1
    node.update_device(device_id, _metrics(spec, "data"))
    if not ddata.wait(TIMEOUT_S):
        print("no DDATA came back", file=sys.stderr)
        return 1
    print("published", flush=True)
    command = sys.stdin.readline().strip()
    if command == "die":
        os._exit(0)  # no DISCONNECT: the broker publishes our will
    if command == "disconnect":
        node.disconnect()
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

