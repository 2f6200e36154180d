"""A column type changed under the ingester (a migration widening an id, a restore from another
version) is the server's fault, not the messages': nothing is dead-lettered, nothing acked
before it is stored, and the ingester refuses to start on a layout its binary COPY cannot write.

The ingester packs its COPY rows by hand (core/pgcopy.py): a float8 sent to a numeric column is
refused as invalid binary data (SQLSTATE 22P03, a class that otherwise means bad content), and
an int4 sent to a bigint column as a message too short (08P01).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ingest.models import Decoded, MachineRef, Samples
from ingest.store import Batch, ColumnLayoutError, Message, Store
from tests.integration.conftest import TelemetryFlood, scalar, wait_for

MACHINES = 5
METRICS = 2


def _stored(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM telemetry),"
                           " (SELECT count(*) FROM machine_states)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _set_type(url: str, column: str, type_name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE telemetry ALTER COLUMN {} TYPE {}").format(
            sql.Identifier(column), sql.SQL(type_name)))


def _assert_each_message_once(url: str, floods: list[TelemetryFlood]) -> None:
    """Every message of the floods stored once, with its values; no dead letter."""
    messages = sum(f.messages for f in floods)
    assert _stored(url) == (messages * METRICS, messages)
    # Message i of a flood carries the values i + j/10 for j < METRICS (TelemetryFlood.payload).
    expected = sum(f.messages * (f.messages - 1) / 2 * METRICS
                   + f.messages * METRICS * (METRICS - 1) / 20 for f in floods)
    assert scalar(url, "SELECT sum(value) FROM telemetry") == pytest.approx(expected, rel=1e-12)
    assert scalar(url, "SELECT count(DISTINCT (machine_id, time)) FROM machine_states") == messages
    assert scalar(url, "SELECT count(*) FROM dead_letters") == 0


def test_value_made_numeric_under_a_running_ingester_stalls_it_until_changed_back(
        database_url: str, tenant: str, start_ingester: Any) -> None:
    ingester = start_ingester()
    first = TelemetryFlood(tenant, messages=200, machines=MACHINES, metrics=METRICS).start()
    first.wait_acked()
    wait_for(lambda: _stored(database_url) == (400, 200))
    _set_type(database_url, "value", "numeric")
    later = TelemetryFlood(tenant, messages=300, machines=MACHINES, metrics=METRICS,
                           start_ms=first.start_ms + 10_000).start()
    try:
        later.wait_acked()  # the broker holds them for the ingester's session
        wait_for(lambda: ingester.counters()["db_retries"] >= 3)
        assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0
        assert _stored(database_url) == (400, 200)
        counters = wait_for(lambda: (c := ingester.counters())["db_error"] and c)
        assert not counters["db_ok"]
        for words in ("telemetry.value", "numeric", "double precision"):
            assert words in counters["db_error"], counters["db_error"]
        _set_type(database_url, "value", "double precision")
        wait_for(lambda: _stored(database_url) == (1000, 500))
        _assert_each_message_once(database_url, [first, later])
        assert wait_for(lambda: (c := ingester.counters())["db_ok"] and c)["db_error"] is None
        assert ingester.proc.poll() is None
    finally:
        first.close()
        later.close()


def test_metric_id_made_bigint_refuses_a_restart_and_loses_nothing(
        database_url: str, tenant: str, start_ingester: Any) -> None:
    ingester = start_ingester()
    first = TelemetryFlood(tenant, messages=200, machines=MACHINES, metrics=METRICS).start()
    first.wait_acked()
    wait_for(lambda: _stored(database_url) == (400, 200))
    _set_type(database_url, "metric_id", "bigint")
    later = TelemetryFlood(tenant, messages=300, machines=MACHINES, metrics=METRICS,
                           start_ms=first.start_ms + 10_000).start()
    try:
        later.wait_acked()
        wait_for(lambda: ingester.counters()["db_retries"] >= 3)
        assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0
        assert _stored(database_url) == (400, 200)
        # (kill -9: a SIGTERM would wait out the shutdown grace for the batch it retries.)
        ingester.kill()
        # A restart on the drifted table refuses to start, and says what differs.
        with pytest.raises(RuntimeError, match="ingester exited") as refused:
            ingester.start()
        assert ingester.proc is not None and ingester.proc.returncode == 1
        for words in ("telemetry.metric_id is bigint", "writes integer", "core/pgcopy.py"):
            assert words in str(refused.value), str(refused.value)[-2000:]
        assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0
        _set_type(database_url, "metric_id", "integer")
        ingester.start()
        wait_for(lambda: _stored(database_url) == (1000, 500))
        _assert_each_message_once(database_url, [first, later])
    finally:
        first.close()
        later.close()


# -- the store, in process -----------------------------------------------------------------


def _batch(value: float, *, seconds: int) -> Batch:
    time = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10, seconds=-seconds)
    return Batch(messages=[Message("oem/t/machines/SN-1/telemetry", b"{}", Decoded(samples=[
        Samples(MachineRef("t", "SN-1"), time, {"temp": value}, "running")]))])


async def test_a_drifted_layout_is_refused_on_connect_naming_each_column(
        database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE machine_states ALTER COLUMN state TYPE text")
        conn.execute("ALTER TABLE telemetry ADD COLUMN quality smallint NOT NULL")
        # Filled by the server when the COPY leaves them out: no problem.
        conn.execute("ALTER TABLE telemetry ADD COLUMN source text NOT NULL DEFAULT 'mqtt',"
                     " ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY, ADD COLUMN note text")
    store = Store(database_url, late_after=timedelta(hours=1))
    with pytest.raises(ColumnLayoutError) as refused:
        await store.connect()
    message = str(refused.value)
    for problem in (
            "machine_states.state is text; the binary COPY writes machine_state (core/pgcopy.py)",
            "telemetry.quality (smallint) is NOT NULL without a default, and the binary COPY"
            " does not write it (core/pgcopy.py)"):
        assert problem in message, message
    assert message.count("(core/pgcopy.py)") == 2, message
    with pytest.raises(ColumnLayoutError):
        await store.write(_batch(1.5, seconds=0))
    assert scalar(database_url, "SELECT count(*) FROM telemetry") == 0
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0


async def test_a_state_enum_without_a_state_the_ingester_writes_is_refused(
        database_url: str) -> None:
    # A new machine_state enum of the same name, without 'off' (an enum's labels cannot be
    # dropped in place): every message reporting 'off' would fail.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TYPE machine_state RENAME TO machine_state_old")
        conn.execute("CREATE TYPE machine_state AS ENUM ('running', 'idle', 'fault')")
        conn.execute("ALTER TABLE machine_states ALTER COLUMN state TYPE machine_state"
                     " USING state::text::machine_state")
    store = Store(database_url, late_after=timedelta(hours=1))
    with pytest.raises(ColumnLayoutError, match=(
            r"machine_states\.state has no label 'off'; the ingester writes fault, idle, off,"
            r" running$")):
        await store.connect()


@pytest.mark.parametrize(("value", "sqlstate"), [
    # float8 0.1 read as numeric: its third 16-bit word (0x9999) is no valid sign.
    (0.1, "22P03"),
    # float8 0.5: a valid header asking for 0x3fe0 digits the field does not hold.
    (0.5, "08P01"),
])
async def test_rows_the_server_cannot_read_are_a_layout_error_not_poison(
        database_url: str, value: float, sqlstate: str) -> None:
    store = Store(database_url, late_after=timedelta(hours=1))
    await store.write(_batch(1.5, seconds=0))
    _set_type(database_url, "value", "numeric")
    with pytest.raises(ColumnLayoutError, match=f"could not read the rows.*{sqlstate}"):
        await store.write(_batch(value, seconds=1))  # on the connection opened before
    with pytest.raises(ColumnLayoutError, match=r"telemetry\.value is numeric"):
        await store.write(_batch(value, seconds=1))  # a new connection checks first
    _set_type(database_url, "value", "double precision")
    written = await store.write(_batch(value, seconds=1))
    await store.close()
    assert (written.telemetry_rows, written.state_rows, written.dead_letters) == (1, 1, 0)
    assert scalar(database_url, "SELECT array_agg(value ORDER BY time) FROM telemetry") == [
        1.5, value]
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0
