"""Run tags and metrics from the workspace's MLflow REST API (``/api/2.0/mlflow/runs/get``).

This is where AutoML puts ``automl_best_child_run_id`` (on the AutoML parent) and the best
child's metrics. The base URL is the workspace's ``mlflow_tracking_uri`` with ``azureml://``
replaced by ``https://``; the token is an ARM one (azureml-examples, using_mlflow_rest_api).
Talking REST directly spares the function app the mlflow + azureml-mlflow packages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import requests

from shared.errors import NotFound, WorkspaceError
from shared.workspace.azure.auth import ARM_SCOPE, TokenCredential, bearer

log = logging.getLogger(__name__)


@dataclass
class RunData:
    run_id: str
    status: str  # MLflow: RUNNING | SCHEDULED | FINISHED | FAILED | KILLED
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def rest_base(tracking_uri: str) -> str:
    if tracking_uri.startswith("azureml://"):
        return "https://" + tracking_uri[len("azureml://"):].rstrip("/")
    return tracking_uri.rstrip("/")


class MlflowRuns:
    def __init__(
        self, tracking_uri: str, credential: TokenCredential, *, session: requests.Session | None = None, timeout_s: float = 30.0
    ) -> None:
        self.base = rest_base(tracking_uri)
        self.credential = credential
        self.session = session or requests.Session()
        self.timeout_s = timeout_s

    def get(self, run_id: str) -> RunData:
        url = f"{self.base}/api/2.0/mlflow/runs/get"
        try:
            r = self.session.get(
                url, params={"run_id": run_id}, headers={"Authorization": bearer(self.credential, ARM_SCOPE)}, timeout=self.timeout_s
            )
        except requests.RequestException as err:
            raise WorkspaceError(f"MLflow tracking did not answer for run {run_id}: {type(err).__name__}") from err
        if r.status_code == 404:
            raise NotFound(f"run {run_id} is not in the workspace's MLflow tracking", field="run_id", value=run_id)
        if r.status_code >= 400:
            raise WorkspaceError(f"MLflow tracking answered HTTP {r.status_code} for run {run_id}: {r.text[:200]}")
        try:
            run = r.json()["run"]
        except (ValueError, KeyError, TypeError) as err:
            raise WorkspaceError(f"MLflow tracking answered an unexpected document for run {run_id}") from err
        data: dict[str, Any] = run.get("data") or {}
        # The REST API gives lists of {key, value}; a metric may be listed once per step: keep the last.
        tags = {t["key"]: t.get("value", "") for t in data.get("tags") or [] if "key" in t}
        metrics: dict[str, float] = {}
        for m in sorted(data.get("metrics") or [], key=lambda m: (m.get("step") or 0, m.get("timestamp") or 0)):
            try:
                metrics[m["key"]] = float(m["value"])
            except (KeyError, TypeError, ValueError):
                continue
        return RunData(run_id=run_id, status=str((run.get("info") or {}).get("status", "")), tags=tags, metrics=metrics)
