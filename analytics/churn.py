"""Churn risk per customer: a probability of churning within a horizon, its reasons, its method.

Churn is defined once (``analytics.features.churn_dates``, docs/churn-risk.md): every service
contract of the customer ended without renewal, or, for a customer without contracts, 365 days
without an invoice. The label of a customer at a cut-off day ``T`` is 1 when it churns in
``(T, T + horizon]``.

Two methods, and every result says which one produced it:

- ``model``: trained on the OEM's own history by rolling monthly cut-offs whose horizon has
  passed (``train``): scikit-learn's HistGradientBoostingClassifier (it takes missing values as
  they are), calibrated with CalibratedClassifierCV (sigmoid, folds grouped by customer so one
  customer's months never sit on both sides of a fold).
- ``rules``: a transparent points score (``RULES``), used while the history holds fewer than
  ``MIN_CHURN_EVENTS`` churned customers, too few to learn from.

Reasons: for the model, each feature's effect is the probability minus the probability with
that feature set to its training median (a baseline-substitution attribution: one extra
prediction per feature, model-agnostic); for the rules, the probability minus the probability
without that rule's points. The reasons are the factors that raised the risk most, with the
customer's own values.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson
import psycopg
from psycopg.rows import tuple_row

from analytics.features import (
    BY_NAME,
    FEATURE_NAMES,
    FeatureSet,
    churn_dates,
    data_span,
    features_at,
)
from analytics.kpi import DIMENSIONS
from core.sql import queries

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
# The reads of revenue at risk take a connection of any row factory (the API's has dict rows).
AnyConnection = psycopg.AsyncConnection[Any]
Array = npt.NDArray[np.float64]
Method = Literal["model", "rules"]

DEFAULT_HORIZON_DAYS = 180
# Below this many churned customers in the training history the model is not trusted: with a
# feature set this wide, a few dozen events are the least that separate signal from chance.
MIN_CHURN_EVENTS = 20
# Cut-offs start this long after the data does, so trends have a period to compare with.
WARMUP_DAYS = 180
TOP_REASONS = 4
# An effect smaller than this (probability) is not worth naming.
MIN_EFFECT = 0.005


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/churn.sql")


# -- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """Points added when ``feature`` is at or below (le) or at or above (ge) ``threshold``."""

    feature: str
    op: Literal["le", "ge"]
    threshold: float
    points: int

    def fires(self, value: float | None) -> bool:
        """Whether the rule applies to ``value`` (a missing value never fires)."""
        if value is None or math.isnan(value):
            return False
        return value <= self.threshold if self.op == "le" else value >= self.threshold


RULES: tuple[Rule, ...] = (
    Rule("usage_trend_90", "le", -0.20, 2),
    Rule("usage_yoy_90", "le", -0.25, 1),
    Rule("maint_adherence_change", "le", -0.30, 2),
    Rule("services_overdue", "ge", 2, 1),
    Rule("parts_capture_change", "le", -0.20, 2),
    Rule("pay_delay_change", "ge", 15, 2),
    Rule("overdue_open", "ge", 3, 1),
    Rule("nps_change", "le", -2, 2),
    Rule("nps_last", "le", 4, 1),
    Rule("responses_change", "le", -2, 1),
    Rule("survey_silence_days", "ge", 270, 1),
    Rule("lapse_notified", "ge", 0.5, 4),
    Rule("auto_renew", "le", 0, 1),
    Rule("tenure_years", "le", 3, 1),
    Rule("key_account", "ge", 1, -1),
)
# probability = 1 / (1 + exp(-RULE_SLOPE x (points - RULE_MIDPOINT))): 0 points ~3%, 5 points 50%.
RULE_SLOPE = 0.7
RULE_MIDPOINT = 5.0


def rule_probability(points: float) -> float:
    """The rule score's probability for a number of points."""
    return 1.0 / (1.0 + math.exp(-RULE_SLOPE * (points - RULE_MIDPOINT)))


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reason:
    """One factor behind a score.

    Attributes
    ----------
    factor
        The feature's name (analytics.features.FEATURES).
    label
        The customer's own value in words, e.g. "operating hours -38% vs previous quarter".
    value
        The customer's value (None: missing).
    effect
        How much it moved the probability (+0.12: twelve points up).
    """

    factor: str
    label: str
    value: float | None
    effect: float

    def as_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"factor": self.factor, "label": self.label, "value": self.value,
                "effect": round(self.effect, 4)}


