"""The published pipeline's REST endpoint, the one submission path, and scheduled retraining,
driven through the real handlers with real azure.functions binding objects."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from devhost.catalog import build_table, load_functions
from functions.pipeline import pipeline_run, pipeline_submit
from functions.retrain import FUNCTION_NAME, retrain
from functions.retrain import register as register_timer
from shared.config import Settings
from shared.datagen import generate_frame
from shared.errors import ConfigError, NotFound, RequestError
from shared.ingest import canonical_csv, parse_csv
from shared.pipeline import scheduled_retrain, submit_pipeline_run
from shared.workspace.base import COMPLETED, FAILED
from shared.workspace.local.registry import utcnow
from shared.workspace.local.workspace import LocalWorkspace

ROOT = Path(__file__).resolve().parents[1]
submit = pipeline_submit.build().get_user_function()
show = pipeline_run.build().get_user_function()


@pytest.fixture()
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalWorkspace:
    monkeypatch.setenv("BANKML_HOME", str(tmp_path))
    monkeypatch.setenv("BANKML_BACKEND", "local")
    return LocalWorkspace(Settings.from_env())


def register(ws: LocalWorkspace, seed: int) -> int:
    parsed = parse_csv(canonical_csv(generate_frame(150, seed)), max_bytes=10**8)
    return ws.register_dataset(parsed, source_blob=f"incoming/{seed}.csv", etag=str(seed)).version


def post(body: Any) -> func.HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return submit(func.HttpRequest("POST", "/api/pipeline/runs", body=raw, headers={"Content-Type": "application/json"}))


def get(run_id: str) -> func.HttpResponse:
    return show(func.HttpRequest("GET", f"/api/pipeline/runs/{run_id}", body=b"", route_params={"run_id": run_id}))


def test_post_starts_a_run_with_azure_mls_body_and_answers_its_id(ws: LocalWorkspace) -> None:
    v1, v2 = register(ws, 1), register(ws, 2)
    r = post({"ExperimentName": "bankmarketing-automl", "ParameterAssignments": {"dataset_version": v1, "time_budget_s": "30"},
              "RunSource": "API", "Description": "retrain on v1"})
    assert r.status_code == 200
    run_id = json.loads(r.get_body())["Id"]
    row = ws.registry.get_run(run_id)
    assert row is not None and row["dataset_version"] == v1 and row["trigger"] == "api"
    assert row["parameters"]["time_budget_s"] == 30.0 and row["status"] == "Queued"
    # No dataset_version: the latest registered one; no budget: the setting's.
    latest = ws.registry.get_run(json.loads(post({"ParameterAssignments": {}}).get_body())["Id"])
    assert latest is not None and latest["dataset_version"] == v2 and latest["parameters"]["time_budget_s"] == 60.0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"not json", 400, "body"),
        ([1, 2], 400, "body"),
        ({"ExperimentName": "someone-else"}, 400, "ExperimentName"),
        ({"ParameterAssignments": {"learning_rate": 0.1}}, 400, "learning_rate"),
        ({"ParameterAssignments": {"time_budget_s": "soon"}}, 400, "time_budget_s"),
        ({"ParameterAssignments": {"time_budget_s": 0}}, 400, "time_budget_s"),
        ({"ParameterAssignments": {"dataset_version": "two"}}, 400, "dataset_version"),
        ({"ParameterAssignments": {"dataset_version": 99}}, 404, "dataset_version"),
        ({"ParameterAssignments": [1]}, 400, "ParameterAssignments"),
        ({"Paramaters": {}}, 400, "Paramaters"),
    ],
)
def test_bad_requests_name_the_field_and_start_nothing(ws: LocalWorkspace, body: Any, status: int, field: str) -> None:
    register(ws, 1)
    r = post(body)
    assert r.status_code == status
    err = json.loads(r.get_body())["error"]
    assert err["field"] == field
    assert field in err["message"] or (status == 404 and "dataset version 99" in err["message"])
    assert ws.registry.list_runs() == []


def strict_json(raw: bytes) -> Any:
    """JSON as JSON.parse reads it: a bare NaN/Infinity token is an error, not a number."""

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    return json.loads(raw, parse_constant=refuse)


@pytest.mark.parametrize(
    ("raw", "field", "value"),
    [
        (b'{"ParameterAssignments": {"dataset_version": 9223372036854775808}}', "dataset_version", 9223372036854775808),
        (b'{"ParameterAssignments": {"dataset_version": 9007199254740993}}', "dataset_version", 9007199254740993),
        (b'{"ParameterAssignments": {"dataset_version": "9223372036854775808"}}', "dataset_version", "9223372036854775808"),
        (b'{"ParameterAssignments": {"dataset_version": -9223372036854775809}}', "dataset_version", -9223372036854775809),
        (b'{"ParameterAssignments": {"dataset_version": 0}}', "dataset_version", 0),
        (b'{"ParameterAssignments": {"dataset_version": 1e400}}', "dataset_version", "Infinity"),
        (b'{"ParameterAssignments": {"dataset_version": NaN}}', "dataset_version", "NaN"),
        (b'{"ParameterAssignments": {"dataset_version": 2.5}}', "dataset_version", 2.5),
        (b'{"ParameterAssignments": {"dataset_version": [1]}}', "dataset_version", "array"),
        (b'{"ParameterAssignments": {"dataset_version": null}}', "dataset_version", None),
        (b'{"ParameterAssignments": {"time_budget_s": NaN}}', "time_budget_s", "NaN"),
        (b'{"ParameterAssignments": {"time_budget_s": Infinity}}', "time_budget_s", "Infinity"),
        (b'{"ParameterAssignments": {"time_budget_s": -Infinity}}', "time_budget_s", "-Infinity"),
        (b'{"ParameterAssignments": {"time_budget_s": 1e400}}', "time_budget_s", "Infinity"),
        (b'{"ParameterAssignments": {"time_budget_s": "1e400"}}', "time_budget_s", "1e400"),
        (b'{"ParameterAssignments": {"time_budget_s": 1' + b"0" * 400 + b"}}", "time_budget_s", "1" + "0" * 23 + "... (401 digits)"),
        (b'{"ParameterAssignments": {"time_budget_s": 3601}}', "time_budget_s", 3601),
        (b'{"ParameterAssignments": {"time_budget_s": -1e300}}', "time_budget_s", -1e300),
        (b'{"ParameterAssignments": {"time_budget_s": {"s": 1}}}', "time_budget_s", "object"),
        (b'{"ParameterAssignments": {"time_budget_s": null}}', "time_budget_s", None),
        (b'{"ExperimentName": null, "ParameterAssignments": null}', "ExperimentName", None),
        (b'{"ParameterAssignments": null}', "ParameterAssignments", None),
        (b'{"ExperimentName": 7}', "ExperimentName", 7),
        (b'{"Description": null}', "Description", None),
        (b'{"RunSource": null}', "RunSource", None),
        (b'{"Tags": null}', "Tags", None),
        (b'{"Tags": {"by": NaN}}', "Tags.by", "NaN"),
        (b'{"DataPathAssignments": null}', "DataPathAssignments", None),
        (b'{"DataSetDefinitionValueAssignments": null}', "DataSetDefinitionValueAssignments", None),
    ],
)
def test_out_of_range_non_finite_and_null_values_are_a_strict_json_400(ws: LocalWorkspace, raw: bytes, field: str, value: Any) -> None:
    """Range-checked before the workspace sees them (a version past SQLite's INTEGER was a 500);
    null is no value of the published-pipeline body (leave the key out for its default); and the
    error body stays JSON that JSON.parse reads (NaN/Infinity quoted as strings)."""
    register(ws, 1)
    r = post(raw)
    assert r.status_code == 400, r.get_body()[:300]
    err = strict_json(r.get_body())["error"]
    assert err["code"] == "bad_request" and err["field"] == field and field.split(".")[0] in err["message"]
    assert err.get("value") == value, err
    if value is None:
        assert err["got"] == "null" and "null" in err["message"], err
    assert ws.registry.list_runs() == []


def test_values_at_the_bounds_are_accepted(ws: LocalWorkspace) -> None:
    v = register(ws, 1)
    r = post({"ExperimentName": "", "ParameterAssignments": {"dataset_version": str(v), "time_budget_s": 3600},
              "Tags": {"by": "test"}, "Description": "", "RunSource": "SDK", "DataPathAssignments": {}})
    assert r.status_code == 200, r.get_body()
    row = ws.registry.get_run(json.loads(r.get_body())["Id"])
    assert row is not None and row["parameters"]["time_budget_s"] == 3600.0
    # The largest version the range allows is a real lookup: not registered, a 404 (not a 500).
    r = post({"ParameterAssignments": {"dataset_version": 2**53}})
    assert r.status_code == 404 and strict_json(r.get_body())["error"]["field"] == "dataset_version"


def test_post_without_any_dataset_is_a_404(ws: LocalWorkspace) -> None:
    r = post({"ParameterAssignments": {}})
    assert r.status_code == 404 and "no dataset" in json.loads(r.get_body())["error"]["message"]


def test_get_reports_status_then_metrics(ws: LocalWorkspace) -> None:
    v = register(ws, 1)
    run_id = json.loads(post({"ParameterAssignments": {"dataset_version": v}}).get_body())["Id"]
    doc = json.loads(get(run_id).get_body())
    assert doc["Id"] == run_id and doc["Status"] == "Queued" and doc["DatasetVersion"] == v and "Metrics" not in doc
    ws.registry.add_child_run(run_id, {"iteration": 0, "learner": "lgbm", "config": {}, "metric": 0.91, "train_time_s": 0.2})
    ws.registry.update_run(
        run_id, status=COMPLETED, ended_at=utcnow(),
        best={"learner": "VotingEnsemble", "members": [{"learner": "lgbm"}, {"learner": "xgboost"}], "threshold": 0.5,
              "metrics": {"AUC_weighted": 0.95, "accuracy": 0.92}},
    )
    doc = json.loads(get(run_id).get_body())
    assert doc["Status"] == COMPLETED and doc["Metrics"]["AUC_weighted"] == 0.95
    assert doc["BestModel"]["Members"] == ["lgbm", "xgboost"] and doc["ChildRuns"] == 1 and doc["BestChildMetric"] == 0.91
    ws.registry.update_run(run_id, status=FAILED, error="dataset has 40 rows, at least 100 are needed")
    doc = json.loads(get(run_id).get_body())
    assert doc["Status"] == FAILED and "at least 100" in doc["Error"]
    missing = get("AutoML_nope")
    assert missing.status_code == 404 and json.loads(missing.get_body())["error"]["field"] == "run_id"


def test_the_endpoints_need_a_function_key() -> None:
    env = {**os.environ, "BANKML_BENCHMARK_SCHEDULE": "0 */30 * * * *"}
    table = load_functions(ROOT, env)
    for name, route, method in (("pipeline_submit", "pipeline/runs", "POST"), ("pipeline_run", "pipeline/runs/{run_id}", "GET")):
        spec = table[name]
        assert spec.trigger["route"] == route and spec.trigger["methods"] == [method]
        assert str(spec.trigger["authLevel"]).upper() == "FUNCTION"


def test_ingest_runs_go_through_the_same_path_once_per_dataset_version(ws: LocalWorkspace) -> None:
    v = register(ws, 1)
    first = submit_pipeline_run(ws.settings, ws, trigger="ingest", dataset_version=v)
    again = submit_pipeline_run(ws.settings, ws, trigger="ingest", dataset_version=v)
    assert first.created and not again.created and again.run_id == first.run_id
    with pytest.raises(RequestError, match="time_budget_s"):
        submit_pipeline_run(ws.settings, ws, trigger="api", dataset_version=v, parameters={"time_budget_s": -1})
    with pytest.raises(NotFound):
        submit_pipeline_run(ws.settings, ws, trigger="api", dataset_version=v + 5)


# --------------------------------------------------------------------------- scheduled retraining


def test_the_retrain_timer_is_off_unless_a_schedule_is_set() -> None:
    assert Settings.from_env({}).retrain_schedule == ""
    off = func.Blueprint()
    assert register_timer(off, Settings.from_env({})) is False
    app = func.FunctionApp()
    app.register_functions(off)
    assert app.get_functions() == []
    with pytest.raises(ConfigError, match="BANKML_RETRAIN_SCHEDULE"):
        Settings.from_env({"BANKML_RETRAIN_SCHEDULE": "every night"})
    with pytest.raises(ConfigError, match="BANKML_RETRAIN_SCHEDULE"):
        Settings.from_env({"BANKML_RETRAIN_SCHEDULE": "0 0 3 * * mon-xyz"})


def test_a_schedule_registers_the_timer_and_the_disabled_convention_pauses_it() -> None:
    on = func.Blueprint()
    assert register_timer(on, Settings.from_env({"BANKML_RETRAIN_SCHEDULE": "0 0 3 * * *"})) is True
    app = func.FunctionApp()
    app.register_functions(on)
    env = {"BANKML_RETRAIN_SCHEDULE": "0 0 3 * * *"}
    spec = build_table(app, env)[FUNCTION_NAME]
    assert spec.trigger_type == "timerTrigger" and spec.trigger["schedule"] == "0 0 3 * * *" and not spec.disabled
    paused = func.FunctionApp()
    paused_bp = func.Blueprint()
    register_timer(paused_bp, Settings.from_env(env))
    paused.register_functions(paused_bp)
    assert build_table(paused, {**env, f"AzureWebJobs.{FUNCTION_NAME}.Disabled": "true"})[FUNCTION_NAME].disabled


def test_the_timer_retrains_on_the_latest_version_once_at_a_time(ws: LocalWorkspace) -> None:
    timer = TimerRequest(past_due=False)
    retrain(timer)  # nothing registered yet: nothing to do
    assert ws.registry.list_runs() == []
    register(ws, 1)
    latest = register(ws, 2)
    retrain(timer)
    runs = ws.registry.list_runs()
    assert [(r["dataset_version"], r["trigger"], r["status"]) for r in runs] == [(latest, "schedule", "Queued")]
    # A run under way: the next tick does not pile another one up.
    assert scheduled_retrain(ws.settings, ws) is None
    ws.registry.update_run(runs[0]["run_id"], status=COMPLETED, ended_at=utcnow())
    again = scheduled_retrain(ws.settings, ws)
    assert again is not None and again.dataset_version == latest and again.run_id != runs[0]["run_id"]
