"""Trained churn models kept in the database, so that every process scores with the same one.

The weekly retraining stores its model (``save_model``) in ``churn_models`` (migrations 014 and
018); the daily scoring, in whichever process runs it, reads the newest (``latest_model``). Two
schedulers therefore never score with two different models, and a restart does not retrain.
The newest is the model trained on the latest data (``trained_until``), then the last stored;
only the newest ``KEEP`` are kept.

A model is stored with skops (``model_to_bytes``), never pickled: unpickling runs whatever code
the bytes name, so a pickle in this table would let whoever can write to it run code in the
analytics process. skops builds only the types it is told to trust: plain values, numpy arrays
and scikit-learn's public estimators, which it trusts itself, and ``TRUSTED_TYPES``, the few
scikit-learn internals of a fitted model. Our own classes are not among them: what is stored is
a dict of ``ChurnModel``'s fields, and the model is rebuilt from it here. skops does not check
what a trusted object holds; the one place where that could hurt is the boosted trees, whose
node indices scikit-learn's compiled prediction follows without bounds checks, so every tree is
checked before the model is used (``_check_tree``). docs/churn-risk.md says why this, and not a
signature.

A stored model that cannot be used is refused with a warning (``latest_model`` returns None),
so that the caller trains a new one instead of failing: a row stored as a pickle by a release
before migration 018; one written by another scikit-learn version (scikit-learn reads back only
what its own version wrote: the version is stored with the model); one made by a release with
another ``ChurnModel`` or other features; and bytes that do not load as a model of this release.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from datetime import date
from importlib.metadata import version
from typing import Any
from zipfile import ZIP_DEFLATED

import numpy as np
import psycopg

from analytics.churn import ChurnModel, train
from analytics.features import FEATURE_NAMES
from core.sql import queries

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

# Models kept: a quarter of weekly retrainings, to look into what produced recent scores
# (churn_scores.model_version); a fitted model is under 1 MB stored.
KEEP = 12

# churn_models.format of the rows this release writes and reads; 'pickle' (the rows written
# before migration 018) is never read.
FORMAT = "skops"

# Every non-public scikit-learn type of a fitted model (CalibratedClassifierCV of
# HistGradientBoostingClassifier), named here so that what is trusted does not move with skops'
# own defaults (it trusts the loss, its link and the binning by itself since 0.15): they hold
# numbers, and the calibration pairs each booster with its sigmoid. TreePredictor is the one
# skops leaves out on purpose (its node indices are followed unchecked): trusted here because
# every tree is checked before use (_check_tree).
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


class RefusedModelError(ValueError):
    """Stored bytes that are not a model this release can use; the message says why."""


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/churn.sql")


def sklearn_version() -> str:
    """The installed scikit-learn's version (read without importing it: that takes a second)."""
    return version("scikit-learn")


# -- the stored form ---------------------------------------------------------------------------


def model_to_bytes(model: ChurnModel) -> bytes:
    """A model in its stored form: skops, of a dict of the model's fields.

    ``trained_until`` is stored as its ISO text, so that no date type need be trusted.

    Examples
    --------
    >>> import numpy as np
    >>> m = ChurnModel().fit(np.zeros((4, len(FEATURE_NAMES))), np.array([0, 0, 0, 1]),
    ...                      groups=np.arange(4))
    >>> model_from_bytes(model_to_bytes(m)).version_
    'rules-v1'
    """
    import skops.io as sio

    state = {f.name: vars(model)[f.name] for f in fields(ChurnModel) if f.name in vars(model)}
    if model.trained_until is not None:
        state["trained_until"] = model.trained_until.isoformat()
    return bytes(sio.dumps(state, compression=ZIP_DEFLATED))