@dataclass(frozen=True, slots=True)
class ChurnScore:
    """A customer's churn risk on a day, with its reasons and the method that produced it."""

    customer_id: int
    external_id: str
    scored_on: date
    horizon_days: int
    probability: float
    method: Method
    model_version: str
    reasons: tuple[Reason, ...]
    annual_value: Decimal | None
    currency: str

    @property
    def revenue_at_risk(self) -> Decimal | None:
        """Annual contract value in force x probability (reporting currency)."""
        if self.annual_value is None:
            return None
        return (self.annual_value * Decimal(repr(self.probability))).quantize(Decimal("0.01"))


def label(value: float | None, factor: str) -> str:
    """A feature's value in words."""
    feature = BY_NAME[factor]
    if value is None or math.isnan(value):
        return f"{feature.description}: no data"
    return feature.template.format(v=value)


# -- the estimator -----------------------------------------------------------------------------


@dataclass
class ChurnModel:
    """Churn probability within a horizon, from the features of analytics.features.

    Parameters
    ----------
    horizon_days
        The horizon the labels were made with (recorded, for the scores).
    min_churn_events
        Fewer churned customers than this in the training data: the rule score is used.
    random_state
        Seed of the gradient boosting.

    Attributes
    ----------
    method_
        "model" or "rules".
    churn_events_
        Churned customers in the training data.
    training_rows_
        Rows (customer, cut-off) it was fitted on.
    features_
        The feature names of its columns (a stored model outlives a change of the features).
    baseline_
        Training medians per feature: the reference of the attribution.
    estimator_
        The calibrated classifier (None with the rules).
    version_
        Names the method, training cut-off and data, stored with every score.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.zeros((4, len(FEATURE_NAMES)))
    >>> m = ChurnModel().fit(X, np.array([0, 0, 0, 1]), groups=np.arange(4))
    >>> m.method_
    'rules'
    """

    horizon_days: int = DEFAULT_HORIZON_DAYS
    min_churn_events: int = MIN_CHURN_EVENTS
    random_state: int = 0
    trained_until: date | None = None
    method_: Method = field(default="rules", init=False)
    churn_events_: int = field(default=0, init=False)
    training_rows_: int = field(default=0, init=False)
    features_: tuple[str, ...] = field(default=(), init=False, repr=False)
    baseline_: Array = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    empty_: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool),
                                          init=False, repr=False)
    estimator_: Any = field(default=None, init=False, repr=False)
    version_: str = field(default="rules-v1", init=False)

    def fit(self, X: Array,  # noqa: N803 (scikit-learn's name)
            y: npt.NDArray[np.int_], *, groups: npt.NDArray[Any]) -> ChurnModel:
        """Fit on rows (customer, cut-off) with labels; ``groups`` names each row's customer."""
        positives = {g for g, label_ in zip(groups, y, strict=True) if label_}
        self.churn_events_ = len(positives)
        self.training_rows_ = len(y)
        self.features_ = FEATURE_NAMES  # X's columns, as everything that calls fit builds it
        # A column no row has a value in (no surveys anywhere yet) is a constant 0: the
        # booster's binning cannot take a column without values.
        self.empty_ = np.asarray(np.isnan(X).all(axis=0), dtype=np.bool_)
        x = self._prepare(X)
        self.baseline_ = np.nanmedian(x, axis=0) if len(x) else np.zeros(x.shape[1])
        digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:8]
        if self.churn_events_ < self.min_churn_events:
            logger.info("%s churn events in the history (< %s): rule score",
                        self.churn_events_, self.min_churn_events)
            self.method_, self.estimator_, self.version_ = "rules", None, "rules-v1"
            return self
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.model_selection import GroupKFold

        booster = HistGradientBoostingClassifier(
            learning_rate=0.05, max_iter=250, max_leaf_nodes=15, min_samples_leaf=30,
            l2_regularization=1.0, random_state=self.random_state)
        folds = list(GroupKFold(n_splits=3).split(X, y, groups))
        self.estimator_ = CalibratedClassifierCV(booster, method="sigmoid", cv=folds).fit(x, y)
        self.method_ = "model"
        self.version_ = (f"hgb-v1-{self.trained_until or 'na'}-{len(y)}rows-"
                         f"{self.churn_events_}churners-{digest}")
        return self

    def predict_proba(self, X: Array) -> Array:  # noqa: N803
        """Churn probability per row."""
        if self.method_ == "rules" or self.estimator_ is None:
            return np.array([rule_probability(self._points(x)) for x in X], dtype=np.float64)
        return np.asarray(self.estimator_.predict_proba(self._prepare(X))[:, 1],
                          dtype=np.float64)

    def _prepare(self, X: Array) -> Array:  # noqa: N803
        if not self.empty_.any():
            return X
        filled = X.copy()
        filled[:, self.empty_] = 0.0
        return filled

    def explain(self, X: Array, *,  # noqa: N803
                 top: int = TOP_REASONS) -> list[tuple[Reason, ...]]:
        """The factors that raised each row's probability most, with the row's own values."""
        if len(X) == 0:
            return []
        if self.method_ == "rules" or self.estimator_ is None:
            return [self._rule_reasons(x, top) for x in X]
        p = self.predict_proba(X)
        n, k = X.shape
        # Every row with one feature at a time set to its baseline, predicted in one batch.
        swapped = np.repeat(X[:, None, :], k, axis=1)
        idx = np.arange(k)
        swapped[:, idx, idx] = self.baseline_[idx]
        effects = p[:, None] - self.predict_proba(swapped.reshape(n * k, k)).reshape(n, k)
        out = []
        for row, eff in zip(X, effects, strict=True):
            order = np.argsort(-eff)[:top]
            out.append(tuple(
                Reason(FEATURE_NAMES[j], label(_value(row[j]), FEATURE_NAMES[j]),
                       _value(row[j]), float(eff[j]))
                for j in order if eff[j] >= MIN_EFFECT))
        return out

    @staticmethod
    def _points(x: Array) -> float:
        index = {name: i for i, name in enumerate(FEATURE_NAMES)}
        return float(sum(r.points for r in RULES if r.fires(float(x[index[r.feature]]))))

    def _rule_reasons(self, x: Array, top: int) -> tuple[Reason, ...]:
        index = {name: i for i, name in enumerate(FEATURE_NAMES)}
        points = self._points(x)
        p = rule_probability(points)
        fired = [(r, p - rule_probability(points - r.points)) for r in RULES
                 if r.points > 0 and r.fires(float(x[index[r.feature]]))]
        fired.sort(key=lambda item: -item[1])
        return tuple(Reason(r.feature, label(_value(x[index[r.feature]]), r.feature),
                            _value(x[index[r.feature]]), effect)
                     for r, effect in fired[:top])


