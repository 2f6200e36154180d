"""What the three CLV models share: input checks, the maximum-likelihood fit, standard errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from core.errors import OemrError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


class ClvFitError(OemrError):
    """A CLV model could not be fitted: the optimiser failed or the likelihood is not finite."""


class NotFittedError(OemrError, AttributeError):
    """A prediction was asked of a model that has not been fitted."""


def as_vector(values: ArrayLike, name: str) -> FloatArray:
    """Return ``values`` as a finite 1-d float array, or raise a ValueError naming ``name``."""
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1:
        msg = f"{name} must be one-dimensional, got shape {array.shape}"
        raise ValueError(msg)
    if array.size == 0:
        msg = f"{name} is empty"
        raise ValueError(msg)
    if not np.all(np.isfinite(array)):
        msg = f"{name} has {int(np.sum(~np.isfinite(array)))} missing or infinite values"
        raise ValueError(msg)
    return array


def check_non_negative(array: FloatArray, name: str) -> None:
    """Raise a ValueError naming the first negative value of ``array``."""
    if np.any(array < 0):
        first = int(np.argmax(array < 0))
        msg = f"{name} must not be negative (index {first}: {array[first]})"
        raise ValueError(msg)


def check_whole(array: FloatArray, name: str) -> None:
    """Raise a ValueError naming the first value of ``array`` that is not a whole number."""
    fractional = array != np.round(array)
    if np.any(fractional):
        first = int(np.argmax(fractional))
        msg = f"{name} must be whole numbers (index {first}: {array[first]})"
        raise ValueError(msg)


def same_length(**arrays: FloatArray) -> None:
    """Raise a ValueError if the named arrays do not all have the same length."""
    lengths = {name: array.size for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        msg = "inputs differ in length: " + ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ValueError(msg)


def maximise_likelihood(
    log_likelihood: Callable[[FloatArray], float],
    start: FloatArray,
    *,
    model: str,
    observations: float,
) -> tuple[FloatArray, float]:
    """Maximise ``log_likelihood`` over positive parameters; return them and the maximum.

    The search runs on the logarithms of the parameters, so every step stays in the positive
    domain without bounds. L-BFGS-B finds the optimum; a Nelder-Mead polish from there then
    settles the last digits, which L-BFGS-B with finite-difference gradients leaves loose on
    flat likelihoods (the published estimates are quoted to three decimals). The objective is
    the mean log-likelihood per ``observations`` (customers, or cohort members), so that the
    tolerances mean the same for a data set of 100 customers as for one of 100,000.

    Raises
    ------
    ClvFitError
        If the Nelder-Mead polish reports failure, the likelihood is not finite at the optimum, or
        the estimates run off to 0 or infinity.
    """

    def objective(log_params: FloatArray) -> float:
        value = log_likelihood(np.exp(log_params)) / observations
        # A non-finite likelihood means a parameter ran off to 0 or infinity: steer away.
        return -value if np.isfinite(value) else 1e300

    first = minimize(objective, np.log(start), method="L-BFGS-B",
                     options={"maxiter": 10_000, "ftol": 1e-14, "gtol": 1e-9})
    if not first.success:
        # With finite-difference gradients on a flat likelihood the line search can stop
        # "abnormally" near the optimum; Nelder-Mead, which needs no gradient, decides.
        logger.debug("%s: L-BFGS-B stopped: %s", model, first.message)
    polish = minimize(objective, first.x if np.isfinite(first.fun) else np.log(start),
                      method="Nelder-Mead",
                      options={"maxiter": 2_000, "xatol": 1e-8, "fatol": 1e-12})
    _check(polish, model, "Nelder-Mead")
    best = polish if polish.fun <= first.fun else first
    if not np.isfinite(best.fun) or best.fun >= 1e300:
        msg = f"{model}: the log-likelihood is not finite at the optimum; check the inputs"
        raise ClvFitError(msg)
    params = np.exp(best.x)
    if not np.all(np.isfinite(params)) or np.any(params <= 0) or np.any(params > 1e12):
        msg = (f"{model}: the estimates ran off to the edge of the parameter space ({params}); "
               "the data cannot identify the model (too few customers or no repeat behaviour?)")
        raise ClvFitError(msg)
    logger.debug("%s fitted in %s + %s iterations: %s", model, first.nit, polish.nit, params)
    return params, -float(best.fun) * observations


def _check(result: Any, model: str, method: str) -> None:
    if not result.success:
        msg = f"{model}: the {method} optimiser did not converge: {result.message}"
        raise ClvFitError(msg)


def standard_errors(log_likelihood: Callable[[FloatArray], float],
                    params: FloatArray) -> FloatArray:
    """Asymptotic standard errors of maximum-likelihood ``params`` (inverse observed information).

    The Hessian is taken by central differences on the log scale (steps relative to each
    parameter) and carried back to the natural scale by the delta method:
    se(theta) = theta * se(log theta).
    """
    log_params = np.log(params)
    k = log_params.size
    h = 1e-4
    hessian = np.empty((k, k))

    def f(x: FloatArray) -> float:
        return log_likelihood(np.exp(x))

    for i in range(k):
        for j in range(i, k):
            ei = np.zeros(k)
            ej = np.zeros(k)
            ei[i] = h
            ej[j] = h
            value = (f(log_params + ei + ej) - f(log_params + ei - ej)
                     - f(log_params - ei + ej) + f(log_params - ei - ej)) / (4 * h * h)
            hessian[i, j] = hessian[j, i] = value
    try:
        covariance = np.linalg.inv(-hessian)
    except np.linalg.LinAlgError:
        return np.full(k, np.nan)
    variances = np.diag(covariance)
    with np.errstate(invalid="ignore"):
        return np.asarray(params * np.sqrt(np.where(variances >= 0, variances, np.nan)))
