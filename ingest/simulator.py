"""A fleet of simulated machines publishing the JSON contract, for the demo and for load.

Each machine reports ten metrics and its state every ``interval`` seconds at QoS 1; its operating
hours grow while it runs; now and then it raises a fault or logs a maintenance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

logger = logging.getLogger(__name__)

PROCESS_METRICS = ("spindle_speed_rpm", "spindle_load_pct", "coolant_temp_c", "oil_pressure_bar",
                   "vibration_mm_s", "power_kw", "cycle_time_s", "parts_produced",
                   "axis_x_temp_c")


@dataclass(slots=True)
class _Machine:
    serial: str
    hours: float
    state: str
    parts: int


class FleetSimulator:
    """Publishes telemetry of ``machines`` machines of one tenant."""

    def __init__(self, *, host: str, port: int, tenant: str = "demo", machines: int = 50,
                 interval: float = 1.0, seed: int = 7, client_id: str = "oemr-fleet-sim") -> None:
        self._rng = random.Random(seed)
        self._tenant = tenant
        self._interval = interval
        self._fleet = [
            _Machine(f"M{n:06d}", self._rng.uniform(100, 20000), "running", 0)
            for n in range(machines)
        ]
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=paho.MQTTv5)
        self._host, self._port = host, port
        self.published = 0

    async def run(self, *, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set."""
        self._client.connect(self._host, self._port)
        self._client.loop_start()
        try:
            while not stop.is_set():
                started = time.monotonic()
                for machine in self._fleet:
                    self._tick(machine)
                elapsed = time.monotonic() - started
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, self._interval - elapsed))
        finally:
            self._client.loop_stop()
            self._client.disconnect()

    def _tick(self, m: _Machine) -> None:
        rng = self._rng
        now_ms = int(time.time() * 1000)
        if rng.random() < 0.01:
            m.state = rng.choice(["running", "running", "idle", "fault", "off"])
        running = m.state == "running"
        if running:
            m.hours += self._interval / 3600
            m.parts += rng.randint(0, 2)
        metrics = {
            "operating_hours": round(m.hours, 4),
            "spindle_speed_rpm": rng.gauss(8000, 300) if running else 0.0,
            "spindle_load_pct": rng.uniform(20, 90) if running else 0.0,
            "coolant_temp_c": rng.gauss(24, 1.5),
            "oil_pressure_bar": rng.gauss(6, 0.3),
            "vibration_mm_s": abs(rng.gauss(2.5, 0.8)),
            "power_kw": rng.uniform(8, 25) if running else rng.uniform(0.2, 1),
            "cycle_time_s": rng.gauss(42, 3),
            "parts_produced": m.parts,
            "axis_x_temp_c": rng.gauss(31, 2),
        }
        base = f"oem/{self._tenant}/machines/{m.serial}"
        self._publish(f"{base}/telemetry", {"ts": now_ms, "metrics": metrics, "state": m.state})
        if m.state == "fault" and rng.random() < 0.2:
            self._publish(f"{base}/events", {"ts": now_ms, "type": "fault",
                                             "code": f"E{rng.randint(100, 140)}"})
        elif rng.random() < 0.0005:
            self._publish(f"{base}/events", {"ts": now_ms, "type": "maintenance",
                                             "code": "PM-500h", "technician": "field service"})

    def _publish(self, topic: str, body: dict[str, object]) -> None:
        self._client.publish(topic, orjson.dumps(body), qos=1)
        self.published += 1
