from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.contract import BY_NAME, CATEGORICAL, FEATURE_NAMES, TUTORIAL_CUSTOMERS
from shared.datagen import generate_frame, main, write_csv


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_frame(20_000, seed=3)


def test_columns_and_dtypes_follow_the_contract(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == [*FEATURE_NAMES, "y"]
    for name in FEATURE_NAMES:
        kind = BY_NAME[name].kind
        if kind == "integer":
            assert pd.api.types.is_integer_dtype(frame[name]), name
        elif kind == "number":
            assert pd.api.types.is_float_dtype(frame[name]), name
        else:
            assert set(frame[name].unique()) <= set(BY_NAME[name].categories), name
    assert frame.notna().all().all()
    assert set(frame["y"].unique()) == {"no", "yes"}


def test_every_tutorial_category_occurs(frame: pd.DataFrame) -> None:
    for name in CATEGORICAL:
        for customer in TUTORIAL_CUSTOMERS:
            assert customer[name] in set(frame[name]), (name, customer[name])


def test_shape_resembles_bank_marketing(frame: pd.DataFrame) -> None:
    yes = frame["y"] == "yes"
    assert 0.09 <= yes.mean() <= 0.13
    assert (frame["pdays"] == 999).mean() > 0.9
    assert ((frame["pdays"] != 999) <= (frame["previous"] > 0)).all()  # a date needs a previous contact
    assert (frame.loc[frame["previous"] == 0, "poutcome"] == "nonexistent").all()
    assert frame["age"].between(17, 98).all() and 35 <= frame["age"].mean() <= 45
    assert (frame["duration"] >= 0).all() and (frame["campaign"] >= 1).all()
    # The known signals move the odds in the known direction.
    assert frame.loc[yes, "duration"].median() > 1.5 * frame.loc[~yes, "duration"].median()
    assert yes[frame["poutcome"] == "success"].mean() > 2 * yes[frame["poutcome"] == "nonexistent"].mean()
    assert yes[frame["nr.employed"] < 5090].mean() > 2 * yes[frame["nr.employed"] > 5190].mean()
    assert yes[frame["contact"] == "cellular"].mean() > yes[frame["contact"] == "telephone"].mean()


def test_signal_is_learnable() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from shared.features import FeatureSpec

    train, test = generate_frame(4000, seed=1), generate_frame(2000, seed=2)
    spec = FeatureSpec.fit(train)
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0)
    model.fit(spec.encode_frame(train), train["y"] == "yes")
    auc = roc_auc_score(test["y"] == "yes", model.predict_proba(spec.encode_frame(test))[:, 1])
    assert 0.82 <= auc <= 0.97


def test_deterministic_for_a_seed() -> None:
    pd.testing.assert_frame_equal(generate_frame(500, seed=11), generate_frame(500, seed=11))
    assert not generate_frame(500, seed=11).equals(generate_frame(500, seed=12))
    assert len(generate_frame(0)) == 0
    with pytest.raises(ValueError):
        generate_frame(-1)


def test_write_csv_and_cli(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a" / "gen.csv", 300, seed=5)
    back = pd.read_csv(path)
    assert list(back.columns) == [*FEATURE_NAMES, "y"] and len(back) == 300
    assert np.allclose(back["euribor3m"], generate_frame(300, seed=5)["euribor3m"])

    out = tmp_path / "cli.csv"
    assert main(["--rows", "250", "--seed", "5", "--out", str(out)]) == 0
    assert out.read_bytes() == write_csv(tmp_path / "same.csv", 250, seed=5).read_bytes()
    assert len(pd.read_csv(out)) == 250
    with pytest.raises(SystemExit):
        main(["--rows", "0", "--out", str(out)])
