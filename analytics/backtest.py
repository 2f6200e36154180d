"""Backtest of the churn risk: train on the past up to a cut-off, score after it, compare.

``backtest(conn, cutoff=...)`` trains on the history up to the cut-off (analytics.churn.train),
scores every customer on the books on the first day of each month from the cut-off on, and
compares with what happened after each scoring day: churn as the data says
(analytics.features.churn_dates on the data's last day) and, if given, a ground truth (the demo
world's truth.json). docs/churn-risk.md explains the figures; in short:

- ROC AUC and Brier score over every (customer, scoring day) whose horizon the data covers;
- precision and recall at the alert rate: on each scoring day the top ``alert_rate`` share of
  customers by probability is flagged;
- flagged ahead: of the churners that at least one scoring day saw 90 days or more before their
  churn (and within the horizon), the share flagged on such a day; a churner no such day scored
  (not on the books then, by the population's account) counts as missed, and their number is
  reported on its own (``unscored_churners``) so a gap in the population shows;
- median lead time: for flagged churners, churn day minus the first scoring day (within the
  horizon before the churn) that flagged them.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import psycopg

from analytics.churn import (
    DEFAULT_HORIZON_DAYS,
    ChurnModel,
    Method,
    monthly,
    train,
)
from analytics.features import churn_dates, data_span, features_at
from core.sql import queries

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
AHEAD_DAYS = 90


@dataclass(frozen=True, slots=True)
class Scored:
    """One score of the backtest: customer (by external id), scoring day, probability."""

    customer: str
    on: date
    probability: float


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Figures of scores against one account of who churned when."""

    scores: int  # (customer, day) pairs with their horizon covered
    positives: int
    roc_auc: float | None
    brier: float | None
    precision: float | None
    recall: float | None
    churners: int  # churners a scoring day came 90+ days ahead of (scored then or not)
    flagged_ahead: int
    median_lead_days: float | None
    unscored_churners: int = 0  # of ``churners``: not scored on any such day, counted missed

    @property
    def flagged_ahead_share(self) -> float | None:
        """Share of those churners flagged at least 90 days ahead."""
        return self.flagged_ahead / self.churners if self.churners else None


def evaluate(scored: Sequence[Scored], churned: Mapping[str, date], *, horizon_days: int,
             alert_rate: float, data_end: date, ahead_days: int = AHEAD_DAYS) -> Evaluation:
    """Compare scores with churn days (docs/churn-risk.md, "Backtest").

    A score on day T counts as positive when the customer churns in (T, T + horizon]; customers
    that churned by T are left out (they are gone). AUC, Brier, precision and recall use the
    days whose horizon ends by ``data_end``; the lead-time figures use every scoring day.
    A churner that a scoring day came 90+ days ahead of but that no such day scored is counted
    as missed in ``churners`` (the share is of every churner the system could have warned of)
    and, besides, in ``unscored_churners``.
    """
    from sklearn.metrics import brier_score_loss, roc_auc_score

    live = [s for s in scored if not (s.customer in churned and churned[s.customer] <= s.on)]
    by_day: dict[date, list[Scored]] = {}
    for s in live:
        by_day.setdefault(s.on, []).append(s)
    flagged: set[tuple[str, date]] = set()
    for day, items in by_day.items():
        k = max(1, round(alert_rate * len(items)))
        ranked = sorted(items, key=lambda s: (-s.probability, s.customer))
        flagged.update((s.customer, day) for s in ranked[:k])

    def positive(s: Scored) -> bool:
        return s.customer in churned and s.on < churned[s.customer] <= s.on + timedelta(
            days=horizon_days)

    covered = [s for s in live if s.on + timedelta(days=horizon_days) <= data_end]
    y = np.array([positive(s) for s in covered], dtype=np.int_)
    p = np.array([s.probability for s in covered], dtype=np.float64)
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
    brier = float(brier_score_loss(y, p)) if len(y) else None
    alerts = [(s.customer, s.on) in flagged for s in covered]
    hits = sum(1 for a, t in zip(alerts, y, strict=True) if a and t)
    precision = hits / sum(alerts) if any(alerts) else None
    recall = hits / int(y.sum()) if y.sum() else None
    churners = ahead = unscored = 0
    leads: list[int] = []
    seen = {(s.customer, s.on) for s in live}
    for customer, when in churned.items():
        days = [d for d in by_day if d < when <= d + timedelta(days=horizon_days)]
        early = [d for d in days if (when - d).days >= ahead_days]
        if not early:
            continue
        churners += 1
        if not any((customer, d) in seen for d in early):
            unscored += 1
        if any((customer, d) in flagged for d in early):
            ahead += 1
        hit = [d for d in days if (customer, d) in flagged]
        if hit:
            leads.append((when - min(hit)).days)
    return Evaluation(len(covered), int(y.sum()), auc, brier, precision, recall, churners, ahead,
                      float(statistics.median(leads)) if leads else None, unscored)


