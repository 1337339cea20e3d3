from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import joblib
import numpy as np
import pandas as pd
import pytest

from shared.contract import FEATURE_NAMES, TUTORIAL_CUSTOMERS
from shared.datagen import generate_frame
from shared.errors import TrainingError
from shared.features import FeatureSpec
from shared.workspace.local.training import MODEL_FORMAT, _accuracy_threshold, load_model, train

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
    assert {"flaml", "lightgbm", "xgboost", "scikit-learn", "onnxruntime"} <= set(meta["library_versions"])
    # 20% held out, then 20% of the rest for validation.
    assert meta["heldout_rows"] == trained_model.rows // 5
    assert meta["train_rows"] + meta["validation_rows"] + meta["heldout_rows"] == trained_model.rows
    assert 0.5 < meta["validation_metric"] <= 1.0
    assert meta["metrics"] == trained_model.result["metrics"]
    assert meta["dataset_version"] == 1 and meta["run_id"] == "AutoML_fixture"
    assert set(meta["artifacts"]) >= {"model.pkl", "model.json", "confusion_matrix.png", "roc.png", "child_runs.md", "model_card.md"}
    for name in meta["artifacts"]:
        assert (model_dir / name).stat().st_size > 0, name


def test_best_model_is_a_voting_ensemble_of_its_members(trained_model: TrainedModel) -> None:
    result = trained_model.result
    # Both learners are let in (ensemble_tolerance=1.0 in the fixture): a soft vote of their best configs.
    assert result["learner"] == "VotingEnsemble"
    assert sorted(m["learner"] for m in result["members"]) == ["lgbm", "xgboost"]
    for m in result["members"]:
        assert m["weight"] == 1.0 and m["config"] and 0.5 < m["validation_metric"] <= 1.0
        best_trial = max(
            (c for c in result["child_runs"] if c["learner"] == m["learner"] and c["metric"] is not None), key=lambda c: c["metric"]
        )
        assert m["validation_metric"] == pytest.approx(best_trial["metric"])
    estimator = joblib.load(trained_model.model_dir / "model.pkl")
    assert type(estimator).__name__ == "VotingClassifier" and estimator.voting == "soft"
    assert [type(e).__name__ for e in estimator.estimators_] == [
        {"lgbm": "LGBMClassifier", "xgboost": "XGBClassifier"}[m["learner"]] for m in result["members"]
    ]


def test_onnx_and_native_predict_the_same_and_the_faster_serves(trained_model: TrainedModel) -> None:
    meta = json.loads((trained_model.model_dir / "model.json").read_text())
    assert meta["onnx"] == "model.onnx" and meta["onnx_max_abs_diff"] < 1e-4
    assert meta["serving"] == min(("native", "onnx"), key=lambda k: meta["latency_us"][k])
    native = load_model(trained_model.model_dir, prefer="native")
    onnx = load_model(trained_model.model_dir, prefer="onnx")
    assert native.serving == "native" and onnx.serving == "onnx"
    assert load_model(trained_model.model_dir).serving == meta["serving"]
    rows = generate_frame(300, seed=5)[list(FEATURE_NAMES)].to_dict("records")
    labels_n, probas_n = native.predict(rows)
    labels_o, probas_o = onnx.predict(rows)
    assert max(abs(a[1] - b[1]) for a, b in zip(probas_n, probas_o, strict=True)) < 1e-4
    assert sum(a != b for a, b in zip(labels_n, labels_o, strict=True)) <= 1  # float32 at the threshold


def test_thresholds_are_recorded_and_the_accuracy_one_serves(trained_model: TrainedModel) -> None:
    meta = json.loads((trained_model.model_dir / "model.json").read_text())
    assert meta["threshold"] == meta["thresholds"]["accuracy"] == trained_model.result["threshold"]
    assert 0.3 <= meta["thresholds"]["accuracy"] <= 0.7 and 0.0 < meta["thresholds"]["f1"] < 1.0
    assert meta["threshold_objective"] == "max accuracy on validation rows"
    assert set(meta["metrics_at"]) == {"f1", "0.5"}
    assert load_model(trained_model.model_dir).threshold == meta["threshold"]


def test_feature_importance_covers_every_feature(trained_model: TrainedModel) -> None:
    fi = trained_model.result["feature_importance"]
    assert set(fi) == set(FEATURE_NAMES)
    assert sum(fi.values()) == pytest.approx(1.0, abs=1e-3)
    assert list(fi.values()) == sorted(fi.values(), reverse=True)
    # The generator makes duration the strongest signal, as in the real data.
    assert next(iter(fi)) == "duration"


