"""BG/NBD: how often a customer buys, and whether they still do (Fader, Hardie & Lee 2005).

"Counting Your Customers the Easy Way: An Alternative to the Pareto/NBD Model", Marketing
Science 24(2), 275-284. For non-contractual repeat business (spare parts, field service):
nobody tells us they have left, so "alive" is a probability worked out from the purchase record.

Assumptions of the model:

- While active, a customer buys as a Poisson process with rate lambda.
- lambda varies across customers as a gamma(r, alpha) distribution.
- After each purchase a customer drops out for good with probability p.
- p varies across customers as a beta(a, b) distribution, independently of lambda.

A customer's record is summarised by (x, t_x, T): ``frequency`` x, the number of repeat
purchases (the first purchase excluded); ``recency`` t_x, the time of the last repeat purchase
measured from the first purchase (0 when x = 0); and ``T``, the time from the first purchase to
the end of the observation. Any time unit works; the parameter alpha and every ``t`` are in it.
"""

from __future__ import annotations

import logging
from typing import Self

import numpy as np
from scipy.special import betaln, gammaln, hyp2f1

from analytics.clv._fitting import (
    ArrayLike,
    FloatArray,
    NotFittedError,
    as_vector,
    check_non_negative,
    check_whole,
    maximise_likelihood,
    same_length,
    standard_errors,
)

logger = logging.getLogger(__name__)


def bgnbd_log_likelihood(params: FloatArray, x: FloatArray, t_x: FloatArray,
                         T: FloatArray) -> FloatArray:  # noqa: N803
    """Log-likelihood of each customer under the BG/NBD, FHL (2005) eq. (6).

    ln L = ln A1 + ln A2 + ln(A3 + delta_{x>0} A4), with
    A1 = Gamma(r+x) alpha^r / Gamma(r), A2 = B(a, b+x) / B(a, b), A3 = (alpha+T)^-(r+x),
    A4 = a/(b+x-1) (alpha+t_x)^-(r+x). Computed in logs (logaddexp for the sum) so that heavy
    buyers, whose A3 and A4 underflow in plain arithmetic, keep a finite likelihood.
    """
    r, alpha, a, b = params
    ln_a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    ln_a2 = betaln(a, b + x) - betaln(a, b)
    ln_a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    # x - 1 is -1 for non-repeaters; that term is switched off, so any positive stand-in will do.
    ln_a4 = np.where(
        repeat,
        np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return np.asarray(ln_a1 + ln_a2 + np.logaddexp(ln_a3, ln_a4))


class BgNbd:
    """The BG/NBD model of repeat purchasing, fitted by maximum likelihood.

    Attributes
    ----------
    r_, alpha_ : float
        Shape and scale of the gamma distribution of purchase rates (alpha in the time unit of
        the data). The mean purchase rate of an active customer is r / alpha.
    a_, b_ : float
        Parameters of the beta distribution of drop-out probabilities after a purchase; the
        mean drop-out probability is a / (a + b).
    log_likelihood_ : float
        Maximised total log-likelihood.
    standard_errors_ : dict[str, float]
        Asymptotic standard errors of the four estimates (inverse observed information).
    n_customers_ : int
        Number of customers the model was fitted to.

    Examples
    --------
    Six customers observed for 40 weeks each (frequency, recency, T):

    >>> model = BgNbd().fit([0, 1, 2, 4, 0, 7], [0.0, 6.0, 30.0, 35.0, 0.0, 38.0], [40.0] * 6)
    >>> model.r_ > 0 and model.alpha_ > 0 and model.a_ > 0 and model.b_ > 0
    True

    A customer without repeat purchases has not shown a chance to drop out; of two with four,
    the one silent for 35 weeks is less likely still a customer than the one who just bought:

    >>> alive = model.probability_alive([0, 4, 4], [0.0, 5.0, 39.0], [40.0, 40.0, 40.0])
    >>> bool(alive[0] == 1.0), bool(alive[1] < alive[2])
    (True, True)
    """

    r_: float
    alpha_: float
    a_: float
    b_: float
    log_likelihood_: float
    standard_errors_: dict[str, float]
    n_customers_: int

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Self:  # noqa: N803
        """Estimate r, alpha, a, b by maximum likelihood.

        Parameters
        ----------
        frequency : array_like of int
            Number of repeat purchases per customer (>= 0).
        recency : array_like of float
            Time of the last repeat purchase after the first purchase (0 when frequency is 0).
        T : array_like of float
            Time from the first purchase to the end of observation (> 0, >= recency).

        Returns
        -------
        BgNbd
            ``self``, fitted.

        Raises
        ------
        ValueError
            On malformed input (see :func:`check_rfm`).
        analytics.clv.ClvFitError
            If the optimiser does not converge.
        """
        x, t_x, t_cal = check_rfm(frequency, recency, T)
        if not np.any(x > 0):
            msg = "BG/NBD: no customer made a repeat purchase; the model cannot be identified"
            raise ValueError(msg)

        def total(params: FloatArray) -> float:
            return float(np.sum(bgnbd_log_likelihood(params, x, t_x, t_cal)))

        # Start from a method-of-moments-ish point: r = 1, alpha = 1 / mean rate, a = b = 1.
        rate = max(float(np.sum(x) / np.sum(t_cal)), 1e-6)
        start = np.array([1.0, 1.0 / rate, 1.0, 1.0])
        params, maximum = maximise_likelihood(total, start, model="BG/NBD",
                                              observations=x.size)
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in params)
        self.log_likelihood_ = maximum
        se = standard_errors(total, params)
        self.standard_errors_ = dict(zip(("r", "alpha", "a", "b"), map(float, se), strict=True))
        self.n_customers_ = int(x.size)
        logger.info("BG/NBD fitted to %s customers: r=%.4g alpha=%.4g a=%.4g b=%.4g LL=%.6g",
                    x.size, *params, maximum)
        return self

    @property
    def params(self) -> FloatArray:
        """The fitted (r, alpha, a, b) as an array."""
        try:
            return np.array([self.r_, self.alpha_, self.a_, self.b_])
        except AttributeError:
            msg = "BgNbd is not fitted yet: call fit() first"
            raise NotFittedError(msg) from None

    def log_likelihood(self, frequency: ArrayLike, recency: ArrayLike,
                       T: ArrayLike) -> FloatArray:  # noqa: N803
        """Log-likelihood of each customer at the fitted parameters (FHL 2005, eq. 6)."""
        x, t_x, t_cal = check_rfm(frequency, recency, T)
        return bgnbd_log_likelihood(self.params, x, t_x, t_cal)

    def expected_purchases(self, t: ArrayLike) -> FloatArray:
        """Expected repeat purchases in (0, t] of a customer just acquired, E[X(t)].

        FHL (2005) eq. (9): (a+b-1)/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))].

        Parameters
        ----------
        t : array_like of float
            Horizon(s) from the first purchase, >= 0.
        """
        r, alpha, a, b = self.params
        time = _horizon(t)
        z = time / (alpha + time)
        bracket = 1.0 - (alpha / (alpha + time)) ** r * hyp2f1(r, b, a + b - 1.0, z)
        return np.asarray((a + b - 1.0) / (a - 1.0) * bracket)

    def conditional_expected_purchases(self, t: ArrayLike, frequency: ArrayLike,
                                       recency: ArrayLike, T: ArrayLike) -> FloatArray:  # noqa: N803
        """Expected purchases in (T, T+t] of each customer given their record, FHL (2005) eq. (10).

        E[Y(t) | x, t_x, T] = (a+b+x-1)/(a-1)
            [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))]
            / (1 + delta_{x>0} a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)).

        Parameters
        ----------
        t : float or array_like
            Horizon after the end of observation (a scalar, or one per customer).
        frequency, recency, T : array_like
            As for :meth:`fit`.
        """
        r, alpha, a, b = self.params
        x, t_x, t_cal = check_rfm(frequency, recency, T)
        time = _horizon(t)
        z = time / (alpha + t_cal + time)
        bracket = 1.0 - ((alpha + t_cal) / (alpha + t_cal + time)) ** (r + x) * hyp2f1(
            r + x, b + x, a + b + x - 1.0, z)
        return np.asarray((a + b + x - 1.0) / (a - 1.0) * bracket
                          * self.probability_alive(x, t_x, t_cal))

    def probability_alive(self, frequency: ArrayLike, recency: ArrayLike,
                          T: ArrayLike) -> FloatArray:  # noqa: N803
        """Probability that each customer is still active at T, FHL (2005) eq. (13).

        P(alive | x, t_x, T) = 1 / (1 + delta_{x>0} a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)).
        Evaluated in logs: for a heavy buyer long silent the ratio overflows in plain floats.
        """
        r, alpha, a, b = self.params
        x, t_x, t_cal = check_rfm(frequency, recency, T)
        repeat = x > 0
        log_odds_dead = (np.log(a) - np.log(np.where(repeat, b + x - 1.0, 1.0))
                         + (r + x) * (np.log(alpha + t_cal) - np.log(alpha + t_x)))
        return np.asarray(np.where(repeat, np.exp(-np.logaddexp(0.0, log_odds_dead)), 1.0))


