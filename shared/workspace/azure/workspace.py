"""The azure workspace adapter: the same port as the local workspace, on Azure ML.

| port | Azure |
|---|---|
| register_dataset | versioned MLTable data asset (the canonical CSV), uploaded to the workspace datastore |
| submit_run | batch endpoint invoke, or POST to a published pipeline's REST endpoint |
| deploy_run | best AutoML child -> gate -> model -> new managed online deployment -> traffic |
| live_deployment | the endpoint's scoring URI and key, cached; ``refresh=True`` after a 401 |

What the local registry keeps in SQLite (submitted runs, one decision per run, deployments)
lives as JSON blobs in the app's storage account (``state.BlobState``), so that any function
instance sees it and a redelivered event deploys once.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.config import Settings
from shared.errors import ConfigError, Conflict, DeploymentError, NotFound, WorkspaceError
from shared.workspace.azure.auth import TokenCredential, default_credential
from shared.workspace.azure.deploy import (
    BEST_CHILD_TAG,
    Candidate,
    DeployedRun,
    LiveModel,
    OnlineDeployer,
    endpoint_key,
    find_best_child,
    gate,
)
from shared.workspace.azure.mlflow_runs import MlflowRuns
from shared.workspace.azure.pipeline import (
    DataPath,
    PublishedPipeline,
    datastore_path,
    invoke_batch_endpoint,
    pipeline_body,
)
from shared.workspace.azure.state import BlobState, blob_service, utcnow
from shared.workspace.base import COMPLETED, FAILED, QUEUED, RUNNING, DatasetVersion, DeployDecision, Deployment, Run

log = logging.getLogger(__name__)

DATASET_NAME = "bankmarketing"
MLTABLE = """\
paths:
  - file: ./data.csv
transformations:
  - read_delimited:
      delimiter: ','
      encoding: utf8
      header: all_files_same_headers
"""
# A claim older than this is taken over: its holder died (Flex Consumption ends idle instances).
STALE_CLAIM_S = 45 * 60
# How long the live deployment's name is trusted without asking the endpoint (the key is kept
# until a 401 asks for refresh=True).
LIVE_TTL_S = 60.0

_JOB_STATUS = {
    "completed": COMPLETED,
    "failed": FAILED,
    "canceled": FAILED,
    "cancelled": FAILED,
    "notresponding": FAILED,
    "paused": RUNNING,
    "notstarted": QUEUED,
    "queued": QUEUED,
}
_MLFLOW_STATUS = {"FINISHED": COMPLETED, "FAILED": FAILED, "KILLED": FAILED, "SCHEDULED": QUEUED}
_deploy_lock = threading.Lock()


def job_status(raw: str | None) -> str:
    """Azure ML job status -> the port's Queued / Running / Completed / Failed."""
    return _JOB_STATUS.get((raw or "").lower(), RUNNING if raw else QUEUED)


