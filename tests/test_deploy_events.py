"""deploy_best_model and enable_insights driven by real binding objects in both envelopes:
what they ignore (with no side effects), and one deployment per run however often, in whatever
envelope and however concurrently it is delivered."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from deploy_fixtures import completed_run, register_csv

from functions.deploy import deploy_best_model
from functions.insights import enable_insights
from shared.config import Settings
from shared.events import RUN_STATUS_CHANGED
from shared.workspace.local.workspace import LocalWorkspace

if TYPE_CHECKING:
    from conftest import TrainedModel

CASES = Path(__file__).resolve().parents[2] / "shared" / "cases" / "events"
deploy = deploy_best_model.build().get_user_function()
insights = enable_insights.build().get_user_function()


def case(name: str) -> dict[str, Any]:
    doc = json.loads((CASES / name).read_text())
    return copy.deepcopy(doc[0] if isinstance(doc, list) else doc)


def binding(obj: dict[str, Any]) -> func.EventGridEvent | func.CloudEvent:
    """What the Functions worker passes: its decoder returns func.CloudEvent for a CloudEvents body."""
    return EventGridEventInConverter.decode(Datum(json.dumps(obj), "json"), trigger_metadata=None)


def for_run(run_id: str, *, event_id: str, pascal: bool = False, cloud: bool = False, **data: Any) -> dict[str, Any]:
    """The shared RunCompleted case, about ``run_id``, in the envelope and casing asked for."""
    obj = case("runcompleted_pascalcase.json" if pascal else "runcompleted_redelivered.json")
    obj["id"] = event_id
    obj["subject"] = obj["subject"].rsplit("/runs/", 1)[0] + f"/runs/{run_id}"
    obj["data"]["RunId" if pascal else "runId"] = run_id
    obj["data"].update(data)
    if cloud:
        return {
            "specversion": "1.0", "id": obj["id"], "source": obj["topic"], "subject": obj["subject"],
            "type": obj["eventType"], "time": obj["eventTime"], "data": obj["data"],
        }
    return obj


@pytest.fixture()
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalWorkspace:
    monkeypatch.setenv("BANKML_HOME", str(tmp_path))
    monkeypatch.setenv("BANKML_BACKEND", "local")
    return LocalWorkspace(Settings.from_env({"BANKML_HOME": str(tmp_path)}))


def side_effects(ws: LocalWorkspace) -> tuple[int, int, int, bool]:
    with ws.registry.connect() as db:
        asked = db.execute("SELECT COUNT(*) FROM insights_requests").fetchone()[0]
    return len(ws.registry.decisions()), len(ws.registry.list_deployments()), asked, (ws.home / "deployments").exists()


def test_other_events_are_acknowledged_without_side_effects(ws: LocalWorkspace, trained_model: TrainedModel) -> None:
    own = completed_run(ws, register_csv(ws, trained_model.csv), trained_model.model_dir, 0.9)
    ignored = [
        case("blobcreated_cloudevent.json"),  # another event type, CloudEvents
        case("runcompleted_pascalcase.json"),  # a run this app did not submit
        for_run(own, event_id="x1", experimentName="someone-elses-experiment"),  # our run id, other experiment
        for_run(f"{own}_3", event_id="x2"),  # a child iteration of our run
        for_run(own, event_id="x3", runProperties={"runTemplate": "automl_child"}),
        dict(for_run(own, event_id="x4"), eventType="Microsoft.MachineLearningServices.ModelRegistered"),
        dict(for_run(own, event_id="x5", cloud=True), type=RUN_STATUS_CHANGED),  # failed runs deploy nothing
    ]
    for obj in ignored:
        for handler in (deploy, insights):
            assert handler(binding(obj)) is None  # returns normally: the host answers 2xx
    assert side_effects(ws) == (0, 0, 0, False)


def test_one_deployment_per_run_whatever_the_envelope_or_concurrency(
    ws: LocalWorkspace, trained_model: TrainedModel
) -> None:
    run_id = completed_run(ws, register_csv(ws, trained_model.csv), trained_model.model_dir, 0.9)
    try:
        # enable_insights may run before the deployment exists (both fire on the same event).
        insights(binding(for_run(run_id, event_id="c1", cloud=True)))
        # The same event delivered twice at the same moment, PascalCase keys, Event Grid schema.
        event = for_run(run_id, event_id="r1", pascal=True)
        errors: list[BaseException] = []

        def deliver() -> None:
            try:
                deploy(binding(event))
            except BaseException as err:  # noqa: BLE001 - reported by the assertion below
                errors.append(err)

        threads = [threading.Thread(target=deliver) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        # The same run reported again: another event id, then as a CloudEvent.
        deploy(binding(for_run(run_id, event_id="r2")))
        deploy(binding(for_run(run_id, event_id="c2", cloud=True)))

        deployments = ws.registry.list_deployments()
        assert [(d["name"], d["status"], d["insights"]) for d in deployments] == [("bankml-v1", "live", True)]
        decisions = ws.registry.decisions()
        assert len(decisions) == 1 and decisions[0]["deployed"] and decisions[0]["reason"].startswith("first model")
        assert ws.insights_flag("bankml-v1").exists()
    finally:
        ws.stop_servers()
