"""The CLV models: published estimates on the papers' own data, parameters recovered from
simulations, and naive reference implementations (tests/data/README.md for the data).

Tolerances for the simulations: every estimate must lie within 4 of its own asymptotic standard
errors of the truth (a fixed seed makes the test deterministic; a correct estimator misses 4 SE
with probability 6e-5 per parameter), and the standard errors must be small enough (under 10% of
the value) for that to mean something.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

from analytics.clv import BgNbd, ClvFitError, GammaGamma, NotFittedError, ShiftedBetaGeometric
from analytics.clv.bgnbd import bgnbd_log_likelihood
from analytics.clv.gamma_gamma import gamma_gamma_log_likelihood
from analytics.clv.sbg import sbg_log_likelihood

DATA = Path(__file__).parents[1] / "data"

# Fader & Hardie (2007), table 1: survivors of 1,000 customers at years 0-12.
REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241, 223, 207, 194, 183, 173]
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491, 468, 445, 427, 409, 394]
CDNOW_END = dt.date(1997, 9, 30)  # end of the 39-week calibration period


def _cdnow_summary() -> np.ndarray:
    return np.genfromtxt(DATA / "cdnow_summary.csv", delimiter=",", names=True)


def _cdnow_from_transactions() -> dict[int, tuple[int, float, float, float]]:
    """(x, t_x, T, mean repeat spend) per customer, built from the raw transactions.

    One transaction per customer and day (amounts of a day summed); repeat transactions are
    those after the first day, up to the end of calibration; times in weeks.
    """
    days: dict[int, dict[dt.date, float]] = defaultdict(lambda: defaultdict(float))
    for line in (DATA / "cdnow_sample.txt").read_text().splitlines():
        _, sample_id, day, _, amount = line.split()
        days[int(sample_id)][dt.datetime.strptime(day, "%Y%m%d").date()] += float(amount)
    summary = {}
    for customer, spend in days.items():
        first, *later = sorted(spend)
        repeat = [d for d in later if d <= CDNOW_END]
        t_x = (repeat[-1] - first).days / 7 if repeat else 0.0
        mean = float(np.mean([spend[d] for d in repeat])) if repeat else 0.0
        summary[customer] = (len(repeat), t_x, (CDNOW_END - first).days / 7, mean)
    return summary


# --- Published estimates on the original data ---------------------------------------------

def test_bgnbd_reproduces_fhl_2005_on_cdnow() -> None:
    """FHL (2005), section 5: r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4."""
    d = _cdnow_summary()
    assert d.size == 2357
    model = BgNbd().fit(d["x"], d["t_x"], d["T"])
    assert round(model.r_, 3) == 0.243
    assert round(model.alpha_, 3) == 4.414
    assert round(model.a_, 3) == 0.793
    assert round(model.b_, 3) == 2.426
    assert round(model.log_likelihood_, 1) == -9582.4
    assert math.isclose(float(np.sum(model.log_likelihood(d["x"], d["t_x"], d["T"]))),
                        model.log_likelihood_, rel_tol=1e-12)


def test_our_cdnow_summary_of_the_transactions_matches_the_published_one() -> None:
    d = _cdnow_summary()
    built = _cdnow_from_transactions()
    assert sorted(built) == [int(i) for i in d["ID"]]
    for row in d:
        x, t_x, t_cal, mean = built[int(row["ID"])]
        assert x == row["x"]
        # The published file rounds to 2 decimals.
        assert t_x == pytest.approx(row["t_x"], abs=0.00501)
        assert t_cal == pytest.approx(row["T"], abs=0.00501)
        assert mean == pytest.approx(row["zbar"], abs=0.00501)


def test_gamma_gamma_reproduces_fhl_2005_on_cdnow_repeat_customers() -> None:
    """FHL (2005 JMR) / Fader & Hardie (2013): p = 6.25, q = 3.74, v = 15.44 on 946 customers."""
    built = np.array(list(_cdnow_from_transactions().values()))
    repeat = built[built[:, 0] > 0]
    assert len(repeat) == 946
    model = GammaGamma().fit(repeat[:, 0], repeat[:, 3])
    assert round(model.p_, 2) == 6.25
    assert round(model.q_, 2) == 3.74
    assert round(model.v_, 2) == 15.44


@pytest.mark.parametrize(("survivors", "alpha", "beta"), [
    (REGULAR, 0.704, 1.182),
    (HIGH_END, 0.668, 3.806),
])
def test_sbg_reproduces_fader_hardie_2007(survivors: list[int], alpha: float, beta: float) -> None:
    """Fader & Hardie (2007): fitted on years 0-7 (seven renewals)."""
    model = ShiftedBetaGeometric().fit(survivors[:8])
    assert round(model.alpha_, 3) == alpha
    assert round(model.beta_, 3) == beta
    # The paper's point: the model projects years 8-12 it never saw (within 2% of the cohort).
    projected = 1000 * model.survival(np.arange(8, 13))
    assert np.max(np.abs(projected - survivors[8:])) < 20


# --- Parameters recovered from simulated data ----------------------------------------------

def _simulate_bgnbd(rng: np.random.Generator, n: int, *, r: float, alpha: float, a: float,
                    b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Purchase histories drawn as the BG/NBD story tells them (FHL 2005, section 3)."""
    rate = rng.gamma(r, 1 / alpha, n)
    drop = rng.beta(a, b, n)
    horizon = rng.uniform(26, 104, n)  # customers acquired over 1.5 years, weeks
    x = np.zeros(n)
    t_x = np.zeros(n)
    now = np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        now[active] += rng.exponential(1 / rate[active])
        bought = active & (now <= horizon)
        x[bought] += 1
        t_x[bought] = now[bought]
        # After each repeat purchase a customer leaves for good with probability p.
        active = bought & (rng.uniform(size=n) >= drop)
    return x, t_x, horizon