def test_reports_a_data_scientist_reads(trained_model: TrainedModel) -> None:
    model_dir = trained_model.model_dir
    children = trained_model.result["child_runs"]
    for png in ("confusion_matrix.png", "roc.png"):
        assert (model_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(model_dir / "child_runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["iteration"]) for r in rows] == [c["iteration"] for c in children]
    assert {r["algorithm"] for r in rows} == {"lgbm", "xgboost"}
    table = (model_dir / "child_runs.md").read_text()
    assert table.count("\n") == len(children) + 2 and "**best**" in table
    card = (model_dir / "model_card.md").read_text()
    metrics = trained_model.result["metrics"]
    assert "# Model card: VotingEnsemble" in card
    assert f"| AUC_weighted | {metrics['AUC_weighted']:.4f} |" in card
    assert f"| accuracy | {metrics['accuracy']:.4f} |" in card
    assert f"threshold {trained_model.result['threshold']:.3f}" in card and "`duration`" in card


def test_heldout_metrics(trained_model: TrainedModel) -> None:
    metrics = trained_model.result["metrics"]
    assert metrics["AUC_weighted"] > 0.75 and metrics["AUC_macro"] == metrics["AUC_weighted"]
    for avg in ("weighted", "macro"):
        for name in ("precision_score", "recall_score", "f1_score"):
            assert 0.4 < metrics[f"{name}_{avg}"] <= 1.0, f"{name}_{avg}"
    assert 0.5 < metrics["accuracy"] <= 1.0
    assert 0 < metrics["log_loss"] < 0.5
    cm = metrics["confusion_matrix"]
    assert metrics["confusion_matrix_labels"] == ["no", "yes"]
    assert len(cm) == 2 and sum(map(sum, cm)) == trained_model.rows // 5
    assert abs((cm[0][0] + cm[1][1]) / sum(map(sum, cm)) - metrics["accuracy"]) < 1e-9
    # Macro recall is the mean of the two classes' recalls, read off the confusion matrix.
    recall = [cm[0][0] / sum(cm[0]), cm[1][1] / sum(cm[1])]
    assert metrics["recall_score_macro"] == pytest.approx(sum(recall) / 2)
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
    assert best_child["learner"] in [m["learner"] for m in trained_model.result["members"]]
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


def test_accuracy_threshold_moves_from_one_half_only_on_clear_evidence() -> None:
    rng = np.random.default_rng(0)
    # Calibrated scores: the accuracy-optimal threshold is 0.5, and noise does not move it.
    p = rng.uniform(0, 1, 5000)
    y = (rng.uniform(0, 1, 5000) < p).astype(np.int64)
    assert _accuracy_threshold(y, p) == 0.5
    # Scores that are too high: every row between 0.5 and 0.6 is "no", so the threshold moves up.
    p2 = np.concatenate([rng.uniform(0.5, 0.6, 400), rng.uniform(0.6, 1.0, 400), rng.uniform(0.0, 0.5, 1000)])
    y2 = np.concatenate([np.zeros(400), np.ones(400), np.zeros(1000)]).astype(np.int64)
    assert 0.59 <= _accuracy_threshold(y2, p2) <= 0.61


def test_a_budget_too_small_for_any_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="time budget") as info:
        train(_csv(tmp_path, generate_frame(300, seed=1)), tmp_path / "out", time_budget_s=0)
    assert info.value.details["field"] == "time_budget_s"


def test_load_model_serves_natively_without_the_onnx_file(trained_model: TrainedModel, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(trained_model.model_dir, copy)
    (copy / "model.onnx").unlink()
    model = load_model(copy)
    assert model.serving == "native"
    labels, _ = model.predict([dict(c) for c in TUTORIAL_CUSTOMERS])
    assert labels == load_model(trained_model.model_dir, prefer="native").predict([dict(c) for c in TUTORIAL_CUSTOMERS])[0]


def test_a_large_batch_through_onnx_blocks_equals_one_call(trained_model: TrainedModel) -> None:
    from shared.workspace.local import training

    onnx = load_model(trained_model.model_dir, prefer="onnx")
    frame = generate_frame(2 * training.PARALLEL_BLOCK_ROWS + 333, seed=11)
    X = onnx.spec.encode_frame(frame)
    assert X.shape[0] >= training.PARALLEL_MIN_ROWS
    whole = training._onnx_proba(onnx.session, X)
    blocks = training._onnx_proba_parallel(onnx.session, X)
    assert blocks.dtype == whole.dtype and blocks.shape == whole.shape
    assert (blocks == whole).all()  # rows are scored on their own: the same numbers, in the same order
    assert (onnx.predict_matrix(X) == whole).all()


def test_the_margin_form_of_the_graph_predicts_what_the_converter_graph_predicts(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    import onnx

    from shared.workspace.local import training

    native = load_model(trained_model.model_dir, prefer="native")
    n = len(native.spec.columns)
    raw = training._to_onnx(native.estimator, n, margin=False)  # as the converters write it
    fast = training._margin_graph(raw)
    assert fast is not None and training._margin_graph(fast) is None  # not rewritten twice
    assert [o.name for o in onnx.load_from_string(fast).graph.output] == ["probabilities"]
    X = native.spec.encode_frame(generate_frame(500, seed=9))
    for rows in (X, training._probe(n)):
        a = training._onnx_proba(training._onnx_session(raw), rows)
        b = training._onnx_proba(training._onnx_session(fast), rows)
        assert float(np.max(np.abs(a - b))) < 1e-6
    # A model.onnx written before the margin form existed serves in the margin form.
    copy = tmp_path / "model"
    shutil.copytree(trained_model.model_dir, copy)
    (copy / "model.onnx").write_bytes(raw)
    old = load_model(copy, prefer="onnx")
    assert [o.name for o in old.session.get_outputs()] == ["probabilities"]
    assert float(np.max(np.abs(old.predict_matrix(X) - native.predict_matrix(X)))) < 1e-4
