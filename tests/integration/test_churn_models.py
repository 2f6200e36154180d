"""Trained churn models stored in the database: round trip, the newest, refusals, daily scoring."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
import sklearn

from analytics.churn import (
    ChurnModel,
    fit_model,
    train,
    training_set,
)
from analytics.churn_models import (
    KEEP,
    latest_model,
    newest_trained_until,
    save_model,
    scoring_model,
)
from analytics.daily import run_daily
from analytics.features import FEATURE_NAMES, features_at
from demo.world import World
from tests.integration.conftest import rows
from tests.integration.worlds import demo_world_database

END = date(2026, 5, 1)
ON = date(2026, 1, 1)  # the models' training cut-off
Connection = psycopg.AsyncConnection[tuple[Any, ...]]


@pytest.fixture(scope="module")
def world_db(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """test_churn's small world: too few churners for the default threshold, enough for 3."""
    world = World.generate(11, END, customers=60, machines=200, years=2)
    with demo_world_database(template_db, world, tmp_path_factory.mktemp("world")) as url:
        yield url


@pytest.fixture(scope="module")
def models(world_db: str) -> dict[str, ChurnModel]:
    """Both methods fitted on the world's history up to ON (one read of the training set)."""
    async def fit() -> dict[str, ChurnModel]:
        async with await psycopg.AsyncConnection.connect(world_db) as conn:
            data = await training_set(conn, cutoff=ON)
        return {"model": fit_model(data, cutoff=ON, min_churn_events=3),
                "rules": fit_model(data, cutoff=ON)}
    fitted = asyncio.run(fit())
    assert {m: fitted[m].method_ for m in fitted} == {"model": "model", "rules": "rules"}
    return fitted


@pytest.fixture
async def wconn(world_db: str) -> AsyncIterator[Connection]:
    async with await psycopg.AsyncConnection.connect(world_db, autocommit=True) as conn:
        yield conn
        await conn.execute("DELETE FROM churn_scores")
        await conn.execute("DELETE FROM churn_models")


@pytest.mark.parametrize("method", ["model", "rules"])
async def test_a_stored_model_scores_as_the_one_trained(
        wconn: Connection, models: dict[str, ChurnModel], method: str) -> None:
    model = models[method]
    model_id = await save_model(wconn, model)
    data = await training_set(wconn, cutoff=ON)
    assert len(data.y) > 0
    assert await rows(wconn, "SELECT id, version, method, trained_until, horizon_days,"
                             " churn_events, training_rows, sklearn_version FROM churn_models"
                      ) == [(model_id, model.version_, method, ON, 180, model.churn_events_,
                             len(data.y), sklearn.__version__)]
    loaded = await latest_model(wconn)
    assert loaded is not None and loaded is not model
    assert (loaded.method_, loaded.version_, loaded.trained_until, loaded.churn_events_,
            loaded.horizon_days) == (method, model.version_, ON, model.churn_events_, 180)
    assert np.array_equal(loaded.baseline_, model.baseline_, equal_nan=True)
    # Scored on a later day than it was trained on, as the daily job does.
    x = (await features_at(wconn, date(2026, 3, 1))).values
    p = model.predict_proba(x)
    assert len(np.unique(p)) > 5  # probabilities that differ, or the comparison says little
    assert np.array_equal(loaded.predict_proba(x), p)
    reasons = model.explain(x)
    assert sum(1 for r in reasons if r) > 5
    assert loaded.explain(x) == reasons


def _fitted(until: date, churners: int) -> ChurnModel:
    # A rule model, told apart by its number of churners.
    y = np.array([0] * (5 - churners) + [1] * churners)
    return ChurnModel(trained_until=until).fit(np.zeros((5, len(FEATURE_NAMES))), y,
                                               groups=np.arange(5))


async def test_the_newest_is_the_model_trained_on_the_latest_data(conn: Connection) -> None:
    d1, d2 = date(2026, 1, 1), date(2026, 2, 1)
    assert await latest_model(conn) is None
    assert await newest_trained_until(conn) is None
    await save_model(conn, _fitted(d1, 1))
    await save_model(conn, _fitted(d2, 2))
    await save_model(conn, _fitted(d1, 3))  # a backfill, stored after the current model
    newest = await latest_model(conn)
    assert newest is not None and (newest.trained_until, newest.churn_events_) == (d2, 2)
    assert await newest_trained_until(conn) == d2
    # For day d1 only models that read nothing after it; of those the last stored.
    on_d1 = await latest_model(conn, trained_by=d1 + timedelta(days=20))
    assert on_d1 is not None and (on_d1.trained_until, on_d1.churn_events_) == (d1, 3)
    assert await latest_model(conn, trained_by=d1 - timedelta(days=1)) is None
    # Twelve kept: eleven more make fourteen, and the two trained until d1 go.
    for i in range(1, 12):
        await save_model(conn, _fitted(d2 + timedelta(days=i), 1))
    assert KEEP == 12
    assert await rows(conn, "SELECT trained_until FROM churn_models ORDER BY 1") == [
        (d2 + timedelta(days=i),) for i in range(12)]
    with pytest.raises(ValueError, match="without trained_until"):
        await save_model(conn, ChurnModel())


