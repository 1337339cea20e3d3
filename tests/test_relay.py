"""The relay: against real HTTP upstreams on loopback that answer like Azure ML deployments, then
end to end through the local function host (Azurite, devhost, the real model server)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from shared.config import Settings
from shared.contract import FEATURE_NAMES, TUTORIAL_CUSTOMERS
from shared.relay import HTTP_ANSWER_LIMIT_S, Relay, effective_timeout, unwrap
from shared.workspace.base import Deployment
from shared.workspace.local.servers import free_port

if TYPE_CHECKING:  # the fixture lives in conftest.py, which tests do not import at run time
    from conftest import TrainedModel

KEY = "upstream-key-0123456789"
ROTATED = "upstream-key-rotated-9876543210"
BODY = json.dumps({"data": list(TUTORIAL_CUSTOMERS)}).encode()
CASES = Path(__file__).resolve().parents[2] / "shared" / "cases" / "payloads"


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "ok"
    accepted = KEY
    seen: list[dict[str, Any]] = []  # noqa: RUF012 - shared by the test server

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        n = int(self.headers.get("content-length", 0))
        body = self.rfile.read(n)
        cls = type(self)
        cls.seen.append(
            {"auth": self.headers.get("authorization"), "body": body, "id": self.headers.get("x-ms-client-request-id")}
        )
        if self.headers.get("authorization") != f"Bearer {cls.accepted}":
            return self._send(401, {"message": "invalid key"})
        mode = cls.mode
        if mode == "double":
            return self._send(200, json.dumps({"result": ["no", "yes"]}))  # a JSON string holding JSON
        if mode == "error":
            return self._send(500, {"error": "model exploded"})
        if mode == "refused":
            return self._send(400, {"error": {"code": "bad_request", "message": "the model says no", "field": "age"}})
        if mode == "text":
            return self._send(200, None, raw=b"<html>proxy page</html>")
        if mode == "slow":
            time.sleep(2)
        self._send(200, {"result": ["no", "yes"]}, extra={"x-bankml-unseen-categories": "job"})

    def _send(self, status: int, payload: Any, raw: bytes | None = None, extra: dict[str, str] | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def upstream() -> Iterator[ThreadingHTTPServer]:
    Upstream.mode = "ok"
    Upstream.accepted = KEY
    Upstream.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


class OneDeployment:
    """The workspace port as the relay sees it: which deployment is live (no refresh keyword)."""

    def __init__(self, dep: Deployment | None) -> None:
        self.dep = dep
        self.calls = 0

    def live_deployment(self) -> Deployment | None:
        self.calls += 1
        return self.dep


class RotatingWorkspace:
    """An adapter that caches the deployment's key until asked to refresh (as the Azure one does)."""

    def __init__(self, cached: Deployment, fresh: Deployment) -> None:
        self.cached, self.fresh = cached, fresh
        self.calls: list[bool] = []

    def live_deployment(self, *, refresh: bool = False) -> Deployment | None:
        self.calls.append(refresh)
        return self.fresh if refresh else self.cached


def deployment(port: int, key: str = KEY, name: str = "bankml-v1") -> Deployment:
    return Deployment(
        name=name, run_id="AutoML_x", model_version=int(name.rsplit("v", 1)[1]), status="live",
        scoring_uri=f"http://127.0.0.1:{port}/score", created_at="", key=key,
    )


def relay_for(dep: Deployment | None, tmp_path: Path, **env: str) -> Relay:
    settings = Settings.from_env({"BANKML_HOME": str(tmp_path), **env})
    return Relay(settings, OneDeployment(dep))