def check_rfm(frequency: ArrayLike, recency: ArrayLike,
              T: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:  # noqa: N803
    """Validate a (frequency, recency, T) summary and return it as float arrays.

    Raises
    ------
    ValueError
        If the arrays differ in length or hold missing values; if frequency is negative or not
        whole; if recency is negative or exceeds T; if T is not positive; or if a customer
        without repeat purchases has a recency other than 0 (recency is the time of the last
        *repeat* purchase, so such a record was built from the wrong dates).
    """
    x = as_vector(frequency, "frequency")
    t_x = as_vector(recency, "recency")
    t_cal = as_vector(T, "T")
    same_length(frequency=x, recency=t_x, T=t_cal)
    check_non_negative(x, "frequency")
    check_whole(x, "frequency")
    check_non_negative(t_x, "recency")
    if np.any(t_cal <= 0):
        first = int(np.argmax(t_cal <= 0))
        msg = f"T must be positive (index {first}: {t_cal[first]})"
        raise ValueError(msg)
    # A tolerance, since recency and T often come from the same rounded date arithmetic.
    late = t_x > t_cal * (1 + 1e-9)
    if np.any(late):
        first = int(np.argmax(late))
        msg = f"recency exceeds T (index {first}: recency {t_x[first]} > T {t_cal[first]})"
        raise ValueError(msg)
    stray = (x == 0) & (t_x != 0)
    if np.any(stray):
        first = int(np.argmax(stray))
        msg = (f"recency must be 0 when frequency is 0 (index {first}: recency {t_x[first]}); "
               "recency is the time of the last repeat purchase after the first one")
        raise ValueError(msg)
    return x, t_x, t_cal


def _horizon(t: ArrayLike) -> FloatArray:
    time = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(time)) or np.any(time < 0):
        msg = f"the horizon t must be finite and non-negative, got {t!r}"
        raise ValueError(msg)
    return time