def _age_s(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    return time.time() - then.timestamp()


def _require(settings: Settings) -> None:
    needed = {
        "AZURE_SUBSCRIPTION_ID": settings.azure_subscription_id,
        "AZURE_RESOURCE_GROUP": settings.azure_resource_group,
        "AZURE_ML_WORKSPACE": settings.azure_ml_workspace,
        "BANKML_AZURE_ONLINE_ENDPOINT": settings.azure_online_endpoint,
    }
    if settings.azure_trigger == "batch":
        needed["BANKML_AZURE_BATCH_ENDPOINT"] = settings.azure_batch_endpoint
    else:
        needed["BANKML_AZURE_PIPELINE_URL"] = settings.azure_pipeline_url
    for key, value in needed.items():
        if not value:
            raise ConfigError(f"setting {key} is required by the azure backend (trigger {settings.azure_trigger!r})", setting=key)


class AzureWorkspace:
    def __init__(
        self,
        settings: Settings,
        *,
        ml_client: Any = None,
        credential: TokenCredential | None = None,
        state: BlobState | None = None,
        session: requests.Session | None = None,
    ) -> None:
        _require(settings)
        self.settings = settings
        self.endpoint_name = settings.azure_online_endpoint
        self._credential = credential
        self._ml = ml_client
        self._mlflow: MlflowRuns | None = None
        self.session = session or requests.Session()
        if state is None:
            service = blob_service(settings, None if settings.storage_connection else self.credential)
            state = BlobState(service.get_container_client(settings.azure_state_container))
        self.state = state
        self._lock = threading.Lock()
        self._live: Deployment | None = None
        self._live_at = 0.0
        self._key: str | None = None
        self._scoring_uri: str | None = None
        self.smoke_retry_delay_s = 5.0  # between scoring checks of a new deployment

    # -- clients (created on first use: azure-ai-ml takes seconds to import) ----------------
    @property
    def credential(self) -> TokenCredential:
        if self._credential is None:
            self._credential = default_credential()
        return self._credential

    @property
    def ml(self) -> Any:
        if self._ml is None:
            from azure.ai.ml import MLClient

            self._ml = MLClient(
                self.credential,
                subscription_id=self.settings.azure_subscription_id,
                resource_group_name=self.settings.azure_resource_group,
                workspace_name=self.settings.azure_ml_workspace,
            )
        return self._ml

    @property
    def mlflow(self) -> MlflowRuns:
        if self._mlflow is None:
            uri = self.ml.workspaces.get(self.settings.azure_ml_workspace).mlflow_tracking_uri
            self._mlflow = MlflowRuns(uri, self.credential, session=self.session)
        return self._mlflow

    def deployer(self) -> OnlineDeployer:
        deployer = OnlineDeployer(self.ml, self.settings, session=self.session)
        deployer.retry_delay_s = self.smoke_retry_delay_s
        return deployer

    # -- datasets ------------------------------------------------------------------------
    def register_dataset(self, parsed: Any, *, source_blob: str, etag: str) -> DatasetVersion:
        """The canonical CSV as the next version of the ``bankmarketing`` MLTable data asset; the
        same content gives the same version (an index by content hash, and the asset's tags)."""
        index = f"datasets/by-hash/{parsed.content_hash}.json"
        known = self.state.doc(index)
        if known and known.get("version"):
            return self._dataset(known, created=False)
        if known is None:
            found = self._find_registered(parsed.content_hash)
            if found:
                self.state.put(index, found)
                return self._dataset(found, created=False)
        # Claim the content: two deliveries of one file register one version.
        claim = {"state": "registering", "at": utcnow()}
        if not self.state.create(index, claim):
            current = self.state.get(index)
            if current and current[0].get("version"):
                return self._dataset(current[0], created=False)
            if current and _age_s(current[0].get("at")) < STALE_CLAIM_S:
                raise Conflict("a file with the same content is being registered; retry later", content_hash=parsed.content_hash)
            if current and not self.state.put(index, claim, etag=current[1]):
                raise Conflict("a file with the same content is being registered; retry later", content_hash=parsed.content_hash)
        try:
            return self._register(parsed, index, source_blob=source_blob, etag=etag)
        except BaseException:
            self.state.delete(index)
            raise

    def _register(self, parsed: Any, index: str, *, source_blob: str, etag: str) -> DatasetVersion:
        warnings = self._drift_warnings(parsed.profile)
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data

        with tempfile.TemporaryDirectory(prefix="bankml-data-") as tmp:
            folder = Path(tmp) / DATASET_NAME
            folder.mkdir()
            (folder / "data.csv").write_bytes(parsed.to_canonical_csv())
            (folder / "MLTable").write_text(MLTABLE)
            data = Data(
                name=DATASET_NAME,
                path=str(folder),
                type=AssetTypes.MLTABLE,
                description=f"Bank Marketing training data from {source_blob}",
                tags={
                    "content_hash": parsed.content_hash,
                    "source_blob": source_blob,
                    "etag": etag,
                    "rows": str(int(parsed.rows)),
                },
            )
            created = self.ml.data.create_or_update(data)
        record = {
            "name": DATASET_NAME,
            "version": int(created.version),
            "content_hash": parsed.content_hash,
            "source_blob": source_blob,
            "etag": etag,
            "rows": int(parsed.rows),
            "path": str(created.path),
            "asset_id": str(getattr(created, "id", "") or ""),
            "created_at": utcnow(),
            "column_types": dict(parsed.column_types),
            "class_balance": dict(parsed.class_balance),
            "profile": parsed.profile,
            "warnings": warnings,
        }
        self.state.put(f"datasets/v{record['version']}.json", record)
        self.state.put(index, record)
        log.info("registered data asset %s:%d (%d rows) from %s", DATASET_NAME, record["version"], parsed.rows, source_blob)
        return self._dataset(record, created=True)

    def _find_registered(self, content_hash: str) -> dict[str, Any] | None:
        """A version registered before its index was written (a crash in between)."""
        try:
            versions = list(self.ml.data.list(name=DATASET_NAME))
        except ResourceNotFoundError:
            return None
        for d in versions:
            tags = getattr(d, "tags", None) or {}
            if tags.get("content_hash") == content_hash:
                record = self.state.doc(f"datasets/v{int(d.version)}.json")
                return record or {
                    "name": DATASET_NAME,
                    "version": int(d.version),
                    "content_hash": content_hash,
                    "source_blob": tags.get("source_blob", ""),
                    "etag": tags.get("etag", ""),
                    "rows": int(tags.get("rows", 0) or 0),
                    "path": str(d.path),
                    "created_at": utcnow(),
                }
        return None

    def _drift_warnings(self, profile: dict[str, Any]) -> list[str]:
        live = self.state.doc("live.json")
        run = self.state.doc(f"runs/{live['run_id']}.json") if live else None
        ref = self.state.doc(f"datasets/v{run['dataset_version']}.json") if run else None
        if not ref or not ref.get("profile"):
            return []
        from shared.ingest import drift_warnings

        return list(drift_warnings(profile, ref["profile"]))

    @staticmethod
    def _dataset(d: dict[str, Any], *, created: bool) -> DatasetVersion:
        return DatasetVersion(
            name=d.get("name", DATASET_NAME),
            version=int(d["version"]),
            content_hash=d["content_hash"],
            source_blob=d.get("source_blob", ""),
            etag=d.get("etag", ""),
            rows=int(d.get("rows", 0)),
            created_at=d.get("created_at", ""),
            column_types=d.get("column_types") or {},
            class_balance=d.get("class_balance") or {},
            profile=d.get("profile") or {},
            warnings=d.get("warnings") or [],
            created=created,
        )

    # -- runs ----------------------------------------------------------------------------
    def submit_run(self, dataset_version: int, *, trigger: str, parameters: dict[str, Any] | None = None) -> Run:
        """Start the training pipeline on a dataset version. Ingest starts at most one run per
        version: a claim blob makes a retry (or a second instance) return the first run."""
        dataset = self.state.doc(f"datasets/v{dataset_version}.json")
        if not dataset:
            raise NotFound(f"dataset version {dataset_version} does not exist", field="dataset_version", value=dataset_version)
        claim_key = f"submissions/dataset-v{dataset_version}.json"
        if trigger == "ingest":
            existing = self._claim_submission(claim_key, dataset_version)
            if existing is not None:
                return existing
        params = dict(parameters or {})
        try:
            run_id = self._start(dataset, trigger, params)
        except BaseException:
            if trigger == "ingest":
                self.state.delete(claim_key)  # let the retry submit
            raise
        record = {
            "run_id": run_id,
            "experiment": self.settings.experiment_name,
            "dataset_version": dataset_version,
            "trigger": trigger,
            "mode": self.settings.azure_trigger,
            "status": QUEUED,
            "parameters": params,
            "submitted_at": utcnow(),
            "best": {},
        }
        self.state.put(f"runs/{run_id}.json", record)
        if trigger == "ingest":
            self.state.put(claim_key, {"state": "submitted", "run_id": run_id, "at": record["submitted_at"]})
        log.info("submitted run %s on dataset v%d (%s, %s)", run_id, dataset_version, trigger, self.settings.azure_trigger)
        return self._run(record, created=True)

    def _claim_submission(self, key: str, dataset_version: int) -> Run | None:
        claim = {"state": "submitting", "at": utcnow(), "by": uuid.uuid4().hex}
        if self.state.create(key, claim):
            return None
        found = self.state.get(key)
        if found is None:  # released between the two calls: try once more
            return None if self.state.create(key, claim) else self._claim_submission(key, dataset_version)
        doc, etag = found
        if doc.get("run_id"):
            record = self.state.doc(f"runs/{doc['run_id']}.json")
            if record:
                return self._run(record, created=False)
        if _age_s(doc.get("at")) < STALE_CLAIM_S:
            raise Conflict(f"a run for dataset v{dataset_version} is being submitted; retry later", dataset_version=dataset_version)
        if not self.state.put(key, claim, etag=etag):
            raise Conflict(f"a run for dataset v{dataset_version} is being submitted; retry later", dataset_version=dataset_version)
        return None

    def _start(self, dataset: dict[str, Any], trigger: str, params: dict[str, Any]) -> str:
        version = int(dataset["version"])
        if self.settings.azure_trigger == "batch":
            return invoke_batch_endpoint(
                self.ml,
                self.settings.azure_batch_endpoint,
                input_name=self.settings.azure_pipeline_input,
                data_asset=f"azureml:{DATASET_NAME}:{version}",
                experiment=self.settings.experiment_name,
            )
        folder = datastore_path(dataset["path"])
        body = pipeline_body(
            experiment=self.settings.experiment_name,
            parameters=params,
            input_name=self.settings.azure_pipeline_input,
            data_path=DataPath(folder.datastore, folder.relative_path.rstrip("/") + "/data.csv"),
            tags={"app": "bankml", "bankml_dataset_version": str(version), "bankml_trigger": trigger},
            description=f"bankml: {DATASET_NAME}:{version} ({trigger})",
        )
        return PublishedPipeline(self.settings.azure_pipeline_url, self.credential, session=self.session).submit(body)

    def get_run(self, run_id: str) -> Run:
        record = self.state.doc(f"runs/{run_id}.json")
        if not record:
            raise NotFound(f"run {run_id} does not exist", field="run_id", value=run_id)
        if record.get("status") not in (COMPLETED, FAILED):
            status = self._job_status(run_id)
            if status != record.get("status"):
                changes: dict[str, Any] = {"status": status}
                if status in (COMPLETED, FAILED):
                    changes["ended_at"] = utcnow()
                record = self.state.update(f"runs/{run_id}.json", **changes)
        return self._run(record, created=False)

    def _job_status(self, run_id: str) -> str:
        try:
            return job_status(getattr(self.ml.jobs.get(run_id), "status", None))
        except ResourceNotFoundError:
            raise NotFound(f"run {run_id} is not in workspace {self.settings.azure_ml_workspace}", field="run_id", value=run_id) from None
        except (AzureError, ValueError) as err:
            # A v1 pipeline run that azure-ai-ml cannot represent as a job: ask MLflow tracking.
            log.info("run %s: status from MLflow tracking (%s)", run_id, type(err).__name__)
            return _MLFLOW_STATUS.get(self.mlflow.get(run_id).status.upper(), RUNNING)

    def is_own_run(self, run_id: str, experiment: str | None) -> bool:
        record = self.state.doc(f"runs/{run_id}.json")
        if not record:
            return False
        return experiment is None or experiment == record.get("experiment")

    @staticmethod
    def _run(d: dict[str, Any], *, created: bool) -> Run:
        return Run(
            run_id=d["run_id"],
            experiment=d.get("experiment", ""),
            dataset_version=int(d.get("dataset_version", 0)),
            status=d.get("status", QUEUED),
            submitted_at=d.get("submitted_at", ""),
            trigger=d.get("trigger", "api"),
            parameters=d.get("parameters") or {},
            started_at=d.get("started_at"),
            ended_at=d.get("ended_at"),
            error=d.get("error"),
            best=d.get("best") or {},
            created=created,
        )

    # -- deployments ---------------------------------------------------------------------
    def deploy_run(self, run_id: str) -> DeployDecision:
        """Deploy the run's best model when it passes the gate; the same run deploys once, whatever
        the number of deliveries and instances (the decision blob is claimed before any work)."""
        key = f"decisions/{run_id}.json"
        with _deploy_lock:
            claim = {"run_id": run_id, "state": "deciding", "at": utcnow(), "by": uuid.uuid4().hex}
            while not self.state.create(key, claim):
                found = self.state.get(key)
                if found is None:
                    continue  # released (undecided) between the two calls: claim again
                doc, etag = found
                if doc.get("state") == "decided":
                    return self._decision(doc, duplicate=True)
                if _age_s(doc.get("at")) < STALE_CLAIM_S or not self.state.put(key, claim, etag=etag):
                    return DeployDecision(run_id, False, "a decision on this run is in progress", duplicate=True)
                log.warning("took over the stale decision on run %s (claimed %s)", run_id, doc.get("at"))
                break
            try:
                decision = self._decide(run_id)
            except DeploymentError as err:
                self._record(key, run_id, False, f"deployment failed: {err.message}", None)
                raise
            except BaseException:
                # Not decided (run unknown, Azure unreachable ...): a redelivery may try again.
                self.state.delete(key)
                raise
            self._record(key, run_id, decision.deployed, decision.reason, decision.deployment)
            return decision

    def _record(self, key: str, run_id: str, deployed: bool, reason: str, dep: Deployment | None) -> None:
        self.state.put(
            key,
            {"run_id": run_id, "state": "decided", "deployed": deployed, "reason": reason, "at": utcnow(),
             "deployment": dep.name if dep else None},
        )
        log.info("run %s: %s (%s)", run_id, "deployed" if deployed else "not deployed", reason)

    def _decision(self, doc: dict[str, Any], *, duplicate: bool) -> DeployDecision:
        dep = None
        if doc.get("deployment"):
            rec = self.state.doc(f"deployments/{doc['deployment']}.json")
            dep = self._deployment(rec) if rec else None
        return DeployDecision(doc["run_id"], bool(doc.get("deployed")), doc.get("reason", ""), dep, duplicate=duplicate)

    def _decide(self, run_id: str) -> DeployDecision:
        run = self.state.doc(f"runs/{run_id}.json")
        if not run:
            raise NotFound(f"run {run_id} does not exist", field="run_id", value=run_id)
        status = self._job_status(run_id)
        if status in (QUEUED, RUNNING):
            # The event outran the run's status (Azure ML finalises after it reports): not a
            # decision; failing the invocation makes Event Grid deliver it again later.
            raise WorkspaceError(f"run {run_id} is still {status} in Azure ML; the event will be retried", run_id=run_id)
        if status != COMPLETED:
            self.state.update(f"runs/{run_id}.json", status=status)
            return DeployDecision(run_id, False, f"run is {status}, not Completed with a model")
        cand = find_best_child(self.ml, self.mlflow, run_id)
        if cand is None:
            self.state.update(f"runs/{run_id}.json", status=status)
            return DeployDecision(run_id, False, f"run is {status}, not Completed with a model (no {BEST_CHILD_TAG} tag)")
        self.state.update(f"runs/{run_id}.json", status=status, best=cand.best(), ended_at=run.get("ended_at") or utcnow())
        metric_name = self.settings.primary_metric
        candidate = cand.metrics.get(metric_name)
        if candidate is None:
            return DeployDecision(run_id, False, f"run has no held-out {metric_name}")
        ok, reason = gate(
            self.settings,
            run_id=run_id,
            candidate=float(candidate),
            submitted_at=run["submitted_at"],
            newest=self._newest_deployed_run(),
            live=self._live_model(),
        )
        if not ok:
            return DeployDecision(run_id, False, reason)
        dep = self._start_deployment(run, cand)
        return DeployDecision(run_id, True, reason, dep)

    def _live_model(self) -> LiveModel | None:
        live = self.state.doc("live.json")
        if not live:
            return None
        run = self.state.doc(f"runs/{live['run_id']}.json") or {}
        metric = ((run.get("best") or {}).get("metrics") or {}).get(self.settings.primary_metric)
        return LiveModel(live["name"], live["run_id"], float(metric or 0.0), run.get("submitted_at", ""))

    def _newest_deployed_run(self) -> DeployedRun | None:
        newest: DeployedRun | None = None
        for d in self.state.list("deployments/"):
            if not d.get("live_at"):
                continue
            r = self.state.doc(f"runs/{d['run_id']}.json")
            if r and (newest is None or r["submitted_at"] > newest.submitted_at):
                newest = DeployedRun(r["run_id"], r["submitted_at"])
        return newest

    def _start_deployment(self, run: dict[str, Any], cand: Candidate) -> Deployment:
        deployer = self.deployer()
        name, model, scoring_uri, replaced = deployer.deploy(cand)
        now = utcnow()
        insights = self.state.doc(f"insights/{run['run_id']}.json") is not None
        record = {
            "name": name,
            "run_id": run["run_id"],
            "model_name": str(model.name),
            "model_version": int(model.version),
            "status": "live",
            "endpoint": self.endpoint_name,
            "scoring_uri": scoring_uri,
            "metrics": cand.metrics,
            "learner": cand.algorithm,
            "best_child_run_id": cand.best_child_run_id,
            "insights": True,  # every deployment is created with app_insights_enabled=True
            "insights_requested": insights,
            "created_at": now,
            "live_at": now,
        }
        self.state.put(f"deployments/{name}.json", record)
        for old in replaced:
            if self.state.doc(f"deployments/{old}.json"):
                self.state.update(f"deployments/{old}.json", status="retired", retired_at=now)
        self.state.put("live.json", {"name": name, "run_id": run["run_id"], "at": now})
        dep = self._deployment(record)
        with self._lock:  # the relay in this instance sees the switch at once
            self._live, self._live_at = None, 0.0
        log.info("deployment %s is live (run %s, model %s:%s)", name, run["run_id"], model.name, model.version)
        return dep

    def _deployment(self, rec: dict[str, Any], *, key: str = "", scoring_uri: str | None = None) -> Deployment:
        return Deployment(
            name=rec["name"],
            run_id=rec.get("run_id", ""),
            model_version=int(rec.get("model_version", 0)),
            status=rec.get("status", "live"),
            scoring_uri=scoring_uri or rec.get("scoring_uri", ""),
            created_at=rec.get("created_at", ""),
            metrics=rec.get("metrics") or {},
            insights=bool(rec.get("insights")),
            reason=rec.get("reason"),
            key=key,
            # No feature categories: the relay documents the contract from its own Swagger.
            schema={"learner": rec.get("learner"), "metrics": rec.get("metrics") or {}, "labels": ["no", "yes"]},
        )

    def enable_insights(self, run_id: str) -> str:
        """Application Insights for the run's deployment. Deployments are created with
        ``app_insights_enabled=True``; one made otherwise (by hand) is switched on here."""
        self.state.put(f"insights/{run_id}.json", {"run_id": run_id, "at": utcnow()})
        deps = [d for d in self.state.list("deployments/") if d.get("run_id") == run_id and d.get("status") == "live"]
        for d in deps:
            current = self.ml.online_deployments.get(name=d["name"], endpoint_name=self.endpoint_name)
            if not getattr(current, "app_insights_enabled", False):
                current.app_insights_enabled = True
                self.ml.online_deployments.begin_create_or_update(current)
            self.state.update(f"deployments/{d['name']}.json", insights=True)
        if deps:
            return f"telemetry on for {', '.join(d['name'] for d in deps)}"
        return "telemetry will be on when the run's model deploys"

    def live_deployment(self, *, refresh: bool = False) -> Deployment | None:
        """The deployment that takes the endpoint's traffic, with the scoring URI and key.

        The key and URI are cached until ``refresh=True`` (the relay asks after an upstream 401,
        e.g. a rotated key); which deployment is live is re-read every LIVE_TTL_S seconds."""
        with self._lock:
            if not refresh and self._live is not None and time.monotonic() - self._live_at < LIVE_TTL_S:
                return self._live
            try:
                endpoint = self.ml.online_endpoints.get(self.endpoint_name)
            except ResourceNotFoundError:
                self._live, self._live_at = None, time.monotonic()
                return None
            traffic = {k: v for k, v in (endpoint.traffic or {}).items() if v}
            if not traffic:
                self._live, self._live_at = None, time.monotonic()
                return None
            name = max(traffic, key=lambda k: traffic[k])
            if refresh or self._key is None or self._scoring_uri != endpoint.scoring_uri:
                self._key = endpoint_key(self.ml, self.endpoint_name)
                self._scoring_uri = str(endpoint.scoring_uri)
            rec = self.state.doc(f"deployments/{name}.json") or {"name": name, "status": "live"}
            rec = {**rec, "status": "live"}
            self._live = self._deployment(rec, key=self._key, scoring_uri=self._scoring_uri)
            self._live_at = time.monotonic()
            return self._live

    # -- views ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        datasets = sorted(
            (d for d in self.state.list("datasets/v")), key=lambda d: int(d.get("version", 0))
        )
        decisions = [
            {"run_id": d["run_id"], "deployed": int(bool(d.get("deployed"))), "reason": d.get("reason"), "at": d.get("at")}
            for d in self.state.list("decisions/")
            if d.get("state") == "decided"
        ]
        live = self.state.doc("live.json")
        return {
            "backend": "azure",
            "workspace": self.settings.azure_ml_workspace,
            "endpoint": self.endpoint_name,
            "trigger": self.settings.azure_trigger,
            "datasets": [{k: v for k, v in d.items() if k != "profile"} for d in datasets],
            "runs": sorted(self.state.list("runs/"), key=lambda r: r.get("submitted_at", "")),
            "deployments": sorted(self.state.list("deployments/"), key=lambda d: d.get("created_at", "")),
            "decisions": decisions,
            "live": live["name"] if live else None,
        }
