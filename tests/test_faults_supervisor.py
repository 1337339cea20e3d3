"""The supervisor of the live model server against real faults: a server killed (SIGKILL), a server
hung (SIGSTOP: alive, but it answers nothing), a server that is merely busy. Real model-server
processes and the real relay in front of them; the supervisor's steps are called here one by one
(``LocalWorkspace.supervise``, what the stack's Supervisor thread calls every
BANKML_LIVENESS_INTERVAL_S)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from deploy_fixtures import completed_run, register_csv

from shared.config import Settings
from shared.contract import TUTORIAL_CUSTOMERS
from shared.errors import ConfigError
from shared.relay import Relay, RelayAnswer
from shared.workspace.local import servers
from shared.workspace.local.workspace import LocalWorkspace

if TYPE_CHECKING:
    from conftest import TrainedModel

BODY = json.dumps({"data": [dict(c) for c in TUTORIAL_CUSTOMERS]}).encode()
RELAY_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def ws(trained_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWorkspace]:
    home = tmp_path_factory.mktemp("supervised")
    settings = Settings.from_env(
        {
            "BANKML_HOME": str(home),
            "BANKML_LIVENESS_FAILURES": "2",
            "BANKML_LIVENESS_TIMEOUT_S": "0.5",
            "BANKML_RELAY_TIMEOUT_S": str(RELAY_TIMEOUT_S),
            "BANKML_WARM_STANDBY": "0",  # the restart path; the standby's own tests are below
        }
    )
    w = LocalWorkspace(settings)
    version = register_csv(w, trained_model.csv)
    run_id = completed_run(w, version, trained_model.model_dir, trained_model.result["metrics"]["AUC_weighted"])
    assert w.deploy_run(run_id).deployed
    try:
        yield w
    finally:
        for d in w.registry.list_deployments():
            if servers.is_model_server(d["pid"], d["name"]):
                os.kill(d["pid"], signal.SIGCONT)
        w.stop_servers()


def live(ws: LocalWorkspace) -> dict:
    row = ws.registry.live_deployment()
    assert row is not None
    return row


def test_a_healthy_server_is_left_alone(ws: LocalWorkspace) -> None:
    pid = live(ws)["pid"]
    for _ in range(3):
        assert ws.supervise() is None
    assert live(ws)["pid"] == pid and servers.is_model_server(pid, live(ws)["name"])


def test_a_killed_server_gives_503_with_retry_after_then_is_restarted(ws: LocalWorkspace) -> None:
    relay = Relay(ws.settings, ws)
    before = live(ws)
    assert relay.score(BODY, "application/json").status == 200
    os.kill(before["pid"], signal.SIGKILL)
    while servers.is_model_server(before["pid"], before["name"]):
        time.sleep(0.02)
    down = relay.score(BODY, "application/json")
    assert down.status == 503 and down.headers["Retry-After"] == "5"
    assert down.body["error"]["message"] in (
        f"the model server {before['name']} is not reachable", f"the model server {before['name']} dropped the connection"
    )
    assert ws.supervise() == before["name"]
    after = live(ws)
    assert after["pid"] != before["pid"] and after["reason"].startswith("supervisor: the server had exited")
    assert relay.score(BODY, "application/json").status == 200


def test_a_hung_server_is_killed_after_n_failed_checks_and_waiting_requests_end(ws: LocalWorkspace) -> None:
    relay = Relay(ws.settings, ws)
    before = live(ws)
    os.kill(before["pid"], signal.SIGSTOP)
    answers: list[tuple[RelayAnswer, float]] = []

    def client() -> None:
        t0 = time.monotonic()
        answers.append((relay.score(BODY, "application/json"), time.monotonic() - t0))

    waiting = threading.Thread(target=client)
    waiting.start()
    time.sleep(0.3)  # the request is with the hung server
    assert ws.supervise() is None  # first failed check (of 2): not yet
    assert live(ws)["pid"] == before["pid"]
    assert ws.supervise() == before["name"]  # second: killed and restarted
    waiting.join(RELAY_TIMEOUT_S + 5)
    (answer, took), = answers
    # The request that waited on the hung server ended when it was killed: a 503 to retry (or,
    # sent again on a fresh connection, the restarted server's 200), never the relay's 504.
    assert answer.status in (200, 503) and took < RELAY_TIMEOUT_S, (answer.status, took)
    assert not servers.pid_alive(before["pid"])  # killed, not left stopped
    after = live(ws)
    assert after["pid"] != before["pid"] and servers.is_model_server(after["pid"], after["name"])
    assert after["reason"].startswith("supervisor: the server was hung (2 health checks in a row failed (last: no answer")
    assert relay.score(BODY, "application/json").status == 200
    log = Path(ws.server_log(after["name"])).read_text()
    assert "supervisor: the server was hung" in log  # the restart's marker in the deployment's log


def test_a_check_that_passes_again_resets_the_count(ws: LocalWorkspace) -> None:
    before = live(ws)
    os.kill(before["pid"], signal.SIGSTOP)
    try:
        assert ws.supervise() is None  # one failure
    finally:
        os.kill(before["pid"], signal.SIGCONT)
    assert ws.supervise() is None  # answers again: the count starts over
    os.kill(before["pid"], signal.SIGSTOP)
    try:
        assert ws.supervise() is None  # one failure again, not two in a row
        assert live(ws)["pid"] == before["pid"]
    finally:
        os.kill(before["pid"], signal.SIGCONT)
    assert ws.supervise() is None and live(ws)["pid"] == before["pid"]


def with_standby(ws: LocalWorkspace) -> LocalWorkspace:
    """Another supervisor on the same data dir, with the warm standby on, once its standby is ready."""
    sup = LocalWorkspace(dataclasses.replace(ws.settings, warm_standby=True))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert sup.supervise() is None
        sb = sup._standby.get(live(ws)["name"])
        if sb and sb["ready"]:
            return sup
        time.sleep(0.2)
    raise AssertionError("the warm standby did not become ready")


def test_a_ready_standby_takes_over_a_killed_server_at_once(ws: LocalWorkspace) -> None:
    sup = with_standby(ws)
    before = live(ws)
    standby = dict(sup._standby[before["name"]])
    assert standby["pid"] != before["pid"] and servers.is_model_server(standby["pid"], before["name"])
    log = Path(ws.server_log(before["name"])).read_text()
    assert f"starting warm standby of {before['name']}" in log
    relay = Relay(ws.settings, ws)
    assert relay.score(BODY, "application/json").status == 200  # the relay now knows the old address
    os.kill(before["pid"], signal.SIGKILL)
    while servers.is_model_server(before["pid"], before["name"]):
        time.sleep(0.02)
    assert sup.supervise() == before["name"]
    after = live(ws)
    assert (after["pid"], after["port"]) == (standby["pid"], standby["port"])
    assert after["reason"].startswith("supervisor: the server had exited; its warm standby took over")
    # Same deployment name, new port: the relay that knew the old address follows at once, no 503.
    assert relay.score(BODY, "application/json").status == 200
    assert before["name"] not in sup._standby  # used up; the next healthy step starts another
    assert sup.supervise() is None and before["name"] in sup._standby
    second = sup._standby[before["name"]]["pid"]
    sup.stop_servers()  # stops the new standby too (and the live server: restarted below)
    assert not servers.pid_alive(second)
    ws.reconcile()
    assert servers.is_model_server(live(ws)["pid"], before["name"])


def test_a_ready_standby_takes_over_a_hung_server(ws: LocalWorkspace) -> None:
    sup = with_standby(ws)
    before = live(ws)
    standby_pid = sup._standby[before["name"]]["pid"]
    os.kill(before["pid"], signal.SIGSTOP)
    assert sup.supervise() is None  # 1 of 2
    assert sup.supervise() == before["name"]
    after = live(ws)
    assert after["pid"] == standby_pid and "was hung" in after["reason"] and "warm standby took over" in after["reason"]
    assert not servers.pid_alive(before["pid"])
    assert Relay(ws.settings, ws).score(BODY, "application/json").status == 200
    sup._retire_standbys(keep=None)


def test_a_standby_left_by_a_killed_stack_is_stopped_at_the_next_start(ws: LocalWorkspace) -> None:
    sup = LocalWorkspace(dataclasses.replace(ws.settings, warm_standby=True))
    assert sup.supervise() is None  # starts the standby (recorded in standby.json)
    name = live(ws)["name"]
    pid = sup._standby[name]["pid"]
    assert json.loads((ws.deploy_dir(name) / "standby.json").read_text())["pid"] == pid
    # The stack dies without stopping anything (its memory is gone): a new start cleans up.
    LocalWorkspace(ws.settings).reconcile()
    assert not servers.pid_alive(pid) and not (ws.deploy_dir(name) / "standby.json").exists()
    assert servers.is_model_server(live(ws)["pid"], name)  # the live server is untouched


@pytest.mark.parametrize(
    ("key", "value"),
    [("BANKML_LIVENESS_FAILURES", "0"), ("BANKML_LIVENESS_TIMEOUT_S", "0"), ("BANKML_LIVENESS_INTERVAL_S", "-1"),
     ("BANKML_LIVENESS_FAILURES", "three"), ("BANKML_WARM_STANDBY", "maybe")],
)
def test_liveness_settings_fail_fast_naming_the_setting(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({key: value})
    assert err.value.details["setting"] == key and key in err.value.message
