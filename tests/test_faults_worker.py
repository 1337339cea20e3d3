"""The training worker SIGKILLed mid-run, with the real workspace agent and a real worker process:
the run is recorded as Failed with the signal as its reason, one RunStatusChanged(failed) event in
the Event Grid schema reaches the subscriber (a real HTTP endpoint here), and the agent trains the
next run normally."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from deploy_fixtures import register_csv

from shared.config import Settings
from shared.events import RUN_COMPLETED, RUN_STATUS_CHANGED
from shared.workspace.local.agent import Agent, worker_exit_reason
from shared.workspace.local.workspace import LocalWorkspace

if TYPE_CHECKING:
    from conftest import TrainedModel


class Subscriber:
    """An Event Grid subscription endpoint on loopback that keeps what it receives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                events.extend(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/events"

    def of(self, run_id: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["data"]["runId"] == run_id]


def wait(what: str, predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def agent_loop(trained_model: TrainedModel, tmp_path: Path) -> Iterator[tuple[LocalWorkspace, Agent, Subscriber, int]]:
    settings = Settings.from_env({"BANKML_HOME": str(tmp_path / "home"), "BANKML_TIME_BUDGET_S": "30"})
    ws = LocalWorkspace(settings)
    version = register_csv(ws, trained_model.csv)
    sub = Subscriber()
    sub.thread.start()
    ws.registry.set_subscriptions({"deploy_best_model": sub.url})
    agent = Agent(settings.home, system_key="local-test-key", poll_s=0.2)
    agent.start()
    try:
        yield ws, agent, sub, version
    finally:
        agent.stop()
        sub.server.shutdown()


def test_a_killed_worker_fails_its_run_with_the_signal_and_the_next_run_trains(
    agent_loop: tuple[LocalWorkspace, Agent, Subscriber, int],
) -> None:
    ws, _agent, sub, version = agent_loop
    run = ws.submit_run(version, trigger="ingest")

    def mid_run() -> dict[str, Any] | None:
        row = ws.registry.get_run(run.run_id)
        if row and row["status"] == "Running" and row["worker_pid"] and ws.registry.child_runs(run.run_id):
            return row
        return None

    row = wait("the run to be mid-training", mid_run, timeout=180)
    os.kill(row["worker_pid"], signal.SIGKILL)
    failed = wait("the run to fail and its event to go out", lambda: (
        r if (r := ws.registry.get_run(run.run_id)) and r["status"] == "Failed" and r["event_published"] else None
    ), timeout=60)
    assert failed["error"] == "training worker exited with signal 9 (SIGKILL) without a result"
    assert failed["ended_at"] and not failed["model_dir"] and failed["best"] == {}
    (event,) = sub.of(run.run_id)
    assert event["eventType"] == RUN_STATUS_CHANGED and event["id"] == f"{run.run_id}:failed"
    assert event["data"]["runStatus"] == "failed"
    assert event["data"]["runProperties"]["error"] == failed["error"]
    assert event["subject"].endswith(f"/runs/{run.run_id}") and event["dataVersion"] == ""

    # The agent goes on: the next run trains normally and reports RunCompleted.
    nxt = ws.submit_run(version, trigger="api", parameters={"time_budget_s": 3})
    done = wait("the next run", lambda: (
        r if (r := ws.registry.get_run(nxt.run_id)) and r["status"] in ("Completed", "Failed") and r["event_published"] else None
    ), timeout=180)
    assert done["status"] == "Completed", done["error"]
    assert [e["eventType"] for e in sub.of(nxt.run_id)] == [RUN_COMPLETED]
    assert len(sub.of(run.run_id)) == 1  # the failed run's event went out once


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (-9, "training worker exited with signal 9 (SIGKILL) without a result"),
        (-15, "training worker exited with signal 15 (SIGTERM) without a result"),
        (3, "training worker exited with code 3 without a result"),
    ],
)
def test_exit_reasons_name_the_signal_or_the_code(code: int, reason: str) -> None:
    assert worker_exit_reason(code) == reason
