"""The whole loop, as a user drives it: drop a CSV, get a deployed model you can score."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from shared.contract import FEATURE_NAMES, TUTORIAL_CUSTOMERS
from shared.datagen import write_csv
from tests.e2e.conftest import RunningStack, model_server_pids, pid_alive, stop_stack

pytestmark = pytest.mark.e2e

FAST = {
    "BANKML_TIME_BUDGET_S": "8",
    "BANKML_BENCH_REQUESTS": "60",
    "BANKML_BENCH_DURATION_S": "5",
    "BANKML_BENCH_CONCURRENCY": "2",
    "BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *",  # not during the test; `bankml bench` runs it
}


def live_of(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((d for d in status["deployments"] if d["status"] == "live"), None)


def blob_client(stack: RunningStack) -> BlobServiceClient:
    account = json.loads((stack.home / "azurite" / "azurite-account.json").read_text())
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={account['accountName']};AccountKey={account['accountKey']};"
        f"BlobEndpoint=http://127.0.0.1:{stack.azurite_port}/{account['accountName']};"
    )
    return BlobServiceClient.from_connection_string(conn)


def score(stack: RunningStack, payload: Any, key: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["x-functions-key"] = key
    return requests.post(f"{stack.url}/api/score", data=json.dumps(payload), headers=headers, timeout=30)


def run_whole_loop(stack: RunningStack, csv: Path, rows: int, min_auc: float) -> dict[str, Any]:
    out = stack.cli("drop", str(csv), "--name", "bank.csv").stdout
    assert "registered as dataset v1" in out, out
    status = stack.wait_for("a live deployment", live_of, timeout=600)
    status = stack.status()
    assert [d["rows"] for d in status["datasets"]] == [rows]
    assert len(status["runs"]) == 1
    run = status["runs"][0]
    assert run["status"] == "Completed", run
    assert run["child_runs"] >= 1
    metrics = run["best"]["metrics"]
    assert metrics["AUC_weighted"] >= min_auc, metrics
    assert 0.5 < metrics["accuracy"] <= 1.0
    live = live_of(status)
    assert live and live["run_id"] == run["run_id"]
    assert [d["deployed"] for d in status["decisions"]] == [1]

    key = stack.key()
    r = score(stack, {"data": list(TUTORIAL_CUSTOMERS)}, key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["result"], list) and len(body["result"]) == 2
    assert set(body["result"]) <= {"yes", "no"}
    assert r.headers["x-bankml-model-version"] == str(live["model_version"])
    return status


def test_whole_loop_on_generated_data(stack_factory: Any, tmp_path: Path) -> None:
    stack: RunningStack = stack_factory("loop", **FAST)
    csv = tmp_path / "bank.csv"
    write_csv(csv, 4000, 7)
    status = run_whole_loop(stack, csv, 4000, min_auc=0.75)
    key = stack.key()

    # Function keys are enforced on the relay; Swagger and its UI are public like an AML endpoint's.
    assert score(stack, {"data": list(TUTORIAL_CUSTOMERS)}, None).status_code == 401
    assert score(stack, {"data": list(TUTORIAL_CUSTOMERS)}, "wrong").status_code == 401
    bad = dict(TUTORIAL_CUSTOMERS[0])
    del bad["age"]
    r = score(stack, {"data": [bad]}, key)
    assert r.status_code == 400 and "age" in r.text

    doc = requests.get(f"{stack.url}/api/swagger.json", timeout=10).json()
    assert doc["swagger"] == "2.0"
    assert "/score" in doc["paths"]
    from openapi_spec_validator import validate

    validate(doc)
    page = requests.get(f"{stack.url}/api/docs", timeout=10)
    assert page.status_code == 200 and "swagger-ui" in page.text and "https://" not in page.text
    assert requests.get(f"{stack.url}/api/docs/swagger-ui-bundle.js", timeout=10).status_code == 200

    # Telemetry: the scoring requests above were recorded by the live deployment.
    logs = stack.cli("logs").stdout
    assert str(status["deployments"][0]["name"]) in logs and " 200 " in logs

    # The same content dropped again (another name): one dataset version, one run, one decision.
    again_out = stack.cli("drop", str(csv), "--name", "again.csv").stdout
    assert "already registered" in again_out
    svc = blob_client(stack)
    time.sleep(6)
    again = stack.status()
    assert len(again["datasets"]) == 1 and len(again["runs"]) == 1 and len(again["deployments"]) == 1

    # A file with a missing column: rejected with a reason naming it; the function completes.
    text = csv.read_text().splitlines()
    header = text[0].split(",")
    drop_at = header.index("euribor3m")
    broken = "\n".join(",".join(v for i, v in enumerate(line.split(",")) if i != drop_at) for line in text[:50]) + "\n"
    bad_csv = tmp_path / "missing.csv"
    bad_csv.write_text(broken)
    dropped = stack.cli("drop", str(bad_csv), "--name", "missing column.csv", check=False)
    assert dropped.returncode == 1 and "rejected" in dropped.stdout and "euribor3m" in dropped.stdout
    rejected = svc.get_container_client("rejected")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not rejected.get_blob_client("missing column.csv.error.json").exists():
        time.sleep(0.5)
    reason = json.loads(rejected.download_blob("missing column.csv.error.json").readall())
    assert "euribor3m" in json.dumps(reason)
    assert rejected.download_blob("missing column.csv").readall() == bad_csv.read_bytes()
    assert not svc.get_container_client("incoming").get_blob_client("missing column.csv").exists()
    assert len(stack.status()["datasets"]) == 1

    # A benchmark now: a report with figures for both targets, stored locally and in reports/.
    out = stack.cli("bench").stdout
    assert "Requests per second" in out
    latest = json.loads((stack.home / "reports" / "latest.json").read_text())
    assert set(latest["targets"]) == {"model_server", "relay"}
    assert latest["targets"]["relay"]["failures"] == 0
    names = {b.name for b in svc.get_container_client("reports").list_blobs()}
    assert "latest.json" in names and f"{latest['id']}/report.html" in names

    # Stopping the stack stops the model servers it started.
    pids = model_server_pids(stack.home)
    stop_stack(stack)
    assert pids and not any(pid_alive(p) for p in pids)


def test_restart_keeps_state_and_serves_again(stack_factory: Any, tmp_path: Path) -> None:
    stack: RunningStack = stack_factory("restart", **FAST)
    csv = tmp_path / "bank.csv"
    write_csv(csv, 3000, 11)
    run_whole_loop(stack, csv, 3000, min_auc=0.7)
    stop_stack(stack)
    from tests.e2e.conftest import start_stack

    again = start_stack(stack.home, FAST)
    try:
        st = again.status()
        assert len(st["datasets"]) == 1 and len(st["runs"]) == 1
        r = score(again, {"data": list(TUTORIAL_CUSTOMERS)}, again.key())
        assert r.status_code == 200, r.text
        time.sleep(4)  # the blob scanner has looked at incoming/ again: receipts hold
        assert len(again.status()["runs"]) == 1
    finally:
        stop_stack(again)


@pytest.mark.realdata
@pytest.mark.skipif(not os.environ.get("BANKML_REAL_DATA"), reason="BANKML_REAL_DATA is not set")
def test_whole_loop_on_the_real_file(stack_factory: Any) -> None:
    real = Path(os.environ["BANKML_REAL_DATA"])
    stack: RunningStack = stack_factory("real", **{**FAST, "BANKML_TIME_BUDGET_S": "30"})
    status = run_whole_loop(stack, real, 32950, min_auc=0.93)
    assert set(status["datasets"][0]["profile"]["categories"]) >= {"job", "marital"}
    assert len(FEATURE_NAMES) == 20
