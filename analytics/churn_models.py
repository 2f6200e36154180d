"""Trained churn models kept in the database, so that every process scores with the same one.

The weekly retraining stores its model (``save_model``) in ``churn_models`` (migration 014); the
daily scoring, in whichever process runs it, reads the newest (``latest_model``). Two
schedulers therefore never score with two different models, and a restart does not retrain.
The newest is the model trained on the latest data (``trained_until``), then the last stored;
only the newest ``KEEP`` are kept.

A model is stored pickled (a dataclass of numpy arrays and a fitted scikit-learn estimator, which
is how scikit-learn itself persists models). Unpickling runs whatever code the bytes name, so
this table is trusted as much as our own code: only our processes write it, and a role that can
write to it can already rewrite every score and migration. scikit-learn reads back only what
its own version wrote: the version is stored with the model, and a model from another version
(or one that no longer unpickles into the current ``ChurnModel``) is refused with a warning, so
that the caller trains a new one instead of failing.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import fields
from datetime import date
from importlib.metadata import version
from typing import Any, TypeGuard

import psycopg

from analytics.churn import ChurnModel, train
from analytics.features import FEATURE_NAMES
from core.sql import queries

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

# Models kept: a quarter of weekly retrainings, to look into what produced recent scores
# (churn_scores.model_version); a fitted model pickles to about 1 MB.
KEEP = 12


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/churn.sql")


def sklearn_version() -> str:
    """The installed scikit-learn's version (read without importing it: that takes a second)."""
    return version("scikit-learn")


async def save_model(conn: Connection, model: ChurnModel) -> int:
    """Store a fitted model and return its id; only the newest ``KEEP`` models are kept.

    From an idle connection it is committed on return; inside the caller's transaction it is
    part of it.

    Raises
    ------
    ValueError
        The model has no ``trained_until``: without it the model cannot be placed in time.
    """
    if model.trained_until is None:
        raise ValueError("a churn model without trained_until cannot be stored")
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    async with conn.transaction():
        cur = await conn.execute(_sql()["save_model"], {
            "version": model.version_, "method": model.method_,
            "trained_until": model.trained_until, "horizon_days": model.horizon_days,
            "churn_events": model.churn_events_, "training_rows": model.training_rows_,
            "sklearn_version": sklearn_version(), "model": blob})
        row = await cur.fetchone()
        assert row is not None
        await conn.execute(_sql()["prune_models"], {"keep": KEEP})
    logger.info("churn model %s stored as %s (%s bytes)", model.version_, row[0], len(blob))
    return int(row[0])


async def latest_model(conn: Connection, *, trained_by: date | None = None
                       ) -> ChurnModel | None:
    """The newest stored model, or None if there is none or it cannot be used here.

    Parameters
    ----------
    conn
        A connection; from an idle one the read's transaction ends on return.
    trained_by
        Only models trained on data up to this day (scoring a past day must not use a model
        that saw what came after it). None: any.

    Returns
    -------
    ChurnModel | None
        None also when the newest was written by another scikit-learn version or no longer
        unpickles into ``ChurnModel`` (logged as a warning): train and store a new one.
    """
    async with conn.transaction():
        cur = await conn.execute(_sql()["latest_model"], {"trained_by": trained_by})
        row = await cur.fetchone()
    if row is None:
        return None
    model_id, model_version, stored_sklearn, blob = row
    if stored_sklearn != sklearn_version():
        logger.warning("churn model %s (%s) was trained with scikit-learn %s, this is %s:"
                       " not used, a new one is needed", model_id, model_version,
                       stored_sklearn, sklearn_version())
        return None
    try:
        # Only our own processes write this table (module docstring).
        model = pickle.loads(blob)  # noqa: S301
    except (pickle.UnpicklingError, AttributeError, ImportError, EOFError, TypeError,
            ValueError) as exc:
        logger.warning("churn model %s (%s) does not load: %s: not used, a new one is needed",
                       model_id, model_version, exc)
        return None
    if not _current(model):
        logger.warning("churn model %s (%s) was made by a release with another ChurnModel or"
                       " other features: not used, a new one is needed", model_id, model_version)
        return None
    return model


def _current(model: object) -> TypeGuard[ChurnModel]:
    # A field added since the model was pickled is missing from it: one with a plain default
    # reads the class's default (acceptable, or the release must not add it so), one with a
    # default factory would fail on first use. A model fitted on other features (or before
    # they were recorded: the default is empty) would score the wrong columns.
    return (isinstance(model, ChurnModel)
            and all(hasattr(model, f.name) for f in fields(ChurnModel))
            and model.features_ == FEATURE_NAMES)


async def train_and_save(conn: Connection, *, cutoff: date,
                         reporting_currency: str) -> tuple[ChurnModel, int]:
    """Train on the history up to ``cutoff`` (``analytics.churn.train``) and store the model.

    Returns the model and its id.
    """
    model = await train(conn, cutoff=cutoff, reporting_currency=reporting_currency)
    return model, await save_model(conn, model)


async def scoring_model(conn: Connection, *, on: date,
                        reporting_currency: str) -> tuple[ChurnModel, bool]:
    """The model to score day ``on`` with, and whether it was trained just now.

    The newest stored model trained on data up to ``on``; with none (or none usable), one is
    trained on the history up to ``on`` and stored, for the next runs and the other processes.
    """
    model = await latest_model(conn, trained_by=on)
    if model is not None:
        return model, False
    model, _ = await train_and_save(conn, cutoff=on, reporting_currency=reporting_currency)
    return model, True


async def newest_trained_until(conn: Connection) -> date | None:
    """The latest day a stored model was trained up to (None: none is stored)."""
    async with conn.transaction():
        cur = await conn.execute(_sql()["newest_trained_until"])
        row = await cur.fetchone()
    return None if row is None else row[0]
