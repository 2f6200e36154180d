"""Shifted-beta-geometric: how long contracts keep renewing (Fader & Hardie 2007, 2010).

Fader & Hardie (2007), "How to Project Customer Retention", Journal of Interactive Marketing
21(1), 76-90; Fader & Hardie (2010), "Customer-Base Valuation in a Contractual Setting: The
Perils of Ignoring Heterogeneity", Marketing Science 29(1), 85-93.

For contractual business (service contracts renewed each year): a customer who leaves says so,
at a renewal. Assumptions of the model:

- At each renewal an active customer churns with probability theta, the same every period.
- theta varies across customers as a beta(alpha, beta) distribution.

So the cohort's retention rate rises over time, not because anyone grows more loyal but because
the likely leavers leave first. Periods are counted from the cohort's start: ``survivors[0]``
customers begin at period 0, ``survivors[t]`` are still active at period t, i.e. have renewed t
times. T, the period in which a customer is lost, is 1, 2, ...
"""

from __future__ import annotations

import logging
from typing import Self

import numpy as np
from scipy.special import betaln, hyp2f1

from analytics.clv._fitting import (
    ArrayLike,
    FloatArray,
    NotFittedError,
    as_vector,
    check_non_negative,
    maximise_likelihood,
    standard_errors,
)

logger = logging.getLogger(__name__)


def sbg_log_likelihood(params: FloatArray, survivors: FloatArray) -> float:
    """Log-likelihood of a cohort's survivor counts, Fader & Hardie (2007) eq. (8).

    LL = sum_{t=1..n} (s_{t-1} - s_t) ln P(T = t) + s_n ln S(n), with
    P(T = t) = B(alpha+1, beta+t-1) / B(alpha, beta) and S(t) = B(alpha, beta+t) / B(alpha, beta).
    """
    alpha, beta = params
    n = survivors.size - 1
    t = np.arange(1, n + 1)
    lost = survivors[:-1] - survivors[1:]
    # On its way to the edge of the parameter space (alpha, beta near 0: no heterogeneity in
    # the data) the optimiser meets log-betas of inf - inf. The likelihood is then nan, which
    # maximise_likelihood steers away from; numpy need not warn about it on the way.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ln_p = betaln(alpha + 1.0, beta + t - 1.0) - betaln(alpha, beta)
        ln_s = betaln(alpha, beta + n) - betaln(alpha, beta)
        # 0 * ln P is 0 even where ln P is infinite: multiply only where someone was lost.
        churned = np.multiply(lost, ln_p, out=np.zeros_like(ln_p), where=lost > 0)
        return float(np.sum(churned) + (survivors[-1] * ln_s if survivors[-1] > 0 else 0.0))


