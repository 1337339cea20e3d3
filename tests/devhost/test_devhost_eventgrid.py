"""Event Grid trigger webhook: system key, handshake, one invocation per event, CloudEvents, retries."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import requests

from devhost.events import EventBodyError, delivery_kind
from devhost.host import FunctionHost

if TYPE_CHECKING:
    from conftest import Records

NOTIFY = {"aeg-event-type": "Notification", "Content-Type": "application/json"}


def _event(event_id: str, **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws",
        "subject": f"experiments/e/runs/{event_id}",
        "eventType": "Microsoft.MachineLearningServices.RunCompleted",
        "eventTime": "2026-11-30T10:05:00.1234567Z",
        "data": {"runId": event_id, **data},
        "dataVersion": "2",
        "metadataVersion": "1",
    }


def _post(host: FunctionHost, body: Any, headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(host.eventgrid_webhook_url("on_event"), data=data, headers=headers or NOTIFY, timeout=10, **kw)


def test_webhook_needs_the_eventgrid_system_key(host: FunctionHost) -> None:
    base = f"{host.url}/runtime/webhooks/eventgrid"
    body = json.dumps([_event(f"k-{uuid.uuid4()}")])
    for code in (None, "wrong", host.keys.function_key, host.keys.system_key("blobs_extension")):
        params = {"functionName": "on_event"} | ({"code": code} if code else {})
        assert requests.post(base, params=params, data=body, headers=NOTIFY, timeout=5).status_code == 401
    params = {"functionName": "nothere", "code": host.keys.system_key("eventgrid_extension")}
    assert requests.post(base, params=params, data=body, headers=NOTIFY, timeout=5).status_code == 404
    params = {"functionName": "hello", "code": host.keys.system_key("eventgrid_extension")}
    assert requests.post(base, params=params, data=body, headers=NOTIFY, timeout=5).status_code == 404
    url = host.eventgrid_webhook_url("on_event")
    assert "functionName=on_event" in url
    assert f"code={host.keys.system_key('eventgrid_extension')}" in url


def test_subscription_validation_handshake(host: FunctionHost, records: Records, case: Callable[[str], Any]) -> None:
    doc = case("subscription_validation.json")
    code = doc[0]["data"]["validationCode"]
    r = _post(host, doc, headers={"aeg-event-type": "SubscriptionValidation", "Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.json() == {"validationResponse": code}
    # also recognised by its eventType when the header says Notification
    assert _post(host, doc).json() == {"validationResponse": code}
    assert records.events(doc[0]["id"]) == []  # no invocation


def test_one_invocation_per_event(host: FunctionHost, records: Records) -> None:
    ids = [f"batch-{uuid.uuid4()}" for _ in range(3)]
    r = _post(host, [_event(i) for i in ids])
    assert r.status_code == 200
    for i in ids:
        seen = records.events(i)
        assert len(seen) == 1
        assert seen[0]["cls"] == "EventGridEvent"
        assert seen[0]["event_type"] == "Microsoft.MachineLearningServices.RunCompleted"
        assert seen[0]["subject"] == f"experiments/e/runs/{i}"
        assert seen[0]["data"] == {"runId": i}
        assert seen[0]["event_time"] == "2026-11-30T10:05:00.123456+00:00"
    # a single object (lenient) and the same event redelivered: the host does not dedupe, the app must
    again = _event(f"single-{uuid.uuid4()}")
    assert _post(host, again).status_code == 200
    assert _post(host, [again, again]).status_code == 200
    assert len(records.events(again["id"])) == 3


def test_envelope_keys_are_case_insensitive(host: FunctionHost, records: Records, case: Callable[[str], Any]) -> None:
    doc = case("runcompleted_pascalcase.json")
    event = {k[0].upper() + k[1:]: v for k, v in copy.deepcopy(doc[0]).items()}  # "EventType", "Subject", ...
    event["Id"] = f"pascal-{uuid.uuid4()}"
    assert _post(host, [event]).status_code == 200
    (seen,) = records.events(event["Id"])
    assert seen["event_type"] == "Microsoft.MachineLearningServices.RunCompleted"
    assert seen["subject"] == doc[0]["subject"]
    assert seen["data"]["RunId"] == "AutoML_0b1d"


def test_cloudevent_single_object(host: FunctionHost, records: Records, case: Callable[[str], Any]) -> None:
    doc = case("blobcreated_cloudevent.json")
    event = dict(doc, id=f"ce-{uuid.uuid4()}")
    # Event Grid sets aeg-event-type on CloudEvents deliveries too
    headers = {"Content-Type": "application/cloudevents+json; charset=utf-8", "aeg-event-type": "Notification"}
    assert _post(host, event, headers=headers).status_code == 200
    (seen,) = records.events(event["id"])
    assert seen["cls"] == "EventGridEvent"
    assert seen["topic"] == doc["source"]
    assert seen["event_type"] == "Microsoft.Storage.BlobCreated"
    assert seen["subject"] == "blobServices/default/containers/incoming/blobs/bank.csv"
    assert seen["event_time"].startswith("2026-11-30T10:00:00.501964")
    assert seen["data"]["eTag"] == "0x5"
    # a CloudEvents batch (array) is accepted too
    batch = [dict(doc, id=f"ce-{uuid.uuid4()}") for _ in range(2)]
    assert _post(host, batch, headers=headers).status_code == 200
    assert all(len(records.events(e["id"])) == 1 for e in batch)


def test_a_failing_invocation_answers_500_so_event_grid_retries(host: FunctionHost, records: Records) -> None:
    ok, bad = _event(f"ok-{uuid.uuid4()}"), _event(f"bad-{uuid.uuid4()}", fail=True)
    r = _post(host, [bad, ok])
    assert r.status_code == 500
    assert "asked to fail" not in r.text
    assert len(records.events(ok["id"])) == 1 and len(records.events(bad["id"])) == 1


def test_not_json_is_400(host: FunctionHost) -> None:
    assert _post(host, b"not json").status_code == 400


def test_cloudevents_abuse_protection_options(host: FunctionHost) -> None:
    r = requests.options(
        host.eventgrid_webhook_url("on_event"), headers={"WebHook-Request-Origin": "eventgrid.azure.net"}, timeout=5
    )
    assert r.status_code == 200
    assert r.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert r.headers["WebHook-Allowed-Rate"] == "*"
    no_key = f"{host.url}/runtime/webhooks/eventgrid?functionName=on_event"
    assert requests.options(no_key, headers={"WebHook-Request-Origin": "x"}, timeout=5).status_code == 401


def test_admin_run_of_an_event_grid_function(host: FunctionHost, records: Records) -> None:
    event = _event(f"manual-{uuid.uuid4()}")
    r = requests.post(
        f"{host.url}/admin/functions/on_event",
        headers={"x-functions-key": host.keys.master_key},
        json={"input": json.dumps(event)},
        timeout=5,
    )
    assert r.status_code == 202
    records.wait_until(lambda: records.events(event["id"]), timeout=5)


def test_delivery_kind_follows_the_aeg_event_type_header() -> None:
    assert delivery_kind("Notification") == "Notification" == delivery_kind(" notification ")
    assert delivery_kind("SubscriptionValidation") == "SubscriptionValidation"
    assert delivery_kind("SubscriptionDeletion") == "SubscriptionDeletion" == delivery_kind("Unsubscribe")
    for header in (None, "", "Notify", "x" * 500):
        with pytest.raises(EventBodyError) as info:
            delivery_kind(header)
        assert "aeg-event-type" in str(info.value) and len(str(info.value)) < 200


def test_a_delivery_without_aeg_event_type_is_400_and_runs_nothing(host: FunctionHost, records: Records) -> None:
    for headers in ({"Content-Type": "application/json"}, {"Content-Type": "application/json", "aeg-event-type": "Other"}):
        event = _event(f"noheader-{uuid.uuid4()}")
        r = _post(host, [event], headers=headers)
        assert r.status_code == 400 and "aeg-event-type" in r.text, (headers, r.status_code)
        assert records.events(event["id"]) == []
    blob = {**_event(f"noheader-{uuid.uuid4()}"), "eventType": "Microsoft.Storage.BlobCreated"}
    r = requests.post(host.blob_webhook_url("on_blob"), json=[blob], timeout=10)
    assert r.status_code == 400
