from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from shared.contract import CATEGORICAL, FEATURE_NAMES, NUMERIC, TUTORIAL_CUSTOMERS
from shared.datagen import generate_frame
from shared.features import FeatureSpec


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_frame(2000, seed=4)


@pytest.fixture(scope="module")
def spec(frame: pd.DataFrame) -> FeatureSpec:
    return FeatureSpec.fit(frame)


def test_fit_learns_sorted_vocabularies_of_categoricals_only(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    assert spec.columns == list(FEATURE_NAMES)
    assert set(spec.categories) == set(CATEGORICAL)
    for name in CATEGORICAL:
        assert spec.categories[name] == sorted(frame[name].unique())
    assert [spec.columns[i] for i in spec.categorical_indices] == [n for n in FEATURE_NAMES if n in CATEGORICAL]


def test_records_and_frame_encode_identically(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    head = frame.head(50)
    records = head[list(FEATURE_NAMES)].to_dict("records")
    by_records = spec.encode_records(records)
    by_frame = spec.encode_frame(head)
    assert by_records.dtype == np.float64 and by_records.shape == (50, 20)
    np.testing.assert_array_equal(by_records, by_frame)


def test_codes_and_numbers(spec: FeatureSpec) -> None:
    row = dict(TUTORIAL_CUSTOMERS[0])
    x = spec.encode_records([row])[0]
    for j, name in enumerate(spec.columns):
        if name in NUMERIC:
            assert x[j] == float(row[name])
        else:
            assert x[j] == spec.categories[name].index(row[name])


def test_unseen_category_encodes_as_nan_in_both_paths(spec: FeatureSpec) -> None:
    row = dict(TUTORIAL_CUSTOMERS[0], job="astronaut", month="smarch")
    x = spec.encode_records([row])[0]
    job, month, age = spec.columns.index("job"), spec.columns.index("month"), spec.columns.index("age")
    assert math.isnan(x[job]) and math.isnan(x[month]) and x[age] == 17.0
    y = spec.encode_frame(pd.DataFrame([row]))[0]
    np.testing.assert_array_equal(x, y)  # NaN == NaN for assert_array_equal


def test_vocabulary_only_from_training_rows() -> None:
    small = pd.DataFrame([dict(TUTORIAL_CUSTOMERS[0])] * 3)
    spec = FeatureSpec.fit(small)
    assert spec.categories["job"] == ["blue-collar"]
    other = dict(TUTORIAL_CUSTOMERS[0], job="admin.")
    assert math.isnan(spec.encode_records([other])[0][spec.columns.index("job")])


def test_json_round_trip(spec: FeatureSpec) -> None:
    doc = json.loads(json.dumps(spec.to_dict()))
    back = FeatureSpec.from_dict(doc)
    assert back == spec
    rows = [dict(c) for c in TUTORIAL_CUSTOMERS]
    np.testing.assert_array_equal(back.encode_records(rows), spec.encode_records(rows))
    with pytest.raises(ValueError, match="format"):
        FeatureSpec.from_dict({**doc, "format": "other/9"})
    with pytest.raises(ValueError, match="not in the spec"):
        FeatureSpec(columns=["age"], categories={"job": ["x"]})


def test_empty_records(spec: FeatureSpec) -> None:
    assert spec.encode_records([]).shape == (0, 20)
