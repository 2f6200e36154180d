"""A fleet of simulated machines publishing the JSON contract, for the demo and for load.

Each machine reports ten metrics and its state every ``interval`` seconds at QoS 1; its operating
hours grow while it runs; now and then it raises a fault or logs a maintenance.

The fleet is made up (``machines`` serials M000000...), or read from a demo world's
machines.json (``load_fleet``): then it publishes for those serials, each counter continuing from
the operating hours its history ended with and running as much as the machine was used lately.
``run_fleet`` publishes until SIGINT or SIGTERM (``oem-retention demo fleet``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

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
    utilisation: float | None = None  # share of the time running; None: the made-up fleet


@dataclass(frozen=True, slots=True)
class FleetMachine:
    """A machine to simulate: its serial, counter and how much it runs (0..1)."""

    serial: str
    operating_hours: float
    utilisation: float


def load_fleet(path: Path) -> list[FleetMachine]:
    """The machines of a demo world's machines.json that still send telemetry."""
    machines = orjson.loads(path.read_bytes())
    return [FleetMachine(m["serial"], float(m["operating_hours"]), float(m["utilisation"]))
            for m in machines if not m.get("silent", False)]


class FleetSimulator:
    """Publishes telemetry of ``machines`` machines of one tenant, or of ``fleet``."""

    def __init__(self, *, host: str, port: int, tenant: str = "demo", machines: int = 50,
                 interval: float = 1.0, seed: int = 7, client_id: str = "oemr-fleet-sim",
                 fleet: list[FleetMachine] | None = None) -> None:
        self._rng = random.Random(seed)
        self._tenant = tenant
        self._interval = interval
        if fleet is None:
            self._fleet = [
                _Machine(f"M{n:06d}", self._rng.uniform(100, 20000), "running", 0)
                for n in range(machines)
            ]
        else:
            self._fleet = [_Machine(m.serial, m.operating_hours, "idle", 0, m.utilisation)
                           for m in fleet]
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
            if m.utilisation is None:
                m.state = rng.choice(["running", "running", "idle", "fault", "off"])
            else:
                draw = rng.random()
                m.state = ("running" if draw < m.utilisation else "fault" if draw > 0.995
                           else "idle")
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


def run_fleet(*, host: str, port: int, tenant: str = "demo", machines: int = 50,
              interval: float = 1.0, seed: int = 7, fleet: Path | None = None) -> int:
    """Publish a fleet's telemetry until SIGINT or SIGTERM; the messages published.

    ``fleet``: a demo world's machines.json, whose machines are published instead of
    ``machines`` made-up ones.
    """
    chosen = None if fleet is None else load_fleet(fleet)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sim = FleetSimulator(host=host, port=port, tenant=tenant, machines=machines,
                             interval=interval, seed=seed, fleet=chosen)
        await sim.run(stop=stop)
        return sim.published

    return asyncio.run(main())
