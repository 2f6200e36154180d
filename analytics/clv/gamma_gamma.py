"""Gamma-Gamma: how much a customer spends per purchase (Fader, Hardie & Lee 2005).

Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for Customer Base Analysis",
Journal of Marketing Research 42(4), 415-430; the submodel is Colombo & Jiang (1999), "A
stochastic RFM model", Journal of Interactive Marketing 13(3), 2-12, as written up in Fader &
Hardie (2013), "The Gamma-Gamma Model of Monetary Value".

Assumptions of the model:

- The value z of each of a customer's transactions is gamma(p, nu) around the customer's mean
  p / nu; what we observe is m_x, the mean of the customer's x repeat transactions.
- nu varies across customers as a gamma(q, v) distribution (v, the issue's name for gamma).
- Spend is independent of the purchase process: check that frequency and monetary value are
  barely correlated before combining the model with the BG/NBD.

Only repeat purchases count, both for x and m_x: the first purchase of a B2B customer (the
machine, a start-up kit) is usually of another kind than the parts and service that follow.
"""

from __future__ import annotations

import logging
from typing import Self

import numpy as np
from scipy.special import gammaln

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
from analytics.clv.bgnbd import BgNbd

logger = logging.getLogger(__name__)


def gamma_gamma_log_likelihood(params: FloatArray, x: FloatArray, m_x: FloatArray) -> FloatArray:
    """Log-density of each customer's mean spend m_x given x transactions (Fader & Hardie 2013).

    f(m_x | p, q, v; x) = Gamma(px+q) / (Gamma(px) Gamma(q)) v^q m_x^(px-1) x^(px)
    / (v + x m_x)^(px+q).
    """
    p, q, v = params
    px = p * x
    return np.asarray(gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
                      + (px - 1.0) * np.log(m_x) + px * np.log(x) - (px + q) * np.log(v + x * m_x))


