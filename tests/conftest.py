"""Shared fixtures: one small real AutoML training per test session, reused by the training and
model-server tests (training takes seconds; doing it once keeps the suite fast).

The model has the shape the default 60 s budget gives on the real data: a soft-voting ensemble of
LightGBM and XGBoost (both learners are let in whatever their validation AUC), served through ONNX
when that measured faster."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.datagen import write_csv

TRAIN_ROWS = 3000
TIME_BUDGET_S = 6.0
LEARNERS = ("lgbm", "xgboost")


@dataclass
class TrainedModel:
    rows: int
    csv: Path
    model_dir: Path
    result: dict[str, Any]
    # (trial, whether model.json already existed when on_trial was called)
    trials_seen: list[tuple[dict[str, Any], bool]]
    stdout: str


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    from shared.workspace.local.training import train

    base = tmp_path_factory.mktemp("trained")
    csv = write_csv(base / "train.csv", TRAIN_ROWS, seed=7)
    model_dir = base / "model"
    seen: list[tuple[dict[str, Any], bool]] = []
    out = io.StringIO()
    # FLAML attaches a stdout handler bound to sys.stdout when its logger has none: capture
    # stdout so that a test can check nothing leaked.
    with contextlib.redirect_stdout(out):
        result = train(
            csv,
            model_dir,
            time_budget_s=TIME_BUDGET_S,
            seed=0,
            on_trial=lambda t: seen.append((t, (model_dir / "model.json").exists())),
            learners=LEARNERS,
            ensemble_tolerance=1.0,
            dataset_version=1,
            run_id="AutoML_fixture",
        )
    return TrainedModel(
        rows=TRAIN_ROWS, csv=csv, model_dir=model_dir, result=result, trials_seen=seen, stdout=out.getvalue()
    )
