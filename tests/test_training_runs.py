"""A training run end to end in the local workspace: what the worker records for a completed run,
how a failing run (bad data, a bad parameter, a crashed worker) ends as Failed with its reason and a
RunStatusChanged(Failed) event that never deploys, and the `bankml runs` views of it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

import cli
from functions.deploy import deploy_best_model
from shared.config import Settings
from shared.datagen import generate_frame, write_csv
from shared.events import RUN_STATUS_CHANGED
from shared.ingest import canonical_csv, parse_csv
from shared.runreport import watch
from shared.workspace.base import COMPLETED, FAILED
from shared.workspace.local import worker
from shared.workspace.local.agent import Agent
from shared.workspace.local.registry import utcnow
from shared.workspace.local.workspace import LocalWorkspace

deploy = deploy_best_model.build().get_user_function()


def workspace(home: Path) -> LocalWorkspace:
    return LocalWorkspace(Settings.from_env({"BANKML_HOME": str(home)}))


def register_rows(ws: LocalWorkspace, rows: int, seed: int) -> int:
    frame = generate_frame(rows, seed)
    parsed = parse_csv(canonical_csv(frame), max_bytes=10**8)
    return ws.register_dataset(parsed, source_blob=f"incoming/{rows}.csv", etag=str(seed)).version


class _Capture(BaseHTTPRequestHandler):
    events: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).events.extend(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def eventgrid() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP endpoint on loopback that keeps what the agent publishes to it."""
    handler = type("Capture", (_Capture,), {"events": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/runtime/webhooks/eventgrid?functionName=deploy_best_model", handler.events
    finally:
        server.shutdown()


# --------------------------------------------------------------------------- a completed run


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("home")
    ws = workspace(home)
    version = register_rows(ws, 1500, seed=11)
    run = ws.submit_run(version, trigger="api", parameters={"time_budget_s": 4})
    assert worker.run(home, run.run_id) == 0
    return home, run.run_id


def test_a_completed_run_records_its_children_and_its_best_model(completed: tuple[Path, str]) -> None:
    home, run_id = completed
    ws = workspace(home)
    run = ws.registry.get_run(run_id)
    assert run is not None and run["status"] == COMPLETED and run["ended_at"]
    children = ws.registry.child_runs(run_id)
    assert len(children) >= 2
    for c in children:
        assert c["learner"] and isinstance(c["config"], dict) and c["status"] in ("Completed", "Failed")
        assert c["train_time_s"] is not None and (c["metric"] is None or 0 < c["metric"] <= 1)
    best = run["best"]
    assert best["learner"] and best["members"] and best["config"]
    for key in ("accuracy", "AUC_weighted", "AUC_macro", "precision_score_weighted", "precision_score_macro",
                "recall_score_weighted", "recall_score_macro", "f1_score_weighted", "f1_score_macro", "log_loss"):
        assert isinstance(best["metrics"][key], float), key
    assert len(best["metrics"]["confusion_matrix"]) == 2
    assert best["threshold"] == best["thresholds"]["accuracy"] and "f1" in best["thresholds"]
    assert set(best["feature_importance"]) == set(json.loads((Path(run["model_dir"]) / "model.json").read_text())["features"]["columns"])
    assert best["dataset_version"] == run["dataset_version"]
    assert {"flaml", "lightgbm", "scikit-learn"} <= set(best["library_versions"])
    assert 0 < best["peak_rss_mb"] < 2048
    for name in best["artifacts"]:
        assert (Path(run["model_dir"]) / name).is_file(), name


def test_runs_list_and_show(completed: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    home, run_id = completed
    assert cli.main(["runs", "--home", str(home)]) == 0
    listing = capsys.readouterr().out
    assert run_id in listing and "Completed" in listing
    assert cli.main(["runs", "show", run_id[:14], "--home", str(home)]) == 0
    shown = capsys.readouterr().out
    best = workspace(home).registry.get_run(run_id)["best"]  # type: ignore[index]
    assert f"AUC_weighted                       {best['metrics']['AUC_weighted']:.4f}" in shown
    assert f"threshold   {best['threshold']:.3f} (serves" in shown
    assert "confusion matrix" in shown and "feature importance" in shown and "child runs (" in shown
    assert "model_card.md" in shown and "confusion_matrix.png" in shown
    assert cli.main(["runs", "show", "AutoML_no-such-run", "--home", str(home)]) == 2
    assert "no run matching" in capsys.readouterr().err


def test_runs_watch_shows_trials_and_the_best_metric_as_they_come(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    run = ws.submit_run(register_rows(ws, 150, seed=3), trigger="api")
    lines: list[str] = []

    def progress() -> None:
        for i, metric in enumerate((0.81, 0.86, 0.84)):
            time.sleep(0.15)
            ws.registry.add_child_run(run.run_id, {"iteration": i, "learner": "lgbm", "config": {"n": i}, "metric": metric, "train_time_s": 0.1})
        time.sleep(0.15)
        ws.registry.update_run(run.run_id, status=COMPLETED, ended_at=utcnow(), best={"learner": "lgbm", "metrics": {"AUC_weighted": 0.85, "accuracy": 0.9}})

    t = threading.Thread(target=progress)
    t.start()
    final = watch(ws.registry, None, say=lines.append, poll_s=0.05, timeout_s=30)
    t.join()
    assert final["status"] == COMPLETED
    trial_lines = [line for line in lines if line.lstrip().startswith("trial")]
    assert [line.split("best ")[-1] for line in trial_lines] == ["0.8100", "0.8600", "0.8600"]
    assert lines[-1].startswith(f"run {run.run_id} completed") and "AUC_weighted 0.8500" in lines[-1]


# --------------------------------------------------------------------------- failing runs


def test_a_bad_parameter_fails_the_run_with_its_reason(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    run = ws.submit_run(register_rows(ws, 150, seed=3), trigger="api", parameters={"time_budget_s": "soon"})
    assert worker.run(tmp_path, run.run_id) == 1
    row = ws.registry.get_run(run.run_id)
    assert row is not None and row["status"] == FAILED and "time_budget_s" in row["error"] and "soon" in row["error"]


def test_bad_data_fails_publishes_failed_and_never_deploys(tmp_path: Path, eventgrid: tuple[str, list[dict[str, Any]]]) -> None:
    url, events = eventgrid
    ws = workspace(tmp_path)
    # Accepted by ingest (a valid file), refused by training: too few rows for the three splits.
    run = ws.submit_run(register_rows(ws, 60, seed=4), trigger="api")
    ws.registry.set_subscriptions({"deploy_best_model": url})
    assert Agent(tmp_path, system_key="test-key").run_next() is True
    row = ws.registry.get_run(run.run_id)
    assert row is not None and row["status"] == FAILED and "at least 100" in row["error"]
    assert row["event_published"] == 1
    assert len(events) == 1
    event = events[0]
    assert event["eventType"] == RUN_STATUS_CHANGED and event["data"]["runStatus"] == "failed"
    assert event["data"]["runId"] == run.run_id and "at least 100" in event["data"]["runProperties"]["error"]
    # The deploy function gets that event: nothing deploys, nothing is even decided.
    os.environ["BANKML_HOME"] = str(tmp_path)
    try:
        deploy(EventGridEventInConverter.decode(Datum(json.dumps(event), "json"), trigger_metadata=None))
    finally:
        os.environ.pop("BANKML_HOME")
    assert ws.registry.list_deployments() == [] and ws.registry.decisions() == []
    # And the workspace's gate refuses it if asked directly.
    decision = ws.deploy_run(run.run_id)
    assert not decision.deployed and "Failed" in decision.reason and ws.registry.list_deployments() == []


def test_a_crashed_worker_fails_the_run(tmp_path: Path, eventgrid: tuple[str, list[dict[str, Any]]]) -> None:
    url, events = eventgrid
    ws = workspace(tmp_path)
    csv = write_csv(tmp_path / "big.csv", 3000, seed=5)
    parsed = parse_csv(csv.read_bytes(), max_bytes=10**8)
    version = ws.register_dataset(parsed, source_blob="incoming/big.csv", etag="5").version
    run = ws.submit_run(version, trigger="api", parameters={"time_budget_s": 60})
    ws.registry.set_subscriptions({"deploy_best_model": url})
    agent = Agent(tmp_path, system_key="test-key")
    t = threading.Thread(target=agent.run_next)
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ws.registry.child_runs(run.run_id):
        time.sleep(0.1)  # the worker is searching once it has reported a trial
    pid = (ws.registry.get_run(run.run_id) or {}).get("worker_pid")
    assert pid, "the worker never started"
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=60)
    row = ws.registry.get_run(run.run_id)
    assert row is not None and row["status"] == FAILED and "exited with signal 9 (SIGKILL)" in row["error"]
    assert [e["eventType"] for e in events] == [RUN_STATUS_CHANGED]
    assert not ws.deploy_run(run.run_id).deployed


def test_a_hung_worker_is_killed_at_its_deadline_and_fails_the_run(
    tmp_path: Path, eventgrid: tuple[str, list[dict[str, Any]]]
) -> None:
    """A worker that stops answering (SIGSTOP: it may hold the registry's write lock) is killed once
    its run's budget plus the grace of BANKML_WORKER_GRACE_S has passed; the run fails, once."""
    url, events = eventgrid
    settings = Settings.from_env({"BANKML_HOME": str(tmp_path), "BANKML_WORKER_GRACE_S": "1"})
    ws = LocalWorkspace(settings)
    csv = write_csv(tmp_path / "big.csv", 3000, seed=6)
    parsed = parse_csv(csv.read_bytes(), max_bytes=10**8)
    version = ws.register_dataset(parsed, source_blob="incoming/big.csv", etag="6").version
    run = ws.submit_run(version, trigger="api", parameters={"time_budget_s": 15})
    ws.registry.set_subscriptions({"deploy_best_model": url})
    agent = Agent(tmp_path, system_key="test-key", grace_s=settings.worker_grace_s)
    t = threading.Thread(target=agent.run_next)
    t.start()
    pid = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ws.registry.child_runs(run.run_id):
            time.sleep(0.05)  # the worker is searching once it has reported a trial
        pid = (ws.registry.get_run(run.run_id) or {}).get("worker_pid")
        assert pid, "the worker never started"
        assert ws.registry.child_runs(run.run_id), "the worker reported no trial"
        os.kill(pid, signal.SIGSTOP)  # hung from now on: never continued by this test
        t.join(timeout=120)
        assert not t.is_alive(), "the agent still waits for the stopped worker"
    finally:
        if pid and t.is_alive():
            os.kill(pid, signal.SIGKILL)
            t.join(timeout=30)
    row = ws.registry.get_run(run.run_id)
    assert row is not None and row["status"] == FAILED
    assert row["error"] == "training worker exceeded its time budget of 15 s + grace 1 s: killed"
    assert row["ended_at"] and row["event_published"] == 1
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: no stopped worker left behind
    assert [e["eventType"] for e in events] == [RUN_STATUS_CHANGED]
    assert events[0]["data"]["runStatus"] == "failed" and "exceeded its time budget" in events[0]["data"]["runProperties"]["error"]
    assert not ws.deploy_run(run.run_id).deployed and ws.registry.list_deployments() == []
