"""What the relay gets from the azure backend: the endpoint's scoring URI and key (cached, and
refreshed on demand after a 401), against a local server answering like a managed online endpoint
(Bearer required, double-encoded v1 answers, 401 once the key is rotated)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from shared.contract import TUTORIAL_CUSTOMERS
from shared.datagen import generate_frame
from shared.ingest import canonical_csv, parse_csv
from shared.openapi import build_swagger
from shared.relay import Relay, unwrap
from shared.workspace.azure.workspace import AzureWorkspace
from tests.azure_fakes import AzureMLServer, FakeMLClient, azure_env, make_workspace, shared_azurite

BODY = json.dumps({"data": [dict(c) for c in TUTORIAL_CUSTOMERS]}).encode()


@pytest.fixture()
def server() -> Iterator[AzureMLServer]:
    s = AzureMLServer().start()
    yield s
    s.stop()


@pytest.fixture()
def deployed(server: AzureMLServer) -> tuple[AzureWorkspace, FakeMLClient]:
    """A workspace whose endpoint serves one deployment (made by the adapter itself)."""
    ws, ml, _ = make_workspace(azure_env(shared_azurite().connection_string, server), server)
    d = ws.register_dataset(parse_csv(canonical_csv(generate_frame(200, 9)), max_bytes=10**8), source_blob="incoming/a.csv", etag="1")
    server.pipeline_ids.append("AutoML_live")
    ws.submit_run(d.version, trigger="ingest")
    ml.finish_pipeline("AutoML_live", auc=0.91)
    assert ws.deploy_run("AutoML_live").deployed
    return ws, ml


def decoded(body: Any) -> Any:
    return json.loads(body) if isinstance(body, bytes | str) else body


def score(dep: Any) -> requests.Response:
    return requests.post(
        dep.scoring_uri, data=BODY, headers={"Authorization": f"Bearer {dep.key}", "Content-Type": "application/json"}, timeout=5
    )


def test_scoring_uri_and_key_are_cached_and_refreshed_after_a_key_rotation(
    deployed: tuple[AzureWorkspace, FakeMLClient], server: AzureMLServer
) -> None:
    ws, ml = deployed
    dep = ws.live_deployment()
    assert dep is not None
    assert (dep.name, dep.run_id, dep.model_version, dep.scoring_uri) == ("bankml-v1", "AutoML_live", 1, server.scoring_uri)
    assert dep.key == server.key and dep.key not in repr(dep)
    r = score(dep)
    assert r.status_code == 200 and isinstance(r.json(), str)  # double-encoded, like scoring_file_v_1_0_0.py
    assert unwrap(r.json()) == {"result": ["yes", "no"]}
    assert requests.post(dep.scoring_uri, data=BODY, timeout=5).status_code == 401  # Bearer required

    keys_read = ml.online_endpoints.get_keys_calls
    for _ in range(3):
        assert ws.live_deployment() is dep  # cached: no ARM call per scoring request
    assert ml.online_endpoints.get_keys_calls == keys_read

    ml.online_endpoints.begin_regenerate_keys("bankml-score-test", key_type="primary").result()
    stale = ws.live_deployment()
    assert stale is not None and stale.key == dep.key and score(stale).status_code == 401
    fresh = ws.live_deployment(refresh=True)  # what the relay asks for after that 401
    assert fresh is not None and fresh.key == server.key != dep.key
    assert ml.online_endpoints.get_keys_calls == keys_read + 1
    assert score(fresh).status_code == 200
    assert ws.live_deployment() is fresh


def test_the_relay_unwraps_the_endpoints_double_encoded_answer(
    deployed: tuple[AzureWorkspace, FakeMLClient], server: AzureMLServer
) -> None:
    ws, ml = deployed
    relay = Relay(ws.settings, ws)
    answer = relay.score(BODY, "application/json")
    assert answer.status == 200, answer.body
    assert decoded(answer.body) == {"result": ["yes", "no"]}
    assert answer.headers["x-bankml-deployment"] == "bankml-v1" and answer.headers["x-bankml-model-version"] == "1"
    # The key is rotated behind the relay's back: one 401, a refreshed lookup, the answer.
    keys_read, seen = ml.online_endpoints.get_keys_calls, len(server.calls("/score"))
    ml.online_endpoints.begin_regenerate_keys("bankml-score-test").result()
    answer = relay.score(BODY, "application/json")
    assert answer.status == 200, answer.body
    assert decoded(answer.body) == {"result": ["yes", "no"]}
    assert ml.online_endpoints.get_keys_calls == keys_read + 1
    after = [r.headers.get("authorization") == f"Bearer {server.key}" for r in server.calls("/score")[seen:]]
    assert after == [False, True]  # one refused request, then the refreshed key
    # No feature categories in the deployment: the Swagger document is the relay's own.
    live = ws.live_deployment()
    assert live is not None
    doc = build_swagger(live.schema, title="bankml scoring relay", base_path="/api")
    assert "/score" in doc["paths"] and "0.910" in doc["info"]["description"]


def test_no_live_deployment_without_an_endpoint_or_traffic(server: AzureMLServer) -> None:
    ws, ml, _ = make_workspace(azure_env(shared_azurite().connection_string, server), server)
    assert ws.live_deployment() is None
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="bankml-score-test", auth_mode="key"))
    assert ws.live_deployment(refresh=True) is None
