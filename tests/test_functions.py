"""The thin handlers, called with real azure.functions binding objects."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import azure.functions as func
import pytest

from functions.deploy import deploy_best_model
from functions.insights import enable_insights
from shared.config import Settings
from shared.datagen import generate_frame
from shared.events import RUN_COMPLETED, RUN_STATUS_CHANGED
from shared.ingest import canonical_csv, parse_csv
from shared.workspace.local.workspace import LocalWorkspace


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BANKML_HOME", str(tmp_path))
    monkeypatch.setenv("BANKML_BACKEND", "local")
    return tmp_path


def event(event_type: str, data: dict, event_id: str = "e1") -> func.EventGridEvent:
    return func.EventGridEvent(
        id=event_id, data=data, topic="/subscriptions/x", subject=f"experiments/x/runs/{data.get('runId', '')}",
        event_type=event_type, event_time=dt.datetime.now(dt.UTC), data_version="",
    )


def a_run(home: Path) -> tuple[LocalWorkspace, str]:
    ws = LocalWorkspace(Settings.from_env({"BANKML_HOME": str(home)}))
    d = ws.register_dataset(parse_csv(canonical_csv(generate_frame(200, 3)), max_bytes=10**8), source_blob="incoming/a", etag="1")
    return ws, ws.submit_run(d.version, trigger="ingest").run_id


def test_deploy_ignores_other_apps_runs_child_runs_and_other_events(home: Path) -> None:
    ws, run_id = a_run(home)
    handler = deploy_best_model.build().get_user_function()
    handler(event(RUN_COMPLETED, {"runId": "AutoML_someone_else", "experimentName": "theirs"}))
    handler(event(RUN_COMPLETED, {"runId": run_id, "runProperties": {"runTemplate": "automl_child"}}))
    handler(event("Microsoft.MachineLearningServices.ModelRegistered", {"ModelName": "m", "ModelVersion": 1}))
    handler(event(RUN_COMPLETED, {"runId": run_id, "experimentName": "another-experiment"}))
    handler(event(RUN_STATUS_CHANGED, {"runId": run_id, "runStatus": "failed"}))
    assert ws.registry.decisions() == []


def test_deploy_records_the_gate_decision_once_for_redelivered_events(home: Path) -> None:
    ws, run_id = a_run(home)  # still Queued: the gate refuses it, with a reason
    handler = deploy_best_model.build().get_user_function()
    for _ in range(2):
        handler(event(RUN_COMPLETED, {"RunId": run_id, "ExperimentName": "bankmarketing-automl"}, "r1"))
    decisions = ws.registry.decisions()
    assert len(decisions) == 1 and decisions[0]["deployed"] == 0 and "Queued" in decisions[0]["reason"]


def test_insights_requested_for_own_completed_runs_only(home: Path) -> None:
    ws, run_id = a_run(home)
    handler = enable_insights.build().get_user_function()
    handler(event(RUN_COMPLETED, {"runId": "AutoML_other"}))
    handler(event(RUN_STATUS_CHANGED, {"runId": run_id, "runStatus": "failed"}))
    with ws.registry.connect() as db:
        assert db.execute("SELECT COUNT(*) FROM insights_requests").fetchone()[0] == 0
    handler(event(RUN_COMPLETED, {"runId": run_id}))
    with ws.registry.connect() as db:
        assert db.execute("SELECT run_id FROM insights_requests").fetchone()[0] == run_id


def test_function_app_declares_its_functions_and_their_triggers() -> None:
    import importlib.util

    # Loaded from its file under its own name: other tests load toy apps as `function_app`.
    spec = importlib.util.spec_from_file_location("bankml_function_app", Path(__file__).resolve().parents[1] / "function_app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    funcs = {f.get_function_name(): f.get_trigger().get_binding_name() for f in module.app.get_functions()}
    assert funcs == {
        "ingest": "blobTrigger",
        "deploy_best_model": "eventGridTrigger",
        "enable_insights": "eventGridTrigger",
        "score": "httpTrigger",
        "swagger": "httpTrigger",
        "docs": "httpTrigger",
        "benchmark": "timerTrigger",
        "benchmarks_latest": "httpTrigger",
        "health": "httpTrigger",
        "pipeline_submit": "httpTrigger",
        "pipeline_run": "httpTrigger",
    }