@dataclass(frozen=True, slots=True)
class BacktestReport:
    """What a backtest measured; ``truth`` is None without a ground truth."""

    cutoff: date
    horizon_days: int
    alert_rate: float
    method: Method
    model_version: str
    churn_events_trained: int
    scoring_days: list[date]
    data: Evaluation
    truth: Evaluation | None

    def lines(self) -> list[str]:
        """The report as text lines, for the CLI to print."""
        out = [f"backtest: trained until {self.cutoff}, horizon {self.horizon_days} days,"
               f" method {self.method} ({self.model_version}),"
               f" {self.churn_events_trained} churn events in training",
               f"scored on {len(self.scoring_days)} days: "
               f"{self.scoring_days[0] if self.scoring_days else '-'} .."
               f" {self.scoring_days[-1] if self.scoring_days else '-'}"]
        for name, e in (("data", self.data), ("truth", self.truth)):
            if e is None:
                continue
            share = e.flagged_ahead_share
            out.append(
                f"against {name}: {e.scores} scores, {e.positives} positive;"
                f" ROC AUC {_f(e.roc_auc, '.3f')}, Brier {_f(e.brier, '.4f')};"
                f" at a {self.alert_rate:.0%} alert rate precision {_f(e.precision, '.1%')},"
                f" recall {_f(e.recall, '.1%')}; flagged >= {AHEAD_DAYS} days ahead"
                f" {e.flagged_ahead}/{e.churners} ({_f(share, '.1%')},"
                f" {e.unscored_churners} never scored, counted missed);"
                f" median lead {_f(e.median_lead_days, '.0f')} days")
        return out


def _f(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


async def backtest(conn: Connection, *, cutoff: date, horizon_days: int = DEFAULT_HORIZON_DAYS,
                   alert_rate: float = 0.2, truth: Mapping[str, date] | None = None,
                   reporting_currency: str = "EUR", until: date | None = None,
                   model: ChurnModel | None = None) -> BacktestReport:
    """Train up to ``cutoff``, score monthly after it, compare with what happened.

    Parameters
    ----------
    conn
        A connection; ``machine_days`` refreshed. Nothing is written.
    cutoff
        Training uses data up to this day only; scoring days are the first days of the months
        from it on.
    horizon_days
        Churn within this many days after a scoring day is a positive.
    alert_rate
        Share of customers flagged on each scoring day (highest probabilities first).
    truth
        Churn day per customer external id (the demo world's truth.json: ``churn_date`` of the
        churned customers), compared with as well as the data's own account.
    reporting_currency
        Currency of the money features.
    until
        Last scoring day (default: the data's last day less 90 days, the last day a churner can
        still be flagged 90 days ahead).
    model
        Use this model instead of training one (it must not have seen data after ``cutoff``).
    """
    async with conn.transaction():  # read-only: ends the reads' transaction on return
        _, end = await data_span(conn)
        if end is None:
            raise ValueError("no data to backtest on")
        if model is None:
            model = await train(conn, cutoff=cutoff, horizon_days=horizon_days,
                                reporting_currency=reporting_currency)
        days = monthly(cutoff, until or end - timedelta(days=AHEAD_DAYS))
        scored: list[Scored] = []
        for day in days:
            features = await features_at(conn, day, reporting_currency=reporting_currency)
            p = model.predict_proba(features.values)
            scored.extend(Scored(ext, day, float(pi))
                          for ext, pi in zip(features.external_ids, p, strict=True))
        ids = await _external_ids(conn)
        churned = {ids[c]: d for c, d in (await churn_dates(conn, end)).items()}
        data = evaluate(scored, churned, horizon_days=horizon_days, alert_rate=alert_rate,
                        data_end=end)
        against_truth = None if truth is None else evaluate(
            scored, truth, horizon_days=horizon_days, alert_rate=alert_rate, data_end=end)
    report = BacktestReport(cutoff, horizon_days, alert_rate, model.method_, model.version_,
                            model.churn_events_, days, data, against_truth)
    for line in report.lines():
        logger.info("%s", line)
    return report


async def _external_ids(conn: Connection) -> dict[int, str]:
    cur = await conn.execute(queries("analytics", "sql/churn.sql")["customer_external_ids"])
    return {int(i): str(e) for i, e in await cur.fetchall()}


def truth_churn_dates(truth_json: Mapping[str, Any]) -> dict[str, date]:
    """Churn day per customer external id from a demo world's truth.json (parsed)."""
    return {ext: date.fromisoformat(c["churn_date"])
            for ext, c in truth_json["customers"].items() if c.get("churned")}


__all__ = ["BacktestReport", "Evaluation", "Scored", "backtest", "evaluate", "truth_churn_dates"]
