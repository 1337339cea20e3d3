"""The azure backend at its boundary: real Azurite for the app's records, a real local HTTP server
for the REST services (published pipeline, MLflow, managed endpoint), a fake MLClient recording
the SDK entities, and the real function handlers driven by the documented event payloads."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import shared.workspace as backends
from functions.deploy import deploy_best_model
from functions.insights import enable_insights
from shared.config import Settings
from shared.datagen import generate_frame
from shared.errors import ConfigError, Conflict, DeploymentError, NotFound, WorkspaceError
from shared.ingest import canonical_csv, parse_csv
from shared.workspace.azure.auth import ARM_SCOPE
from shared.workspace.azure.deploy import DeployedRun, LiveModel, gate
from shared.workspace.azure.pipeline import DataPath, datastore_path, pipeline_body
from shared.workspace.azure.workspace import AzureWorkspace
from tests.azure_fakes import AzureMLServer, FakeMLClient, azure_env, make_workspace, shared_azurite

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CASES_EVENTS = SHARED / "cases" / "events"
REFERENCE = SHARED / "docs" / "azure-reference.md"


@pytest.fixture(scope="module")
def azurite() -> Any:
    return shared_azurite()


@pytest.fixture()
def server() -> Iterator[AzureMLServer]:
    s = AzureMLServer().start()
    yield s
    s.stop()


@pytest.fixture()
def env(azurite: Any, server: AzureMLServer) -> dict[str, str]:
    return azure_env(azurite.connection_string, server)


@pytest.fixture()
def setup(env: dict[str, str], server: AzureMLServer) -> tuple[AzureWorkspace, FakeMLClient, Any]:
    return make_workspace(env, server)


def parsed(rows: int = 200, seed: int = 1) -> Any:
    return parse_csv(canonical_csv(generate_frame(rows, seed)), max_bytes=10**8)


def eg_event(doc: dict[str, Any]) -> func.EventGridEvent:
    """The Functions host's binding object for one Event Grid schema event."""
    return func.EventGridEvent(
        id=doc["id"], data=doc["data"], topic=doc["topic"], subject=doc["subject"], event_type=doc["eventType"],
        event_time=dt.datetime.fromisoformat(doc["eventTime"][:19]).replace(tzinfo=dt.UTC),
        data_version=doc.get("dataVersion", ""),
    )


def case(name: str) -> list[dict[str, Any]]:
    path = CASES_EVENTS / name
    if not path.exists():
        pytest.skip(f"shared case file {path} is not available")
    return json.loads(path.read_text(encoding="utf-8"))


def reference_runcompleted_sample() -> list[dict[str, Any]]:
    """The RunCompleted example of azure-reference.md section 1.3 (an AutoML child iteration)."""
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is not available")
    text = REFERENCE.read_text(encoding="utf-8")
    section = text[text.index("### 1.3"):text.index("### 1.4")]
    block = re.search(r"RunCompleted example.*?```json\n(.*?)```", section, re.S)
    assert block, "the RunCompleted example is no longer in section 1.3"
    return json.loads(block.group(1))


