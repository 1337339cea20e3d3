from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from shared.contract import FEATURE_NAMES, TUTORIAL_CUSTOMERS
from shared.datagen import generate_frame
from shared.errors import TrainingError
from shared.features import FeatureSpec
from shared.workspace.local.training import MODEL_FORMAT, load_model, train

if TYPE_CHECKING:  # the fixture lives in conftest.py, which tests do not import at run time
    from conftest import TrainedModel


def test_model_files_are_written(trained_model: TrainedModel) -> None:
    model_dir = trained_model.model_dir
    assert (model_dir / "model.pkl").stat().st_size > 0
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["format"] == MODEL_FORMAT
    assert meta["labels"] == ["no", "yes"]
    assert meta["learner"] == trained_model.result["learner"] and isinstance(meta["config"], dict) and meta["config"]
    spec = FeatureSpec.from_dict(meta["features"])
    assert spec.columns == list(FEATURE_NAMES) and "job" in spec.categories
    assert {"flaml", "lightgbm", "scikit-learn"} <= set(meta["library_versions"])
    # 20% held out, then 20% of the rest for validation.
    assert meta["heldout_rows"] == trained_model.rows // 5
    assert meta["train_rows"] + meta["validation_rows"] + meta["heldout_rows"] == trained_model.rows
    assert 0.5 < meta["validation_metric"] <= 1.0
    assert meta["metrics"] == trained_model.result["metrics"]


def test_heldout_metrics(trained_model: TrainedModel) -> None:
    metrics = trained_model.result["metrics"]
    assert metrics["AUC_weighted"] > 0.75
    for name in ("accuracy", "precision_score_weighted", "recall_score_weighted", "f1_score_weighted"):
        assert 0.5 < metrics[name] <= 1.0, name
    assert 0 < metrics["log_loss"] < 0.5
    cm = metrics["confusion_matrix"]
    assert metrics["confusion_matrix_labels"] == ["no", "yes"]
    assert len(cm) == 2 and sum(map(sum, cm)) == trained_model.rows // 5
    assert abs((cm[0][0] + cm[1][1]) / sum(map(sum, cm)) - metrics["accuracy"]) < 1e-9
    assert 0.0 < trained_model.result["threshold"] < 1.0


def test_child_runs_reported_while_searching(trained_model: TrainedModel) -> None:
    children = trained_model.result["child_runs"]
    assert len(children) >= 3
    seen = [t for t, _ in trained_model.trials_seen]
    assert seen == children
    # Every trial was reported before model.json was written, i.e. during the search.
    assert not any(after for _, after in trained_model.trials_seen)
    for child in children:
        assert {"iteration", "learner", "config", "metric", "train_time_s", "status"} <= set(child)
        assert child["status"] in ("Completed", "Failed")
        if child["status"] == "Completed":
            assert 0.0 <= child["metric"] <= 1.0
    assert [c["iteration"] for c in children] == list(range(len(children)))
    best = trained_model.result["best_iteration"]
    best_child = children[best]
    assert best_child["learner"] == trained_model.result["learner"]
    assert best_child["metric"] == pytest.approx(max(c["metric"] for c in children if c["metric"] is not None))


def test_flaml_output_is_contained(trained_model: TrainedModel) -> None:
    assert trained_model.stdout == ""
    for name in ("flaml.automl.logger", "flaml"):
        assert not any(type(h).__name__ == "_FlamlForwarder" for h in logging.getLogger(name).handlers)


def test_loaded_model_predicts(trained_model: TrainedModel) -> None:
    model = load_model(trained_model.model_dir)
    labels, probas = model.predict([dict(c) for c in TUTORIAL_CUSTOMERS])
    assert len(labels) == 2 and set(labels) <= {"no", "yes"}
    for (p_no, p_yes), label in zip(probas, labels, strict=True):
        assert p_no + p_yes == pytest.approx(1.0) and 0.0 <= p_yes <= 1.0
        assert label == ("yes" if p_yes >= model.threshold else "no")


def test_loaded_model_matches_heldout_quality(trained_model: TrainedModel) -> None:
    from sklearn.metrics import roc_auc_score

    fresh = generate_frame(1500, seed=99)
    model = load_model(trained_model.model_dir)
    labels, probas = model.predict(fresh[list(FEATURE_NAMES)].to_dict("records"))
    auc = roc_auc_score(fresh["y"] == "yes", [p[1] for p in probas])
    assert auc > 0.75
    assert 0 < labels.count("yes") < len(labels)


def test_unseen_category_gets_a_prediction(trained_model: TrainedModel) -> None:
    model = load_model(trained_model.model_dir)
    row = dict(TUTORIAL_CUSTOMERS[0], job="astronaut", education="phd")
    labels, probas = model.predict([row])
    assert labels[0] in ("no", "yes") and math.isfinite(probas[0][1])


def _csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def test_one_class_data_is_refused(tmp_path: Path) -> None:
    frame = generate_frame(500, seed=1).assign(y="no")
    with pytest.raises(TrainingError, match="only one class") as info:
        train(_csv(tmp_path, frame), tmp_path / "out", time_budget_s=3)
    assert info.value.details["class_balance"] == {"no": 500, "yes": 0}
    assert not (tmp_path / "out" / "model.json").exists()


def test_unusable_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="at least 100"):
        train(_csv(tmp_path, generate_frame(40, seed=1)), tmp_path / "o1", time_budget_s=3)
    with pytest.raises(TrainingError, match="missing column") as info:
        train(_csv(tmp_path, generate_frame(300, seed=1).drop(columns=["age"])), tmp_path / "o2", time_budget_s=3)
    assert info.value.details["field"] == "age"
    frame = generate_frame(300, seed=1)
    frame.loc[5, "y"] = "maybe"
    with pytest.raises(TrainingError, match="label column") as info:
        train(_csv(tmp_path, frame), tmp_path / "o3", time_budget_s=3)
    assert info.value.details["value"] == "maybe"
    with pytest.raises(TrainingError, match="does not exist"):
        train(tmp_path / "nope.csv", tmp_path / "o4", time_budget_s=3)


def test_load_model_refuses_other_directories(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no model.json"):
        load_model(tmp_path)
