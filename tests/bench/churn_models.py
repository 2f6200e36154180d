"""Stored churn models: size and time of the skops form against the pickle it replaced.

Run from the repository root::

    .venv/bin/python -m tests.bench.churn_models [--rows N] [--customers N]

Figures, not pass/fail; no database. A model is fitted (``ChurnModel.fit``, the model method)
on a synthetic training set of ``--rows`` (customer, cut-off) rows over ``--customers``
customers, a fifth of the values missing; the default is the shape of the benchmark world's
(830 customers, two years of monthly cut-offs). Then, each twice and the second taken: the stored
form (``model_to_bytes``) and reading it back with every check (``model_from_bytes``), the tree
check alone, and for comparison ``pickle.dumps`` and ``pickle.loads`` of the same model.
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import numpy as np

from analytics.churn import ChurnModel
from analytics.churn_models import _check_estimator, model_from_bytes, model_to_bytes
from analytics.features import FEATURE_NAMES


def _timed(what: Callable[[], Any]) -> tuple[Any, float]:
    what()
    started = time.perf_counter()
    result = what()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=830)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    k = len(FEATURE_NAMES)
    x = rng.normal(size=(args.rows, k))
    x[rng.random(x.shape) < 0.2] = np.nan
    y = (np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 5]) + rng.normal(size=args.rows) > 3.8)
    groups = np.arange(args.rows) % args.customers
    started = time.perf_counter()
    model = ChurnModel(trained_until=date(2026, 1, 1)).fit(x, y.astype(int), groups=groups)
    fit_s = time.perf_counter() - started
    assert model.method_ == "model", model.method_
    blob, dump_s = _timed(lambda: model_to_bytes(model))
    _, load_s = _timed(lambda: model_from_bytes(blob))
    _, check_s = _timed(lambda: _check_estimator(model.estimator_))
    pickled, pdump_s = _timed(lambda: pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    _, pload_s = _timed(lambda: pickle.loads(pickled))
    trees = sum(len(it) for c in model.estimator_.calibrated_classifiers_
                for it in c.estimator._predictors)
    print(f"{args.rows:,} rows, {args.customers} customers, {model.churn_events_} churners;"
          f" fit {fit_s:.1f} s; {trees} trees")
    print(f"skops:  {len(blob) / 1e6:.2f} MB, store {dump_s:.2f} s,"
          f" load with checks {load_s:.2f} s (tree check {check_s * 1000:.0f} ms)")
    print(f"pickle: {len(pickled) / 1e6:.2f} MB, store {pdump_s:.2f} s, load {pload_s:.2f} s")


if __name__ == "__main__":
    main()