def test_forwards_with_the_bearer_key_and_answers_once_encoded(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    answer = relay_for(deployment(upstream.server_port), tmp_path).score(
        BODY, "application/json", client_request_id="client-42"
    )
    assert answer.status == 200
    assert answer.raw == b'{"result": ["no", "yes"]}'  # the upstream's JSON document, passed through
    assert answer.body == {"result": ["no", "yes"]}
    assert answer.headers["x-bankml-model-version"] == "1" and answer.headers["x-bankml-deployment"] == "bankml-v1"
    assert answer.headers["x-ms-client-request-id"] == "client-42"
    assert answer.headers["x-bankml-unseen-categories"] == "job"  # passed on from the deployment
    seen = Upstream.seen[0]
    assert seen["auth"] == f"Bearer {KEY}" and seen["body"] == BODY
    assert seen["id"] == answer.headers["x-ms-request-id"]  # the upstream can correlate with us


def test_double_encoded_upstream_answers_are_unwrapped(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    Upstream.mode = "double"
    answer = relay_for(deployment(upstream.server_port), tmp_path).score(BODY, "application/json")
    assert answer.status == 200 and answer.raw == b'{"result":["no","yes"]}'
    assert unwrap(json.dumps(json.dumps({"a": 1}))) == {"a": 1}
    assert unwrap("not json") == "not json"


def test_bad_input_is_refused_before_the_upstream(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    row = dict(TUTORIAL_CUSTOMERS[0])
    row["campaign"] = "three"
    answer = relay_for(deployment(upstream.server_port), tmp_path).score(json.dumps({"data": [row]}).encode(), "application/json")
    assert answer.status == 400
    err = answer.body["error"]
    assert (err["field"], err["row"], err["value"]) == ("campaign", 0, "three")
    assert answer.headers["x-ms-request-id"]
    assert Upstream.seen == []


def test_a_large_body_is_validated_while_the_upstream_works_on_it(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    from shared.relay import OVERLAP_BYTES

    rows = [dict(TUTORIAL_CUSTOMERS[i % 2]) for i in range(1000)]
    body = json.dumps({"data": rows}).encode()
    assert len(body) >= OVERLAP_BYTES
    relay = relay_for(deployment(upstream.server_port), tmp_path)
    answer = relay.score(body, "application/json")
    assert answer.status == 200 and answer.body == {"result": ["no", "yes"]} and len(Upstream.seen) == 1
    rows[999]["age"] = "old"
    answer = relay.score(json.dumps({"data": rows}).encode(), "application/json")
    err = answer.body["error"]
    assert answer.status == 400 and (err["field"], err["row"], err["value"]) == ("age", 999, "old")


def test_a_body_declared_too_large_is_refused_from_its_content_length(tmp_path: Path) -> None:
    relay = relay_for(None, tmp_path, BANKML_MAX_BODY_MB="1")
    assert relay.check_length(str(1024 * 1024)) is None and relay.check_length(None) is None
    answer = relay.check_length(str(1024 * 1024 + 1))
    assert answer is not None and answer.status == 413
    err = answer.body["error"]
    assert (err["code"], err["field"], err["value"]) == ("payload_too_large", "body", 1024 * 1024 + 1)


def test_no_live_deployment_is_503_with_retry_after(tmp_path: Path) -> None:
    answer = relay_for(None, tmp_path).score(BODY, "application/json")
    assert answer.status == 503 and answer.headers["Retry-After"] == "5"
    assert answer.body["error"]["code"] == "no_live_deployment"


def test_upstream_down_is_503(tmp_path: Path) -> None:
    answer = relay_for(deployment(free_port()), tmp_path).score(BODY, "application/json")
    assert answer.status == 503 and answer.headers["Retry-After"]
    assert answer.body["error"]["code"] == "upstream_unavailable"


def test_upstream_slow_is_504(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    Upstream.mode = "slow"
    answer = relay_for(deployment(upstream.server_port), tmp_path, BANKML_RELAY_TIMEOUT_S="0.3").score(BODY, "application/json")
    assert answer.status == 504 and answer.body["error"]["code"] == "upstream_timeout"


def test_the_timeout_stays_below_the_http_answer_limit(tmp_path: Path) -> None:
    assert relay_for(None, tmp_path).timeout_s == 30.0  # the default setting
    assert effective_timeout(1000.0) < HTTP_ANSWER_LIMIT_S
    assert relay_for(None, tmp_path, BANKML_RELAY_TIMEOUT_S="1000").timeout_s == effective_timeout(1000.0)


def test_upstream_error_is_502_with_its_message(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    Upstream.mode = "error"
    answer = relay_for(deployment(upstream.server_port), tmp_path).score(BODY, "application/json")
    assert answer.status == 502
    err = answer.body["error"]
    assert err["upstream"] == "model exploded" and "model exploded" in err["message"]


def test_an_upstream_answer_that_is_not_json_is_502(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    Upstream.mode = "text"
    answer = relay_for(deployment(upstream.server_port), tmp_path).score(BODY, "application/json")
    assert answer.status == 502 and "proxy page" in answer.body["error"]["upstream"]


def test_an_upstream_refusal_keeps_its_status_and_detail(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    Upstream.mode = "refused"
    answer = relay_for(deployment(upstream.server_port), tmp_path).score(BODY, "application/json")
    assert answer.status == 400
    err = answer.body["error"]
    assert err["code"] == "upstream_refused" and err["upstream"]["field"] == "age"


def test_after_an_upstream_401_the_workspace_is_asked_to_refresh_once(
    upstream: ThreadingHTTPServer, tmp_path: Path
) -> None:
    Upstream.accepted = ROTATED  # the key was rotated; the adapter still has the old one cached
    ws = RotatingWorkspace(deployment(upstream.server_port, key=KEY), deployment(upstream.server_port, key=ROTATED))
    relay = Relay(Settings.from_env({"BANKML_HOME": str(tmp_path)}), ws)
    answer = relay.score(BODY, "application/json")
    assert answer.status == 200 and answer.body == {"result": ["no", "yes"]}
    assert ws.calls == [False, True]
    assert [s["auth"] for s in Upstream.seen] == [f"Bearer {KEY}", f"Bearer {ROTATED}"]


def test_a_key_still_refused_after_the_refresh_is_a_502_not_a_client_401(
    upstream: ThreadingHTTPServer, tmp_path: Path
) -> None:
    ws = OneDeployment(deployment(upstream.server_port, key="stale"))  # no refresh keyword: looked up again
    relay = Relay(Settings.from_env({"BANKML_HOME": str(tmp_path)}), ws)
    answer = relay.score(BODY, "application/json")
    assert answer.status == 502
    assert "stale" not in answer.raw.decode()
    assert ws.calls == 2 and len(Upstream.seen) == 2  # one lookup and one retry, not a loop


def test_a_replaced_deployment_is_found_again(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    ws = OneDeployment(deployment(free_port(), name="bankml-v1"))  # the old one, already stopped
    relay = Relay(Settings.from_env({"BANKML_HOME": str(tmp_path)}), ws)
    relay.live()  # cached
    ws.dep = replace(deployment(upstream.server_port, name="bankml-v2"))
    answer = relay.score(BODY, "application/json")
    assert answer.status == 200 and answer.headers["x-bankml-deployment"] == "bankml-v2"


# --- end to end: client -> function host (devhost) -> relay -> model server ----------------------


@dataclass
class Stack:
    url: str
    key: str
    stack: Any
    live: Deployment

    def score(self, body: Any, *, key: str | None = "default", content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> requests.Response:
        sent = {"Content-Type": content_type, **(headers or {})}
        if key is not None:
            sent["x-functions-key"] = self.key if key == "default" else key
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(f"{self.url}/api/score", data=data, headers=sent, timeout=30)


MAX_ROWS = 50
MAX_BODY_MB = "0.05"  # 52,428 bytes


@pytest.fixture(scope="module")
def stack(trained_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from benchmarks.scoring import deploy, stop_model_servers
    from shared.workspace.local.stack import PROJECT_ROOT, LocalStack

    if not (PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob").exists():
        pytest.skip("Azurite is not installed (npm ci)")
    home = tmp_path_factory.mktemp("relay-stack") / "home"
    local = LocalStack(
        home, port=free_port(), azurite_port=free_port(),
        environ={"BANKML_MAX_ROWS": str(MAX_ROWS), "BANKML_MAX_BODY_MB": MAX_BODY_MB},
    )
    try:
        deploy(home, trained_model.model_dir)  # registered as a completed run, deployed like the loop does
        local.start()
        assert local.host is not None and local.workspace is not None
        live = local.workspace.live_deployment()
        assert live is not None
        yield Stack(local.url, local.host.keys.function_key, local, live)
    finally:
        local.stop()
        stop_model_servers(home)  # also when the stack did not start


def customers(n: int = 2) -> list[dict[str, Any]]:
    return [dict(TUTORIAL_CUSTOMERS[i % 2]) for i in range(n)]


def direct(stack: Stack, body: Any) -> requests.Response:
    return requests.post(
        stack.live.scoring_uri, json=body, headers={"Authorization": f"Bearer {stack.live.key}"}, timeout=30
    )


def test_both_contracts_end_to_end(stack: Stack) -> None:
    legacy = stack.score({"data": customers()})
    assert legacy.status_code == 200 and legacy.headers["content-type"].startswith("application/json")
    assert set(legacy.json()) == {"result"} and set(legacy.json()["result"]) <= {"no", "yes"}
    assert legacy.content == direct(stack, {"data": customers()}).content  # what the deployment answered

    v2 = stack.score({"Inputs": {"data": customers()}, "GlobalParameters": {"method": "predict"}})
    assert v2.status_code == 200 and v2.json() == {"Results": legacy.json()["result"]}

    proba = stack.score({"Inputs": {"data": customers()}, "GlobalParameters": {"method": "predict_proba"}})
    pairs = proba.json()["Results"]
    assert len(pairs) == 2 and all(p_no + p_yes == pytest.approx(1.0) for p_no, p_yes in pairs)
    legacy_proba = stack.score({"data": customers(), "method": "predict_proba"})
    assert legacy_proba.json() == {"result": pairs}


def test_answers_name_the_request_and_the_model_version(stack: Stack) -> None:
    r = stack.score({"data": customers(1)}, headers={"x-ms-client-request-id": "client-7"})
    assert r.status_code == 200
    assert r.headers["x-bankml-model-version"] == str(stack.live.model_version)
    assert r.headers["x-bankml-deployment"] == stack.live.name
    assert r.headers["x-ms-client-request-id"] == "client-7"
    again = stack.score({"data": customers(1)})
    assert len({r.headers["x-ms-request-id"], again.headers["x-ms-request-id"]}) == 2


def test_the_function_key_is_required(stack: Stack) -> None:
    assert stack.score({"data": customers()}, key=None).status_code == 401
    assert stack.score({"data": customers()}, key="wrong-key").status_code == 401
    r = requests.post(f"{stack.url}/api/score", params={"code": stack.key}, json={"data": customers()}, timeout=30)
    assert r.status_code == 200


# What the relay answers for every shared payload case (a file without a row here fails the test).
PAYLOAD_CASES: dict[str, tuple[int, dict[str, Any]]] = {
    "bare_list.json": (400, {"field": "body", "message": '{"data": [...]}'}),
    "wrong_envelope_key.json": (400, {"field": "input_data", "message": '{"Inputs": {"data": [...]}'}),
    "missing_field.json": (400, {"field": "age", "row": 0}),
    "string_in_number.json": (400, {"field": "campaign", "row": 0, "value": "three"}),
    "not_json.txt": (400, {"field": "body", "message": "body is not JSON"}),
    "unseen_category.json": (200, {}),
    "v2_predict_proba.json": (200, {}),
}


def test_every_payload_case_has_an_expectation() -> None:
    if not CASES.is_dir():
        pytest.skip(f"shared cases not found at {CASES}")
    assert sorted(p.name for p in CASES.iterdir()) == sorted(PAYLOAD_CASES)


@pytest.mark.parametrize("name", sorted(PAYLOAD_CASES))
def test_payload_cases_through_the_relay(stack: Stack, name: str) -> None:
    path = CASES / name
    if not path.exists():
        pytest.skip(f"shared case {path} not found")
    status, expected = PAYLOAD_CASES[name]
    r = stack.score(path.read_bytes())
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json") and r.headers["x-ms-request-id"]
    if status != 200:
        err = r.json()["error"]
        assert err["code"] == "bad_request"
        for key, value in expected.items():
            assert value in err[key] if key == "message" else err[key] == value, (key, err)
        return
    doc = json.loads(path.read_bytes())
    rows = len(doc["Inputs"]["data"] if "Inputs" in doc else doc["data"])
    if name == "v2_predict_proba.json":
        pairs = r.json()["Results"]
        assert len(pairs) == rows and all(p_no + p_yes == pytest.approx(1.0) for p_no, p_yes in pairs)
    else:
        # The decision for unseen categories: a prediction, the category scored as missing, and
        # the answer says which column held one.
        assert len(r.json()["result"]) == rows and set(r.json()["result"]) <= {"no", "yes"}
        assert r.headers["x-bankml-unseen-categories"] == "job"


def test_a_gzip_body_through_the_function_host(stack: Stack) -> None:
    import gzip

    plain = json.dumps({"data": customers()}).encode()
    r = stack.score(gzip.compress(plain), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json() == stack.score(plain).json()
    bad = stack.score(b"\x1f\x8b not really", headers={"Content-Encoding": "gzip"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "Content-Encoding"


def test_not_json_with_a_wrong_content_type_is_415(stack: Stack) -> None:
    r = stack.score((CASES / "not_json.txt").read_bytes() if CASES.is_dir() else b"age=41", content_type="text/plain")
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def test_unseen_category_scores_like_a_missing_value(stack: Stack, trained_model: TrainedModel) -> None:
    from shared.workspace.local.training import load_model

    row = dict(TUTORIAL_CUSTOMERS[0], job="astronaut")
    r = stack.score({"Inputs": {"data": [row]}, "GlobalParameters": {"method": "predict_proba"}})
    assert r.status_code == 200 and r.headers["x-bankml-unseen-categories"] == "job"
    model = load_model(trained_model.model_dir)
    X = model.spec.encode_records([row])
    assert X[0][model.spec.columns.index("job")] != X[0][model.spec.columns.index("job")]  # NaN: missing
    assert r.json()["Results"][0][1] == pytest.approx(float(model.predict_matrix(X)[0]))


def test_too_many_rows_and_too_large_a_body_are_413(stack: Stack) -> None:
    r = stack.score({"data": customers(MAX_ROWS + 1)})
    err = r.json()["error"]
    assert r.status_code == 413 and (err["field"], err["value"]) == ("data", MAX_ROWS + 1)
    assert stack.score({"data": customers(MAX_ROWS)}).status_code == 200
    big = json.dumps({"data": customers(10)}).encode() + b" " * 60_000  # valid JSON, over 0.05 MiB
    r = stack.score(big)
    err = r.json()["error"]
    assert r.status_code == 413 and (err["field"], err["value"]) == ("body", len(big))


def test_a_declared_length_the_host_refuses_gets_the_relays_413_envelope(stack: Stack) -> None:
    """Content-Length: 99999999999 is refused by the function host before any function runs; the
    body reads like the relay's own 413 for a real body over its limit."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(stack.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("POST", "/api/score")
        for name, value in (("Content-Type", "application/json"), ("x-functions-key", stack.key),
                            ("Content-Length", "99999999999")):
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(b'{"data": []}')
        answer = conn.getresponse()
        status, raw = answer.status, answer.read()
    finally:
        conn.close()
    host = json.loads(raw, parse_constant=lambda token: pytest.fail(f"bare {token} in an error body"))["error"]
    relay = stack.score(json.dumps({"data": customers(10)}).encode() + b" " * 60_000).json()["error"]
    assert status == 413 and set(host) == set(relay) == {"code", "message", "field", "value", "expected"}
    assert (host["code"], host["field"], host["value"]) == (relay["code"], "body", 99999999999)
    assert host["message"].startswith("body is 99999999999 bytes, the limit is ") and host["expected"].startswith("at most ")


def test_empty_data_is_400(stack: Stack) -> None:
    r = stack.score({"Inputs": {"data": []}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "Inputs.data"


def test_liveness_swagger_and_docs(stack: Stack, trained_model: TrainedModel) -> None:
    from openapi_spec_validator import validate

    r = requests.get(f"{stack.url}/api/", timeout=10)
    assert r.status_code == 200 and r.text == "Healthy"
    assert requests.get(f"{stack.url}/api", timeout=10).text == "Healthy"

    doc = requests.get(f"{stack.url}/api/swagger.json", timeout=10).json()
    validate(doc)
    assert doc["basePath"] == "/api" and doc["schemes"] == ["http"]
    assert doc["info"]["version"] == str(stack.live.model_version)
    meta = json.loads((trained_model.model_dir / "model.json").read_text())
    props = doc["definitions"]["Row"]["properties"]
    assert list(props) == list(FEATURE_NAMES)
    assert props["job"]["x-categories"] == meta["features"]["categories"]["job"]
    assert doc["paths"]["/score"]["post"]["security"] == [{"functionKey": []}, {"functionCode": []}]
    # "Try it out": the documented example, sent the way Swagger UI sends it, is answered.
    example = doc["definitions"]["ServiceInput"]["example"]
    key = doc["securityDefinitions"]["functionKey"]["name"]
    url = f"{stack.url}{doc['basePath']}/score"
    r = requests.post(url, json=example, headers={key: stack.key}, timeout=30)
    assert r.status_code == 200 and len(r.json()["Results"]) == 2

    for page_url in (f"{stack.url}/api/docs", f"{stack.url}/api/docs/"):
        page = requests.get(page_url, timeout=10)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "https://" not in page.text and "http://" not in page.text  # nothing from a CDN
        assert '"/api/swagger.json"' in page.text
        assets = [a for a in ("/api/docs/swagger-ui.css", "/api/docs/swagger-ui-bundle.js") if a in page.text]
        assert len(assets) == 2
    for asset, kind in (("swagger-ui.css", "text/css"), ("swagger-ui-bundle.js", "javascript")):
        r = requests.get(f"{stack.url}/api/docs/{asset}", timeout=10)
        assert r.status_code == 200 and kind in r.headers["content-type"] and len(r.content) > 1000
    assert requests.get(f"{stack.url}/api/docs/secrets.txt", timeout=10).status_code == 404


def test_zz_upstream_down_is_503_with_retry_after(stack: Stack) -> None:
    """Last in the module: stops the model server."""
    from shared.workspace.local.servers import stop_pid

    stop_pid(stack.live.pid)
    r = stack.score({"data": customers()})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["error"]["code"] == "upstream_unavailable"


def test_upstream_warnings_are_throttled_with_a_count_of_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    """An outage under load must not write a line per failed request: a few per window, then a sum."""
    import logging

    from shared.relay import ThrottledLog

    logger = logging.getLogger("test.throttled")
    throttled = ThrottledLog(logger, limit=3, window_s=0.2)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        logged = [throttled.warn("request %d failed", i) for i in range(50)]
        assert logged == [True] * 3 + [False] * 47
        import time as _time

        _time.sleep(0.25)
        assert throttled.warn("request %d failed", 50)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == ["request 0 failed", "request 1 failed", "request 2 failed"]
    assert "... 47 more such warnings in the last 0.2 s were not logged" in lines
    assert lines[-1] == "request 50 failed"