@pytest.fixture()
def handlers(setup: tuple[AzureWorkspace, FakeMLClient, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The real deploy_best_model / enable_insights handlers, resolving BANKML_BACKEND=azure to the
    adapter under test (the only substitution: its MLClient and credential are the fakes)."""
    ws = setup[0]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(backends.BACKENDS, "azure", lambda settings: ws)
    backends._cached.cache_clear()
    yield deploy_best_model.build().get_user_function(), enable_insights.build().get_user_function()
    backends._cached.cache_clear()


def submit(ws: AzureWorkspace, server: AzureMLServer, run_id: str, *, seed: int) -> None:
    server.pipeline_ids.append(run_id)
    d = ws.register_dataset(parsed(seed=seed), source_blob=f"incoming/bank{seed}.csv", etag=f"0x{seed}")
    assert ws.submit_run(d.version, trigger="ingest").run_id == run_id


# -- datasets ----------------------------------------------------------------------------------
def test_the_adapter_does_not_import_azure_ai_ml_until_it_talks_to_the_workspace() -> None:
    code = "import sys, shared.workspace, shared.workspace.azure.workspace; print('azure.ai.ml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dataset_is_a_versioned_mltable_asset_and_the_same_content_is_the_same_version(
    setup: tuple[AzureWorkspace, FakeMLClient, Any], env: dict[str, str], server: AzureMLServer
) -> None:
    ws, ml, _ = setup
    p = parsed(seed=1)
    first = ws.register_dataset(p, source_blob="incoming/a.csv", etag="0x1")
    again = ws.register_dataset(parsed(seed=1), source_blob="incoming/b.csv", etag="0x2")
    other = ws.register_dataset(parsed(seed=2), source_blob="incoming/c.csv", etag="0x3")
    assert (first.version, first.created) == (1, True)
    assert (again.version, again.created, again.source_blob) == (1, False, "incoming/a.csv")
    assert (other.version, other.created) == (2, True)
    data = ml.of("Data")
    assert len(data) == 2
    assert data[0].name == "bankmarketing" and data[0].type == "mltable"
    assert data[0].tags["content_hash"] == p.content_hash and data[0].tags["source_blob"] == "incoming/a.csv"
    uploaded = ml.data.assets[0].files
    assert uploaded["data.csv"] == p.to_canonical_csv()
    assert "read_delimited" in uploaded["MLTable"].decode() and "./data.csv" in uploaded["MLTable"].decode()
    # The records are gone (a new state container), the data asset is not: found by its tag.
    env2 = {**env, "BANKML_AZURE_STATE_CONTAINER": env["BANKML_AZURE_STATE_CONTAINER"] + "b"}
    ws2 = AzureWorkspace(Settings.from_env(env2), ml_client=ml, credential=setup[2])
    assert ws2.register_dataset(parsed(seed=1), source_blob="incoming/d.csv", etag="0x4").version == 1
    assert len(ml.of("Data")) == 2


def test_two_deliveries_of_one_file_register_one_version(setup: tuple[AzureWorkspace, FakeMLClient, Any]) -> None:
    ws, ml, _ = setup
    p = parsed(seed=7)
    index = f"datasets/by-hash/{p.content_hash}.json"
    ws.state.put(index, {"state": "registering", "at": ws_now()})  # another instance is uploading it
    with pytest.raises(Conflict, match="same content is being registered"):
        ws.register_dataset(p, source_blob="incoming/a.csv", etag="0x1")
    assert ml.of("Data") == []
    ws.state.put(index, {"state": "registering", "at": "2020-01-01T00:00:00.000Z"})  # ... and died
    assert ws.register_dataset(p, source_blob="incoming/a.csv", etag="0x1").created
    assert len(ml.of("Data")) == 1


# -- submitting runs ---------------------------------------------------------------------------
def test_published_pipeline_gets_the_documented_body_with_a_bearer_token_and_ingest_submits_once(
    setup: tuple[AzureWorkspace, FakeMLClient, Any], server: AzureMLServer
) -> None:
    ws, ml, credential = setup
    d = ws.register_dataset(parsed(seed=3), source_blob="incoming/a.csv", etag="0x1")
    server.pipeline_ids.extend(["AutoML_run_1", "AutoML_run_2"])
    run = ws.submit_run(d.version, trigger="ingest")
    assert (run.run_id, run.created, run.status, run.dataset_version) == ("AutoML_run_1", True, "Queued", 1)
    again = ws.submit_run(d.version, trigger="ingest")  # a retried ingest
    assert (again.run_id, again.created) == ("AutoML_run_1", False)
    posts = server.calls("/pipelines/")
    assert len(posts) == 1
    post = posts[0]
    assert post.method == "POST" and post.headers["authorization"] == f"Bearer {server.token}"
    assert (ARM_SCOPE,) in credential.scopes
    body = post.body
    assert body["ExperimentName"] == "bankmarketing-automl"
    assert body["ParameterAssignments"] == {}
    assign = body["DataPathAssignments"]["training_data"]
    assert assign["DataStoreName"] == "workspaceblobstore"
    assert re.fullmatch(r"LocalUpload/[0-9a-f]+/bankmarketing/data\.csv", assign["RelativePath"])
    assert body["Tags"]["bankml_dataset_version"] == "1"
    # Another trigger is another run, with its parameters.
    api = ws.submit_run(d.version, trigger="api", parameters={"max_trials": 5})
    assert api.run_id == "AutoML_run_2"
    assert server.calls("/pipelines/")[-1].body["ParameterAssignments"] == {"max_trials": 5}
    assert ws.is_own_run("AutoML_run_1", "bankmarketing-automl") and ws.is_own_run("AutoML_run_2", None)
    assert not ws.is_own_run("AutoML_run_1", "someone-elses") and not ws.is_own_run("AutoML_other", None)


def test_a_refused_pipeline_run_names_the_status_and_the_retry_submits(
    setup: tuple[AzureWorkspace, FakeMLClient, Any], server: AzureMLServer
) -> None:
    ws, _, _ = setup
    d = ws.register_dataset(parsed(seed=4), source_blob="incoming/a.csv", etag="0x1")
    server.pipeline_status = 400
    with pytest.raises(WorkspaceError) as info:
        ws.submit_run(d.version, trigger="ingest")
    assert "HTTP 400" in info.value.message and "Pipeline parameter 'nope' not found" in info.value.message
    assert server.token not in json.dumps(info.value.to_dict())
    server.pipeline_status = 200
    server.pipeline_ids.append("AutoML_after_retry")
    assert ws.submit_run(d.version, trigger="ingest").run_id == "AutoML_after_retry"


def test_pipeline_body_with_a_saved_dataset_and_datastore_paths() -> None:
    body = pipeline_body(experiment="e", input_name="training_data", dataset_id="ds-1", parameters={"a": 1})
    assert body["DataSetDefinitionValueAssignments"] == {"training_data": {"SavedDataSetReference": {"Id": "ds-1"}}}
    assert "DataPathAssignments" not in body and body["ParameterAssignments"] == {"a": 1}
    assert datastore_path("azureml://datastores/workspaceblobstore/paths/LocalUpload/x/bank/") == DataPath(
        "workspaceblobstore", "LocalUpload/x/bank/"
    )
    with pytest.raises(WorkspaceError, match="not a datastore path"):
        datastore_path("https://acct.blob.core.windows.net/c/x.csv")


def test_batch_trigger_invokes_the_batch_endpoint_on_the_registered_asset(
    azurite: Any, server: AzureMLServer
) -> None:
    env = azure_env(azurite.connection_string, server, BANKML_AZURE_TRIGGER="batch")
    ws, ml, _ = make_workspace(env, server)
    ml.batch_endpoints.next_names.append("gentle_pipeline_job_1")
    d = ws.register_dataset(parsed(seed=5), source_blob="incoming/a.csv", etag="0x1")
    run = ws.submit_run(d.version, trigger="ingest")
    assert run.run_id == "gentle_pipeline_job_1"
    (call,) = ml.batch_endpoints.invocations
    assert call["endpoint_name"] == "bankml-train" and call["experiment_name"] == "bankmarketing-automl"
    data_input = call["inputs"]["training_data"]
    assert (data_input.type, data_input.path) == ("mltable", "azureml:bankmarketing:1")
    assert server.calls("/pipelines/") == []


def test_missing_azure_settings_fail_fast_naming_the_setting(azurite: Any, server: AzureMLServer) -> None:
    env = azure_env(azurite.connection_string, server)
    del env["BANKML_AZURE_ONLINE_ENDPOINT"]
    with pytest.raises(ConfigError) as info:
        backends.get_workspace(Settings.from_env(env))
    assert info.value.details["setting"] == "BANKML_AZURE_ONLINE_ENDPOINT"
    env = azure_env(azurite.connection_string, server, BANKML_AZURE_TRIGGER="batch", BANKML_AZURE_BATCH_ENDPOINT="")
    with pytest.raises(ConfigError, match="BANKML_AZURE_BATCH_ENDPOINT"):
        backends.get_workspace(Settings.from_env(env))
    with pytest.raises(ConfigError, match="BANKML_AZURE_TRIGGER"):
        Settings.from_env({**env, "BANKML_AZURE_TRIGGER": "webhook"})
    no_storage = {k: v for k, v in azure_env(azurite.connection_string, server).items() if k != "AzureWebJobsStorage"}
    with pytest.raises(ConfigError, match="AzureWebJobsStorage__accountName"):
        backends.get_workspace(Settings.from_env(no_storage))


# -- RunCompleted -> gate -> blue/green ---------------------------------------------------------
def test_runcompleted_events_deploy_blue_green_once(
    setup: tuple[AzureWorkspace, FakeMLClient, Any], server: AzureMLServer, handlers: Any
) -> None:
    ws, ml, _ = setup
    deploy, insights = handlers
    # 1. The documented sample is an AutoML child iteration: ignored before any lookup.
    for doc in reference_runcompleted_sample():
        assert doc["data"]["runProperties"]["runTemplate"] == "automl_child"
        deploy(eg_event(doc))
        insights(eg_event(doc))
    assert ml.calls == [] and ws.state.list("decisions/") == []

    # 2. PascalCase keys: the run is found, its best child deployed as the first model.
    (pascal,) = case("runcompleted_pascalcase.json")
    run1 = pascal["data"]["RunId"]
    submit(ws, server, run1, seed=11)
    best1 = ml.finish_pipeline(run1, auc=0.90)
    deploy(eg_event(pascal))
    insights(eg_event(pascal))
    (model,) = ml.of("Model")
    assert model.path == f"azureml://jobs/{best1}/outputs/artifacts/outputs/model.pkl"
    assert model.tags["run_id"] == run1 and model.tags["AUC_weighted"] == "0.9"
    (endpoint_created, traffic_1) = ml.of("ManagedOnlineEndpoint")
    assert endpoint_created.name == "bankml-score-test" and endpoint_created.auth_mode == "key"
    (dep1,) = ml.of("ManagedOnlineDeployment")
    assert dep1.name == "bankml-v1" and dep1.endpoint_name == "bankml-score-test"
    assert dep1.app_insights_enabled is True
    assert dep1.instance_type == "Standard_DS3_v2" and dep1.instance_count == 1
    assert dep1.code_configuration.scoring_script == "scoring_file_v_1_0_0.py"
    assert ml.uploaded["bankml-v1"] == ["conda_env_v_1_0_0.yml", "model.pkl", "scoring_file_v_1_0_0.py", "scoring_file_v_2_0_0.py"]
    assert traffic_1.traffic == {"bankml-v1": 100}
    smoke = [r for r in server.calls("/score") if r.headers.get("azureml-model-deployment") == "bankml-v1"]
    assert len(smoke) == 1 and len(smoke[0].body["data"]) == 2
    live = ws.live_deployment()
    assert live is not None and (live.name, live.run_id, live.model_version) == ("bankml-v1", run1, 1)
    assert live.metrics["AUC_weighted"] == 0.90 and live.insights
    assert ws.get_run(run1).best["best_child_run_id"] == best1

    # 3. The same event delivered twice: one better model, one deployment, the old one retired.
    redelivered = case("runcompleted_redelivered.json")
    run2 = redelivered[0]["data"]["runId"]
    submit(ws, server, run2, seed=12)
    ml.finish_pipeline(run2, auc=0.95)
    for doc in redelivered:
        deploy(eg_event(doc))
        insights(eg_event(doc))
    deps = ml.of("ManagedOnlineDeployment")
    assert [d.name for d in deps] == ["bankml-v1", "bankml-v2"]
    assert ml.of("ManagedOnlineEndpoint")[-1].traffic == {"bankml-v1": 0, "bankml-v2": 100}
    assert ml.online_deployments.deleted == ["bankml-v1"]
    decisions = {d["run_id"]: d for d in ws.state.list("decisions/")}
    assert decisions[run1]["deployed"] and decisions[run2]["deployed"] and len(decisions) == 2
    assert decisions[run2]["reason"].startswith("AUC_weighted 0.9500 beats the live bankml-v1 (0.9000)")
    again = ws.deploy_run(run2)
    assert again.duplicate and again.deployed and again.deployment and again.deployment.name == "bankml-v2"
    status = ws.status()
    assert status["live"] == "bankml-v2"
    assert {d["name"]: d["status"] for d in status["deployments"]} == {"bankml-v1": "retired", "bankml-v2": "live"}
    assert [d["version"] for d in status["datasets"]] == [1, 2]


def test_the_gate_refuses_like_the_local_workspace_and_decides_once(
    setup: tuple[AzureWorkspace, FakeMLClient, Any], server: AzureMLServer
) -> None:
    ws, ml, _ = setup
    submit(ws, server, "AutoML_failed", seed=21)
    ml.finish_pipeline("AutoML_failed", auc=None, status="Failed")
    d = ws.deploy_run("AutoML_failed")
    assert (d.deployed, d.reason) == (False, "run is Failed, not Completed with a model")
    assert ws.deploy_run("AutoML_failed").duplicate
    submit(ws, server, "AutoML_weak", seed=22)
    ml.finish_pipeline("AutoML_weak", auc=0.55)
    assert ws.deploy_run("AutoML_weak").reason == "AUC_weighted 0.5500 is below the minimum 0.7000"
    submit(ws, server, "AutoML_nometric", seed=23)
    ml.finish_pipeline("AutoML_nometric", auc=None)
    assert ws.deploy_run("AutoML_nometric").reason == "run has no held-out AUC_weighted"
    assert ml.of("ManagedOnlineDeployment") == [] and ml.of("Model") == []
    submit(ws, server, "AutoML_finalizing", seed=24)
    ml.finish_pipeline("AutoML_finalizing", auc=0.9, status="Finalizing")  # the event came first
    with pytest.raises(WorkspaceError, match="still Running"):
        ws.deploy_run("AutoML_finalizing")
    assert ws.state.doc("decisions/AutoML_finalizing.json") is None  # redelivered later, decided then
    with pytest.raises(NotFound):
        ws.deploy_run("AutoML_not_ours")
    # Not decided: a redelivery may try again once the run is known.
    assert ws.state.doc("decisions/AutoML_not_ours.json") is None


def test_a_late_event_of_an_older_run_never_replaces_a_newer_model(
    setup: tuple[AzureWorkspace, FakeMLClient, Any], server: AzureMLServer
) -> None:
    ws, ml, _ = setup
    submit(ws, server, "AutoML_older", seed=61)
    submit(ws, server, "AutoML_newer", seed=62)
    ml.finish_pipeline("AutoML_newer", auc=0.85)
    ml.finish_pipeline("AutoML_older", auc=0.99)
    assert ws.deploy_run("AutoML_newer").deployed
    late = ws.deploy_run("AutoML_older")
    assert not late.deployed and late.reason.startswith("run was submitted before run AutoML_newer")
    assert [d.name for d in ml.of("ManagedOnlineDeployment")] == ["bankml-v1"]


def test_a_v1_pipeline_run_the_sdk_cannot_read_gets_its_status_from_mlflow(
    setup: tuple[AzureWorkspace, FakeMLClient, Any], server: AzureMLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.core.exceptions import AzureError

    ws, ml, _ = setup
    submit(ws, server, "5f0c2a4e-v1-pipeline-run", seed=71)
    ml.finish_pipeline("5f0c2a4e-v1-pipeline-run", auc=0.9)
    real_get = ml.jobs.get

    def get(name: str) -> Any:
        if name == "5f0c2a4e-v1-pipeline-run":
            raise AzureError("Job type PipelineRun is not supported")
        return real_get(name)

    monkeypatch.setattr(ml.jobs, "get", get)
    assert ws.deploy_run("5f0c2a4e-v1-pipeline-run").deployed  # MLflow says FINISHED
    assert ws.get_run("5f0c2a4e-v1-pipeline-run").status == "Completed"


def test_gate_reasons_follow_the_local_workspace() -> None:
    s = Settings.from_env({"BANKML_DEPLOY_MARGIN": "0.01"})
    live = LiveModel("bankml-v3", "AutoML_live", 0.90, "2026-01-02T00:00:00.000Z")
    newest = DeployedRun("AutoML_live", "2026-01-02T00:00:00.000Z")
    later, earlier = "2026-01-03T00:00:00.000Z", "2026-01-01T00:00:00.000Z"
    first = gate(s, run_id="r", candidate=0.72, submitted_at="x", newest=None, live=None)
    assert first == (True, "first model: AUC_weighted 0.7200 >= minimum 0.7000")
    weak = gate(s, run_id="r", candidate=0.60, submitted_at=later, newest=newest, live=live)
    assert weak == (False, "AUC_weighted 0.6000 is below the minimum 0.7000")
    ok, reason = gate(s, run_id="r", candidate=0.95, submitted_at=earlier, newest=newest, live=live)
    assert not ok and reason.startswith("run was submitted before run AutoML_live, whose model was already deployed")
    ok, reason = gate(s, run_id="r", candidate=0.905, submitted_at=later, newest=newest, live=live)
    assert not ok and reason.startswith("AUC_weighted 0.9050 does not beat the live bankml-v3 (0.9000) by more than 0.01 on their own")
    ok, reason = gate(s, run_id="r", candidate=0.92, submitted_at=later, newest=newest, live=live)
    assert ok and reason.startswith("AUC_weighted 0.9200 beats the live bankml-v3 (0.9000) by more than 0.01")


def test_a_deployment_that_fails_its_scoring_check_is_deleted_and_the_live_one_keeps_serving(
    setup: tuple[AzureWorkspace, FakeMLClient, Any], server: AzureMLServer
) -> None:
    ws, ml, _ = setup
    submit(ws, server, "AutoML_good", seed=31)
    ml.finish_pipeline("AutoML_good", auc=0.90)
    assert ws.deploy_run("AutoML_good").deployed
    submit(ws, server, "AutoML_broken", seed=32)
    ml.finish_pipeline("AutoML_broken", auc=0.97)
    server.failing.add("bankml-v2")
    with pytest.raises(DeploymentError, match="scoring check on bankml-v2 failed"):
        ws.deploy_run("AutoML_broken")
    assert ml.online_deployments.deleted == ["bankml-v2"]
    assert server.traffic == {"bankml-v1": 100}
    live = ws.live_deployment(refresh=True)
    assert live is not None and live.name == "bankml-v1"
    d = ws.deploy_run("AutoML_broken")  # a redelivery does not try again
    assert d.duplicate and not d.deployed and d.reason.startswith("deployment failed: scoring check on bankml-v2")


def test_claims_are_conditional_writes_and_a_stale_claim_is_taken_over(
    setup: tuple[AzureWorkspace, FakeMLClient, Any], server: AzureMLServer
) -> None:
    ws, ml, _ = setup
    assert ws.state.create("decisions/x.json", {"state": "deciding"})
    assert not ws.state.create("decisions/x.json", {"state": "deciding"})
    submit(ws, server, "AutoML_claimed", seed=41)
    ml.finish_pipeline("AutoML_claimed", auc=0.9)
    ws.state.put("decisions/AutoML_claimed.json", {"run_id": "AutoML_claimed", "state": "deciding", "at": ws_now()})
    busy = ws.deploy_run("AutoML_claimed")
    assert busy.duplicate and busy.reason == "a decision on this run is in progress" and ml.of("Model") == []
    ws.state.put("decisions/AutoML_claimed.json", {"run_id": "AutoML_claimed", "state": "deciding", "at": "2020-01-01T00:00:00.000Z"})
    taken = ws.deploy_run("AutoML_claimed")
    assert taken.deployed and not taken.duplicate


def test_insights_requested_before_the_deployment_and_switched_on_for_a_manual_one(
    setup: tuple[AzureWorkspace, FakeMLClient, Any], server: AzureMLServer
) -> None:
    ws, ml, _ = setup
    submit(ws, server, "AutoML_insights", seed=51)
    assert ws.enable_insights("AutoML_insights") == "telemetry will be on when the run's model deploys"
    ml.finish_pipeline("AutoML_insights", auc=0.9)
    assert ws.deploy_run("AutoML_insights").deployed
    ml.online_deployments.deployments["bankml-v1"].app_insights_enabled = False  # changed by hand in the studio
    assert ws.enable_insights("AutoML_insights") == "telemetry on for bankml-v1"
    updates = ml.of("ManagedOnlineDeployment")
    assert len(updates) == 2 and updates[-1].name == "bankml-v1" and updates[-1].app_insights_enabled is True


def ws_now() -> str:
    from shared.workspace.azure.state import utcnow

    return utcnow()
