"""``python -m oem_retention`` on a paho whose internals are not the ones the fast path expects.

It stands in for a paho release that changed an internal ``ingest/broker.py`` overrides:
``Client._packet_read`` takes a parameter (stock paho, which calls it itself, works on). The
ingester's start-up check must see it and run stock paho. Run as
``python -m tests.integration.paho_drift ingest run``.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho

_packet_read = paho.Client._packet_read


def _packet_read_changed(self: paho.Client, max_packets: int = 1) -> Any:
    del max_packets
    return _packet_read(self)


paho.Client._packet_read = _packet_read_changed  # type: ignore[method-assign]

if __name__ == "__main__":
    from oem_retention.cli import app

    app(prog_name="oem-retention")
