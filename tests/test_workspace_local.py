"""The local workspace's registry rules: versions, exactly-once submission, the deployment gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import Settings
from shared.datagen import generate_frame
from shared.errors import NotFound
from shared.ingest import canonical_csv, parse_csv
from shared.workspace.base import COMPLETED, FAILED
from shared.workspace.local.registry import utcnow
from shared.workspace.local.workspace import LocalWorkspace


@pytest.fixture()
def ws(tmp_path: Path) -> LocalWorkspace:
    return LocalWorkspace(Settings.from_env({"BANKML_HOME": str(tmp_path), "BANKML_MIN_PRIMARY_METRIC": "0.8"}))


def parsed(rows: int = 300, seed: int = 1):  # noqa: ANN201 - ParsedDataset
    data = canonical_csv(generate_frame(rows, seed))
    return parse_csv(data, max_bytes=10**8)


def test_same_content_same_version(ws: LocalWorkspace) -> None:
    a = ws.register_dataset(parsed(), source_blob="incoming/a.csv", etag="1")
    b = ws.register_dataset(parsed(), source_blob="incoming/b.csv", etag="2")
    c = ws.register_dataset(parsed(seed=2), source_blob="incoming/c.csv", etag="3")
    assert (a.version, a.created) == (1, True)
    assert (b.version, b.created) == (1, False)
    assert (c.version, c.created) == (2, True)
    stored = Path(ws.registry.get_dataset(1)["path"]).read_bytes()
    assert parse_csv(stored, max_bytes=10**8).content_hash == a.content_hash
    assert a.rows == 300 and set(a.class_balance) == {"yes", "no"}


def test_ingest_submits_one_run_per_dataset_version(ws: LocalWorkspace) -> None:
    d = ws.register_dataset(parsed(), source_blob="incoming/a.csv", etag="1")
    first = ws.submit_run(d.version, trigger="ingest")
    again = ws.submit_run(d.version, trigger="ingest")  # a retry after a crash, or a second delivery
    assert first.created and not again.created and first.run_id == again.run_id
    manual = ws.submit_run(d.version, trigger="api")
    assert manual.run_id != first.run_id
    assert first.parameters["time_budget_s"] == 60
    with pytest.raises(NotFound):
        ws.submit_run(99, trigger="ingest")


def complete(ws: LocalWorkspace, run_id: str, auc: float | None, *, model_dir: str | None = "store") -> None:
    """The run completed with ``auc``; its model (absent: the gate's decisions here come before any
    load, or fall back to the recorded metrics) is where the worker writes it, unless given."""
    metrics = {} if auc is None else {"AUC_weighted": auc}
    if model_dir == "store":
        model_dir = str(ws.run_dir(run_id) / "model")
    ws.registry.update_run(run_id, status=COMPLETED, best={"metrics": metrics}, model_dir=model_dir, ended_at=utcnow())


def test_gate_refuses_failed_runs_and_weak_first_models_and_decides_once(ws: LocalWorkspace) -> None:
    d = ws.register_dataset(parsed(), source_blob="incoming/a.csv", etag="1")
    failed = ws.submit_run(d.version, trigger="api")
    ws.registry.update_run(failed.run_id, status=FAILED, error="boom")
    decision = ws.deploy_run(failed.run_id)
    assert not decision.deployed and "Failed" in decision.reason

    weak = ws.submit_run(d.version, trigger="api")
    complete(ws, weak.run_id, 0.61)
    decision = ws.deploy_run(weak.run_id)
    assert not decision.deployed and "below the minimum" in decision.reason
    again = ws.deploy_run(weak.run_id)
    assert again.duplicate and not again.deployed
    assert len(ws.registry.decisions()) == 2
    assert ws.live_deployment() is None


def test_gate_keeps_a_better_live_model(ws: LocalWorkspace, tmp_path: Path) -> None:
    d = ws.register_dataset(parsed(), source_blob="incoming/a.csv", etag="1")
    live_run = ws.submit_run(d.version, trigger="api")
    complete(ws, live_run.run_id, 0.95)
    with ws.registry.transaction() as db:
        db.execute(
            "INSERT INTO deployments (name, run_id, model_version, status, port, key, model_dir, metrics, created_at, live_at)"
            " VALUES ('bankml-v1', ?, 1, 'live', 1, 'k', ?, ?, ?, ?)",
            (live_run.run_id, str(tmp_path), json.dumps({"AUC_weighted": 0.95}), utcnow(), utcnow()),
        )
    worse = ws.submit_run(d.version, trigger="api")
    complete(ws, worse.run_id, 0.94)
    decision = ws.deploy_run(worse.run_id)
    assert not decision.deployed and "does not beat the live bankml-v1" in decision.reason
    assert ws.live_deployment().name == "bankml-v1"


def test_own_runs_only(ws: LocalWorkspace) -> None:
    d = ws.register_dataset(parsed(), source_blob="incoming/a.csv", etag="1")
    run = ws.submit_run(d.version, trigger="api")
    assert ws.is_own_run(run.run_id, None)
    assert ws.is_own_run(run.run_id, "bankmarketing-automl")
    assert not ws.is_own_run(run.run_id, "someone-elses-experiment")
    assert not ws.is_own_run("AutoML_unknown", None)


def test_insights_requested_before_the_deployment_is_remembered(ws: LocalWorkspace) -> None:
    d = ws.register_dataset(parsed(), source_blob="incoming/a.csv", etag="1")
    run = ws.submit_run(d.version, trigger="api")
    assert "when the run's model deploys" in ws.enable_insights(run.run_id)
    with ws.registry.connect() as db:
        assert db.execute("SELECT run_id FROM insights_requests").fetchall()[0][0] == run.run_id
