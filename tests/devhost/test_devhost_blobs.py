"""Blob triggers against a real Azurite: scanning, receipts across restarts, poison, the Event Grid blob webhook."""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import requests
from azure.storage.blob import BlobServiceClient, ContainerClient

from devhost.azurite import Azurite
from devhost.host import FunctionHost
from devhost.store import normalize_etag

if TYPE_CHECKING:
    from conftest import Records

POLL = 0.25


@pytest.fixture(scope="module")
def service(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def _container(service: BlobServiceClient, name: str) -> ContainerClient:
    client = service.get_container_client(name)
    if not client.exists():
        client.create_container()
    return client


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_upload_fires_exactly_once(host: FunctionHost, records: Records, service: BlobServiceClient) -> None:
    name = f"once-{uuid.uuid4().hex}.csv"
    data = b"age,y\n30,no\n"
    blob = _container(service, "incoming").get_blob_client(name)
    blob.upload_blob(data, metadata={"origin": "test"})
    etag = blob.get_blob_properties().etag
    (seen,) = records.wait_until(lambda: records.blobs(f"incoming/{name}"))
    time.sleep(5 * POLL)
    assert len(records.blobs(f"incoming/{name}")) == 1
    assert seen["length"] == len(data)
    assert seen["sha"] == _sha(data)
    assert seen["metadata"] == {"origin": "test"}
    assert normalize_etag(seen["etag"]) == normalize_etag(etag)
    assert seen["uri"].endswith(f"/incoming/{name}")
    assert host.store.has_receipt("on_blob", f"incoming/{name}", etag)


def test_awkward_names_resolve_to_the_right_blob(
    host: FunctionHost, records: Records, service: BlobServiceClient
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [
        f"{tag} with space.csv",
        f"{tag}-données-ü €.csv",
        f"{tag}-100%.csv",
        f"{tag}-a%20b.csv",  # a literal %20, not a space
        f"{tag}/sub dir/x+y.csv",
    ]
    container = _container(service, "incoming")
    for i, name in enumerate(names):
        container.upload_blob(name, f"row,{i}\n".encode())
    for i, name in enumerate(names):
        (seen,) = records.wait_until(lambda n=name: records.blobs(f"incoming/{n}"))
        assert seen["sha"] == _sha(f"row,{i}\n".encode()), name
    time.sleep(3 * POLL)
    assert all(len(records.blobs(f"incoming/{n}")) == 1 for n in names)


def test_empty_blob_is_invoked_and_a_new_version_fires_again(
    host: FunctionHost, records: Records, service: BlobServiceClient
) -> None:
    name = f"grow-{uuid.uuid4().hex}.csv"
    blob = _container(service, "incoming").get_blob_client(name)
    blob.upload_blob(b"")
    (first,) = records.wait_until(lambda: records.blobs(f"incoming/{name}"))
    assert first["length"] == 0  # the function decides what an empty write means
    blob.upload_blob(b"a,b\n1,2\n", overwrite=True)
    seen = records.wait_until(lambda: (r := records.blobs(f"incoming/{name}")) and len(r) == 2 and r)
    assert seen[1]["length"] == 8
    assert seen[0]["etag"] != seen[1]["etag"]
    time.sleep(3 * POLL)
    assert len(records.blobs(f"incoming/{name}")) == 2


def test_failures_retry_five_times_then_poison(
    host: FunctionHost, records: Records, service: BlobServiceClient
) -> None:
    name = f"poison-{uuid.uuid4().hex}.csv"
    blob = _container(service, "incoming").get_blob_client(name)
    blob.upload_blob(b"x")
    etag = blob.get_blob_properties().etag
    records.wait_until(lambda: len(records.blobs(f"incoming/{name}")) >= 5, timeout=15)
    time.sleep(4 * POLL)
    assert len(records.blobs(f"incoming/{name}")) == 5
    attempts, poisoned, error = host.store.failure("on_blob", f"incoming/{name}", etag) or (0, False, "")
    assert (attempts, poisoned) == (5, True)
    assert "cannot process this blob" in error
    assert not host.store.has_receipt("on_blob", f"incoming/{name}", etag)


def test_restart_does_not_fire_again(
    make_host: Callable[..., FunctionHost], records: Records, service: BlobServiceClient, tmp_path: Any
) -> None:
    container = f"restart-{uuid.uuid4().hex[:12]}"
    home = tmp_path / "home"
    first = make_host(container=container, home=home).start()
    _container(service, container).upload_blob("bank.csv", b"a\n1\n")
    records.wait_until(lambda: records.blobs(f"{container}/bank.csv"))
    first.stop()

    second = make_host(container=container, home=home).start()
    try:
        time.sleep(6 * POLL)
        assert len(records.blobs(f"{container}/bank.csv")) == 1
        _container(service, container).upload_blob("later.csv", b"b\n2\n")  # the new host does scan
        records.wait_until(lambda: records.blobs(f"{container}/later.csv"))
        assert len(records.blobs(f"{container}/bank.csv")) == 1
    finally:
        second.stop()


class TestEventGridBlobWebhook:
    """``/runtime/webhooks/blobs`` on a host whose scanner ran once at start (empty container), then sleeps."""

    @pytest.fixture(scope="class")
    def eg(self, make_host: Callable[..., FunctionHost]) -> FunctionHost:
        container = f"egblob-{uuid.uuid4().hex[:12]}"
        return make_host(container=container, poll_interval=3600).start()

    @staticmethod
    def _container_name(eg: FunctionHost) -> str:
        assert eg.blobs is not None
        return eg.blobs.targets["on_blob"].container

    @staticmethod
    def _post(eg: FunctionHost, body: Any, **headers: str) -> requests.Response:
        hdrs = {"aeg-event-type": "Notification", "Content-Type": "application/json", **headers}
        return requests.post(eg.blob_webhook_url("on_blob"), data=json.dumps(body), headers=hdrs, timeout=10)

    def test_three_deliveries_one_invocation(
        self,
        eg: FunctionHost,
        records: Records,
        service: BlobServiceClient,
        case: Callable[[str], Any],
    ) -> None:
        events = copy.deepcopy(case("blobcreated_three_deliveries.json"))  # skips before any upload
        container = self._container_name(eg)
        name = "bank data 100%.csv"
        data = b"age,y\n41,yes\n"
        blob = _container(service, container).get_blob_client(name)
        blob.upload_blob(data)
        etag = normalize_etag(blob.get_blob_properties().etag)
        subjects = [name, quote(name), name]  # raw and percent-encoded names both resolve
        etags = ["0x1", f'"{etag}"', etag]  # a stale first write, then the real version quoted and bare
        for event, subject, tag in zip(events, subjects, etags, strict=True):
            event["subject"] = f"/blobServices/default/containers/{container}/blobs/{subject}"
            event["data"]["eTag"] = tag
            event["data"]["url"] = f"https://acct.blob.core.windows.net/{container}/{quote(name)}"
        with ThreadPoolExecutor(3) as pool:  # at-least-once deliveries arriving together
            responses = list(pool.map(lambda e: self._post(eg, [e]), events))
        assert [r.status_code for r in responses] == [200, 200, 200]
        results = sorted(r.json()["results"][0]["result"] for r in responses)
        assert results == ["duplicate", "processed", "stale"]
        (seen,) = records.blobs(f"{container}/{name}")
        assert seen["sha"] == _sha(data)
        assert eg.blobs is not None and eg.blobs.scan_once() == []  # the scanner shares the receipts

    def test_cloudevent_without_leading_slash(
        self, eg: FunctionHost, records: Records, service: BlobServiceClient, case: Callable[[str], Any]
    ) -> None:
        event = dict(case("blobcreated_cloudevent.json"))  # skips before any upload
        container = self._container_name(eg)
        name = "ce ü.csv"
        blob = _container(service, container).get_blob_client(name)
        blob.upload_blob(b"ce\n")
        event["subject"] = f"blobServices/default/containers/{container}/blobs/{name}"
        event["data"] = dict(event["data"], eTag=blob.get_blob_properties().etag)
        r = self._post(eg, event, **{"Content-Type": "application/cloudevents+json; charset=utf-8"})
        assert r.status_code == 200
        assert r.json()["results"][0]["result"] == "processed"
        assert len(records.blobs(f"{container}/{name}")) == 1

    def test_scanner_first_then_event_is_a_duplicate(
        self, eg: FunctionHost, records: Records, service: BlobServiceClient, case: Callable[[str], Any]
    ) -> None:
        event = copy.deepcopy(case("blobcreated_three_deliveries.json")[1])  # skips before any upload
        container = self._container_name(eg)
        blob = _container(service, container).get_blob_client("scanned.csv")
        blob.upload_blob(b"s\n")
        assert eg.blobs is not None
        futures = eg.blobs.scan_once()
        assert [f.result(10).value for f in futures] == ["processed"]
        event["subject"] = f"/blobServices/default/containers/{container}/blobs/scanned.csv"
        event["data"]["eTag"] = blob.get_blob_properties().etag
        assert self._post(eg, [event]).json()["results"][0]["result"] == "duplicate"
        assert len(records.blobs(f"{container}/scanned.csv")) == 1

    def test_other_container_missing_blob_and_handshake(self, eg: FunctionHost, case: Callable[[str], Any]) -> None:
        container = self._container_name(eg)
        event = copy.deepcopy(case("blobcreated_three_deliveries.json")[1])
        event["subject"] = "/blobServices/default/containers/someoneelse/blobs/x.csv"
        assert self._post(eg, [event]).json()["results"][0]["result"] == "ignored"
        event["subject"] = f"/blobServices/default/containers/{container}/blobs/never-uploaded.csv"
        assert self._post(eg, [event]).json()["results"][0]["result"] == "missing"
        validation = case("subscription_validation.json")
        r = self._post(eg, validation, **{"aeg-event-type": "SubscriptionValidation"})
        assert r.json() == {"validationResponse": validation[0]["data"]["validationCode"]}

    def test_needs_the_blobs_extension_key(self, eg: FunctionHost) -> None:
        base = f"{eg.url}/runtime/webhooks/blobs"
        for code in ("", "wrong", eg.keys.system_key("eventgrid_extension"), eg.keys.function_key):
            params = {"functionName": "Host.Functions.on_blob", "code": code}
            assert requests.post(base, params=params, data="[]", timeout=5).status_code == 401
        params = {"functionName": "Host.Functions.nothere", "code": eg.keys.system_key("blobs_extension")}
        assert requests.post(base, params=params, data="[]", timeout=5).status_code == 404
        assert "functionName=Host.Functions.on_blob" in eg.blob_webhook_url("on_blob")
