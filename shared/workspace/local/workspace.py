"""The local workspace: versioned datasets, a run queue, AutoML runs and model-server deployments,
all kept in one data dir so that nothing is lost on restart."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.errors import Conflict, DeploymentError, NotFound
from shared.workspace.base import (
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    DatasetVersion,
    DeployDecision,
    Deployment,
    Run,
)
from shared.workspace.local import servers
from shared.workspace.local.registry import Registry, utcnow

log = logging.getLogger(__name__)

DATASET_NAME = "bankmarketing"
DEPLOY_LOCK_FILE = "deploy.lock"
# After a switch the old server gets no new requests once every relay has re-read the live
# deployment (shared.relay.LIVE_CACHE_S = 0.5 s); then SIGTERM lets it finish what is in flight.
DRAIN_S = 2.0
DRAIN_GRACE_S = 30.0  # the longest a draining server may take to finish its requests
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # supervisor: waits after failed restarts


def _deployment(row: dict[str, Any]) -> Deployment:
    meta_path = Path(row["model_dir"]) / "model.json"
    schema: dict[str, Any] = {}
    if meta_path.exists():
        schema = json.loads(meta_path.read_text())
    return Deployment(
        name=row["name"],
        run_id=row["run_id"],
        model_version=row["model_version"],
        status=row["status"],
        scoring_uri=f"http://127.0.0.1:{row['port']}/score",
        created_at=row["created_at"],
        metrics=row["metrics"],
        insights=row["insights"],
        pid=row["pid"],
        reason=row["reason"],
        key=row["key"],
        schema=schema,
    )


class LocalWorkspace:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(self.home / "registry.sqlite")
        self._restart_failures: dict[str, tuple[int, float]] = {}  # name -> (failures, not before)

    # -- paths ---------------------------------------------------------------------------
    def dataset_dir(self, version: int) -> Path:
        return self.home / "datasets" / f"v{version}"

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def deploy_dir(self, name: str) -> Path:
        return self.home / "deployments" / name

    def telemetry_file(self, name: str) -> Path:
        return self.deploy_dir(name) / "telemetry.jsonl"

    def insights_flag(self, name: str) -> Path:
        return self.deploy_dir(name) / "insights.on"

    def metrics_file(self, name: str) -> Path:
        return self.deploy_dir(name) / "metrics.jsonl"

    def server_log(self, name: str) -> Path:
        return self.deploy_dir(name) / "server.log"

    # -- datasets ------------------------------------------------------------------------
    def register_dataset(self, parsed: Any, *, source_blob: str, etag: str) -> DatasetVersion:
        """Register parsed data as the next version; the same content gives the same version."""
        warnings = self._drift_warnings(parsed.profile)
        with self.registry.transaction() as db:
            row = db.execute("SELECT * FROM datasets WHERE content_hash = ?", (parsed.content_hash,)).fetchone()
            if row:
                d = self.registry.dataset_row(row)
                return self._dataset(d, created=False)
            version = int(db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM datasets").fetchone()[0])
            target = self.dataset_dir(version)
            target.mkdir(parents=True, exist_ok=True)
            tmp = target / "data.csv.tmp"
            with open(tmp, "wb") as out:
                # Piece by piece: a million-row file is never joined into one more copy in memory.
                parsed.write_canonical(out)
            os.replace(tmp, target / "data.csv")
            db.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    version,
                    DATASET_NAME,
                    parsed.content_hash,
                    source_blob,
                    etag,
                    int(parsed.rows),
                    str(target / "data.csv"),
                    json.dumps(parsed.column_types),
                    json.dumps(parsed.class_balance),
                    json.dumps(parsed.profile, default=str),
                    json.dumps(warnings),
                    utcnow(),
                ),
            )
            row = db.execute("SELECT * FROM datasets WHERE version = ?", (version,)).fetchone()
        log.info("registered dataset %s v%d (%d rows) from %s", DATASET_NAME, version, parsed.rows, source_blob)
        return self._dataset(self.registry.dataset_row(row), created=True)

    def _drift_warnings(self, profile: dict[str, Any]) -> list[str]:
        live = self.registry.live_deployment()
        if not live:
            return []
        run = self.registry.get_run(live["run_id"])
        ref = self.registry.get_dataset(run["dataset_version"]) if run else None
        if not ref:
            return []
        try:
            from shared.ingest import drift_warnings
        except ImportError:  # pragma: no cover - ingest always ships with the app
            return []
        return list(drift_warnings(profile, ref["profile"]))

    @staticmethod
    def _dataset(d: dict[str, Any], *, created: bool) -> DatasetVersion:
        return DatasetVersion(
            name=d["name"],
            version=d["version"],
            content_hash=d["content_hash"],
            source_blob=d["source_blob"],
            etag=d["etag"],
            rows=d["rows"],
            created_at=d["created_at"],
            column_types=d["column_types"],
            class_balance=d["class_balance"],
            profile=d["profile"],
            warnings=d["warnings"],
            created=created,
        )

    # -- runs ----------------------------------------------------------------------------
    def submit_run(self, dataset_version: int, *, trigger: str, parameters: dict[str, Any] | None = None) -> Run:
        """Queue an AutoML run. Ingest submits at most one run per dataset version, so a retry
        after a crash between "registered" and "submitted" completes the work exactly once."""
        if not self.registry.get_dataset(dataset_version):
            raise NotFound(f"dataset version {dataset_version} does not exist", field="dataset_version", value=dataset_version)
        params = {"time_budget_s": self.settings.time_budget_s, **(parameters or {})}
        with self.registry.transaction() as db:
            if trigger == "ingest":
                row = db.execute(
                    "SELECT * FROM runs WHERE dataset_version = ? AND trigger = 'ingest'", (dataset_version,)
                ).fetchone()
                if row:
                    return self._run(self.registry.run_row(row), created=False)
            run_id = f"AutoML_{uuid.uuid4()}"
            db.execute(
                "INSERT INTO runs (run_id, experiment, dataset_version, trigger, status, parameters, submitted_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, self.settings.experiment_name, dataset_version, trigger, QUEUED, json.dumps(params), utcnow()),
            )
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        log.info("submitted run %s on dataset v%d (%s)", run_id, dataset_version, trigger)
        return self._run(self.registry.run_row(row), created=True)

    def get_run(self, run_id: str) -> Run:
        row = self.registry.get_run(run_id)
        if not row:
            raise NotFound(f"run {run_id} does not exist", field="run_id", value=run_id)
        return self._run(row, created=False)

    def is_own_run(self, run_id: str, experiment: str | None) -> bool:
        row = self.registry.get_run(run_id)
        if not row:
            return False
        return experiment is None or experiment == row["experiment"]

    @staticmethod
    def _run(d: dict[str, Any], *, created: bool) -> Run:
        return Run(
            run_id=d["run_id"],
            experiment=d["experiment"],
            dataset_version=d["dataset_version"],
            status=d["status"],
            submitted_at=d["submitted_at"],
            trigger=d["trigger"],
            parameters=d["parameters"],
            started_at=d["started_at"],
            ended_at=d["ended_at"],
            error=d["error"],
            best=d["best"],
            created=created,
        )

    # -- deployments ---------------------------------------------------------------------
    # The gate (champion/challenger), blue/green switches, rollback and supervision. Every change
    # of what is live happens under one file lock in the data dir, so that function-host threads,
    # the stack's supervisor and a `bankml rollback` process never interleave.
    @contextmanager
    def _deploy_guard(self, *, blocking: bool = True) -> Iterator[bool]:
        # flock conflicts between separate open() calls even within one process, so one lock
        # covers threads and processes alike.
        with open(self.home / DEPLOY_LOCK_FILE, "a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _metric(self, best: dict[str, Any]) -> float | None:
        value = (best.get("metrics") or {}).get(self.settings.primary_metric)
        return float(value) if value is not None else None

    def _record_decision(self, run_id: str, deployed: bool, reason: str) -> None:
        with self.registry.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO decisions (run_id, deployed, reason, at) VALUES (?, ?, ?, ?)",
                (run_id, int(deployed), reason, utcnow()),
            )

    def _refuse(self, run_id: str, reason: str) -> DeployDecision:
        self._record_decision(run_id, False, reason)
        log.info("run %s not deployed: %s", run_id, reason)
        return DeployDecision(run_id, False, reason)

    def _newest_deployed_run(self) -> dict[str, Any] | None:
        """The most recently submitted run whose model was ever live (rollbacks included)."""
        newest: dict[str, Any] | None = None
        for d in self.registry.list_deployments():
            if not d.get("live_at"):
                continue
            r = self.registry.get_run(d["run_id"])
            if r and (newest is None or r["submitted_at"] > newest["submitted_at"]):
                newest = r
        return newest

    def deploy_run(self, run_id: str) -> DeployDecision:
        """Deploy the run's best model when it passes the gate; the same run is decided once.

        The gate, in order: the run completed with a model; its held-out primary metric reaches
        BANKML_MIN_PRIMARY_METRIC; it is not older than the newest run ever deployed (events come
        late and out of order); and, with a live model, it beats the live one by more than
        BANKML_DEPLOY_MARGIN when both are scored on the same rows: the held-out split of the
        candidate's dataset, which the candidate never trained on (see ``_compare_on_heldout``).
        """
        with self._deploy_guard():
            for d in self.registry.decisions():
                if d["run_id"] == run_id:
                    dep = next((x for x in self.registry.list_deployments() if x["run_id"] == run_id), None)
                    return DeployDecision(
                        run_id, bool(d["deployed"]), d["reason"], _deployment(dep) if dep else None, duplicate=True
                    )
            run = self.registry.get_run(run_id)
            if not run:
                raise NotFound(f"run {run_id} does not exist", field="run_id", value=run_id)
            if run["status"] != COMPLETED or not run["model_dir"]:
                return self._refuse(run_id, f"run is {run['status']}, not Completed with a model")
            metric_name = self.settings.primary_metric
            candidate = self._metric(run["best"])
            if candidate is None:
                return self._refuse(run_id, f"run has no held-out {metric_name}")
            minimum = self.settings.min_primary_metric
            if candidate < minimum:
                return self._refuse(run_id, f"{metric_name} {candidate:.4f} is below the minimum {minimum:.4f}")
            newest = self._newest_deployed_run()
            if newest and newest["run_id"] != run_id and newest["submitted_at"] > run["submitted_at"]:
                return self._refuse(
                    run_id,
                    f"run was submitted before run {newest['run_id']}, whose model was already deployed: "
                    "a late or out-of-order event never replaces a newer model with an older one",
                )
            live = self.registry.live_deployment()
            if live is None:
                reason = f"first model: {metric_name} {candidate:.4f} >= minimum {minimum:.4f}"
            else:
                better, reason = self._compare_on_heldout(run, live)
                if not better:
                    return self._refuse(run_id, reason)
            try:
                dep = self._start_deployment(run["run_id"], run["model_dir"], run["best"], live, why=f"run {run_id}")
            except DeploymentError as err:
                self._record_decision(run_id, False, f"deployment failed: {err.message}")
                raise
            self._record_decision(run_id, True, reason)
            return DeployDecision(run_id, True, reason, dep)

    def _compare_on_heldout(self, run: dict[str, Any], live: dict[str, Any]) -> tuple[bool, str]:
        """Candidate vs live model on the same rows; (better, reason).

        The rows are the held-out split of the candidate's dataset, drawn exactly as training drew
        it (same reader, fraction and fixed seed), so the candidate's score here is its recorded
        held-out metric. The live model may have trained on some of these rows when its dataset
        overlaps the candidate's: that favours the live model, so the error is on the safe side
        (a better model may wait for the next run; a worse one never replaces the live one).
        When the models cannot be re-scored (a file is missing or does not load) the recorded
        metrics decide and the reason says so; a candidate that cannot load then fails its
        blue/green checks and the live model keeps serving.
        """
        metric_name = self.settings.primary_metric
        margin = self.settings.deploy_margin
        try:
            cand, champ, rows = self._score_on_heldout(run, [run["model_dir"], live["model_dir"]])
            basis = f"on the same {rows} held-out rows of dataset v{run['dataset_version']}"
            recorded = self._metric(run["best"])
            if recorded is not None and abs(recorded - cand) > 1e-6:
                log.warning(
                    "run %s scores %s %.6f on its held-out rows now but recorded %.6f: the split or the data changed",
                    run["run_id"], metric_name, cand, recorded,
                )
        except Exception as err:  # noqa: BLE001 - any load/read failure falls back, with the reason
            log.warning("could not re-score run %s and %s on the same rows: %s", run["run_id"], live["name"], err)
            cand = self._metric(run["best"]) or 0.0
            live_run = self.registry.get_run(live["run_id"]) or {}
            champ = self._metric(live_run.get("best") or {}) or 0.0
            basis = f"on their own recorded held-out metrics (not re-scored: {type(err).__name__}: {str(err)[:160]})"
        if cand <= champ + margin:
            return False, (
                f"{metric_name} {cand:.4f} does not beat the live {live['name']} ({champ:.4f}) "
                f"by more than {margin:g} {basis}"
            )
        return True, f"{metric_name} {cand:.4f} beats the live {live['name']} ({champ:.4f}) by more than {margin:g} {basis}"

    def _score_on_heldout(self, run: dict[str, Any], model_dirs: list[str]) -> tuple[float, float, int]:
        import numpy as np
        from sklearn.model_selection import train_test_split

        from shared.workspace.local import training

        dataset = self.registry.get_dataset(run["dataset_version"])
        if not dataset:
            raise NotFound(f"dataset version {run['dataset_version']} is missing", field="dataset_version")
        # The same reader and split as training.train (label "y", as the training worker uses).
        frame, y = training._read_dataset(Path(dataset["path"]), "y")
        _, heldout = train_test_split(
            np.arange(len(y)), test_size=training.HOLDOUT_FRACTION, stratify=y, random_state=training.HOLDOUT_SEED
        )
        rows, truth = frame.iloc[heldout], y[heldout]
        scores = []
        for model_dir in model_dirs:
            model = training.load_model(model_dir)
            p_yes = model.predict_matrix(model.spec.encode_frame(rows))
            metrics = training._heldout_metrics(truth, p_yes, model.threshold)
            if self.settings.primary_metric not in metrics:
                raise KeyError(f"training does not compute {self.settings.primary_metric}")
            scores.append(float(metrics[self.settings.primary_metric]))
        return scores[0], scores[1], len(heldout)

    def _start_deployment(
        self,
        run_id: str,
        model_dir: str,
        best: dict[str, Any],
        live: dict[str, Any] | None,
        *,
        why: str,
        insights: bool | None = None,
    ) -> Deployment:
        """Blue/green: start a new server beside the live one, check it, switch, drain the old one.

        Call with the deploy guard held. If the new server fails its liveness or its real scoring
        request, it is stopped, recorded as failed with the reason, and the live one keeps serving.
        """
        with self.registry.transaction() as db:
            version = int(db.execute("SELECT COALESCE(MAX(model_version), 0) + 1 FROM deployments").fetchone()[0])
            name = f"bankml-v{version}"
            key = secrets.token_urlsafe(32)
            port = servers.free_port()
            if insights is None:
                insights = bool(db.execute("SELECT 1 FROM insights_requests WHERE run_id = ?", (run_id,)).fetchone())
            db.execute(
                "INSERT INTO deployments (name, run_id, model_version, status, port, key, model_dir, metrics, insights, reason, created_at)"
                " VALUES (?, ?, ?, 'starting', ?, ?, ?, ?, ?, ?, ?)",
                (
                    name, run_id, version, port, key, model_dir,
                    json.dumps(best.get("metrics", {})), int(insights), why, utcnow(),
                ),
            )
        if insights:
            self.deploy_dir(name).mkdir(parents=True, exist_ok=True)
            self.insights_flag(name).touch()
        pid = self._spawn(name, why=why)
        dep_row = next(x for x in self.registry.list_deployments() if x["name"] == name)
        dep = _deployment(dep_row)
        try:
            servers.check_model_server(dep.scoring_uri, key, pid)
        except DeploymentError as err:
            servers.stop_pid(pid)
            self.registry.update_deployment(name, status="failed", reason=f"{why}: {err.message}", pid=None)
            log.error("deployment %s failed its checks: %s; the live model keeps serving", name, err.message)
            raise
        now = utcnow()
        with self.registry.transaction() as db:
            if live:
                db.execute("UPDATE deployments SET status = 'draining', retired_at = ? WHERE name = ?", (now, live["name"]))
            db.execute("UPDATE deployments SET status = 'live', live_at = ? WHERE name = ?", (now, name))
        if live:
            # Every relay re-reads the live deployment within LIVE_CACHE_S, so after DRAIN_S nobody
            # sends the old server new requests; SIGTERM then lets it finish those in flight. Not a
            # daemon thread: a `bankml rollback` process waits for the drain before it exits.
            threading.Timer(DRAIN_S, self._drain, args=(live["name"], live["pid"])).start()
        log.info("deployment %s is live (%s)", name, why)
        return _deployment(next(x for x in self.registry.list_deployments() if x["name"] == name))

    def _drain(self, name: str, pid: int | None) -> None:
        try:
            servers.stop_model_server(pid, name, grace_s=DRAIN_GRACE_S)
        finally:
            row = next((d for d in self.registry.list_deployments() if d["name"] == name), None)
            if row and row["status"] == "draining":
                self.registry.update_deployment(name, status="retired", pid=None)
            log.info("deployment %s drained and stopped", name)

    def _spawn(self, name: str, *, why: str = "deploy") -> int:
        row = next(x for x in self.registry.list_deployments() if x["name"] == name)
        pid = servers.start_model_server(
            model_dir=Path(row["model_dir"]),
            port=row["port"],
            name=name,
            version=row["model_version"],
            key=row["key"],
            deploy_dir=self.deploy_dir(name),
            telemetry_file=self.telemetry_file(name),
            insights_flag=self.insights_flag(name),
            metrics_file=self.metrics_file(name),
            why=why,
        )
        self.registry.update_deployment(name, pid=pid)
        return pid

    def rollback(self, to: str | None = None) -> Deployment:
        """Put the previous model back (or deployment ``to``'s model) through the same blue/green path.

        "Previous" is the deployment that was live before the current one with a different run,
        so two rollbacks in a row return to where they started (like ``cd -``). The gate does not
        apply (an operator decides), the checks do: a model that fails them is not switched to.
        """
        with self._deploy_guard():
            live = self.registry.live_deployment()
            if live is None:
                raise Conflict("no model is live, so there is nothing to roll back from")
            deps = self.registry.list_deployments()
            if to:
                target = next((d for d in deps if d["name"] == to), None)
                if target is None:
                    names = ", ".join(d["name"] for d in deps if d.get("live_at")) or "none"
                    raise NotFound(f"no deployment named {to!r} (deployments that were live: {names})", field="to", value=to)
                if not target.get("live_at"):
                    raise Conflict(f"{to} was never live (status {target['status']}): roll back only to a model that served", field="to", value=to)
                if target["name"] == live["name"]:
                    raise Conflict(f"{to} is the live deployment already", field="to", value=to)
            else:
                earlier = [
                    d for d in deps
                    if d.get("live_at") and d["live_at"] < live["live_at"] and d["run_id"] != live["run_id"]
                ]
                if not earlier:
                    raise Conflict(f"{live['name']} is the first model that was live: there is no previous one")
                target = max(earlier, key=lambda d: d["live_at"])
            run = self.registry.get_run(target["run_id"]) or {"best": {"metrics": target["metrics"]}}
            why = f"rollback from {live['name']} to the model of {target['name']} (run {target['run_id']})"
            log.info("%s", why)
            return self._start_deployment(
                target["run_id"], target["model_dir"], run.get("best") or {}, live,
                why=why, insights=bool(target["insights"] or live["insights"]),
            )

    def enable_insights(self, run_id: str) -> str:
        """Turn on request telemetry for the run's deployments (now, or when one is created)."""
        with self.registry.transaction() as db:
            db.execute("INSERT OR IGNORE INTO insights_requests VALUES (?, ?)", (run_id, utcnow()))
        deps = [d for d in self.registry.list_deployments() if d["run_id"] == run_id and d["status"] != "failed"]
        for d in deps:
            self.deploy_dir(d["name"]).mkdir(parents=True, exist_ok=True)
            self.insights_flag(d["name"]).touch()
            self.registry.update_deployment(d["name"], insights=1)
        if deps:
            return f"telemetry on for {', '.join(d['name'] for d in deps)}"
        return "telemetry will be on when the run's model deploys"

    def live_deployment(self) -> Deployment | None:
        row = self.registry.live_deployment()
        return _deployment(row) if row else None

    # -- lifecycle (used by `bankml up`) -------------------------------------------------
    def _restart_live(self, row: dict[str, Any], *, why: str) -> bool:
        """Start the live deployment's server again (same port when free); True when it passed."""
        name = row["name"]
        if not servers.port_free(row["port"]):
            self.registry.update_deployment(name, port=servers.free_port())
        pid = self._spawn(name, why=why)
        dep = _deployment(next(x for x in self.registry.list_deployments() if x["name"] == name))
        try:
            servers.check_model_server(dep.scoring_uri, dep.key, pid)
        except DeploymentError as err:
            servers.stop_pid(pid)
            self.registry.update_deployment(name, pid=None)
            log.error("live deployment %s could not be restarted: %s", name, err.message)
            return False
        self.registry.update_deployment(name, reason=f"{why} at {utcnow()}")
        log.info("restarted live deployment %s at %s (%s)", name, dep.scoring_uri, why)
        return True

    def supervise(self) -> str | None:
        """One supervisor step: restart the live model server if it has died (with back-off when a
        restart fails). Skips the step while a deployment or rollback holds the lock."""
        row = self.registry.live_deployment()
        if row is None or servers.is_model_server(row["pid"], row["name"]):
            if row is not None:
                self._restart_failures.pop(row["name"], None)
            return None
        name = row["name"]
        failures, not_before = self._restart_failures.get(name, (0, 0.0))
        if time.monotonic() < not_before:
            return None
        with self._deploy_guard(blocking=False) as locked:
            if not locked:
                return None
            row = self.registry.live_deployment()
            if row is None or row["name"] != name or servers.is_model_server(row["pid"], name):
                return None
            log.warning("live model server %s (pid %s) is not running: restarting it", name, row["pid"])
            if self._restart_live(row, why="supervisor: the server had exited"):
                self._restart_failures.pop(name, None)
                return name
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            self._restart_failures[name] = (failures + 1, time.monotonic() + delay)
            return None

    def reconcile(self) -> None:
        """After a restart: restart the live model server, settle what was left half-done."""
        with self._deploy_guard():
            for d in self.registry.list_deployments():
                running = servers.is_model_server(d["pid"], d["name"])
                if d["status"] == "starting":
                    if running:
                        servers.stop_pid(d["pid"])
                    self.registry.update_deployment(d["name"], status="failed", reason="interrupted by a restart", pid=None)
                elif d["status"] == "live":
                    if not running:
                        self._restart_live(d, why="restart of the local stack")
                elif running:  # draining, retired or failed, yet still serving: a leftover
                    servers.stop_pid(d["pid"], grace_s=DRAIN_GRACE_S)
                    self.registry.update_deployment(d["name"], pid=None)
                if d["status"] == "draining":
                    self.registry.update_deployment(d["name"], status="retired", pid=None)
        for r in self.registry.list_runs():
            if r["status"] == RUNNING and not servers.pid_alive(r["worker_pid"]):
                self.registry.update_run(
                    r["run_id"], status=FAILED, error="training worker ended without a result (restart)", ended_at=utcnow()
                )

    def stop_servers(self) -> None:
        """Stop every model server of this data dir (statuses stay: `bankml up` restarts the live one)."""
        for d in self.registry.list_deployments():
            servers.stop_model_server(d["pid"], d["name"])

    # -- views ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        runs = []
        for r in self.registry.list_runs():
            r = dict(r)
            r.pop("worker_pid", None)
            r["child_runs"] = len(self.registry.child_runs(r["run_id"]))
            runs.append(r)
        deployments = []
        for d in self.registry.list_deployments():
            d = dict(d)
            d.pop("key", None)
            d["scoring_uri"] = f"http://127.0.0.1:{d['port']}/score"
            deployments.append(d)
        live = self.registry.live_deployment()
        return {
            "home": str(self.home),
            "datasets": self.registry.list_datasets(),
            "runs": runs,
            "deployments": deployments,
            "decisions": self.registry.decisions(),
            "live": live["name"] if live else None,
        }