def _within_standard_errors(fitted: dict[str, float], errors: dict[str, float],
                            truth: dict[str, float]) -> None:
    for name, value in truth.items():
        se = errors[name]
        assert 0 < se < 0.1 * value, f"{name}: standard error {se} too large to test anything"
        assert abs(fitted[name] - value) < 4 * se, f"{name}: {fitted[name]} vs {value} (se {se})"


def test_bgnbd_recovers_simulated_parameters() -> None:
    truth = {"r": 0.8, "alpha": 8.0, "a": 0.6, "b": 3.0}
    x, t_x, t_cal = _simulate_bgnbd(np.random.default_rng(20050401), 20_000, **truth)
    model = BgNbd().fit(x, t_x, t_cal)
    _within_standard_errors(
        {"r": model.r_, "alpha": model.alpha_, "a": model.a_, "b": model.b_},
        model.standard_errors_, truth)


def test_bgnbd_standard_errors_match_the_spread_of_estimates() -> None:
    """The 4-SE tolerance is only as good as the SEs: compare them with a small replication."""
    truth = {"r": 0.8, "alpha": 8.0, "a": 0.6, "b": 3.0}
    rng = np.random.default_rng(7)
    estimates, errors = [], []
    for _ in range(12):
        model = BgNbd().fit(*_simulate_bgnbd(rng, 3_000, **truth))
        estimates.append(model.params)
        errors.append(list(model.standard_errors_.values()))
    spread = np.std(estimates, axis=0, ddof=1)
    mean_se = np.mean(errors, axis=0)
    # With 12 replicates the sample SD is within a factor 1.6 of the truth at ~99%.
    assert np.all(spread / mean_se > 1 / 1.6)
    assert np.all(spread / mean_se < 1.6)


def test_gamma_gamma_recovers_simulated_parameters() -> None:
    truth = {"p": 6.0, "q": 4.0, "v": 15.0}
    rng = np.random.default_rng(19990301)
    n = 20_000
    x = rng.integers(1, 12, n).astype(float)
    nu = rng.gamma(truth["q"], 1 / truth["v"], n)
    # Each transaction is gamma(p, rate nu); the mean of x of them is gamma(px, rate nu x).
    m_x = rng.gamma(truth["p"] * x, 1 / (nu * x))
    model = GammaGamma().fit(x, m_x)
    _within_standard_errors({"p": model.p_, "q": model.q_, "v": model.v_},
                            model.standard_errors_, truth)


