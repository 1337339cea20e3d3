"""The deployment gate (champion/challenger): both models scored on the same held-out rows, the
margin, the minimum for a first model, late and out-of-order runs, one decision per run."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from deploy_fixtures import completed_run, dummy_model, fake_live, register_csv

from shared.config import Settings
from shared.workspace.local.workspace import LocalWorkspace

if TYPE_CHECKING:
    from conftest import TrainedModel


def workspace(home: Path, **env: str) -> LocalWorkspace:
    return LocalWorkspace(Settings.from_env({"BANKML_HOME": str(home), **env}))


@pytest.fixture(scope="module")
def useless(trained_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dummy_model(trained_model.model_dir, tmp_path_factory.mktemp("dummy") / "model", trained_model.csv)


def test_same_rows_decide_not_the_recorded_numbers(trained_model: TrainedModel, useless: Path, tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    version = register_csv(ws, trained_model.csv)
    real_auc = trained_model.result["metrics"]["AUC_weighted"]
    # The live model claims 0.99 (as if measured on its own, easy rows) but predicts the prior.
    live_run = completed_run(ws, version, useless, 0.99)
    fake_live(ws, live_run, useless)
    candidate = completed_run(ws, version, trained_model.model_dir, real_auc)
    try:
        decision = ws.deploy_run(candidate)
    finally:
        ws.stop_servers()
    heldout = round(trained_model.rows * 0.2)
    assert decision.deployed, decision.reason
    # Re-scored on the candidate's held-out split, the candidate scores exactly what training
    # recorded (the same rows), and the live model scores 0.5 there.
    assert f"AUC_weighted {real_auc:.4f} beats the live bankml-v1 (0.5000)" in decision.reason
    assert f"on the same {heldout} held-out rows of dataset v{version}" in decision.reason
    assert ws.live_deployment().run_id == candidate
    assert ws.registry.decisions()[-1]["reason"] == decision.reason  # what `bankml status` prints


def test_an_inflated_recorded_metric_does_not_win(trained_model: TrainedModel, tmp_path: Path) -> None:
    ws = workspace(tmp_path, BANKML_MIN_PRIMARY_METRIC="0.5")
    version = register_csv(ws, trained_model.csv)
    live_run = completed_run(ws, version, trained_model.model_dir, 0.6)
    fake_live(ws, live_run, trained_model.model_dir)
    # Same model, but recorded as far better: on the same rows both score the same.
    candidate = completed_run(ws, version, trained_model.model_dir, 0.999)
    decision = ws.deploy_run(candidate)
    assert not decision.deployed
    assert "does not beat the live bankml-v1" in decision.reason and "on the same" in decision.reason
    assert ws.live_deployment().run_id == live_run


def test_the_margin_applies_on_the_same_rows(trained_model: TrainedModel, useless: Path, tmp_path: Path) -> None:
    real_auc = trained_model.result["metrics"]["AUC_weighted"]
    margin = real_auc - 0.5 + 0.01  # just more than the gap between the two models
    ws = workspace(tmp_path, BANKML_DEPLOY_MARGIN=f"{margin:.6f}")
    version = register_csv(ws, trained_model.csv)
    live_run = completed_run(ws, version, useless, 0.75)
    fake_live(ws, live_run, useless)
    decision = ws.deploy_run(completed_run(ws, version, trained_model.model_dir, real_auc))
    assert not decision.deployed and f"by more than {margin:g}" in decision.reason


def test_a_late_event_for_an_older_run_never_replaces_a_newer_model(
    trained_model: TrainedModel, useless: Path, tmp_path: Path
) -> None:
    ws = workspace(tmp_path)
    version = register_csv(ws, trained_model.csv)
    older = completed_run(ws, version, trained_model.model_dir, trained_model.result["metrics"]["AUC_weighted"])
    newer = completed_run(ws, version, useless, 0.75)
    fake_live(ws, newer, useless)  # the newer run was deployed first (its event came first)
    decision = ws.deploy_run(older)  # better on the same rows, but older
    assert not decision.deployed and "submitted before run" in decision.reason and newer in decision.reason
    assert ws.live_deployment().run_id == newer


def test_recorded_metrics_decide_when_models_cannot_be_rescored(trained_model: TrainedModel, tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    version = register_csv(ws, trained_model.csv)
    live_run = completed_run(ws, version, tmp_path / "gone", 0.95)
    fake_live(ws, live_run, tmp_path / "gone")
    decision = ws.deploy_run(completed_run(ws, version, trained_model.model_dir, 0.9))
    assert not decision.deployed
    assert "does not beat the live bankml-v1 (0.9500)" in decision.reason
    assert "recorded held-out metrics (not re-scored" in decision.reason


def test_first_model_needs_the_minimum_and_each_run_is_decided_once(trained_model: TrainedModel, tmp_path: Path) -> None:
    ws = workspace(tmp_path, BANKML_MIN_PRIMARY_METRIC="0.99")
    version = register_csv(ws, trained_model.csv)
    run = completed_run(ws, version, trained_model.model_dir, trained_model.result["metrics"]["AUC_weighted"])
    results = []
    # Two deliveries of the same run at the same moment (Event Grid delivers at least once).
    threads = [threading.Thread(target=lambda: results.append(ws.deploy_run(run))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.duplicate for r in results) == [False, True]
    assert all(not r.deployed and "below the minimum 0.9900" in r.reason for r in results)
    assert len(ws.registry.decisions()) == 1 and ws.live_deployment() is None
