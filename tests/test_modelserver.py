"""The real model server as a subprocess on a free port, serving the session's trained model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import requests

from shared.contract import BY_NAME, FEATURE_NAMES, TUTORIAL_CUSTOMERS

if TYPE_CHECKING:  # the fixture lives in conftest.py, which tests do not import at run time
    from conftest import TrainedModel

KEY = "test-key-" + uuid.uuid4().hex
ROOT = Path(__file__).resolve().parents[1]
CUSTOMERS = [dict(c) for c in TUTORIAL_CUSTOMERS]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    telemetry: Path
    flag: Path

    def score(self, doc: Any, key: str | None = KEY, headers: dict[str, str] | None = None) -> requests.Response:
        sent = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return requests.post(f"{self.url}/score", json=doc, headers={**sent, **(headers or {})}, timeout=10)

    def telemetry_lines(self) -> list[dict[str, Any]]:
        if not self.telemetry.exists():
            return []
        return [json.loads(line) for line in self.telemetry.read_text().splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(model_dir: Path, tmp: Path, *, name: str = "dep-test", version: int = 3) -> Server:
    port = _free_port()
    log, telemetry, flag = tmp / f"{name}.log", tmp / f"{name}-telemetry.jsonl", tmp / f"{name}-insights.flag"
    env = {**os.environ, "BANKML_MODEL_KEY": KEY}  # the key travels in the environment only
    cmd = [
        sys.executable,
        "-m",
        "shared.modelserver",
        "--model-dir",
        str(model_dir),
        "--port",
        str(port),
        "--name",
        name,
        "--version",
        str(version),
        "--telemetry-file",
        str(telemetry),
        "--insights-flag",
        str(flag),
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    server = Server(proc=proc, url=f"http://127.0.0.1:{port}", log=log, telemetry=telemetry, flag=flag)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"model server exited with {server.proc.returncode}: {log.read_text()}")
        try:
            if requests.get(server.url + "/", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    _stop(server)
    pytest.fail(f"model server not live within 30 s: {log.read_text()}")


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGTERM)  # uvicorn shuts down gracefully (flushes telemetry)
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def server(trained_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(trained_model.model_dir, tmp_path_factory.mktemp("server"))
    try:
        yield srv
    finally:
        _stop(srv)


def test_liveness_needs_no_key(server: Server) -> None:
    r = requests.get(server.url + "/", timeout=5)
    assert r.status_code == 200 and r.text == "Healthy"
    assert r.headers["x-bankml-model-version"] == "3"


def test_scores_the_tutorial_customers(server: Server) -> None:
    r = server.score({"data": CUSTOMERS})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()  # one decode gives the answer: encoded once
    assert isinstance(body, dict) and set(body) == {"result"}
    assert len(body["result"]) == 2 and set(body["result"]) <= {"no", "yes"}
    uuid.UUID(r.headers["x-ms-request-id"])
    assert r.headers["x-bankml-model-version"] == "3"
    again = server.score({"data": CUSTOMERS}, headers={"x-ms-client-request-id": "relay-123"})
    assert again.headers["x-ms-request-id"] != r.headers["x-ms-request-id"]
    assert again.headers["x-ms-client-request-id"] == "relay-123"


def test_v2_contract(server: Server) -> None:
    r = server.score({"Inputs": {"data": CUSTOMERS}, "GlobalParameters": {"method": "predict_proba"}})
    assert r.status_code == 200
    results = r.json()["Results"]
    assert len(results) == 2
    for p_no, p_yes in results:
        assert p_no + p_yes == pytest.approx(1.0) and 0.0 <= p_yes <= 1.0
    labels = server.score({"Inputs": {"data": CUSTOMERS}}).json()["Results"]
    assert set(labels) <= {"no", "yes"} and len(labels) == 2


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_key_is_required(server: Server, key: str | None) -> None:
    r = server.score({"data": CUSTOMERS}, key=key)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    r = requests.post(f"{server.url}/score", json={"data": CUSTOMERS}, headers={"Authorization": KEY}, timeout=5)
    assert r.status_code == 401  # the key without the Bearer scheme


def test_bad_input_is_a_4xx_naming_the_field(server: Server) -> None:
    bad = dict(CUSTOMERS[1], campaign="three")
    r = server.score({"data": [CUSTOMERS[0], bad]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["code"], err["field"], err["row"], err["value"]) == ("bad_request", "campaign", 1, "three")

    missing = {k: v for k, v in CUSTOMERS[0].items() if k != "age"}
    r = server.score({"data": [missing]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "age"

    r = requests.post(
        f"{server.url}/score",
        data=b"{oops",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=5,
    )
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("body is not JSON")

    r = requests.post(
        f"{server.url}/score",
        data=b"a=1",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"},
        timeout=5,
    )
    assert r.status_code == 415

    r = server.score({"input_data": {"data": CUSTOMERS}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "input_data"


def test_unknown_paths_answer_json(server: Server) -> None:
    r = requests.get(server.url + "/nope", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = requests.get(server.url + "/score", timeout=5)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_swagger(server: Server, trained_model: TrainedModel) -> None:
    r = requests.get(server.url + "/swagger.json", timeout=5)
    assert r.status_code == 200
    doc = r.json()
    assert doc["swagger"] == "2.0" and doc["info"]["title"] == "dep-test" and doc["basePath"] == "/"
    assert set(doc["paths"]) == {"/", "/score", "/swagger.json"}
    assert doc["paths"]["/score"]["post"]["security"] == [{"Bearer": []}]
    row = doc["definitions"]["Row"]
    assert list(row["properties"]) == list(FEATURE_NAMES)
    assert row["properties"]["age"]["type"] == "integer" and row["properties"]["euribor3m"]["type"] == "number"
    meta = json.loads((trained_model.model_dir / "model.json").read_text())
    assert row["properties"]["job"]["x-categories"] == meta["features"]["categories"]["job"]
    example = doc["definitions"]["ServiceInput"]["example"]
    assert example["Inputs"]["data"] == CUSTOMERS
    assert doc["definitions"]["LegacyServiceInput"]["example"] == {"data": CUSTOMERS}
    # The example of the document is a valid request for the server it describes.
    assert server.score(example).status_code == 200
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)


def test_telemetry_follows_the_flag_and_is_flushed_on_stop(trained_model: TrainedModel, tmp_path: Path) -> None:
    srv = _start(trained_model.model_dir, tmp_path, name="dep-tele", version=7)
    try:
        # Flag absent: nothing is recorded, even after a flush interval.
        assert srv.score({"data": CUSTOMERS}).status_code == 200
        time.sleep(1.3)
        assert srv.telemetry_lines() == []

        srv.flag.touch()
        deadline = time.monotonic() + 6
        while not srv.telemetry_lines() and time.monotonic() < deadline:
            srv.score({"data": CUSTOMERS})  # the flag is re-checked at most once a second
            time.sleep(0.2)
        lines = srv.telemetry_lines()
        assert lines, "no telemetry within 6 s of creating the flag file"
        first = lines[0]
        assert set(first) == {"time", "request_id", "deployment", "model_version", "status", "latency_ms", "rows"}
        assert (first["deployment"], first["model_version"], first["status"], first["rows"]) == ("dep-tele", 7, 200, 2)
        assert first["time"].endswith("Z") and first["latency_ms"] >= 0
        uuid.UUID(first["request_id"])

        # A refused request is recorded too, and the last lines are flushed when the server stops.
        assert srv.score({"data": CUSTOMERS}, key="wrong").status_code == 401
        r = srv.score({"data": [dict(CUSTOMERS[0], age="old")]})
        assert r.status_code == 400
        _stop(srv)
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is the signal's.
        assert srv.proc.returncode in (0, -signal.SIGTERM)
        tail = srv.telemetry_lines()[-2:]
        assert [t["status"] for t in tail] == [401, 400]
        assert tail[-1]["request_id"] == r.headers["x-ms-request-id"]
    finally:
        _stop(srv)
    log = srv.log.read_text()
    assert "starting" in log and "stopped" in log
    assert KEY not in log
    assert "POST /score" not in log  # no access log lines


def test_refuses_to_start_without_a_key(trained_model: TrainedModel) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BANKML_MODEL_KEY"}
    cmd = [
        sys.executable,
        "-m",
        "shared.modelserver",
        "--model-dir",
        str(trained_model.model_dir),
        "--port",
        str(_free_port()),
        "--name",
        "nokey",
        "--version",
        "1",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "BANKML_MODEL_KEY" in done.stderr


def generated_rows(n: int, seed: int) -> list[dict[str, Any]]:
    from shared.datagen import generate_frame

    frame = generate_frame(n, seed)[list(FEATURE_NAMES)]
    out = []
    for rec in frame.to_dict(orient="records"):
        row = {}
        for name, value in rec.items():
            kind = BY_NAME[name].kind
            row[name] = str(value) if kind == "string" else (int(value) if kind == "integer" else float(value))
        out.append(row)
    return out


def test_columnar_encoding_equals_the_feature_spec(trained_model: TrainedModel) -> None:
    from shared.modelserver import COLUMNAR_ROWS, FeatureEncoder
    from shared.scoring import parse_request
    from shared.workspace.local.training import load_model

    model = load_model(trained_model.model_dir)
    data = generated_rows(300, 5)
    data[3]["job"], data[7]["month"], data[8]["poutcome"] = "astronaut", "smarch", ""  # unseen categories
    data[9]["campaign"] = 4.0  # an integral float in an integer column
    req = parse_request(json.dumps({"data": data}).encode(), None, max_rows=1000, max_body_bytes=1 << 24)
    assert req.rows >= COLUMNAR_ROWS
    encoder = FeatureEncoder(model.spec)
    X = encoder.matrix(req)
    np.testing.assert_array_equal(X, model.spec.encode_records(req.records))  # NaN == NaN here
    assert encoder.unseen(X) == ["job", "month", "poutcome"]
    small = parse_request(json.dumps({"data": data[:3]}).encode(), None, max_rows=1000, max_body_bytes=1 << 24)
    assert encoder.unseen(encoder.matrix(small)) == []


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_large_requests_answer_what_the_model_predicts(server: Server, trained_model: TrainedModel, method: str) -> None:
    from shared.scoring import parse_request
    from shared.workspace.local.training import load_model

    data = generated_rows(600, 9)  # ~220 kB: parsed and predicted in a worker thread
    r = server.score({"Inputs": {"data": data}, "GlobalParameters": {"method": method}})
    assert r.status_code == 200 and "x-bankml-unseen-categories" not in r.headers
    req = parse_request(json.dumps({"data": data}).encode(), None, max_rows=1000, max_body_bytes=1 << 24)
    labels, probas = load_model(trained_model.model_dir).predict(req.records)
    got = r.json()["Results"]
    if method == "predict":
        assert got == labels
    else:
        np.testing.assert_allclose(np.array(got), np.array(probas), rtol=0, atol=1e-12)


def test_unseen_categories_are_scored_and_named(server: Server) -> None:
    row = dict(CUSTOMERS[0], job="astronaut", education="phd")
    r = server.score({"data": [row, CUSTOMERS[1]]})
    assert r.status_code == 200 and len(r.json()["result"]) == 2
    assert r.headers["x-bankml-unseen-categories"] == "job,education"


def test_an_integer_no_float_can_hold_is_a_400(server: Server) -> None:
    raw = json.dumps({"data": CUSTOMERS}).replace("971", "9" * 400).encode()
    r = requests.post(
        f"{server.url}/score", data=raw, headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400 and (r.json()["error"]["field"], r.json()["error"]["row"]) == ("duration", 0)


def test_answers_name_the_rows_they_scored(server: Server) -> None:
    """x-bankml-rows: what the relay takes for its own validation of a large body (shared.relay)."""
    ok = server.score({"data": generated_rows(300, seed=4)})
    assert ok.status_code == 200 and ok.headers["x-bankml-rows"] == "300"
    bad = server.score({"data": [dict(CUSTOMERS[0], age="old")]})
    assert bad.status_code == 400 and "x-bankml-rows" not in bad.headers
