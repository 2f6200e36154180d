"""Stored churn models load without running code; a tampered or old row is refused and replaced.

The rows are written as someone who can write ``churn_models`` could (tests/tampered_models.py);
each payload is shown to be live before it is shown to be refused.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import skops.io as sio
from psycopg import sql

from analytics.churn import ChurnModel, fit_model, training_set
from analytics.churn_models import (
    TRUSTED_TYPES,
    latest_model,
    save_model,
    scoring_model,
    sklearn_version,
)
from analytics.daily import run_daily
from analytics.features import FEATURE_NAMES, features_at
from core import migrate
from demo.world import World
from oem_retention import schema
from tests.integration.conftest import _server_url, rows
from tests.integration.worlds import demo_world_database
from tests.tampered_models import (
    TREE_EDITS,
    flip_byte_in_array,
    pickle_payload,
    skops_payload,
    with_tree_edit,
)

END = date(2026, 5, 1)
ON = date(2026, 1, 1)  # the stored model's training cut-off
DAY = date(2026, 3, 1)  # the daily run's day
Connection = psycopg.AsyncConnection[tuple[Any, ...]]


@pytest.fixture(scope="module")
def world_db(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """test_churn's small world: enough churners for a model when 3 are enough."""
    world = World.generate(11, END, customers=60, machines=200, years=2)
    with demo_world_database(template_db, world, tmp_path_factory.mktemp("world")) as url:
        yield url


@pytest.fixture(scope="module")
def model(world_db: str) -> ChurnModel:
    async def fit() -> ChurnModel:
        async with await psycopg.AsyncConnection.connect(world_db) as conn:
            data = await training_set(conn, cutoff=ON)
        return fit_model(data, cutoff=ON, min_churn_events=3)
    fitted = asyncio.run(fit())
    assert fitted.method_ == "model"
    return fitted


@pytest.fixture
async def wconn(world_db: str) -> AsyncIterator[Connection]:
    async with await psycopg.AsyncConnection.connect(world_db, autocommit=True) as conn:
        yield conn
        await conn.execute("DELETE FROM churn_scores")
        await conn.execute("DELETE FROM churn_models")


async def test_a_stored_model_is_skops_and_scores_as_the_one_trained(
        wconn: Connection, model: ChurnModel) -> None:
    await save_model(wconn, model)
    [(stored_format, blob)] = await rows(wconn, "SELECT format, model FROM churn_models")
    assert stored_format == "skops" and blob[:4] == b"PK\x03\x04"
    assert set(sio.get_untrusted_types(data=blob)) <= set(TRUSTED_TYPES)
    loaded = await latest_model(wconn)
    assert loaded is not None and loaded is not model
    assert (loaded.version_, loaded.trained_until) == (model.version_, ON)
    x = (await features_at(wconn, DAY)).values
    p = model.predict_proba(x)
    assert len(np.unique(p)) > 5
    assert np.array_equal(loaded.predict_proba(x), p)
    assert loaded.explain(x) == model.explain(x)


def _payload_pickle(_: ChurnModel, blob: bytes, marker: Path) -> bytes:
    payload = pickle_payload(marker)
    pickle.loads(payload)  # live: unpickled, it creates the file
    return payload


def _payload_skops(_: ChurnModel, blob: bytes, marker: Path) -> bytes:
    payload = skops_payload(blob, marker)
    sio.loads(payload, trusted=[*TRUSTED_TYPES, "builtins.open"])["version_"].close()  # live
    return payload


def _flipped(_: ChurnModel, blob: bytes, marker: Path) -> bytes:
    return flip_byte_in_array(blob)


def _tree(model: ChurnModel, blob: bytes, marker: Path) -> bytes:
    return with_tree_edit(model, TREE_EDITS["column beyond the features"])


# How the row is changed, the format it is then said to be in, and the warning.
TAMPERED: dict[str, tuple[Callable[[ChurnModel, bytes, Path], bytes], str, str]] = {
    "a pickle that creates a file": (_payload_pickle, "skops", "does not load: BadZipFile"),
    "the same, said to be an old pickle": (_payload_pickle, "pickle", "is stored as a pickle"),
    "skops naming open()": (_payload_skops, "skops", "Untrusted types found"),
    "a changed byte": (_flipped, "skops", "does not load: "),
    "a tree reading beyond the row": (_tree, "skops", "splits outside the tree"),
}


