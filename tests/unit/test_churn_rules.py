"""The rule score, the model's fallback and attribution, and the backtest figures, by hand."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from analytics.backtest import Scored, evaluate
from analytics.churn import (
    MIN_CHURN_EVENTS,
    RULES,
    ChurnModel,
    label,
    monthly,
    rule_probability,
)
from analytics.features import FEATURE_NAMES

J = {name: j for j, name in enumerate(FEATURE_NAMES)}


def row(**values: float) -> np.ndarray:
    x = np.full(len(FEATURE_NAMES), np.nan)
    for name, v in values.items():
        x[J[name]] = v
    return x


def test_rule_probability_is_the_documented_logistic() -> None:
    assert rule_probability(5) == pytest.approx(0.5)
    assert rule_probability(0) == pytest.approx(1 / (1 + math.exp(3.5)))
    assert rule_probability(9) > rule_probability(8)


def test_rules_score_and_name_what_fired_with_the_customers_values() -> None:
    # Hours -38% (2 points), 2 services overdue (1), no auto-renewal (1), a key account (-1);
    # NPS 8 and a missing payment trend fire nothing.
    x = row(usage_trend_90=-0.38, services_overdue=2, auto_renew=0, key_account=1, nps_last=8)
    model = ChurnModel().fit(np.vstack([x, x]), np.array([0, 1]), groups=np.array([1, 2]))
    assert model.method_ == "rules" and model.churn_events_ == 1
    (p,) = model.predict_proba(x[None, :])
    assert p == pytest.approx(rule_probability(3))
    (reasons,) = model.explain(x[None, :])
    assert [(r.factor, r.label) for r in reasons] == [
        ("usage_trend_90", "operating hours -38% vs previous quarter"),
        ("services_overdue", "2 services overdue"),
        ("auto_renew", "auto-renewal on 0% of contracts")]
    assert reasons[0].effect == pytest.approx(rule_probability(3) - rule_probability(1))
    assert reasons[1].effect == pytest.approx(rule_probability(3) - rule_probability(2))


def test_every_rule_names_a_feature() -> None:
    assert {r.feature for r in RULES} <= set(FEATURE_NAMES)
    assert label(None, "nps_last") == "latest NPS score (0-10): no data"


def test_the_model_learns_a_planted_signal_and_names_it() -> None:
    rng = np.random.default_rng(3)
    n = 1500
    x = rng.normal(size=(n, len(FEATURE_NAMES)))
    x[:, J["nps_change"]] = np.nan  # missing everywhere: the model copes
    # Churn when the usage trend falls below -1 (about 16% of rows), whatever else happens.
    y = (x[:, J["usage_trend_90"]] < -1).astype(int)
    groups = np.arange(n) // 3
    model = ChurnModel().fit(x, y, groups=groups)
    assert model.method_ == "model" and model.churn_events_ >= MIN_CHURN_EVENTS
    test = rng.normal(size=(200, len(FEATURE_NAMES)))
    truth = test[:, J["usage_trend_90"]] < -1
    p = model.predict_proba(test)
    assert p[truth].mean() > 0.8
    assert p[~truth].mean() < 0.1
    risky = test[truth][:5]
    for reasons in model.explain(risky):
        assert reasons[0].factor == "usage_trend_90"


def test_too_few_churn_events_fall_back_to_rules() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, len(FEATURE_NAMES)))
    y = np.zeros(400, dtype=int)
    y[:MIN_CHURN_EVENTS - 1] = 1
    groups = np.arange(400)
    assert ChurnModel().fit(x, y, groups=groups).method_ == "rules"
    y[MIN_CHURN_EVENTS - 1] = 1
    assert ChurnModel().fit(x, y, groups=groups).method_ == "model"


def test_monthly_cutoffs() -> None:
    assert monthly(date(2025, 1, 15), date(2025, 4, 1)) == [
        date(2025, 2, 1), date(2025, 3, 1), date(2025, 4, 1)]
    assert monthly(date(2025, 1, 1), date(2025, 1, 31)) == [date(2025, 1, 1)]


def test_backtest_figures_worked_out_by_hand() -> None:
    # Two scoring days, five customers, horizon 180 days, alert rate 40% (2 of 5 flagged).
    d1, d2 = date(2025, 1, 1), date(2025, 2, 1)
    churned = {"A": date(2025, 5, 1),   # 120 days after d1, 89 after d2: positive both days
               "B": date(2025, 9, 1),   # 243 after d1, 212 after d2: beyond the horizon
               "E": date(2024, 12, 1)}  # gone before d1: never counted
    p = {d1: {"A": 0.9, "B": 0.8, "C": 0.1, "D": 0.2, "E": 0.99},
         d2: {"A": 0.3, "B": 0.7, "C": 0.6, "D": 0.1, "E": 0.99}}
    scored = [Scored(c, d, v) for d, by in p.items() for c, v in by.items()]
    e = evaluate(scored, churned, horizon_days=180, alert_rate=0.4, data_end=date(2026, 1, 1))
    # 8 live scores, positives: A on d1 and d2. Flagged: d1 {A, B}, d2 {B, C}.
    assert (e.scores, e.positives) == (8, 2)
    # AUC: A@d1 (0.9) beats all 6 negatives; A@d2 (0.3) beats C@d1, D@d1, D@d2: 9 of 12.
    assert e.roc_auc == pytest.approx(9 / 12)
    expected_brier = ((1 - .9) ** 2 + (1 - .3) ** 2 + .8 ** 2 + .1 ** 2 + .2 ** 2 + .7 ** 2
                      + .6 ** 2 + .1 ** 2) / 8
    assert e.brier == pytest.approx(expected_brier)
    assert e.precision == pytest.approx(1 / 4)
    assert e.recall == pytest.approx(1 / 2)
    # A is seen 90+ days ahead only on d1 (120 days), and flagged then: lead 120 days.
    # B's churn is beyond both horizons, so it is not counted.
    assert (e.churners, e.flagged_ahead, e.median_lead_days) == (1, 1, 120)


def test_a_churner_never_scored_counts_as_missed_and_is_reported() -> None:
    # B churned but was never on the books on a scoring day (e.g. left out of the population):
    # it stays in the "flagged ahead" denominator as missed, and is counted on its own.
    days = [date(2025, 1, 1), date(2025, 2, 1)]
    scored = [Scored(c, d, p) for d in days for c, p in (("A", 0.9), ("C", 0.1), ("D", 0.2))]
    churned = {"A": date(2025, 5, 1), "B": date(2025, 5, 15)}
    e = evaluate(scored, churned, horizon_days=180, alert_rate=0.34, data_end=date(2026, 1, 1))
    assert (e.churners, e.flagged_ahead, e.unscored_churners) == (2, 1, 1)
    assert e.flagged_ahead_share == pytest.approx(0.5)