class ShiftedBetaGeometric:
    """The shifted-beta-geometric (sBG) model of contract renewals, fitted by maximum likelihood.

    Attributes
    ----------
    alpha_, beta_ : float
        Parameters of the beta distribution of churn probabilities; the mean churn probability
        at the first renewal is alpha / (alpha + beta).
    log_likelihood_ : float
        Maximised log-likelihood.
    standard_errors_ : dict[str, float]
        Asymptotic standard errors of the two estimates.
    cohort_size_ : float
        survivors[0] of the data fitted.

    Examples
    --------
    A cohort of 1,000 contracts followed for seven renewals (the "high end" segment of Fader &
    Hardie 2007):

    >>> model = ShiftedBetaGeometric().fit([1000, 869, 743, 653, 593, 551, 517, 491])
    >>> round(model.alpha_, 3), round(model.beta_, 3)
    (0.668, 3.806)
    >>> [round(float(s), 3) for s in model.survival([0, 1, 12])]
    [1.0, 0.851, 0.378]
    >>> round(float(model.retention_rate(12)), 3)
    0.957
    """

    alpha_: float
    beta_: float
    log_likelihood_: float
    standard_errors_: dict[str, float]
    cohort_size_: float

    def fit(self, survivors: ArrayLike) -> Self:
        """Estimate alpha and beta from one cohort's survivor counts.

        Parameters
        ----------
        survivors : array_like of float
            Customers of the cohort still active at period 0, 1, 2, ... (at least two values;
            survivors[0] > 0; never increasing). Counts, or shares of the cohort: the estimates
            are the same, but standard errors need counts.

        Returns
        -------
        ShiftedBetaGeometric
            ``self``, fitted.

        Raises
        ------
        ValueError
            If survivors has fewer than two values, a negative value, an increase, or nobody
            at period 0; or if nobody ever churned or everybody churned at once (the beta
            distribution cannot be identified).
        analytics.clv.ClvFitError
            If the optimiser does not converge.
        """
        s = as_vector(survivors, "survivors")
        if s.size < 2:
            msg = "survivors needs at least two periods (the cohort and one renewal)"
            raise ValueError(msg)
        check_non_negative(s, "survivors")
        if s[0] <= 0:
            msg = "survivors[0], the cohort size, must be positive"
            raise ValueError(msg)
        rising = np.diff(s) > 0
        if np.any(rising):
            first = int(np.argmax(rising)) + 1
            msg = (f"survivors must never increase: period {first} has {s[first]} after "
                   f"{s[first - 1]} (a cohort gains no members after it starts)")
            raise ValueError(msg)
        if s[-1] == s[0]:
            msg = "nobody in the cohort churned: the churn distribution cannot be estimated"
            raise ValueError(msg)
        if s[1] == 0:
            msg = ("everybody churned at the first renewal: the churn distribution cannot be "
                   "estimated")
            raise ValueError(msg)

        def total(params: FloatArray) -> float:
            return sbg_log_likelihood(params, s)

        params, maximum = maximise_likelihood(total, np.array([1.0, 1.0]), model="sBG",
                                              observations=float(s[0]))
        self.alpha_, self.beta_ = (float(v) for v in params)
        self.log_likelihood_ = maximum
        se = standard_errors(total, params)
        self.standard_errors_ = dict(zip(("alpha", "beta"), map(float, se), strict=True))
        self.cohort_size_ = float(s[0])
        logger.info("sBG fitted to a cohort of %s over %s periods: alpha=%.4g beta=%.4g",
                    s[0], s.size - 1, *params)
        return self

    @property
    def params(self) -> FloatArray:
        """The fitted (alpha, beta) as an array."""
        try:
            return np.array([self.alpha_, self.beta_])
        except AttributeError:
            msg = "ShiftedBetaGeometric is not fitted yet: call fit() first"
            raise NotFittedError(msg) from None

    def survival(self, t: ArrayLike) -> FloatArray:
        """Share of the cohort active at period t, S(t) = B(alpha, beta+t) / B(alpha, beta)."""
        alpha, beta = self.params
        periods = _periods(t, minimum=0)
        return np.asarray(np.exp(betaln(alpha, beta + periods) - betaln(alpha, beta)))

    def retention_rate(self, t: ArrayLike) -> FloatArray:
        """Share of those active at t-1 who renew at t, r_t = (beta+t-1) / (alpha+beta+t-1)."""
        alpha, beta = self.params
        periods = _periods(t, minimum=1)
        return np.asarray((beta + periods - 1.0) / (alpha + beta + periods - 1.0))

    def churn_probability(self, t: ArrayLike) -> FloatArray:
        """Probability that a new customer is lost at period t: P(T = t) = B(alpha+1, beta+t-1) / B(alpha, beta), t >= 1."""  # noqa: E501
        alpha, beta = self.params
        periods = _periods(t, minimum=1)
        return np.asarray(np.exp(betaln(alpha + 1.0, beta + periods - 1.0) - betaln(alpha, beta)))

    def discounted_expected_residual_lifetime(self, renewals: ArrayLike,
                                              discount_rate: float) -> FloatArray:
        """DERL of a customer who has renewed n times, just before the next renewal decision.

        Fader & Hardie (2010) eq. (5), with their "n - 1 renewals" being our n:
        DERL(d | alpha, beta, n) = B(alpha, beta+n+1) / B(alpha, beta+n)
        2F1(1, beta+n+1; alpha+beta+n+1; 1/(1+d)),
        the expected number of future payments, each discounted by (1+d) per period, counting
        the next one (received at the coming renewal, if it happens) undiscounted. Multiply by
        the payment per period for the customer's residual value.

        Parameters
        ----------
        renewals : array_like of int
            Renewals made so far (0 for a customer in their first contract period).
        discount_rate : float
            Discount rate per period, > 0 (with d = 0 and alpha <= 1 the sum diverges).
        """
        alpha, beta = self.params
        n = _periods(renewals, minimum=0)
        if not np.isfinite(discount_rate) or discount_rate < 0:
            msg = f"discount_rate must be >= 0, got {discount_rate!r}"
            raise ValueError(msg)
        if discount_rate == 0:
            return self.expected_remaining_lifetime(n)
        ratio = np.exp(betaln(alpha, beta + n + 1.0) - betaln(alpha, beta + n))
        return np.asarray(ratio * hyp2f1(1.0, beta + n + 1.0, alpha + beta + n + 1.0,
                                         1.0 / (1.0 + discount_rate)))

    def expected_remaining_lifetime(self, renewals: ArrayLike,
                                    horizon: int | None = None) -> FloatArray:
        """Expected number of further renewals of a customer who has renewed n times.

        E[T - 1 - n | T > n] = sum_{k>=1} S(n+k) / S(n) = (beta + n) / (alpha - 1) when
        alpha > 1. When alpha <= 1 (both segments of Fader & Hardie 2007) the tail of the beta
        distribution near theta = 0 holds customers who almost never leave, and the expectation
        is infinite: then pass a ``horizon`` (in periods) to sum the first ``horizon`` terms,
        or use the discounted :meth:`discounted_expected_residual_lifetime`.

        Parameters
        ----------
        renewals : array_like of int
            Renewals made so far.
        horizon : int, optional
            Count only renewals in the next ``horizon`` periods.
        """
        alpha, beta = self.params
        n = _periods(renewals, minimum=0)
        if horizon is None:
            if alpha <= 1:
                return np.asarray(np.full(n.shape, np.inf))
            return np.asarray((beta + n) / (alpha - 1.0))
        if int(horizon) != horizon or horizon < 0:
            msg = f"horizon must be a whole number of periods >= 0, got {horizon!r}"
            raise ValueError(msg)
        k = np.arange(1, int(horizon) + 1)
        terms = np.exp(betaln(alpha, beta + n[..., None] + k) - betaln(alpha, beta + n[..., None]))
        return np.asarray(np.sum(terms, axis=-1))


def _periods(t: ArrayLike, *, minimum: int) -> FloatArray:
    periods = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(periods)) or np.any(periods != np.round(periods)):
        msg = f"periods must be whole numbers, got {t!r}"
        raise ValueError(msg)
    if np.any(periods < minimum):
        msg = f"periods must be >= {minimum}, got {t!r}"
        raise ValueError(msg)
    return periods