def test_sbg_recovers_simulated_parameters() -> None:
    truth = {"alpha": 0.7, "beta": 1.2}
    rng = np.random.default_rng(2007)
    churn = rng.beta(truth["alpha"], truth["beta"], 50_000)
    lifetime = rng.geometric(churn)  # the period (1, 2, ...) in which each customer is lost
    survivors = [int(np.sum(lifetime > t)) for t in range(9)]
    model = ShiftedBetaGeometric().fit(survivors)
    _within_standard_errors({"alpha": model.alpha_, "beta": model.beta_},
                            model.standard_errors_, truth)


# --- Naive reference implementations -------------------------------------------------------

CUSTOMERS = [(0, 0.0, 38.86), (1, 1.71, 38.86), (2, 30.43, 38.86), (7, 25.0, 30.0),
             (25, 20.0, 39.0)]
CDNOW_PARAMS = (0.243, 4.414, 0.793, 2.426)


def _fitted_bgnbd(params: tuple[float, ...]) -> BgNbd:
    model = BgNbd()
    model.r_, model.alpha_, model.a_, model.b_ = params
    return model


def _over_population(params: tuple[float, ...],
                     h: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    """E[h(lambda, p)] over gamma(r, alpha) x beta(a, b), by brute-force quadrature.

    The trapezoidal rule on a fine grid in s = ln(lambda) and w = logit(p), where the mixing
    densities are smooth and decay exponentially at both ends (it converges geometrically for
    such integrands); no Beta or Gamma function identity is used.
    """
    r, alpha, a, b = params
    s = np.arange(-200.0, 6.0, 0.05)[:, None]
    w = np.arange(-80.0, 50.0, 0.05)[None, :]
    lam = np.exp(s)
    p = 1 / (1 + np.exp(-w))
    log_gamma = r * math.log(alpha) + r * s - alpha * lam - math.lgamma(r)  # density x dlambda/ds
    log_beta = (-a * np.logaddexp(0, -w) - b * np.logaddexp(0, w)
                + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))  # density x dp/dw
    weights = np.exp(log_gamma + log_beta)
    return float(np.sum(h(lam, p) * weights) * 0.05 * 0.05)


def _individual_likelihood(x: int, t_x: float,
                           t_cal: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """FHL (2005) eq. (3): alive through T, or dropped out right after the last purchase."""

    def likelihood(lam: np.ndarray, p: np.ndarray) -> np.ndarray:
        alive = (1 - p) ** x * lam**x * np.exp(-lam * t_cal)
        dropped = p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * t_x) if x > 0 else 0.0
        return np.asarray(alive + dropped)

    return likelihood


@pytest.mark.parametrize(("x", "t_x", "t_cal"), CUSTOMERS)
def test_bgnbd_likelihood_equals_integral_over_heterogeneity(x: int, t_x: float,
                                                             t_cal: float) -> None:
    """Eq. (6) in closed form against eq. (3) integrated numerically over lambda and p."""
    naive = _over_population(CDNOW_PARAMS, _individual_likelihood(x, t_x, t_cal))
    closed = bgnbd_log_likelihood(np.array(CDNOW_PARAMS), np.array([x]), np.array([t_x]),
                                  np.array([t_cal]))
    assert math.log(naive) == pytest.approx(float(closed[0]), abs=1e-6)