def model_from_bytes(blob: bytes) -> ChurnModel:
    """The model stored as ``blob`` (``model_to_bytes``), checked before it can be used.

    Raises
    ------
    RefusedModelError
        Not a model of this release: not skops, a type outside the trusted ones, other fields
        or features, an estimator or a tree unlike those ``ChurnModel.fit`` makes, or one that
        does not predict.
    """
    import skops.io as sio

    try:
        state = sio.loads(blob, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        # The bytes are anyone's: whatever skops raises on them (zip, zlib, JSON or numpy
        # format errors, an untrusted type, a missing key) refuses the row instead of failing
        # the scoring.
        raise RefusedModelError(f"{type(exc).__name__}: {exc}") from exc
    model = _from_state(state)
    _check_predicts(model)
    return model


def _require(condition: bool, why: str) -> None:
    if not condition:
        raise RefusedModelError(why)


def _vector(value: object, dtype: type[np.generic]) -> bool:
    return (isinstance(value, np.ndarray) and value.dtype == dtype
            and value.shape == (len(FEATURE_NAMES),))


def _from_state(state: object) -> ChurnModel:
    # A field added since the model was stored is missing from it, one since removed is extra;
    # a model fitted on other features (or before they were recorded) would score the wrong
    # columns.
    _require(isinstance(state, dict) and set(state) == {f.name for f in fields(ChurnModel)}
             and state["features_"] == FEATURE_NAMES,
             "made by a release with another ChurnModel or other features")
    assert isinstance(state, dict)
    counts = ("horizon_days", "min_churn_events", "random_state", "churn_events_",
              "training_rows_")
    _require(all(type(state[name]) is int for name in counts)
             and state["method_"] in ("model", "rules") and isinstance(state["version_"], str)
             and (state["trained_until"] is None or isinstance(state["trained_until"], str)),
             "fields of the wrong type")
    _require(_vector(state["baseline_"], np.float64) and _vector(state["empty_"], np.bool_),
             "a baseline or column mask that is not one value per feature")
    if state["method_"] == "model":
        _check_estimator(state["estimator_"])
    else:
        _require(state["estimator_"] is None, "a rule model with an estimator")
    try:
        trained_until = (None if state["trained_until"] is None
                         else date.fromisoformat(state["trained_until"]))
    except ValueError as exc:
        raise RefusedModelError(f"trained_until: {exc}") from exc
    model = ChurnModel(horizon_days=state["horizon_days"],
                       min_churn_events=state["min_churn_events"],
                       random_state=state["random_state"], trained_until=trained_until)
    for f in fields(ChurnModel):
        if not f.init:
            setattr(model, f.name, state[f.name])
    return model


def _check_estimator(estimator: Any) -> None:
    """Refuse anything but what ``ChurnModel.fit`` makes, with every tree checked."""
    from sklearn.calibration import (
        CalibratedClassifierCV,
        _CalibratedClassifier,
        _SigmoidCalibration,
    )
    from sklearn.ensemble import HistGradientBoostingClassifier

    _require(type(estimator) is CalibratedClassifierCV, "an estimator that fit does not make")
    try:
        for calibrated in estimator.calibrated_classifiers_:
            booster = calibrated.estimator
            _require(type(calibrated) is _CalibratedClassifier
                     and all(type(c) is _SigmoidCalibration for c in calibrated.calibrators)
                     and type(booster) is HistGradientBoostingClassifier
                     # Categorical features go through a preprocessor: ours are all numbers.
                     and booster._preprocessor is None
                     and booster.n_features_in_ == len(FEATURE_NAMES),
                     "an estimator that fit does not make")
            for iteration in booster._predictors:
                for tree in iteration:
                    _check_tree(tree)
    except (AttributeError, TypeError) as exc:
        raise RefusedModelError(f"an estimator that fit does not make: {exc}") from exc


def _check_tree(tree: object) -> None:
    """Refuse a tree whose prediction could read outside its arrays or never end.

    scikit-learn's compiled prediction (``_predictor.pyx``) starts at node 0 and, at each split,
    reads the row's column ``feature_idx`` and moves to node ``left`` or ``right``, with no
    bounds checks: a crafted index reads foreign memory or crashes the process, a child before
    its parent loops for ever. ``fit`` numbers a node's children after it, so a tree is used
    only if every split's children lie after it and inside the tree (every path then ends at a
    leaf inside it), its column is one of the features, and it is not categorical (a
    categorical split indexes bitset arrays too; the features are all numbers).
    """
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    nodes = getattr(tree, "nodes", None)
    _require(type(tree) is TreePredictor and isinstance(nodes, np.ndarray)
             and nodes.dtype == PREDICTOR_RECORD_DTYPE and nodes.ndim == 1 and len(nodes) > 0,
             "a tree that is not an array of scikit-learn's node records")
    assert isinstance(nodes, np.ndarray)
    n = len(nodes)
    at = np.arange(n)
    sound = ((nodes["left"] > at) & (nodes["left"] < n) & (nodes["right"] > at)
             & (nodes["right"] < n) & (nodes["feature_idx"] >= 0)
             & (nodes["feature_idx"] < len(FEATURE_NAMES)) & (nodes["is_categorical"] == 0))
    bad = np.flatnonzero((nodes["is_leaf"] == 0) & ~sound)
    if bad.size:
        raise RefusedModelError(f"a tree whose node {bad[0]} of {n} splits outside the tree"
                                " or the features")


def _check_predicts(model: ChurnModel) -> None:
    """Refuse a model whose numbers do not fit together: it must score a row and explain it."""
    probe = np.vstack([np.zeros(len(FEATURE_NAMES)), np.full(len(FEATURE_NAMES), np.nan)])
    try:
        p = model.predict_proba(probe)
        model.explain(probe)
    except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
        raise RefusedModelError(f"does not predict: {type(exc).__name__}: {exc}") from exc
    _require(p.shape == (2,) and bool(np.all((p >= 0) & (p <= 1))),
             "probabilities outside [0, 1]")


# -- the table ---------------------------------------------------------------------------------


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
    blob = model_to_bytes(model)
    async with conn.transaction():
        cur = await conn.execute(_sql()["save_model"], {
            "version": model.version_, "method": model.method_,
            "trained_until": model.trained_until, "horizon_days": model.horizon_days,
            "churn_events": model.churn_events_, "training_rows": model.training_rows_,
            "sklearn_version": sklearn_version(), "format": FORMAT, "model": blob})
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
        None also when the newest is stored as a pickle (by a release before migration 018),
        was written by another scikit-learn version, or does not load as a model of this
        release (``model_from_bytes``; each logged as a warning): train and store a new one.
    """
    async with conn.transaction():
        cur = await conn.execute(_sql()["latest_model"], {"trained_by": trained_by})
        row = await cur.fetchone()
    if row is None:
        return None
    model_id, model_version, stored_sklearn, stored_format, blob = row
    if stored_format != FORMAT:
        logger.warning("churn model %s (%s) is stored as a %s, by a release before migration"
                       " 018, and is never loaded (unpickling runs whatever code its bytes"
                       " name): not used, a new one is needed",
                       model_id, model_version, stored_format)
        return None
    if stored_sklearn != sklearn_version():
        logger.warning("churn model %s (%s) was trained with scikit-learn %s, this is %s:"
                       " not used, a new one is needed", model_id, model_version,
                       stored_sklearn, sklearn_version())
        return None
    try:
        return model_from_bytes(blob)
    except RefusedModelError as exc:
        logger.warning("churn model %s (%s) does not load: %s: not used, a new one is needed",
                       model_id, model_version, exc)
        return None


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