async def test_a_model_from_another_scikit_learn_is_refused_and_replaced(
        wconn: Connection, models: dict[str, ChurnModel],
        caplog: pytest.LogCaptureFixture) -> None:
    await save_model(wconn, models["model"])
    await wconn.execute("UPDATE churn_models SET sklearn_version = '1.0.2'")
    with caplog.at_level(logging.WARNING, logger="analytics.churn_models"):
        assert await latest_model(wconn) is None
    assert f"trained with scikit-learn 1.0.2, this is {sklearn.__version__}: not used" in (
        caplog.text)
    # The daily run's way to a model: none usable, so one is trained on the history up to the
    # day and stored (the default threshold: this world's history gives the rules).
    model, trained = await scoring_model(wconn, on=ON, reporting_currency="EUR")
    assert trained and model.method_ == "rules"
    assert await rows(wconn, "SELECT sklearn_version, version FROM churn_models ORDER BY id") == [
        ("1.0.2", models["model"].version_), (sklearn.__version__, "rules-v1")]
    again = await latest_model(wconn)
    assert again is not None and again.version_ == "rules-v1"


async def test_a_model_that_does_not_load_as_a_current_one_is_refused(
        conn: Connection, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="analytics.churn_models")
    await save_model(conn, _fitted(ON, 1))
    await conn.execute("UPDATE churn_models SET model = %s", (b"\x80\x05garbage",))
    await conn.commit()
    assert await latest_model(conn) is None
    assert "does not load" in caplog.text
    # Pickled by a release with other features, before the features were recorded, or before
    # a field with a default factory existed.
    other = _fitted(ON, 1)
    other.features_ = FEATURE_NAMES[:-1]
    unrecorded = _fitted(ON, 1)
    del vars(unrecorded)["features_"]
    older = _fitted(ON, 1)
    del vars(older)["baseline_"]
    for model in (other, unrecorded, older):
        await save_model(conn, model)
        assert await latest_model(conn) is None
    assert caplog.text.count("another ChurnModel or other features") == 3
    # A sound one loads.
    await save_model(conn, _fitted(ON, 2))
    loaded = await latest_model(conn)
    assert loaded is not None and loaded.churn_events_ == 2


async def test_the_daily_run_scores_with_the_stored_model(
        wconn: Connection, models: dict[str, ChurnModel]) -> None:
    # Stored: the model-method one, which the daily run could not have trained itself (too
    # few churners for the default threshold: that would give the rules).
    stored = models["model"]
    await save_model(wconn, stored)
    day = date(2026, 3, 1)
    done = await run_daily(wconn, on=day, reporting_currency="EUR")
    assert not done.model_trained and done.model.version_ == stored.version_
    assert await rows(wconn, "SELECT DISTINCT method, model_version FROM churn_scores"
                             " WHERE scored_on = %s", (day,)) == [("model", stored.version_)]
    # A day before the stored model's cut-off cannot use it (it saw that day's future): one is
    # trained up to the day and stored.
    past = date(2025, 12, 1)
    done = await run_daily(wconn, on=past, reporting_currency="EUR")
    assert done.model_trained and done.model.trained_until == past
    assert await rows(wconn, "SELECT DISTINCT method, model_version FROM churn_scores"
                             " WHERE scored_on = %s", (past,)) == [("rules", "rules-v1")]
    assert await rows(wconn, "SELECT trained_until, version FROM churn_models ORDER BY id") == [
        (ON, stored.version_), (past, "rules-v1")]
    # The current model is still the newest for today.
    newest = await latest_model(wconn)
    assert newest is not None and newest.version_ == stored.version_


async def test_training_leaves_the_event_loop_free(wconn: Connection) -> None:
    """The fit runs in a worker thread: while it is held there, the loop runs other coroutines.

    The loop's default executor (asyncio's, where ``asyncio.to_thread`` sends work) holds
    each call on an Event the test controls. Had ``train`` fitted on the loop, it would have
    finished without the executor, and nothing would have been held.
    """
    held, release = threading.Event(), threading.Event()
    fitted: list[object] = []

    class HeldExecutor(ThreadPoolExecutor):
        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
                   ) -> Future[Any]:
            def hold() -> Any:
                held.set()
                release.wait()
                result = fn(*args, **kwargs)
                fitted.append(result)
                return result
            return super().submit(hold)

    loop = asyncio.get_running_loop()
    loop.set_default_executor(HeldExecutor(max_workers=1))
    training = asyncio.create_task(train(wconn, cutoff=ON, min_churn_events=3))
    try:
        while not held.is_set():  # reading the training set, then handing the fit over
            assert not training.done(), "train finished without its worker thread"
            await asyncio.sleep(0.01)
        # The fit is held in the worker; this coroutine and another one run meanwhile.
        assert await asyncio.create_task(asyncio.sleep(0, result="ran")) == "ran"
        assert not training.done()
    finally:
        release.set()
    model = await training
    assert model.method_ == "model"
    assert fitted == [model]
