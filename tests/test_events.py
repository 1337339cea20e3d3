from __future__ import annotations

import pytest

from shared.events import RUN_COMPLETED, RUN_STATUS_CHANGED, ci_get, parse_run_event


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