def _value(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


# -- training and scoring ----------------------------------------------------------------------


def monthly(first: date, last: date) -> list[date]:
    """First days of the months from ``first``'s (inclusive, if it is a first) to ``last``."""
    day = first if first.day == 1 else (first.replace(day=1) + timedelta(days=32)).replace(day=1)
    out = []
    while day <= last:
        out.append(day)
        day = (day + timedelta(days=32)).replace(day=1)
    return out


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """Rows (customer, cut-off) with features and labels."""

    X: Array
    y: npt.NDArray[np.int_]
    customers: npt.NDArray[np.int_]
    cutoffs: list[date]


def labels_for(features: FeatureSet, churned: dict[int, date], horizon_days: int
               ) -> npt.NDArray[np.int_]:
    """1 where the customer churns in ``(T, T + horizon]``, T being the features' cut-off."""
    t, end = features.cutoff, features.cutoff + timedelta(days=horizon_days)
    return np.array([int(c in churned and t < churned[c] <= end) for c in features.customer_ids],
                    dtype=np.int_)


async def training_set(conn: Connection, *, cutoff: date,
                       horizon_days: int = DEFAULT_HORIZON_DAYS,
                       reporting_currency: str = "EUR") -> TrainingSet:
    """Monthly cut-offs T whose horizon ended by ``cutoff``, with labels known on ``cutoff``."""
    start, _ = await data_span(conn)
    churned = await churn_dates(conn, cutoff)
    xs, ys, cs, ts = [], [], [], []
    if start is not None:
        for t in monthly(start + timedelta(days=WARMUP_DAYS),
                         cutoff - timedelta(days=horizon_days)):
            fs = await features_at(conn, t, reporting_currency=reporting_currency)
            xs.append(fs.values)
            ys.append(labels_for(fs, churned, horizon_days))
            cs.append(np.array(fs.customer_ids, dtype=np.int_))
            ts.append(t)
    if not xs:
        return TrainingSet(np.zeros((0, len(FEATURE_NAMES))), np.zeros(0, dtype=np.int_),
                           np.zeros(0, dtype=np.int_), [])
    return TrainingSet(np.vstack(xs), np.concatenate(ys), np.concatenate(cs), ts)


async def train(conn: Connection, *, cutoff: date, horizon_days: int = DEFAULT_HORIZON_DAYS,
                reporting_currency: str = "EUR",
                min_churn_events: int = MIN_CHURN_EVENTS) -> ChurnModel:
    """Train on the history up to ``cutoff``: rolling monthly cut-offs whose horizon has passed.

    Parameters
    ----------
    conn
        A connection; ``machine_days`` refreshed.
    cutoff
        Nothing after this day is used, for features or labels.
    horizon_days
        Churn within this many days after each cut-off is the label.
    reporting_currency
        Currency of the money features.
    min_churn_events
        Fewer churned customers than this in the history: the model falls back to the rules.

    Returns
    -------
    ChurnModel
        Fitted; ``method_`` says whether the model or the rules will score.
    """
    async with conn.transaction():  # read-only: ends the reads' transaction on return
        data = await training_set(conn, cutoff=cutoff, horizon_days=horizon_days,
                                  reporting_currency=reporting_currency)
    # The fit is CPU-bound (a minute on a large history): in a worker thread, so the event loop
    # and a scheduler's other jobs go on meanwhile (the booster's compiled loops release the
    # GIL, and Python hands it over every few milliseconds anyway).
    model = await asyncio.to_thread(fit_model, data, cutoff=cutoff, horizon_days=horizon_days,
                                    min_churn_events=min_churn_events)
    logger.info("churn model trained until %s: %s rows, %s churn events, method %s",
                cutoff, len(data.y), model.churn_events_, model.method_)
    return model


def fit_model(data: TrainingSet, *, cutoff: date, horizon_days: int = DEFAULT_HORIZON_DAYS,
              min_churn_events: int = MIN_CHURN_EVENTS) -> ChurnModel:
    """Fit a model on a training set read up to ``cutoff`` (CPU-bound, no database).

    ``train`` reads the set and runs this in a worker thread.
    """
    model = ChurnModel(horizon_days=horizon_days, min_churn_events=min_churn_events,
                       trained_until=cutoff)
    return model.fit(data.X, data.y, groups=data.customers)


def score_features(model: ChurnModel, features: FeatureSet, *,
                   reporting_currency: str = "EUR") -> list[ChurnScore]:
    """Scores with reasons for a feature set (nothing stored)."""
    p = model.predict_proba(features.values)
    reasons = model.explain(features.values)
    return [ChurnScore(c, ext, features.cutoff, model.horizon_days, float(pi), model.method_,
                       model.version_, why, value, reporting_currency)
            for c, ext, pi, why, value in zip(features.customer_ids, features.external_ids, p,
                                              reasons, features.annual_values, strict=True)]


async def score_customers(conn: Connection, *, on: date, model: ChurnModel | None = None,
                          horizon_days: int = DEFAULT_HORIZON_DAYS,
                          reporting_currency: str = "EUR", store: bool = True
                          ) -> list[ChurnScore]:
    """Score every customer on the books on ``on`` and (by default) store the scores.

    Parameters
    ----------
    conn
        A connection; ``machine_days`` refreshed. From an idle connection the stored scores
        are committed on return; inside the caller's transaction they are part of it.
    on
        The scoring day; only data up to it is read.
    model
        A trained model (``train``); None trains one on the history up to ``on``.
    horizon_days
        The horizon, when a model is trained here.
    reporting_currency
        Currency of the money features and of the annual values stored.
    store
        Write the scores to ``churn_scores`` (one row per customer and day, replaced).
    """
    # One transaction (a savepoint inside the caller's, if it has one): from an idle connection
    # the stored scores are committed on return.
    async with conn.transaction():
        if model is None:
            model = await train(conn, cutoff=on, horizon_days=horizon_days,
                                reporting_currency=reporting_currency)
        features = await features_at(conn, on, reporting_currency=reporting_currency)
        scores = score_features(model, features, reporting_currency=reporting_currency)
        if store:
            await store_scores(conn, scores)
    return scores


async def store_scores(conn: Connection, scores: Sequence[ChurnScore]) -> None:
    """Write scores to ``churn_scores`` in one transaction (a day's score is replaced)."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(_sql()["store_score"], [
            {"customer_id": s.customer_id, "scored_on": s.scored_on,
             "horizon_days": s.horizon_days, "probability": s.probability,
             "method": s.method, "model_version": s.model_version,
             "reasons": orjson.dumps([r.as_json() for r in s.reasons]).decode(),
             "annual_value": s.annual_value, "currency": s.currency} for s in scores])


@dataclass(frozen=True, slots=True)
class SegmentRisk:
    """Revenue at risk of a segment in a month (reporting currency)."""

    month: date
    segment: str
    currency: str
    customers: int
    annual_value: Decimal | None
    revenue_at_risk: Decimal | None
    mean_probability: float


async def revenue_at_risk(conn: AnyConnection, *, on: date) -> dict[int, Decimal | None]:
    """Per customer scored on the latest scoring day on or before ``on``: value x probability.

    Only that day's scores: a customer no longer scored (churned) is no longer at risk.
    """
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_sql()["revenue_at_risk"], {"on": on})
        return {int(r[0]): (None if r[8] is None else Decimal(r[8]).quantize(Decimal("0.01")))
                for r in await cur.fetchall()}


# The KPIs' cuts, with their segments and labels (docs/kpis.md).
SEGMENTS: tuple[str, ...] = DIMENSIONS


async def revenue_at_risk_by_segment(conn: AnyConnection, *, segment: str = "all",
                                     since: date, until: date) -> list[SegmentRisk]:
    """Per month and segment: the scores of the month's last scoring day, summed.

    Revenue at risk = annual contract value in force x churn probability. ``segment`` names
    the cut (one of ``SEGMENTS``, the KPIs' dimensions); a customer's segment is the KPIs'
    (customer_segments, behavioural_segments) as of the scoring day. A customer not scored on
    the month's last scoring day had churned and is left out. In a cut where a customer can be
    in several segments (``model``), it counts in each.
    """
    if segment not in SEGMENTS:
        raise ValueError(f"segment {segment!r}: one of {', '.join(SEGMENTS)}")
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_sql()["revenue_at_risk_by_segment"],
                          {"dimension": segment, "since": since, "until": until})
        return [SegmentRisk(r[0], r[1], r[2], int(r[3]), r[4], r[5], float(r[6]))
                for r in await cur.fetchall()]
