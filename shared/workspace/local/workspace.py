"""The local workspace: versioned datasets, a run queue, AutoML runs and model-server deployments,
all kept in one data dir so that nothing is lost on restart."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.errors import Conflict, DeploymentError, NotFound
from shared.files import write_atomic
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
STANDBY_FILE = "standby.json"
STANDBY_START_S = 120.0  # a standby not answering by then is stopped and started again later
STANDBY_RETRY_S = 30.0  # after a standby failed to start
SERVICE_PROBE_S = 1.0  # `bankml status`: how long a probe of storage or the live server may take
SERVICES_CACHE_S = 2.0


def verify_model_files(model_dir: str | Path, checksums: dict[str, str] | None) -> None:
    """Raise DeploymentError when a model file is missing or differs from the SHA-256 recorded
    when the run completed: a file damaged on disk may still load and answer wrongly, so no
    server is started on it. Runs recorded without checksums are not checked here (the server's
    own start and scoring checks still apply)."""
    if not checksums:
        return
    from shared.workspace.local.worker import model_checksums

    now = model_checksums(Path(model_dir))
    for name, expected in sorted(checksums.items()):
        if name not in now:
            raise DeploymentError(f"model file {name} is missing from {model_dir}", field=name)
        if now[name] != expected:
            raise DeploymentError(
                f"model file {name} does not match the SHA-256 recorded when its run completed: it is damaged",
                field=name, value=now[name][:16], expected=expected[:16],
            )


def probe_storage(port: int, *, timeout_s: float = SERVICE_PROBE_S) -> dict[str, Any]:
    """Whether the blob service on ``port`` answers HTTP (any status: it needs no key to say no)."""
    import requests

    endpoint = f"http://127.0.0.1:{port}"
    try:
        requests.get(endpoint + "/", timeout=timeout_s)
    except requests.Timeout:
        return {"reachable": False, "endpoint": endpoint, "detail": f"storage unreachable: no answer within {timeout_s:g} s"}
    except requests.RequestException as err:
        return {"reachable": False, "endpoint": endpoint, "detail": f"storage unreachable: {type(err).__name__}"}
    return {"reachable": True, "endpoint": endpoint, "detail": "answers"}


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
        self._probe_failures: dict[str, int] = {}  # name -> failed health checks in a row
        self._services_cache: tuple[float, dict[str, Any]] | None = None
        self._standby: dict[str, dict[str, Any]] = {}  # live deployment -> its warm standby (pid, port, ready)
        self._standby_failures: dict[str, tuple[int, float]] = {}

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
            outside = self._outside_store(run["model_dir"])
            if outside:
                return self._refuse(run_id, outside)
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
            # Checked before it is loaded here, in this process: a damaged pickle can abort the
            # interpreter (LightGBM's loader calls abort() on a bad model string), and this is
            # the function host. A damaged file raises instead, and the gate falls back to the
            # recorded metrics; the deployment's own checks then refuse the file.
            self._check_model_files(model_dir)
            model = training.load_model(model_dir)
            p_yes = model.predict_matrix(model.spec.encode_frame(rows))
            metrics = training._heldout_metrics(truth, p_yes, model.threshold)
            if self.settings.primary_metric not in metrics:
                raise KeyError(f"training does not compute {self.settings.primary_metric}")
            scores.append(float(metrics[self.settings.primary_metric]))
        return scores[0], scores[1], len(heldout)

    def store_model(self, run_id: str, model_dir: str | Path) -> Path:
        """Copy a model trained elsewhere (a benchmark's, a test's) to where the training worker
        writes a run's model, ``<home>/runs/<run>/model``, and return that path: the only
        place models are served from. No copy when it is already there."""
        dest = self.run_dir(run_id) / "model"
        source = Path(model_dir).resolve()
        if source == dest.resolve():
            return dest
        if dest.resolve().is_relative_to(source):
            # copytree would copy the folder into itself until the path is too long.
            raise DeploymentError(
                f"model dir {model_dir} holds the workspace's model store: name the model's own folder",
                field="model_dir",
            )
        shutil.copytree(source, dest, dirs_exist_ok=True)
        return dest

    def _outside_store(self, model_dir: str | Path) -> str | None:
        """Why ``model_dir`` may not be served, or None: models are loaded only from this
        workspace's own store (``<home>/runs/``), never from a path named anywhere else."""
        store = (self.home / "runs").resolve()
        if Path(model_dir).resolve().is_relative_to(store):
            return None
        return f"model dir {model_dir} is outside the workspace's model store {store}: refused"

    def _check_model_files(self, model_dir: str | Path) -> None:
        """Before any server or the gate loads a model: inside the store, files as recorded."""
        outside = self._outside_store(model_dir)
        if outside:
            raise DeploymentError(outside, field="model_dir")
        verify_model_files(model_dir, self._recorded_checksums(model_dir))

    def _recorded_checksums(self, model_dir: str | Path) -> dict[str, str] | None:
        """The SHA-256 of the files in ``model_dir`` as recorded by the run that wrote them."""
        for r in self.registry.list_runs():
            if r["model_dir"] and Path(r["model_dir"]) == Path(model_dir):
                return (r.get("best") or {}).get("checksums")
        return None

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
        pid: int | None = None
        try:
            pid = self._spawn(name, why=why)
            dep = _deployment(next(x for x in self.registry.list_deployments() if x["name"] == name))
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
        """Start deployment ``name``'s server (after checking its model files); returns its PID."""
        row = next(x for x in self.registry.list_deployments() if x["name"] == name)
        self._check_model_files(row["model_dir"])
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
        pid: int | None = None
        try:
            pid = self._spawn(name, why=why)
            dep = _deployment(next(x for x in self.registry.list_deployments() if x["name"] == name))
            servers.check_model_server(dep.scoring_uri, dep.key, pid)
        except DeploymentError as err:
            servers.stop_pid(pid)
            # Recorded where `bankml status` shows it; the supervisor tries again with back-off.
            self.registry.update_deployment(name, pid=None, reason=f"{why}; the restart failed at {utcnow()}: {err.message}")
            log.error("live deployment %s could not be restarted: %s", name, err.message)
            return False
        self.registry.update_deployment(name, reason=f"{why} at {utcnow()}")
        log.info("restarted live deployment %s at %s (%s)", name, dep.scoring_uri, why)
        return True

    def supervise(self) -> str | None:
        """One supervisor step for the live model server.

        * Dead (exited, killed), or hung (BANKML_LIVENESS_FAILURES health checks in a row not
          answered within BANKML_LIVENESS_TIMEOUT_S: it is killed first): its warm standby takes
          the traffic at once when there is a ready one (BANKML_WARM_STANDBY), else the server is
          restarted; a failed restart is retried with back-off.
        * Healthy: a warm standby is started when there is none, and checked until it is ready.

        Skips the step while a deployment or rollback holds the lock. Returns the name of the
        deployment recovered in this step, else None."""
        row = self.registry.live_deployment()
        self._retire_standbys(keep=row["name"] if row and self.settings.warm_standby else None)
        if row is None:
            return None
        name = row["name"]
        hung: str | None = None
        if servers.is_model_server(row["pid"], name):
            self._restart_failures.pop(name, None)
            problem = servers.probe_model_server(
                f"http://127.0.0.1:{row['port']}", timeout_s=self.settings.liveness_timeout_s
            )
            if problem is None:
                self._probe_failures.pop(name, None)
                if self.settings.warm_standby:
                    self._tend_standby(row)
                return None
            failed = self._probe_failures.get(name, 0) + 1
            self._probe_failures[name] = failed
            log.warning(
                "live model server %s (pid %s) failed its health check (%d of %d in a row): %s",
                name, row["pid"], failed, self.settings.liveness_failures, problem,
            )
            if failed < self.settings.liveness_failures:
                return None
            hung = f"{failed} health checks in a row failed (last: {problem})"
        failures, not_before = self._restart_failures.get(name, (0, 0.0))
        standby = self._ready_standby(name)
        if hung is None and standby is None and time.monotonic() < not_before:
            return None
        with self._deploy_guard(blocking=False) as locked:
            if not locked:
                return None
            current = self.registry.live_deployment()
            if current is None or current["name"] != name:
                return None
            if hung is not None:
                if current["pid"] != row["pid"]:
                    return None  # replaced meanwhile
                servers.kill_model_server(current["pid"], name)
                self.registry.update_deployment(name, pid=None)
                self._probe_failures.pop(name, None)
                why = f"supervisor: the server was hung ({hung}) and was killed"
            elif servers.is_model_server(current["pid"], name):
                return None
            else:
                why = "supervisor: the server had exited"
            if standby is not None and self._promote_standby(current, standby, why=why):
                self._restart_failures.pop(name, None)
                return name
            log.warning("live model server %s (pid %s): %s; restarting it", name, current["pid"], why)
            if self._restart_live(current, why=why):
                self._restart_failures.pop(name, None)
                return name
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            self._restart_failures[name] = (failures + 1, time.monotonic() + delay)
            return None

    # -- warm standby (local backend) ---------------------------------------------------------
    # A second server of the live deployment, on its own port, loaded and answering its health
    # check, but sent no traffic. Kept in this process's memory and in <deploy dir>/standby.json (so that a stack
    # killed with SIGKILL leaves nothing behind: reconcile stops it), never in the registry.
    def _standby_file(self, name: str) -> Path:
        return self.deploy_dir(name) / STANDBY_FILE

    def _tend_standby(self, row: dict[str, Any]) -> None:
        """Start the live deployment's standby when it has none; check a starting one."""
        name = row["name"]
        sb = self._standby.get(name)
        if sb is not None and not servers.is_model_server(sb["pid"], name):
            log.warning("warm standby of %s (pid %s) exited; starting another", name, sb["pid"])
            self._drop_standby(name)
            sb = None
        if sb is None:
            failures, not_before = self._standby_failures.get(name, (0, 0.0))
            if time.monotonic() < not_before:
                return
            try:
                self._check_model_files(row["model_dir"])
            except DeploymentError as err:
                log.error("no warm standby for %s: %s", name, err.message)
                self._standby_failures[name] = (failures + 1, time.monotonic() + STANDBY_RETRY_S)
                return
            port = servers.free_port()
            pid = servers.start_model_server(
                model_dir=Path(row["model_dir"]), port=port, name=name, version=row["model_version"], key=row["key"],
                deploy_dir=self.deploy_dir(name), telemetry_file=self.telemetry_file(name),
                insights_flag=self.insights_flag(name), metrics_file=self.metrics_file(name),
                why="supervisor: warm standby", standby=True,
            )
            self._standby[name] = {"pid": pid, "port": port, "ready": False, "since": time.monotonic()}
            write_atomic(self._standby_file(name), json.dumps({"pid": pid, "port": port}))
            return
        if sb["ready"]:
            return
        base = f"http://127.0.0.1:{sb['port']}"
        if servers.probe_model_server(base, timeout_s=self.settings.liveness_timeout_s) is not None:
            if time.monotonic() - sb["since"] > STANDBY_START_S:
                log.error("warm standby of %s did not start within %.0f s; trying again later", name, STANDBY_START_S)
                self._drop_standby(name)
                failures, _ = self._standby_failures.get(name, (0, 0.0))
                self._standby_failures[name] = (failures + 1, time.monotonic() + STANDBY_RETRY_S)
            return
        # Answering its health check means the model has loaded (the server loads it before it
        # listens) and the same model already passed its scoring check when it was deployed. No
        # scoring request here: it would show in the deployment's request telemetry.
        sb["ready"] = True
        write_atomic(self._standby_file(name), json.dumps({"pid": sb["pid"], "port": sb["port"], "ready": True}))
        self._standby_failures.pop(name, None)
        log.info("warm standby of %s is ready (pid %s, port %s)", name, sb["pid"], sb["port"])

    def _ready_standby(self, name: str) -> dict[str, Any] | None:
        sb = self._standby.get(name)
        if sb is None or not sb["ready"]:
            return None
        if not servers.is_model_server(sb["pid"], name):
            self._drop_standby(name)
            return None
        return sb

    def _promote_standby(self, row: dict[str, Any], sb: dict[str, Any], *, why: str) -> bool:
        """The standby becomes the live server (the relay sees its port within LIVE_CACHE_S)."""
        name = row["name"]
        if servers.probe_model_server(f"http://127.0.0.1:{sb['port']}", timeout_s=self.settings.liveness_timeout_s):
            self._drop_standby(name)  # it does not answer either: restart instead
            return False
        self._standby.pop(name, None)
        self._standby_file(name).unlink(missing_ok=True)
        self.registry.update_deployment(
            name, pid=sb["pid"], port=sb["port"], reason=f"{why}; its warm standby took over at {utcnow()}"
        )
        log.warning("live model server %s: %s; its warm standby (pid %s, port %s) took over", name, why, sb["pid"], sb["port"])
        return True

    def _drop_standby(self, name: str) -> None:
        sb = self._standby.pop(name, None)
        if sb is not None:
            servers.stop_model_server(sb["pid"], name, grace_s=2.0)
        self._standby_file(name).unlink(missing_ok=True)

    def _retire_standbys(self, keep: str | None) -> None:
        """Stop the standbys of deployments that are not live any more (or all: ``keep`` None)."""
        for name in [n for n in self._standby if n != keep]:
            log.info("stopping the warm standby of %s", name)
            self._drop_standby(name)

    def _stop_leftover_standbys(self) -> None:
        """Standbys recorded by a stack that did not shut down (SIGKILL): stop them."""
        root = self.home / "deployments"
        for path in root.glob(f"*/{STANDBY_FILE}") if root.exists() else []:
            name = path.parent.name
            if name in self._standby:
                continue
            try:
                pid = int(json.loads(path.read_text())["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                pid = 0
            if pid and servers.stop_model_server(pid, name, grace_s=2.0):
                log.warning("stopped the warm standby of %s (pid %s) left by a stack that did not shut down", name, pid)
            path.unlink(missing_ok=True)

    def reconcile(self) -> None:
        """After a restart: restart the live model server, settle what was left half-done."""
        self._stop_leftover_standbys()
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
        self.submit_missing_runs()

    def submit_missing_runs(self) -> list[str]:
        """The start-up sweep: a dataset version that has no run at all was registered by an ingest
        that did not get to submit its run (the stack stopped between the two). Submit its ingest
        run now; ``submit_run`` is idempotent per version, so an ingest retrying the same blob at
        the same time ends with the same single run. Returns the runs submitted."""
        trained = {int(r["dataset_version"]) for r in self.registry.list_runs()}
        submitted = []
        for d in self.registry.list_datasets():
            if int(d["version"]) in trained:
                continue
            run = self.submit_run(int(d["version"]), trigger="ingest")
            if run.created:
                log.warning(
                    "dataset v%d (from %s) had no training run: an ingest was interrupted after registering it;"
                    " submitted run %s", d["version"], d["source_blob"], run.run_id,
                )
                submitted.append(run.run_id)
        return submitted

    def stop_servers(self) -> None:
        """Stop every model server of this data dir (statuses stay: `bankml up` restarts the live one)."""
        self._retire_standbys(keep=None)
        self._stop_leftover_standbys()
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
            "services": self.services(live),
        }

    def services(self, live: dict[str, Any] | None = None) -> dict[str, Any]:
        """What answers right now: the stack of this data dir, its blob storage (Azurite) and the
        live model server, each probed with a short timeout (never raises). Reused for
        ``SERVICES_CACHE_S`` so that callers of ``status()`` in a loop do not probe every time."""
        now = time.monotonic()
        cached = self._services_cache
        if cached is not None and now - cached[0] < SERVICES_CACHE_S:
            return cached[1]
        from shared.workspace.local.stack import read_stack  # stack imports this module

        info = read_stack(self.home)
        out: dict[str, Any] = {"stack": {"running": info is not None}}
        if info is None:
            out["storage"] = {"reachable": None, "detail": "no stack is running for this data dir"}
        else:
            out["stack"].update(url=info.get("url"), pid=info.get("pid"), started_at=info.get("started_at"))
            out["storage"] = probe_storage(int(info["azurite_port"])) if info.get("azurite_port") else {
                "reachable": None, "detail": "the stack did not record its storage port"
            }
        if live is None:
            live = self.registry.live_deployment()
        if live is None:
            out["live_server"] = {"healthy": None, "detail": "no model is live"}
        elif not servers.is_model_server(live["pid"], live["name"]):
            out["live_server"] = {"name": live["name"], "healthy": False, "detail": "not running"}
        else:
            problem = servers.probe_model_server(f"http://127.0.0.1:{live['port']}", timeout_s=SERVICE_PROBE_S)
            out["live_server"] = {"name": live["name"], "healthy": problem is None, "detail": problem or "answers"}
        self._services_cache = (time.monotonic(), out)
        return out
