"""Faults injected for real into a running `bankml up` (issue 10): a model server killed or hung
under load, the training worker killed mid-run, Azurite gone for 20 s, a corrupt model file, and
the whole stack killed between "uploaded" and "registered" or between "registered" and
"submitted". Each test checks what users see (relay answers, `bankml status --json`, events in
the stack's log) and what is stored afterwards (registry, blobs).

The tests of this module share one stack and run in order: each starts from what the previous one
left (a live model, scoring clients from ``benchmarks.faults.Load``). Every completed run deploys
(margin -1), so which model is live never depends on how well a tiny training budget did.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from benchmarks.faults import (
    STACK_ENV,
    Load,
    blob_service,
    live_row,
    model_server_fault,
    registry_rows,
    storage_outage,
    upload,
    wait,
)
from shared.datagen import generate_frame, write_csv
from tests.e2e.conftest import RunningStack, model_server_pids, pid_alive, start_stack, stop_stack

pytestmark = pytest.mark.e2e

ROWS = 2000


@dataclass
class Faults:
    stack: RunningStack
    work: Path
    env: dict[str, str]
    load: Load | None = None

    def csv(self, seed: int) -> bytes:
        return write_csv(self.work / f"data-{seed}.csv", ROWS, seed).read_bytes()

    def restart(self, env: dict[str, str] | None = None) -> RunningStack:
        self.stack = start_stack(self.stack.home, env or self.env)
        return self.stack

    def log(self) -> str:
        return self.stack.log.read_text(errors="replace")


def runs_of(home: Path, version: int) -> list[dict[str, Any]]:
    return registry_rows(home, "SELECT * FROM runs WHERE dataset_version = ?", (version,))


def settled(home: Path) -> bool:
    """No run queued or running, every completed run decided, no deployment starting or draining."""
    return not registry_rows(
        home,
        "SELECT 1 FROM runs WHERE status IN ('Queued', 'Running') OR (status = 'Completed' AND NOT event_published)"
        " OR (status = 'Completed' AND run_id NOT IN (SELECT run_id FROM decisions))"
        " UNION SELECT 1 FROM deployments WHERE status IN ('starting', 'draining')",
    )


def dataset_of(home: Path, name: str, etag: str | None = None) -> dict[str, Any] | None:
    sql, args = "SELECT * FROM datasets WHERE source_blob = ?", (f"incoming/{name}",)
    if etag:
        sql, args = sql + " AND etag = ?", (*args, etag)
    rows = registry_rows(home, sql, args)
    return rows[0] if rows else None


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    work = tmp_path_factory.mktemp("faults")
    env = dict(STACK_ENV)
    f = Faults(start_stack(work / "home", env), work, env)
    try:
        out = f.stack.cli("drop", str(write_csv(work / "first.csv", ROWS, 7)), "--name", "first.csv").stdout
        assert "registered as dataset v1" in out, out
        wait("a live model", lambda: live_row(f.stack.home), timeout=600, poll=0.5)
        f.load = Load(f.stack.url, f.stack.key(), f.stack.home)
        yield f
    finally:
        if f.load is not None:
            f.load.stop()
        stop_stack(f.stack)
        for pid in model_server_pids(f.stack.home):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def load(faults: Faults) -> Iterator[Load]:
    assert faults.load is not None
    faults.load.start()
    try:
        yield faults.load
    finally:
        faults.load.stop()


def check_answers(figures: dict[str, Any]) -> None:
    """What a client may see during a model-server fault: 200 with the right labels, or 503 with
    Retry-After. Never a 504 (a hang up to the relay's timeout) and never no answer at all."""
    assert set(figures["by_status"]) <= {"200", "503"}, figures
    assert figures["errors_without_retry_after"] == 0, figures
    assert figures["wrong_answers"] == 0, figures
    assert figures["by_status"].get("200", 0) > 0, figures


def test_a_killed_model_server_answers_503_and_is_back_within_10_s(faults: Faults, load: Load) -> None:
    home = faults.stack.home
    result = model_server_fault(home, load, signal.SIGKILL)
    print(f"\nmodel server SIGKILL under load: {json.dumps(result)}")
    check_answers(result)
    assert result["server_back_s"] <= 10.0, result  # the bound; the measured time is printed
    row = live_row(home)
    assert row and row["name"] == result["deployment"] and "supervisor: the server had exited" in row["reason"]
    # The stack keeps a warm standby (BANKML_WARM_STANDBY=1): it took the traffic.
    assert "its warm standby took over" in row["reason"] and "starting warm standby of" in (
        home / "deployments" / row["name"] / "server.log"
    ).read_text()
    assert not pid_alive(result["old_pid"])
    status = faults.stack.status()
    assert status["services"]["live_server"] == {"name": row["name"], "healthy": True, "detail": "answers"}


def test_a_hung_model_server_is_killed_and_restarted(faults: Faults, load: Load) -> None:
    home = faults.stack.home
    result = model_server_fault(home, load, signal.SIGSTOP)
    print(f"\nmodel server SIGSTOP under load: {json.dumps(result)}")
    check_answers(result)
    # Bounded by the health checks (3 x (1 s + 2 s)), not by the relay's 30 s timeout.
    assert result["max_latency_s"] < 25, result
    row = live_row(home)
    assert row and "was hung" in row["reason"] and "health checks in a row failed" in row["reason"], row
    assert not pid_alive(result["old_pid"])  # killed, not left stopped
    assert "failed its health check (1 of 3 in a row)" in faults.log()


def test_azurite_gone_for_20_s_ingest_completes_after_and_the_relay_keeps_serving(faults: Faults, load: Load) -> None:
    result = storage_outage(
        faults.stack, load, faults.csv(8), "during-outage.csv", seconds=20, mode="stop"
    )
    print(f"\nAzurite SIGSTOP for 20 s: {json.dumps(result)}")
    during = result["status_during_outage"]
    assert during["storage"]["reachable"] is False and "storage unreachable" in during["storage"]["detail"]
    assert during["live_server"]["healthy"] is True
    # `bankml status` (text) still works and says so, rather than crashing.
    assert result["status_exit_during_outage"] == 0, result["status_text_during_outage"]
    assert "storage: storage unreachable" in result["status_text_during_outage"]
    relay = result["relay_during_outage"]
    assert relay["requests"] > 0 and relay["by_status"] == {"200": relay["requests"]} and relay["wrong_answers"] == 0
    assert result["datasets_added"] == 1 and len(result["runs"]) == 1
    assert faults.stack.status()["services"]["storage"]["reachable"] is True
    # The file waited in storage for the whole outage (the stack was paused until storage was gone):
    # a stopped Azurite holds the scanner's call, which completes once it answers again.
    assert result["outage_s"] >= 19


def test_azurite_killed_is_started_again_by_the_stack_and_ingest_completes(faults: Faults, load: Load) -> None:
    before = json.loads((faults.stack.home / "stack.json").read_text())
    result = storage_outage(
        faults.stack, load, faults.csv(13), "azurite-killed.csv", seconds=0, mode="kill"
    )
    print(f"\nAzurite SIGKILL, restarted by the stack: {json.dumps(result)}")
    after = json.loads((faults.stack.home / "stack.json").read_text())
    # the same port (clients keep their connection strings), a new process, recorded in stack.json
    assert after["azurite_port"] == before["azurite_port"] and after["azurite_pid"] == result["restarted_azurite_pid"]
    assert pid_alive(after["azurite_pid"]) and not pid_alive(before["azurite_pid"])
    assert result["datasets_added"] == 1 and len(result["runs"]) == 1  # the blob waiting in storage was not lost
    relay = result["relay_during_outage"]
    assert relay["wrong_answers"] == 0 and set(relay["by_status"]) <= {"200"}
    assert faults.stack.status()["services"]["storage"]["reachable"] is True
    assert "Azurite (pid" in faults.log() and "starting it again on port" in faults.log()


def test_a_killed_training_worker_fails_the_run_and_nothing_deploys(faults: Faults, load: Load) -> None:
    home = faults.stack.home
    # Whatever the previous test queued trains and is decided first; then our drop's run.
    wait("earlier runs to be trained and decided", lambda: settled(home), timeout=300, poll=0.5)
    live_before = live_row(home)
    deployments_before = registry_rows(home, "SELECT name, status FROM deployments")
    etag = upload(home, faults.stack.azurite_port, "killed-worker.csv", faults.csv(9))
    dataset = wait("the dataset", lambda: dataset_of(home, "killed-worker.csv", etag), timeout=60, poll=0.2)

    def running() -> dict[str, Any] | None:
        runs = [r for r in runs_of(home, dataset["version"]) if r["status"] == "Running" and r["worker_pid"]]
        if runs and registry_rows(home, "SELECT 1 FROM child_runs WHERE run_id = ?", (runs[0]["run_id"],)):
            return runs[0]  # mid-run: at least one trial recorded
        return None

    run = wait("the run to be mid-training", running, timeout=120, poll=0.1)
    t_kill = time.monotonic()
    os.kill(run["worker_pid"], signal.SIGKILL)
    failed = wait("the run to be Failed", lambda: next(
        (r for r in runs_of(home, dataset["version"]) if r["status"] == "Failed" and r["event_published"]), None
    ), timeout=60, poll=0.2)
    time.sleep(2)  # the deploy function has had the event
    figures = load.figures(t_kill - 1, time.monotonic())
    assert failed["error"] == "training worker exited with signal 9 (SIGKILL) without a result"
    assert failed["ended_at"] and not failed["model_dir"]
    # The RunStatusChanged event went out and the deploy function saw it and deployed nothing.
    assert f"run {run['run_id']} ended with status failed: nothing to deploy" in faults.log()
    assert registry_rows(home, "SELECT name, status FROM deployments") == deployments_before
    assert (live_row(home) or {}).get("name") == live_before["name"]
    assert figures["requests"] > 0 and figures["by_status"] == {"200": figures["requests"]} and figures["wrong_answers"] == 0
    shown = next(r for r in faults.stack.status()["runs"] if r["run_id"] == run["run_id"])
    assert shown["status"] == "Failed" and "signal 9" in shown["error"]

    # The next drop trains normally (and deploys: margin -1).
    out = faults.stack.cli("drop", str(write_csv(faults.work / "after.csv", ROWS, 10)), "--name", "after-kill.csv").stdout
    assert "registered as dataset" in out, out
    nxt = wait("the next run to deploy", lambda: (lambda d: d if d and runs_of(home, d["version"])
               and runs_of(home, d["version"])[0]["status"] == "Completed"
               and (live_row(home) or {}).get("run_id") == runs_of(home, d["version"])[0]["run_id"] else None)(
        dataset_of(home, "after-kill.csv")), timeout=300, poll=0.5)
    assert nxt


def test_a_corrupt_model_file_fails_its_checks_and_the_live_model_keeps_serving(faults: Faults, load: Load) -> None:
    home = faults.stack.home
    live = live_row(home)
    assert live
    earlier = registry_rows(
        home, "SELECT * FROM deployments WHERE live_at IS NOT NULL AND run_id != ? ORDER BY live_at DESC", (live["run_id"],)
    )[0]
    load.figures(0.0, time.monotonic())  # the answer checker loads every version seen so far, before the damage
    pkl = Path(earlier["model_dir"]) / "model.pkl"
    pkl.write_bytes(pkl.read_bytes()[: pkl.stat().st_size // 2])
    t0 = time.monotonic()
    out = faults.stack.cli("rollback", "--to", earlier["name"], check=False)
    figures = load.figures(t0, time.monotonic())
    assert out.returncode != 0 and f"{live['name']} keeps serving" in out.stderr, out
    assert "model.pkl does not match the SHA-256 recorded when its run completed: it is damaged" in out.stderr
    failed = registry_rows(home, "SELECT * FROM deployments ORDER BY model_version DESC LIMIT 1")[0]
    assert failed["status"] == "failed" and failed["pid"] is None and "it is damaged" in failed["reason"]
    assert failed["run_id"] == earlier["run_id"] and not (home / "deployments" / failed["name"] / "server.log").exists()
    assert (live_row(home) or {}).get("name") == live["name"]
    assert figures["requests"] > 0 and figures["by_status"] == {"200": figures["requests"]} and figures["wrong_answers"] == 0
    shown = next(d for d in faults.stack.status()["deployments"] if d["name"] == failed["name"])
    assert shown["status"] == "failed" and "damaged" in shown["reason"]


def test_the_stack_killed_between_uploaded_and_registered_processes_the_file_once(faults: Faults) -> None:
    stack = faults.stack
    home = stack.home
    os.kill(stack.proc.pid, signal.SIGSTOP)  # nothing in the stack can pick the file up now
    etag = upload(home, stack.azurite_port, "uploaded-then-killed.csv", faults.csv(11))
    os.killpg(stack.proc.pid, signal.SIGKILL)  # `bankml up` and its worker; Azurite is orphaned
    stack.proc.wait(timeout=10)
    assert dataset_of(home, "uploaded-then-killed.csv") is None
    again = faults.restart()
    d = wait("the file to be registered", lambda: dataset_of(home, "uploaded-then-killed.csv", etag), timeout=90, poll=0.3)
    wait("its run", lambda: runs_of(home, d["version"]), timeout=30, poll=0.3)
    time.sleep(4)  # more scans of incoming/: the file is not taken again
    assert len(runs_of(home, d["version"])) == 1
    assert len(registry_rows(home, "SELECT 1 FROM datasets WHERE content_hash = ?", (d["content_hash"],))) == 1
    incoming = blob_service(home, again.azurite_port).get_container_client("incoming")
    assert incoming.get_blob_client("uploaded-then-killed.csv").exists()  # accepted files stay
    st = again.status()
    assert st["services"]["stack"]["running"] and st["services"]["storage"]["reachable"] is True


KILL_AFTER_REGISTER = '''
import importlib.abc, importlib.util, os, signal, sys

class _KillAfterRegister(importlib.abc.MetaPathFinder):
    """Test fault injection: SIGKILL this process group when ingest is about to submit its run."""

    def find_spec(self, name, path, target=None):
        if name != "shared.ingest_service":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)

            def killed(*args, **kwargs):
                os.killpg(os.getpgrp(), signal.SIGKILL)

            module.submit_pipeline_run = killed

        spec.loader.exec_module = exec_module
        return spec

if os.environ.get("BANKML_TEST_KILL_AFTER_REGISTER") == "1":
    sys.meta_path.insert(0, _KillAfterRegister())
'''


def test_the_stack_killed_between_registered_and_submitted_gets_its_run_at_restart(faults: Faults) -> None:
    home = faults.stack.home
    stop_stack(faults.stack)
    inject = faults.work / "inject"
    inject.mkdir(exist_ok=True)
    (inject / "sitecustomize.py").write_text(textwrap.dedent(KILL_AFTER_REGISTER))
    root = Path(__file__).resolve().parents[2]
    env = {**faults.env, "BANKML_TEST_KILL_AFTER_REGISTER": "1", "PYTHONPATH": f"{inject}:{root}"}
    stack = faults.restart(env)
    etag = upload(home, stack.azurite_port, "registered-then-killed.csv", faults.csv(12))
    assert stack.proc.wait(timeout=90) == -signal.SIGKILL  # ingest registered, then the stack died
    d = dataset_of(home, "registered-then-killed.csv", etag)
    assert d is not None and runs_of(home, d["version"]) == []
    # The blob goes too (say a clean-up job took it): only the start-up sweep can submit the run.
    stopped_azurite = json.loads((home / "stack.json").read_text())["azurite_pid"]
    blob_service(home, stack.azurite_port).get_container_client("incoming").delete_blob("registered-then-killed.csv")
    again = faults.restart()
    assert not pid_alive(stopped_azurite)  # the orphaned Azurite was ended by the new stack
    runs = wait("the swept run", lambda: runs_of(home, d["version"]), timeout=30, poll=0.3)
    assert len(runs) == 1 and runs[0]["trigger"] == "ingest"
    assert f"dataset v{d['version']} (from incoming/registered-then-killed.csv) had no training run" in faults.log()
    time.sleep(3)
    assert len(runs_of(home, d["version"])) == 1
    # And it trains and deploys like any run.
    wait("the swept run to deploy", lambda: (live_row(home) or {}).get("run_id") == runs[0]["run_id"], timeout=300, poll=0.5)
    r = requests.post(
        f"{again.url}/api/score",
        data=json.dumps({"data": json.loads(generate_frame(2, seed=1).drop(columns=["y"]).to_json(orient="records"))}),
        headers={"x-functions-key": again.key(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