def test_bgnbd_likelihood_term_by_term_in_plain_python() -> None:
    r, alpha, a, b = CDNOW_PARAMS
    d = _cdnow_summary()[:200]
    vectorised = bgnbd_log_likelihood(np.array(CDNOW_PARAMS), d["x"], d["t_x"], d["T"])
    for row, fast in zip(d, vectorised, strict=True):
        x, t_x, t_cal = int(row["x"]), float(row["t_x"]), float(row["T"])
        a1 = math.exp(math.lgamma(r + x) - math.lgamma(r)) * alpha**r
        a2 = math.exp(math.lgamma(a + b) + math.lgamma(b + x) - math.lgamma(b)
                      - math.lgamma(a + b + x))
        a3 = (1 / (alpha + t_cal)) ** (r + x)
        a4 = a / (b + x - 1) * (1 / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
        assert math.log(a1 * a2 * (a3 + a4)) == pytest.approx(float(fast), abs=1e-9)


@pytest.mark.parametrize(("x", "t_x", "t_cal"), CUSTOMERS)
def test_bgnbd_predictions_equal_bayes_by_quadrature(x: int, t_x: float, t_cal: float) -> None:
    """P(alive) and E[Y(t)] as posterior expectations over (lambda, p), integrated numerically.

    Given lambda and p, an active customer buys 1/p (1 - exp(-lambda p t)) times in t
    (FHL 2005, eq. 7); the posterior weight of "active" is (1-p)^x lambda^x exp(-lambda T).
    """
    model = _fitted_bgnbd(CDNOW_PARAMS)
    t = 39.0

    def alive(lam: np.ndarray, p: np.ndarray) -> np.ndarray:
        return np.asarray((1 - p) ** x * lam**x * np.exp(-lam * t_cal))

    evidence = _over_population(CDNOW_PARAMS, _individual_likelihood(x, t_x, t_cal))
    p_alive = _over_population(CDNOW_PARAMS, alive) / evidence
    future = _over_population(
        CDNOW_PARAMS, lambda lam, p: alive(lam, p) * -np.expm1(-lam * p * t) / p) / evidence
    assert float(model.probability_alive([x], [t_x], [t_cal])[0]) == pytest.approx(p_alive,
                                                                                  rel=1e-6)
    assert float(model.conditional_expected_purchases(t, [x], [t_x], [t_cal])[0]) == (
        pytest.approx(future, rel=1e-6))


def test_bgnbd_population_expectation_by_quadrature() -> None:
    model = _fitted_bgnbd(CDNOW_PARAMS)
    for t in (1.0, 39.0, 78.0):

        def purchases(lam: np.ndarray, p: np.ndarray, t: float = t) -> np.ndarray:
            return np.asarray(-np.expm1(-lam * p * t) / p)

        naive = _over_population(CDNOW_PARAMS, purchases)
        assert float(model.expected_purchases(t)) == pytest.approx(naive, rel=1e-6)


def test_bgnbd_probability_alive_stays_finite_for_heavy_silent_buyers() -> None:
    model = _fitted_bgnbd(CDNOW_PARAMS)
    alive = model.probability_alive([500, 500], [1.0, 100.0], [100.0, 100.0])
    assert 0 <= alive[0] < 1e-100
    assert 0.5 < alive[1] <= 1


@pytest.mark.parametrize(("x", "m_x"), [(1, 29.33), (3, 12.5), (12, 80.0)])
def test_gamma_gamma_density_and_expectation_by_quadrature(x: int, m_x: float) -> None:
    """f(m_x | x) and E[M | m_x, x] against integrals over nu of the individual model."""
    p, q, v = 6.25, 3.74, 15.44
    prior = stats.gamma(q, scale=1 / v)

    def joint(nu: float) -> float:
        # The mean of x gamma(p, rate nu) values is gamma(p x, rate nu x).
        return float(stats.gamma.pdf(m_x, p * x, scale=1 / (nu * x)) * prior.pdf(nu))

    density, _ = integrate.quad(joint, 0, np.inf, epsrel=1e-11, limit=200)
    posterior_mean, _ = integrate.quad(lambda nu: p / nu * joint(nu), 0, np.inf, epsrel=1e-11,
                                       limit=200)
    closed = gamma_gamma_log_likelihood(np.array([p, q, v]), np.array([x]), np.array([m_x]))
    assert float(closed[0]) == pytest.approx(math.log(density), abs=1e-7)
    model = GammaGamma()
    model.p_, model.q_, model.v_ = p, q, v
    expected = model.conditional_expected_average_profit([x], [m_x])
    assert float(expected[0]) == pytest.approx(posterior_mean / density, rel=1e-7)


def test_clv_is_the_discounted_sum_of_period_purchases() -> None:
    d = _cdnow_summary()[:50]
    bgnbd = _fitted_bgnbd(CDNOW_PARAMS)
    gg = GammaGamma()
    gg.p_, gg.q_, gg.v_ = 6.25, 3.74, 15.44
    months, rate, weeks = 12, 0.01, 52 / 12
    clv = gg.customer_lifetime_value(bgnbd, d["x"], d["t_x"], d["T"], d["zbar"], months, rate,
                                     period_length=weeks)
    for i, row in enumerate(d):
        spend = float(gg.conditional_expected_average_profit([row["x"]], [row["zbar"]])[0])
        naive, before = 0.0, 0.0
        for month in range(1, months + 1):
            upto = float(bgnbd.conditional_expected_purchases(month * weeks, [row["x"]],
                                                              [row["t_x"]], [row["T"]])[0])
            naive += spend * (upto - before) / (1 + rate) ** month
            before = upto
        assert float(clv[i]) == pytest.approx(naive, rel=1e-12)
    # Undiscounted, the sum telescopes to spend x purchases over the whole horizon.
    flat = gg.customer_lifetime_value(bgnbd, d["x"], d["t_x"], d["T"], d["zbar"], months, 0.0,
                                      period_length=weeks)
    whole = bgnbd.conditional_expected_purchases(52.0, d["x"], d["t_x"], d["T"])
    np.testing.assert_allclose(
        flat, gg.conditional_expected_average_profit(d["x"], d["zbar"]) * whole, rtol=1e-12)
    assert np.all(clv < flat)


def _naive_sbg(alpha: float, beta: float, periods: int) -> tuple[list[float], list[float]]:
    """P(T = t) by the recursion of Fader & Hardie (2007) eq. (7), S(t) = 1 - sum of them."""
    churn = [alpha / (alpha + beta)]
    for t in range(2, periods + 1):
        churn.append(churn[-1] * (beta + t - 2) / (alpha + beta + t - 1))
    survival = [1.0]
    for p in churn:
        survival.append(survival[-1] - p)
    return churn, survival


def test_sbg_functions_and_likelihood_against_the_recursion() -> None:
    model = ShiftedBetaGeometric().fit(REGULAR[:8])
    churn, survival = _naive_sbg(model.alpha_, model.beta_, 40)
    t = np.arange(1, 41)
    np.testing.assert_allclose(model.churn_probability(t), churn, rtol=1e-10)
    np.testing.assert_allclose(model.survival(np.arange(41)), survival, rtol=1e-9)
    np.testing.assert_allclose(model.retention_rate(t),
                               np.array(survival[1:]) / np.array(survival[:-1]), rtol=1e-9)
    s = REGULAR[:8]
    naive_ll = sum((s[i - 1] - s[i]) * math.log(churn[i - 1]) for i in range(1, 8))
    naive_ll += s[7] * math.log(survival[7])
    assert sbg_log_likelihood(model.params, np.array(s, dtype=float)) == pytest.approx(naive_ll)
    assert model.log_likelihood_ == pytest.approx(naive_ll)


@pytest.mark.parametrize("renewals", [0, 1, 4, 7])
def test_sbg_derl_is_the_discounted_sum_of_future_payments(renewals: int) -> None:
    """DERL = sum_{k>=0} S(n+1+k) / S(n) / (1+d)^k, summed until the terms vanish."""
    model = ShiftedBetaGeometric().fit(HIGH_END[:8])
    d = 0.1
    _, survival = _naive_sbg(model.alpha_, model.beta_, renewals + 2000)
    naive = sum(survival[renewals + 1 + k] / survival[renewals] / (1 + d) ** k
                for k in range(1999))
    derl = float(model.discounted_expected_residual_lifetime(renewals, d))
    assert derl == pytest.approx(naive, rel=1e-9)
    within_ten = float(model.expected_remaining_lifetime(renewals, horizon=10))
    assert within_ten == pytest.approx(
        sum(survival[renewals + k] / survival[renewals] for k in range(1, 11)), rel=1e-9)


def test_sbg_derl_matches_an_independent_implementation() -> None:
    """jdmaturen/shifted_beta_geometric_py's README: high end, 7 renewals, d = 10%: 7.530."""
    model = ShiftedBetaGeometric().fit(HIGH_END[:8])
    assert round(float(model.discounted_expected_residual_lifetime(7, 0.1)), 3) == 7.530


def test_sbg_expected_remaining_lifetime() -> None:
    model = ShiftedBetaGeometric()
    model.alpha_, model.beta_ = 2.5, 4.0
    _, survival = _naive_sbg(2.5, 4.0, 200_000)
    naive = sum(survival[3 + k] / survival[3] for k in range(1, 199_990))
    assert float(model.expected_remaining_lifetime(3)) == pytest.approx(naive, rel=1e-6)
    assert float(model.discounted_expected_residual_lifetime(3, 0.0)) == pytest.approx(naive,
                                                                                       rel=1e-6)
    # Both segments of the paper have alpha < 1: customers who almost never leave make the
    # undiscounted expectation infinite.
    assert np.isinf(ShiftedBetaGeometric().fit(REGULAR[:8]).expected_remaining_lifetime(0))


# --- Input checks and failures --------------------------------------------------------------

@pytest.mark.parametrize(("frequency", "recency", "T", "message"), [
    ([-1, 2], [0.0, 3.0], [10.0, 10.0], "frequency must not be negative"),
    ([1.5, 2], [1.0, 3.0], [10.0, 10.0], "frequency must be whole"),
    ([1, 2], [11.0, 3.0], [10.0, 10.0], "recency exceeds T"),
    ([1, 2], [-1.0, 3.0], [10.0, 10.0], "recency must not be negative"),
    ([0, 2], [4.0, 3.0], [10.0, 10.0], "recency must be 0 when frequency is 0"),
    ([1, 2], [1.0, 3.0], [0.0, 10.0], "T must be positive"),
    ([1, 2], [1.0, 3.0], [10.0], "inputs differ in length"),
    ([1, np.nan], [1.0, 3.0], [10.0, 10.0], "missing or infinite"),
    ([0, 0], [0.0, 0.0], [10.0, 10.0], "no customer made a repeat purchase"),
])
def test_bgnbd_refuses_bad_input(frequency: list[float], recency: list[float], T: list[float],  # noqa: N803
                                 message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BgNbd().fit(frequency, recency, T)


def test_gamma_gamma_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="repeat customers only"):
        GammaGamma().fit([0, 2, 3], [0.0, 10.0, 12.0])
    with pytest.raises(ValueError, match="monetary_value must be positive"):
        GammaGamma().fit([1, 2, 3], [-5.0, 10.0, 12.0])
    with pytest.raises(ValueError, match="inputs differ in length"):
        GammaGamma().fit([1, 2, 3], [5.0, 10.0])


@pytest.mark.parametrize(("survivors", "message"), [
    ([1000], "at least two periods"),
    ([1000, 800, 810], "must never increase: period 2"),
    ([0, 0, 0], "cohort size, must be positive"),
    ([1000, -1], "must not be negative"),
    ([1000, 1000, 1000], "nobody in the cohort churned"),
    ([1000, 0, 0], "everybody churned at the first renewal"),
])
def test_sbg_refuses_bad_survivors(survivors: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShiftedBetaGeometric().fit(survivors)


def test_sbg_refuses_fractional_periods() -> None:
    model = ShiftedBetaGeometric().fit(REGULAR[:8])
    with pytest.raises(ValueError, match="whole numbers"):
        model.survival(1.5)
    with pytest.raises(ValueError, match=">= 1"):
        model.retention_rate(0)


def test_unfitted_models_say_so() -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        BgNbd().probability_alive([1], [1.0], [2.0])
    with pytest.raises(NotFittedError, match="call fit"):
        ShiftedBetaGeometric().survival(1)


def test_unidentifiable_data_raise_a_fit_error() -> None:
    """Every customer spends the same: the between-customer variance is 0 and q, v run off."""
    with pytest.raises(ClvFitError, match="Gamma-Gamma"):
        GammaGamma().fit([1, 2, 3, 4] * 25, [50.0] * 100)
