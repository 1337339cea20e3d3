"""Blue/green deployments with real model-server processes and the real relay in front of them:
a switch under load, a candidate that fails its checks, a server that dies, rollback, restart.

The tests of this module share one data dir and run in order (each starts from what the previous
one left live); model servers are started only where a test needs a new one.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from deploy_fixtures import completed_run, corrupt_model, dummy_model, register_csv

import cli
from shared.config import Settings
from shared.contract import TUTORIAL_CUSTOMERS
from shared.errors import Conflict, DeploymentError
from shared.relay import Relay
from shared.workspace.local import servers
from shared.workspace.local.workspace import LocalWorkspace

if TYPE_CHECKING:
    from conftest import TrainedModel

BODY = json.dumps({"data": [dict(c) for c in TUTORIAL_CUSTOMERS]}).encode()


@dataclass
class Loop:
    ws: LocalWorkspace
    relay: Relay
    home: Path
    runs: dict[str, str] = field(default_factory=dict)

    def score(self) -> tuple[int, str | None]:
        answer = self.relay.score(BODY, "application/json")
        return answer.status, answer.headers.get("x-bankml-deployment")

    def row(self, name: str) -> dict:
        return next(d for d in self.ws.registry.list_deployments() if d["name"] == name)

    def wait_status(self, name: str, status: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.row(name)
            if row["status"] == status:
                return row
            time.sleep(0.1)
        raise AssertionError(f"{name} did not become {status}: {self.row(name)}")


@pytest.fixture(scope="module")
def loop(trained_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    home = tmp_path_factory.mktemp("bluegreen")
    settings = Settings.from_env({"BANKML_HOME": str(home)})
    ws = LocalWorkspace(settings)
    version = register_csv(ws, trained_model.csv)
    useless = dummy_model(trained_model.model_dir, home / "useless", trained_model.csv)
    lp = Loop(ws, Relay(settings, ws), home)
    lp.runs["useless"] = completed_run(ws, version, useless, 0.75)  # passes the first-model minimum
    lp.runs["real"] = completed_run(ws, version, trained_model.model_dir, trained_model.result["metrics"]["AUC_weighted"])
    lp.runs["corrupt"] = completed_run(ws, version, corrupt_model(trained_model.model_dir, home / "corrupt"), 0.999)
    first = ws.deploy_run(lp.runs["useless"])
    assert first.deployed and first.deployment and first.deployment.name == "bankml-v1"
    try:
        yield lp
    finally:
        ws.stop_servers()


def test_switch_under_load_loses_no_request(loop: Loop) -> None:
    loop.ws.enable_insights(loop.runs["real"])  # before the deployment exists: remembered
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            answers.append(loop.score())

    clients = [threading.Thread(target=client) for _ in range(6)]
    for c in clients:
        c.start()
    try:
        while len(answers) < 20:  # traffic on the old deployment first
            time.sleep(0.05)
        decision = loop.ws.deploy_run(loop.runs["real"])
        # Keep the load on until the old server has drained and stopped.
        old = loop.wait_status("bankml-v1", "retired")
        switched_at = len(answers)
        while len(answers) < switched_at + 20:
            time.sleep(0.05)
    finally:
        stop.set()
        for c in clients:
            c.join()
    assert decision.deployed and decision.deployment and decision.deployment.name == "bankml-v2"
    failed = [a for a in answers if a[0] != 200]
    assert failed == [], f"{len(failed)} of {len(answers)} requests failed during the switch: {failed[:5]}"
    assert {"bankml-v1", "bankml-v2"} <= {d for _, d in answers}
    assert answers[-1][1] == "bankml-v2"
    assert old["pid"] is None and loop.row("bankml-v2")["insights"]
    assert loop.ws.insights_flag("bankml-v2").exists()


def test_a_candidate_failing_its_checks_leaves_the_live_model_serving(loop: Loop) -> None:
    with pytest.raises(DeploymentError, match="exited during start"):
        loop.ws.deploy_run(loop.runs["corrupt"])
    failed = loop.row("bankml-v3")
    assert failed["status"] == "failed" and "exited during start" in failed["reason"] and failed["pid"] is None
    decision = next(d for d in loop.ws.registry.decisions() if d["run_id"] == loop.runs["corrupt"])
    assert not decision["deployed"] and decision["reason"].startswith("deployment failed: model server exited")
    assert loop.ws.live_deployment().name == "bankml-v2"
    assert loop.score() == (200, "bankml-v2")
    # Redelivery of the same run does not try again.
    again = loop.ws.deploy_run(loop.runs["corrupt"])
    assert again.duplicate and not again.deployed


def test_a_dead_model_server_is_restarted(loop: Loop, capsys: pytest.CaptureFixture[str]) -> None:
    live = loop.row("bankml-v2")
    os.kill(live["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while servers.is_model_server(live["pid"], "bankml-v2") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert loop.ws.supervise() == "bankml-v2"
    restarted = loop.row("bankml-v2")
    assert restarted["status"] == "live" and restarted["pid"] != live["pid"]
    assert servers.is_model_server(restarted["pid"], "bankml-v2")
    assert loop.score() == (200, "bankml-v2")
    assert loop.ws.supervise() is None  # alive: nothing to do

    # The deployment's own log, like get_logs(): both starts, the second by the supervisor.
    assert cli.main(["logs", "--server", "--home", str(loop.home)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== bankml-v2 (live)")
    assert out.count("starting bankml-v2 v2") == 2 and "supervisor: the server had exited" in out
    assert restarted["key"] not in out


def test_rollback_puts_the_previous_model_back_and_back_again(loop: Loop) -> None:
    with pytest.raises(Conflict, match="never live"):
        loop.ws.rollback(to="bankml-v3")
    back = loop.ws.rollback()
    assert back.name == "bankml-v4" and back.run_id == loop.runs["useless"] and back.status == "live"
    assert back.insights  # the live deployment had telemetry on: the rollback keeps it on
    loop.wait_status("bankml-v2", "retired")  # by now every relay sends to v4
    sent = 7
    for _ in range(sent):
        assert loop.score() == (200, "bankml-v4")

    forward = loop.ws.rollback()  # a second rollback returns to where the first one started
    assert forward.name == "bankml-v5" and forward.run_id == loop.runs["real"]
    loop.wait_status("bankml-v4", "retired")
    assert "rollback from bankml-v4 to the model of bankml-v2" in loop.row("bankml-v5")["reason"]

    # v4 drained with SIGTERM, so its telemetry is complete: our requests plus its scoring check.
    records = [json.loads(x) for x in loop.ws.telemetry_file("bankml-v4").read_text().splitlines()]
    assert len(records) == sent + 1 and {r["status"] for r in records} == {200}
    assert {(r["deployment"], r["model_version"], r["rows"]) for r in records} == {("bankml-v4", 4, 2)}
    points = [json.loads(x) for x in loop.ws.metrics_file("bankml-v4").read_text().splitlines()]
    counted = sum(p["value"] for p in points if p["name"] == "bankml.requests")
    timed = sum(p["count"] for p in points if p["name"] == "bankml.request.duration")
    assert counted == timed == sent + 1
    assert sum(p["value"] for p in points if p["name"] == "bankml.rows") == 2 * (sent + 1)


def test_requests_show_in_bankml_logs(loop: Loop, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["logs", "--home", str(loop.home), "--deployment", "bankml-v4", "--tail", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 + 2 and all(" bankml-v4 v4  200 " in line for line in out[:3])
    assert out[3].startswith("summary: 8 requests (200: 8), 0 errors, 16 rows")
    assert out[4].startswith("latency ms: p50 ")
    assert cli.main(["logs", "--home", str(loop.home), "--status", "5xx"]) == 0
    assert "no telemetry yet" in capsys.readouterr().out


def test_a_restart_brings_the_live_model_back(loop: Loop) -> None:
    loop.ws.stop_servers()
    assert loop.score()[0] == 503  # nothing answers while the stack is down
    restarted = LocalWorkspace(loop.ws.settings)  # a new `bankml up` in the same data dir
    restarted.reconcile()
    live = loop.row("bankml-v5")
    assert live["status"] == "live" and servers.is_model_server(live["pid"], "bankml-v5")
    assert all(d["pid"] is None for d in loop.ws.registry.list_deployments() if d["status"] != "live")
    assert loop.score() == (200, "bankml-v5")


def test_rollback_needs_a_running_stack(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no stack is running"):
        cli.main(["rollback", "--home", str(tmp_path)])
