"""The workspace agent of the local stack: takes queued runs, trains each in a worker process
(never inside the function host), and publishes the run's Event Grid event to every subscribed
function, the way an Azure ML workspace's system topic does."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from shared.config import worker_grace_default
from shared.errors import TrainingError
from shared.events import RUN_COMPLETED, RUN_STATUS_CHANGED
from shared.workspace.base import COMPLETED, FAILED, QUEUED, RUNNING
from shared.workspace.local.registry import Registry, utcnow
from shared.workspace.local.worker import DEFAULT_BUDGET_S, run_budget_s

log = logging.getLogger(__name__)

# The local workspace's identity in event topics (what a system topic would carry).
TOPIC = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/Microsoft.MachineLearningServices/workspaces/bankml-local"
EXPERIMENT_ID = "00000000-0000-0000-0000-0000000b4a4c"


def run_event(run: dict[str, Any]) -> EventGridEvent:
    """RunCompleted, or RunStatusChanged with runStatus Failed, in the real Event Grid schema."""
    failed = run["status"] != COMPLETED
    data: dict[str, Any] = {
        "experimentId": EXPERIMENT_ID,
        "experimentName": run["experiment"],
        "runId": run["run_id"],
        "runType": None,
        "runTags": {"dataset_version": str(run["dataset_version"]), "trigger": run["trigger"]},
        "runProperties": {"runTemplate": "automl_parent", "primary_metric": "AUC_weighted"},
    }
    if failed:
        data["runStatus"] = "failed"
        data["runProperties"]["error"] = (run.get("error") or "")[:500]
    return EventGridEvent(
        subject=f"experiments/{EXPERIMENT_ID}/runs/{run['run_id']}",
        event_type=RUN_STATUS_CHANGED if failed else RUN_COMPLETED,
        data=data,
        data_version="",
        topic=TOPIC,
        id=f"{run['run_id']}:{'failed' if failed else 'completed'}",
    )


def worker_exit_reason(code: int) -> str:
    """Why a run failed when its worker ended without recording a result."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"training worker exited with signal {-code} ({name}) without a result"
    return f"training worker exited with code {code} without a result"


def deadline_reason(budget_s: float, grace_s: float) -> str:
    return f"training worker exceeded its time budget of {budget_s:g} s + grace {grace_s:g} s: killed"


class Agent:
    def __init__(self, home: Path, *, system_key: str, poll_s: float = 0.5, grace_s: float | None = None) -> None:
        """``grace_s``: wall-clock seconds a worker may run past its run's time budget before it is
        killed (SIGKILL) and the run fails (setting BANKML_WORKER_GRACE_S); None: max(120, budget)."""
        self.home = home
        self.registry = Registry(home / "registry.sqlite")
        self.system_key = system_key
        self.poll_s = poll_s
        self.grace_s = grace_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bankml-agent", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.send_signal(signal.SIGCONT)  # a stopped worker gets its SIGTERM too
        if self._thread:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.publish_pending()
                self.run_next()
            except Exception:  # noqa: BLE001 - the agent must keep going; the error is logged
                log.exception("agent step failed")
            self._stop.wait(self.poll_s)

    def run_next(self) -> bool:
        queued = [r for r in self.registry.list_runs() if r["status"] == QUEUED]
        if not queued:
            return False
        run = queued[0]
        self.registry.update_run(run["run_id"], status=RUNNING, started_at=utcnow())
        log.info("training run %s on dataset v%d", run["run_id"], run["dataset_version"])
        (self.home / "runs").mkdir(parents=True, exist_ok=True)
        logf = open(self.home / "runs" / f"{run['run_id']}.log", "ab")  # noqa: SIM115 - handed to the worker
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "shared.workspace.local.worker", "--home", str(self.home), "--run-id", run["run_id"]],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(Path(__file__).resolve().parents[3]),
            )
            self.registry.update_run(run["run_id"], worker_pid=self._proc.pid)
            try:
                budget = run_budget_s(run.get("parameters") or {})
            except TrainingError:
                budget = DEFAULT_BUDGET_S  # the worker fails such a run at once

            grace = worker_grace_default(budget) if self.grace_s is None else self.grace_s
            overdue: str | None = None
            try:
                code = self._proc.wait(timeout=budget + grace)
            except subprocess.TimeoutExpired:
                # Hung or stopped (SIGSTOP): SIGKILL works on both and frees any registry lock it held.
                overdue = deadline_reason(budget, grace)
                log.error("run %s: %s (pid %d)", run["run_id"], overdue, self._proc.pid)
                self._proc.kill()
                code = self._proc.wait()
        finally:
            logf.close()
        after = self.registry.get_run(run["run_id"]) or {}
        if after.get("status") not in (COMPLETED, FAILED):
            reason = overdue or worker_exit_reason(code)
            log.error("run %s failed: %s", run["run_id"], reason)
            self.registry.update_run(run["run_id"], status=FAILED, error=reason, ended_at=utcnow())
        self.publish_pending()
        return True

    def publish_pending(self) -> None:
        subs = self.registry.subscriptions()
        if not subs:
            return
        for run in self.registry.list_runs():
            if run["status"] in (COMPLETED, FAILED) and not run["event_published"]:
                event = run_event(run)
                delivered = True
                for name, endpoint in subs.items():
                    try:
                        client = EventGridPublisherClient(endpoint, AzureKeyCredential(self.system_key), retry_total=2)
                        client.send([event], headers={"aeg-event-type": "Notification"})
                        log.info("published %s for run %s to %s", event.event_type, run["run_id"], name)
                    except Exception as err:  # noqa: BLE001 - retried on the next step
                        delivered = False
                        log.warning("could not deliver %s to %s: %s", event.event_type, name, type(err).__name__)
                if delivered:
                    self.registry.update_run(run["run_id"], event_published=1)