@pytest.mark.parametrize("case", TAMPERED)
async def test_a_tampered_row_runs_nothing_and_the_daily_run_replaces_it(
        wconn: Connection, model: ChurnModel, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, case: str) -> None:
    make, stored_format, warning = TAMPERED[case]
    marker = tmp_path / "ran"
    await save_model(wconn, model)
    [(blob,)] = await rows(wconn, "SELECT model FROM churn_models")
    tampered = make(model, blob, marker)
    marker.unlink(missing_ok=True)
    await wconn.execute("UPDATE churn_models SET model = %s, format = %s",
                        (tampered, stored_format))
    with caplog.at_level(logging.WARNING, logger="analytics.churn_models"):
        assert await latest_model(wconn) is None
        assert warning in caplog.text
        assert "not used, a new one is needed" in caplog.text
        done = await run_daily(wconn, on=DAY, reporting_currency="EUR")
    assert not marker.exists()
    # Trained on the day with the default threshold: this world's history gives the rules.
    assert done.model_trained and done.model.version_ == "rules-v1"
    assert await rows(wconn, "SELECT format, version, trained_until FROM churn_models"
                             " ORDER BY id") == [(stored_format, model.version_, ON),
                                                 ("skops", "rules-v1", DAY)]
    assert await rows(wconn, "SELECT DISTINCT model_version FROM churn_scores") == [
        ("rules-v1",)]
    again = await latest_model(wconn)
    assert again is not None and again.version_ == "rules-v1"
    assert not marker.exists()


@pytest.fixture
def empty_db() -> Iterator[str]:
    """A database with no migrations applied, dropped after."""
    name = f"oemr_test_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _server_url(name)
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


async def test_a_model_pickled_before_migration_018_is_refused_and_retrained(
        empty_db: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # The database as the release before this one left it, with the model it stored.
    shipped = migrate.available()
    monkeypatch.setattr(migrate, "available", lambda: [m for m in shipped if m.version < 18])
    # Nor the definitions of later releases: those of maintenance read migration 021's tables.
    definitions = migrate.load_definitions
    monkeypatch.setattr(migrate, "load_definitions", lambda packages: [
        d for d in definitions(packages) if d.name not in {"services_done", "service_plans"}])
    await asyncio.to_thread(schema.migrate, empty_db)
    old = ChurnModel(trained_until=ON).fit(np.zeros((4, len(FEATURE_NAMES))),
                                          np.array([0, 0, 0, 1]), groups=np.arange(4))
    async with await psycopg.AsyncConnection.connect(empty_db, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO churn_models (version, method, trained_until, horizon_days,"
            " churn_events, training_rows, sklearn_version, model)"
            " VALUES ('rules-v1', 'rules', %s, 180, 1, 4, %s, %s)",
            (ON, sklearn_version(), pickle.dumps(old, protocol=pickle.HIGHEST_PROTOCOL)))
    monkeypatch.undo()
    applied = await asyncio.to_thread(schema.migrate, empty_db)
    assert applied.migrations[0].version == 18
    async with await psycopg.AsyncConnection.connect(empty_db, autocommit=True) as conn:
        assert await rows(conn, "SELECT format FROM churn_models") == [("pickle",)]
        with caplog.at_level(logging.WARNING, logger="analytics.churn_models"):
            assert await latest_model(conn) is None
        assert "(rules-v1) is stored as a pickle, by a release before migration 018, and is" \
               " never loaded (unpickling runs whatever code its bytes name)" in caplog.text
        model, trained = await scoring_model(conn, on=DAY, reporting_currency="EUR")
        assert trained and model.trained_until == DAY
        assert await rows(conn, "SELECT format, trained_until FROM churn_models ORDER BY id"
                          ) == [("pickle", ON), ("skops", DAY)]
        again = await latest_model(conn)
        assert again is not None and again.trained_until == DAY
        # Nothing writes a row without saying what it holds.
        with pytest.raises(psycopg.errors.NotNullViolation):
            await conn.execute(
                "INSERT INTO churn_models (version, method, trained_until, horizon_days,"
                " churn_events, training_rows, sklearn_version, model)"
                " VALUES ('x', 'rules', %s, 180, 0, 0, '1', '')", (ON,))
