"""Reading events: both envelopes (Event Grid schema, CloudEvents 1.0), any key casing, child runs."""

from __future__ import annotations

import json
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

from shared.events import (
    BLOB_CREATED,
    RUN_COMPLETED,
    RUN_STATUS_CHANGED,
    ci_get,
    parse_run_event,
    read_event,
    run_event_of,
)


def test_ci_get_reads_any_casing() -> None:
    assert ci_get({"RunId": "r"}, "runId") == "r"
    assert ci_get({"runid": "r"}, "runId") == "r"
    assert ci_get({}, "runId", "d") == "d"
    assert ci_get(None, "x") is None


@pytest.mark.parametrize("camel", [True, False])
def test_run_completed_in_both_casings(camel: bool) -> None:
    data = {"experimentName": "exp", "runId": "AutoML_1", "runProperties": {}} if camel else {
        "ExperimentName": "exp", "RunId": "AutoML_1", "RunProperties": {}}
    ev = parse_run_event(event_id="e", event_type=RUN_COMPLETED, data=data, subject="experiments/x/runs/AutoML_1", topic="t")
    assert ev is not None and ev.run_id == "AutoML_1" and ev.experiment_name == "exp" and not ev.is_child


def test_child_runs_and_other_events_are_recognised() -> None:
    child = parse_run_event(
        event_id="e", event_type=RUN_COMPLETED,
        data={"runId": "AutoML_1_5", "runProperties": {"runTemplate": "automl_child"}}, subject=None, topic=None,
    )
    assert child is not None and child.is_child
    assert parse_run_event(event_id="e", event_type="Microsoft.Storage.BlobCreated", data={}, subject="", topic=None) is None
    failed = parse_run_event(event_id="e", event_type=RUN_STATUS_CHANGED, data={"runId": "r", "runStatus": "failed"}, subject=None, topic=None)
    assert failed is not None and failed.run_status == "failed"


def test_run_id_falls_back_to_the_subject() -> None:
    ev = parse_run_event(event_id="e", event_type=RUN_COMPLETED, data={}, subject="experiments/abc/runs/AutoML_9", topic=None)
    assert ev is not None and ev.run_id == "AutoML_9"


# -- both envelopes, the shared cases ---------------------------------------------------------
CASES = Path(__file__).resolve().parents[2] / "shared" / "cases" / "events"


def case(name: str) -> list[dict]:
    doc = json.loads((CASES / name).read_text())
    return doc if isinstance(doc, list) else [doc]


def binding(obj: dict) -> func.EventGridEvent | func.CloudEvent:
    """The object the Functions worker passes: its own decoder picks the class from the body."""
    return EventGridEventInConverter.decode(Datum(json.dumps(obj), "json"), trigger_metadata=None)


def as_cloud_event(obj: dict) -> dict:
    """The CloudEvents 1.0 form of an Event Grid schema event (azure-reference.md 1.2)."""
    return {
        "specversion": "1.0", "id": obj["id"], "source": obj["topic"], "subject": obj["subject"],
        "type": obj["eventType"], "time": obj["eventTime"], "data": obj["data"],
    }


@pytest.mark.parametrize("name", ["runcompleted_redelivered.json", "runcompleted_pascalcase.json"])
def test_run_completed_cases_read_the_same_in_both_envelopes(name: str) -> None:
    raw = case(name)[0]
    seen = []
    for obj in (raw, as_cloud_event(raw)):
        for event in (obj, binding(obj)):
            info, run = run_event_of(event)
            assert run is not None and run.event_type == RUN_COMPLETED and not run.is_child
            seen.append((info.id, info.source, run.run_id, run.experiment_name, info.cloud_event))
    assert isinstance(binding(as_cloud_event(raw)), func.CloudEvent)
    assert isinstance(binding(raw), func.EventGridEvent)
    run_id = raw["data"].get("runId") or raw["data"].get("RunId")
    assert {s[:4] for s in seen} == {(raw["id"], raw["topic"], run_id, "bankmarketing-automl")}
    assert [s[4] for s in seen] == [False, False, True, True]


def test_blob_created_cloud_event_is_not_a_run_event() -> None:
    obj = case("blobcreated_cloudevent.json")[0]
    for event in (obj, binding(obj)):
        info, run = run_event_of(event)
        assert (info.type, info.cloud_event, run) == (BLOB_CREATED, True, None)
        assert info.subject == "blobServices/default/containers/incoming/blobs/bank.csv"


def test_local_host_mapping_of_cloud_events_is_read_too() -> None:
    # devhost hands CloudEvents to Event Grid functions as func.EventGridEvent (source -> topic).
    raw = case("runcompleted_pascalcase.json")[0]
    mapped = func.EventGridEvent(
        id="c9", data=raw["data"], topic=raw["topic"], subject=raw["subject"], event_type=raw["eventType"],
        event_time=None, data_version="",
    )
    info = read_event(mapped)
    assert (info.id, info.type, info.source, info.cloud_event) == ("c9", RUN_COMPLETED, raw["topic"], False)


@pytest.mark.parametrize(
    ("data", "child"),
    [
        ({"runId": "AutoML_0b1d2e3f-0000-4000-8000-000000000001"}, False),  # a parent, as this app names them
        ({"runId": "AutoML_0b1d2e3f-0000-4000-8000-000000000001_5"}, True),  # Azure ML's child naming
        ({"runId": "AutoML_0b1d2e3f-0000-4000-8000-000000000001_setup"}, True),
        ({"RunId": "r7", "RunProperties": {"ParentRunId": "r1"}}, True),
        ({"runId": "r1", "runProperties": {"parentRunId": "r1"}}, False),  # points at itself
        ({"runId": "r8", "runType": "AutoML_Child"}, True),
        ({"runId": "r9", "runProperties": {"runTemplate": "automl_parent"}}, False),
    ],
)
def test_child_runs_are_recognised_by_template_parent_or_name(data: dict, child: bool) -> None:
    ev = parse_run_event(event_id="e", event_type=RUN_COMPLETED, data=data, subject=None, topic=None)
    assert ev is not None and ev.is_child is child


def test_event_types_are_matched_case_insensitively_and_others_are_not_run_events() -> None:
    ev = parse_run_event(event_id="e", event_type=RUN_COMPLETED.lower(), data={"runId": "r"}, subject=None, topic=None)
    assert ev is not None and ev.event_type == RUN_COMPLETED
    for other in ("Microsoft.MachineLearningServices.ModelRegistered", "", "RunCompleted"):
        assert parse_run_event(event_id="e", event_type=other, data={"runId": "r"}, subject=None, topic=None) is None
    # A data payload that is not an object (e.g. a string) is read as empty, not a crash.
    assert parse_run_event(event_id="e", event_type=RUN_COMPLETED, data="x", subject=None, topic=None) is None  # type: ignore[arg-type]
