"""The local workspace: versioned datasets, a run queue, AutoML runs and model-server deployments,
all kept in one data dir so that nothing is lost on restart."""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import uuid
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.errors import DeploymentError, NotFound
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
_deploy_lock = threading.Lock()


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

    # -- datasets ------------------------------------------------------------------------
    def register_dataset(self, parsed: Any, *, source_blob: str, etag: str) -> DatasetVersion:
        """Register parsed data as the next version; the same content gives the same version."""
        canonical: bytes = parsed.to_canonical_csv()
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
            tmp.write_bytes(canonical)
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
    def _metric(self, best: dict[str, Any]) -> float | None:
        value = (best.get("metrics") or {}).get(self.settings.primary_metric)
        return float(value) if value is not None else None

    def _record_decision(self, run_id: str, deployed: bool, reason: str) -> None:
        with self.registry.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO decisions (run_id, deployed, reason, at) VALUES (?, ?, ?, ?)",
                (run_id, int(deployed), reason, utcnow()),
            )

    def deploy_run(self, run_id: str) -> DeployDecision:
        """Deploy the run's best model when it passes the gate; the same run deploys once."""
        with _deploy_lock:
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
                reason = f"run is {run['status']}, not Completed with a model"
                self._record_decision(run_id, False, reason)
                return DeployDecision(run_id, False, reason)
            metric_name = self.settings.primary_metric
            candidate = self._metric(run["best"])
            if candidate is None:
                reason = f"run has no held-out {metric_name}"
                self._record_decision(run_id, False, reason)
                return DeployDecision(run_id, False, reason)
            live = self.registry.live_deployment()
            if live is None:
                if candidate < self.settings.min_primary_metric:
                    reason = f"{metric_name} {candidate:.4f} is below the minimum {self.settings.min_primary_metric:.4f}"
                    self._record_decision(run_id, False, reason)
                    return DeployDecision(run_id, False, reason)
                reason = f"first model: {metric_name} {candidate:.4f} >= minimum {self.settings.min_primary_metric:.4f}"
            else:
                live_run = self.registry.get_run(live["run_id"]) or {}
                live_metric = self._metric(live_run.get("best") or {}) or 0.0
                if live_run.get("submitted_at", "") > run["submitted_at"]:
                    reason = f"run is older than the live model's run {live['run_id']}"
                    self._record_decision(run_id, False, reason)
                    return DeployDecision(run_id, False, reason)
                if candidate <= live_metric + self.settings.deploy_margin:
                    reason = (
                        f"{metric_name} {candidate:.4f} does not beat the live {live['name']} "
                        f"({live_metric:.4f}) by more than {self.settings.deploy_margin}"
                    )
                    self._record_decision(run_id, False, reason)
                    return DeployDecision(run_id, False, reason)
                reason = f"{metric_name} {candidate:.4f} beats the live {live['name']} ({live_metric:.4f})"
            try:
                dep = self._start_deployment(run, live)
            except DeploymentError as err:
                self._record_decision(run_id, False, f"deployment failed: {err.message}")
                raise
            self._record_decision(run_id, True, reason)
            return DeployDecision(run_id, True, reason, dep)

    def _start_deployment(self, run: dict[str, Any], live: dict[str, Any] | None) -> Deployment:
        with self.registry.transaction() as db:
            version = int(db.execute("SELECT COALESCE(MAX(model_version), 0) + 1 FROM deployments").fetchone()[0])
            name = f"bankml-v{version}"
            key = secrets.token_urlsafe(32)
            port = servers.free_port()
            insights = db.execute("SELECT 1 FROM insights_requests WHERE run_id = ?", (run["run_id"],)).fetchone()
            db.execute(
                "INSERT INTO deployments (name, run_id, model_version, status, port, key, model_dir, metrics, insights, created_at)"
                " VALUES (?, ?, ?, 'starting', ?, ?, ?, ?, ?, ?)",
                (
                    name, run["run_id"], version, port, key, run["model_dir"],
                    json.dumps(run["best"].get("metrics", {})), int(bool(insights)), utcnow(),
                ),
            )
        if insights:
            self.deploy_dir(name).mkdir(parents=True, exist_ok=True)
            self.insights_flag(name).touch()
        pid = self._spawn(name)
        dep_row = next(x for x in self.registry.list_deployments() if x["name"] == name)
        dep = _deployment(dep_row)
        try:
            servers.check_model_server(dep.scoring_uri, key, pid)
        except DeploymentError as err:
            servers.stop_pid(pid)
            self.registry.update_deployment(name, status="failed", reason=err.message, pid=None)
            log.error("deployment %s failed its checks: %s; the live model keeps serving", name, err.message)
            raise
        now = utcnow()
        with self.registry.transaction() as db:
            if live:
                db.execute("UPDATE deployments SET status = 'retired', retired_at = ? WHERE name = ?", (now, live["name"]))
            db.execute("UPDATE deployments SET status = 'live', live_at = ? WHERE name = ?", (now, name))
        if live:
            # The relay re-reads the live deployment per request, so the old one can drain briefly.
            threading.Timer(2.0, servers.stop_pid, args=(live["pid"],)).start()
        log.info("deployment %s is live (run %s)", name, run["run_id"])
        return _deployment(next(x for x in self.registry.list_deployments() if x["name"] == name))

    def _spawn(self, name: str) -> int:
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
        )
        self.registry.update_deployment(name, pid=pid)
        return pid

    def enable_insights(self, run_id: str) -> str:
        """Turn on request telemetry for the run's deployment (now, or when it is created)."""
        with self.registry.transaction() as db:
            db.execute("INSERT OR IGNORE INTO insights_requests VALUES (?, ?)", (run_id, utcnow()))
        deps = [d for d in self.registry.list_deployments() if d["run_id"] == run_id]
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
    def reconcile(self) -> None:
        """After a restart: restart the live model server, fail what was left half-done."""
        for d in self.registry.list_deployments():
            if d["status"] == "starting":
                servers.stop_pid(d["pid"])
                self.registry.update_deployment(d["name"], status="failed", reason="interrupted by a restart", pid=None)
            elif d["status"] == "live" and not servers.pid_alive(d["pid"]):
                port = d["port"]
                if not servers.port_free(port):
                    port = servers.free_port()
                    self.registry.update_deployment(d["name"], port=port)
                pid = self._spawn(d["name"])
                try:
                    dep = self.live_deployment()
                    assert dep is not None
                    servers.check_model_server(dep.scoring_uri, dep.key, pid)
                    log.info("restarted live deployment %s on port %d", d["name"], port)
                except DeploymentError as err:
                    log.error("live deployment %s could not be restarted: %s", d["name"], err.message)
        for r in self.registry.list_runs():
            if r["status"] == RUNNING and not servers.pid_alive(r["worker_pid"]):
                self.registry.update_run(
                    r["run_id"], status=FAILED, error="training worker ended without a result (restart)", ended_at=utcnow()
                )

    def stop_servers(self) -> None:
        for d in self.registry.list_deployments():
            if d["pid"] and servers.pid_alive(d["pid"]):
                servers.stop_pid(d["pid"])

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