class GammaGamma:
    """The Gamma-Gamma model of spend per transaction, fitted by maximum likelihood.

    Attributes
    ----------
    p_ : float
        Shape of the gamma distribution of a customer's transaction values.
    q_, v_ : float
        Shape and scale of the gamma distribution of its rate parameter across customers. The
        population mean spend per transaction is p v / (q - 1) (finite when q > 1).
    log_likelihood_ : float
        Maximised total log-likelihood.
    standard_errors_ : dict[str, float]
        Asymptotic standard errors of the three estimates.
    n_customers_ : int
        Number of (repeat) customers the model was fitted to.

    Examples
    --------
    Spends simulated from the model itself (p = 6, q = 4, v = 15) for 2,000 customers:

    >>> rng = np.random.default_rng(7)
    >>> x = rng.integers(1, 10, size=2000)
    >>> nu = rng.gamma(4.0, 1 / 15.0, size=2000)
    >>> m_x = rng.gamma(6.0 * x, 1 / (nu * x))  # the mean of x gamma(6, nu) spends
    >>> model = GammaGamma().fit(x, m_x)
    >>> model.p_ > 0 and model.q_ > 0 and model.v_ > 0
    True
    >>> few, many = model.conditional_expected_average_profit([1, 20], [100.0, 100.0])
    >>> bool(few < many)  # the more transactions, the more the customer's own mean counts
    True
    """

    p_: float
    q_: float
    v_: float
    log_likelihood_: float
    standard_errors_: dict[str, float]
    n_customers_: int

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike) -> Self:
        """Estimate p, q, v by maximum likelihood on customers with repeat purchases.

        Parameters
        ----------
        frequency : array_like of int
            Number of repeat transactions per customer; all must be > 0 (select the repeat
            customers before fitting: for the others there is no spend to learn from).
        monetary_value : array_like of float
            Each customer's mean value of those transactions, > 0.

        Returns
        -------
        GammaGamma
            ``self``, fitted.

        Raises
        ------
        ValueError
            On malformed input, a frequency of 0 or a non-positive monetary value.
        analytics.clv.ClvFitError
            If the optimiser does not converge.
        """
        x, m_x = _check_spend(frequency, monetary_value)
        if np.any(x == 0):
            msg = (f"Gamma-Gamma is fitted on repeat customers only: {int(np.sum(x == 0))} have "
                   "frequency 0 (select frequency > 0 first)")
            raise ValueError(msg)
        if np.any(m_x <= 0):
            first = int(np.argmax(m_x <= 0))
            msg = (f"monetary_value must be positive to fit (index {first}: {m_x[first]}); "
                   "drop customers whose repeat purchases net to zero or less (credit notes)")
            raise ValueError(msg)

        def total(params: FloatArray) -> float:
            return float(np.sum(gamma_gamma_log_likelihood(params, x, m_x)))

        # Start where the population mean spend p v / (q - 1) matches the data's mean spend.
        start = np.array([1.0, 2.0, float(np.mean(m_x))])
        params, maximum = maximise_likelihood(total, start, model="Gamma-Gamma",
                                              observations=x.size)
        self.p_, self.q_, self.v_ = (float(v) for v in params)
        self.log_likelihood_ = maximum
        se = standard_errors(total, params)
        self.standard_errors_ = dict(zip(("p", "q", "v"), map(float, se), strict=True))
        self.n_customers_ = int(x.size)
        logger.info("Gamma-Gamma fitted to %s customers: p=%.4g q=%.4g v=%.4g LL=%.6g",
                    x.size, *params, maximum)
        return self

    @property
    def params(self) -> FloatArray:
        """The fitted (p, q, v) as an array."""
        try:
            return np.array([self.p_, self.q_, self.v_])
        except AttributeError:
            msg = "GammaGamma is not fitted yet: call fit() first"
            raise NotFittedError(msg) from None

    def conditional_expected_average_profit(self, frequency: ArrayLike,
                                            monetary_value: ArrayLike) -> FloatArray:
        """Expected spend per future transaction of each customer given their record.

        E[M | p, q, v, m_x, x] = p (v + x m_x) / (p x + q - 1), a weighted mean of the
        population mean p v / (q - 1) and the customer's own mean m_x, the weight on m_x
        growing with x (Fader & Hardie 2013, eq. 5). A customer with x = 0 gets the population
        mean. Requires q > 1 (otherwise the population mean spend is infinite).
        """
        p, q, v = self.params
        if q <= 1:
            msg = f"the expected spend is infinite when q <= 1 (q = {q:.4g})"
            raise ValueError(msg)
        x, m_x = _check_spend(frequency, monetary_value)
        return np.asarray(p * (v + x * m_x) / (p * x + q - 1.0))

    def customer_lifetime_value(  # noqa: PLR0917 (the issue fixes this signature)
        self,
        bgnbd: BgNbd,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,  # noqa: N803
        monetary_value: ArrayLike,
        time: int,
        discount_rate: float,
        *,
        period_length: float = 1.0,
    ) -> FloatArray:
        """Discounted value of each customer's purchases over the next ``time`` periods.

        CLV = sum_{i=1..time} E[M] (E[Y(i L)] - E[Y((i-1) L)]) / (1 + d)^i, where E[Y] is the
        BG/NBD conditional expectation of purchases after T, L is ``period_length`` and E[M] is
        :meth:`conditional_expected_average_profit`. Purchases of a period are discounted at
        its end.

        Parameters
        ----------
        bgnbd : BgNbd
            A fitted BG/NBD model of the same customers.
        frequency, recency, T : array_like
            The customers' records, in the BG/NBD's time unit.
        monetary_value : array_like of float
            The customers' mean spend per repeat transaction (anything for frequency 0).
        time : int
            Number of periods to sum over.
        discount_rate : float
            Discount rate per period, >= 0 (e.g. 0.01 a month).
        period_length : float, optional
            Length of one period in the BG/NBD's time unit: with recency and T in weeks and
            monthly discounting, 52 / 12. Default 1 (periods are the data's time unit).

        Returns
        -------
        numpy.ndarray
            Value per customer, in the currency of ``monetary_value``.
        """
        if int(time) != time or time < 1:
            msg = f"time must be a whole number of periods >= 1, got {time!r}"
            raise ValueError(msg)
        if not np.isfinite(discount_rate) or discount_rate < 0:
            msg = f"discount_rate must be >= 0, got {discount_rate!r}"
            raise ValueError(msg)
        if not np.isfinite(period_length) or period_length <= 0:
            msg = f"period_length must be > 0, got {period_length!r}"
            raise ValueError(msg)
        spend = self.conditional_expected_average_profit(frequency, monetary_value)
        ends = np.arange(1, int(time) + 1) * period_length
        cumulative = np.stack([np.zeros_like(spend)] + [
            bgnbd.conditional_expected_purchases(end, frequency, recency, T) for end in ends])
        per_period = np.diff(cumulative, axis=0)
        discount = (1.0 + discount_rate) ** -np.arange(1, int(time) + 1)
        return np.asarray(spend * (discount @ per_period))


def _check_spend(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = as_vector(frequency, "frequency")
    m_x = as_vector(monetary_value, "monetary_value")
    same_length(frequency=x, monetary_value=m_x)
    check_non_negative(x, "frequency")
    check_whole(x, "frequency")
    return x, m_x
