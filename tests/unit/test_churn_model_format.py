"""The stored form of a churn model: skops of its fields, rebuilt only from what fit makes."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.churn import ChurnModel
from analytics.churn_models import (
    TRUSTED_TYPES,
    RefusedModelError,
    model_from_bytes,
    model_to_bytes,
)
from analytics.features import FEATURE_NAMES
from tests.tampered_models import (
    TREE_EDITS,
    flip_byte,
    flip_byte_in_array,
    skops_payload,
    with_tree_edit,
)

K = len(FEATURE_NAMES)


def _data(n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, K))
    x[rng.random((n, K)) < 0.2] = np.nan
    x[:, 7] = np.nan  # a column without values, as before the first survey
    y = (np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 3]) + rng.normal(size=n) > 1.2)
    return x, y.astype(int), np.arange(n) % 150


@pytest.fixture(scope="module")
def models() -> dict[str, ChurnModel]:
    x, y, groups = _data()
    fitted = {"model": ChurnModel(trained_until=date(2026, 1, 1), min_churn_events=3),
              "rules": ChurnModel(trained_until=date(2026, 1, 1), min_churn_events=10**6)}
    for model in fitted.values():
        model.fit(x, y, groups=groups)
    assert {m: fitted[m].method_ for m in fitted} == {"model": "model", "rules": "rules"}
    return fitted


@pytest.fixture(scope="module")
def blob(models: dict[str, ChurnModel]) -> bytes:
    return model_to_bytes(models["model"])


@pytest.mark.parametrize("method", ["model", "rules"])
def test_a_model_round_trips(models: dict[str, ChurnModel], method: str) -> None:
    model = models[method]
    loaded = model_from_bytes(model_to_bytes(model))
    assert loaded is not model and type(loaded) is ChurnModel
    for field in dataclasses.fields(ChurnModel):
        if field.name != "estimator_":
            assert np.array_equal(getattr(loaded, field.name), getattr(model, field.name),
                                  equal_nan=field.name == "baseline_"), field.name
    x, _, _ = _data(200)
    p = model.predict_proba(x)
    assert len(np.unique(p)) > 5
    assert np.array_equal(loaded.predict_proba(x), p)
    assert loaded.explain(x) == model.explain(x)


def test_the_blob_is_no_pickle_and_needs_only_the_trusted_types(blob: bytes) -> None:
    assert blob[:4] == b"PK\x03\x04"  # a zip archive: skops' JSON schema and numpy arrays
    assert set(sio.get_untrusted_types(data=blob)) <= set(TRUSTED_TYPES)
    # Our own class is not stored: the model is rebuilt from its fields.
    assert not any(t.startswith("analytics.") for t in sio.get_untrusted_types(data=blob))
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.loads(blob, trusted=[])  # it does hold types skops does not trust by itself


def test_a_callable_named_in_the_blob_is_refused_and_never_called(
        blob: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = skops_payload(blob, marker)
    # The payload is live: a reader that trusts what it names creates the file.
    state = sio.loads(payload, trusted=[*TRUSTED_TYPES, "builtins.open"])
    state["version_"].close()
    assert marker.exists()
    marker.unlink()
    with pytest.raises(RefusedModelError, match=r"builtins\.open"):
        model_from_bytes(payload)
    assert not marker.exists()


@pytest.mark.parametrize("edit", TREE_EDITS)
def test_a_tree_that_would_read_outside_itself_is_refused(
        models: dict[str, ChurnModel], edit: str) -> None:
    crafted = with_tree_edit(models["model"], TREE_EDITS[edit])
    with pytest.raises(RefusedModelError, match="splits outside the tree or the features"):
        model_from_bytes(crafted)


def _swap_estimator(model: ChurnModel) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    x, y, _ = _data()
    model.estimator_ = HistGradientBoostingClassifier(max_iter=5).fit(np.nan_to_num(x), y)


def _wide_booster(model: ChurnModel) -> None:
    model.estimator_.calibrated_classifiers_[1].estimator.n_features_in_ = K + 1


def _set(name: str, value: Any) -> Callable[[ChurnModel], None]:
    return lambda model: setattr(model, name, value)


REFUSALS: dict[str, tuple[Callable[[ChurnModel], None], str]] = {
    "another estimator": (_swap_estimator, "an estimator that fit does not make"),
    "a booster of other width": (_wide_booster, "an estimator that fit does not make"),
    "other features": (_set("features_", FEATURE_NAMES[::-1]),
                       "another ChurnModel or other features"),
    "a version that is no text": (_set("version_", 7), "fields of the wrong type"),
    "an unknown method": (_set("method_", "oracle"), "fields of the wrong type"),
    "a short baseline": (_set("baseline_", np.zeros(K - 1)),
                         "not one value per feature"),
    "a rule model with an estimator": (_set("method_", "rules"),
                                       "a rule model with an estimator"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_model_unlike_what_fit_makes_is_refused(models: dict[str, ChurnModel],
                                                  case: str) -> None:
    change, why = REFUSALS[case]
    crafted = copy.deepcopy(models["model"])
    change(crafted)
    with pytest.raises(RefusedModelError, match=why):
        model_from_bytes(model_to_bytes(crafted))


def test_a_calibration_that_does_not_compute_is_refused(models: dict[str, ChurnModel]) -> None:
    crafted = copy.deepcopy(models["model"])
    crafted.estimator_.calibrated_classifiers_[0].calibrators[0].a_ = "minus one"
    with pytest.raises(RefusedModelError, match="does not predict"):
        model_from_bytes(model_to_bytes(crafted))


@pytest.fixture(scope="module")
def rules_blob(models: dict[str, ChurnModel]) -> bytes:
    return model_to_bytes(models["rules"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_changed_or_cut_bytes_are_refused_or_load_as_a_sound_model(
        rules_blob: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(rules_blob) - 1))
    changed = data.draw(st.sampled_from([flip_byte(rules_blob, at), rules_blob[:at]]))
    try:
        model = model_from_bytes(changed)
    except RefusedModelError:
        return
    # A change the zip format does not see (a timestamp, say) leaves the model as it was.
    assert model.version_ == "rules-v1" and model.features_ == FEATURE_NAMES


def test_a_changed_byte_in_an_array_is_refused(blob: bytes) -> None:
    # Inside a compressed array: a CRC mismatch, or zlib's own error class (none of the usual
    # ones), refused all the same.
    with pytest.raises(RefusedModelError, match=r"BadZipFile|error: Error -3"):
        model_from_bytes(flip_byte_in_array(blob))
