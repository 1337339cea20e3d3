"""The relay against real HTTP upstreams on loopback that answer like Azure ML deployments."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.contract import TUTORIAL_CUSTOMERS
from shared.relay import Relay, unwrap
from shared.workspace.base import Deployment

KEY = "upstream-key-0123456789"
BODY = json.dumps({"data": list(TUTORIAL_CUSTOMERS)}).encode()


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "ok"
    seen: list[dict[str, Any]] = []  # noqa: RUF012 - shared by the test server

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        n = int(self.headers.get("content-length", 0))
        body = self.rfile.read(n)
        type(self).seen.append({"auth": self.headers.get("authorization"), "body": body})
        mode = type(self).mode
        if self.headers.get("authorization") != f"Bearer {KEY}":
            return self._send(401, {"message": "invalid key"})
        if mode == "double":
            return self._send(200, json.dumps({"result": ["no", "yes"]}))  # a JSON string holding JSON
        if mode == "error":
            return self._send(500, {"error": "model exploded"})
        if mode == "slow":
            time.sleep(2)
        self._send(200, {"result": ["no", "yes"]})

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def upstream() -> Iterator[ThreadingHTTPServer]:
    Upstream.mode = "ok"
    Upstream.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


class OneDeployment:
    """The workspace port as the relay sees it: which deployment is live."""

    def __init__(self, dep: Deployment | None) -> None:
        self.dep = dep

    def live_deployment(self) -> Deployment | None:
        return self.dep


def deployment(port: int, key: str = KEY, name: str = "bankml-v1") -> Deployment:
    return Deployment(
        name=name, run_id="AutoML_x", model_version=int(name.rsplit("v", 1)[1]), status="live",
        scoring_uri=f"http://127.0.0.1:{port}/score", created_at="", key=key,
    )


def relay_for(dep: Deployment | None, tmp_path: Path, **env: str) -> Relay:
    settings = Settings.from_env({"BANKML_HOME": str(tmp_path), **env})
    return Relay(settings, OneDeployment(dep))


def test_forwards_with_the_bearer_key_and_answers_once_encoded(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    answer = relay_for(deployment(upstream.server_port), tmp_path).score(BODY, "application/json")
    assert answer.status == 200
    assert answer.body == {"result": ["no", "yes"]}
    assert answer.headers["x-bankml-model-version"] == "1"
    assert answer.headers["x-ms-request-id"]
    assert Upstream.seen[0]["auth"] == f"Bearer {KEY}"
    assert Upstream.seen[0]["body"] == BODY


def test_double_encoded_upstream_answers_are_unwrapped(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    Upstream.mode = "double"
    answer = relay_for(deployment(upstream.server_port), tmp_path).score(BODY, "application/json")
    assert answer.status == 200 and answer.body == {"result": ["no", "yes"]}
    assert unwrap(json.dumps(json.dumps({"a": 1}))) == {"a": 1}
    assert unwrap("not json") == "not json"


def test_bad_input_is_refused_before_the_upstream(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    row = dict(TUTORIAL_CUSTOMERS[0])
    row["campaign"] = "three"
    answer = relay_for(deployment(upstream.server_port), tmp_path).score(json.dumps({"data": [row]}).encode(), "application/json")
    assert answer.status == 400
    assert "campaign" in json.dumps(answer.body) and "three" in json.dumps(answer.body)
    assert Upstream.seen == []


def test_no_live_deployment_is_503_with_retry_after(tmp_path: Path) -> None:
    answer = relay_for(None, tmp_path).score(BODY, "application/json")
    assert answer.status == 503 and answer.headers["Retry-After"]


def test_upstream_down_is_503(tmp_path: Path) -> None:
    from shared.workspace.local.servers import free_port

    answer = relay_for(deployment(free_port()), tmp_path).score(BODY, "application/json")
    assert answer.status == 503 and answer.headers["Retry-After"]
    assert answer.body["error"]["code"] == "upstream_unavailable"


def test_upstream_slow_is_504(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    Upstream.mode = "slow"
    answer = relay_for(deployment(upstream.server_port), tmp_path, BANKML_RELAY_TIMEOUT_S="0.3").score(BODY, "application/json")
    assert answer.status == 504


def test_upstream_error_is_502_with_its_message(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    Upstream.mode = "error"
    answer = relay_for(deployment(upstream.server_port), tmp_path).score(BODY, "application/json")
    assert answer.status == 502 and "model exploded" in json.dumps(answer.body)


def test_a_rotated_upstream_key_is_a_502_not_a_client_401(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    answer = relay_for(deployment(upstream.server_port, key="stale"), tmp_path).score(BODY, "application/json")
    assert answer.status == 502
    assert "stale" not in json.dumps(answer.body)


def test_a_replaced_deployment_is_found_again(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    from shared.workspace.local.servers import free_port

    ws = OneDeployment(deployment(free_port(), name="bankml-v1"))  # the old one, already stopped
    relay = Relay(Settings.from_env({"BANKML_HOME": str(tmp_path)}), ws)
    relay.live()  # cached
    ws.dep = replace(deployment(upstream.server_port, name="bankml-v2"))
    answer = relay.score(BODY, "application/json")
    assert answer.status == 200 and answer.headers["x-bankml-deployment"] == "bankml-v2"
