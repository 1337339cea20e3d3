"""From a finished training run to a live managed online deployment.

1. the best AutoML child: the ``automl_best_child_run_id`` tag of the AutoML run (the submitted
   run itself, or a step of it when it is a pipeline), and that child's metrics (MLflow REST);
2. the gate, with the same rules and reasons as the local workspace;
3. blue/green: register the child's ``outputs/model.pkl``, create a new deployment with 0 % of
   the traffic (``app_insights_enabled=True``), score the two tutorial customers through it, then
   give it 100 % and delete the one it replaces. A deployment that fails is deleted; the live
   one keeps serving.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from shared.config import Settings
from shared.contract import TUTORIAL_CUSTOMERS
from shared.errors import DeploymentError, NotFound
from shared.relay import unwrap
from shared.workspace.azure.mlflow_runs import MlflowRuns

log = logging.getLogger(__name__)

BEST_CHILD_TAG = "automl_best_child_run_id"
MODEL_NAME = "bankmarketing-model"
# Azure ML's curated base image for AutoML scoring (azureml-examples, AutoML bank marketing notebook).
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
CONDA_FILE = "conda_env_v_1_0_0.yml"
_MAX_LOOKUPS = 25


@dataclass
class Candidate:
    run_id: str  # the submitted run
    automl_run_id: str  # the AutoML parent (the run itself or one of its steps)
    best_child_run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    algorithm: str | None = None

    def best(self) -> dict[str, Any]:
        """The shape of ``Run.best`` in the local workspace."""
        return {
            "learner": self.algorithm,
            "metrics": self.metrics,
            "automl_run_id": self.automl_run_id,
            "best_child_run_id": self.best_child_run_id,
        }


def find_best_child(ml_client: Any, mlflow: MlflowRuns, run_id: str) -> Candidate | None:
    """The AutoML best child under ``run_id``: its own tag, else breadth-first through its child
    jobs (a pipeline's steps, a pipeline component's nodes), two levels deep."""
    level = [run_id]
    looked = 0
    for depth in range(3):
        nxt: list[str] = []
        for rid in level:
            looked += 1
            if looked > _MAX_LOOKUPS:
                return None
            data = mlflow.get(rid)
            best = data.tags.get(BEST_CHILD_TAG)
            if best:
                child = mlflow.get(best)
                algorithm = child.tags.get("run_algorithm") or data.tags.get("run_algorithm")
                return Candidate(run_id, rid, best, child.metrics, algorithm)
            if depth < 2:
                nxt.extend(str(j.name) for j in ml_client.jobs.list(parent_job_name=rid))
        level = nxt
        if not level:
            break
    return None


@dataclass(frozen=True)
class LiveModel:
    name: str
    run_id: str
    metric: float
    submitted_at: str


@dataclass(frozen=True)
class DeployedRun:
    """The most recently submitted run whose model was ever live (rollbacks included)."""

    run_id: str
    submitted_at: str


# Azure ML keeps no copy of the candidate's held-out rows for the function app to re-score both
# models on (the local workspace does): the recorded validation metrics decide, and say so.
BASIS = "on their own recorded held-out metrics (Azure ML validation split)"


def gate(
    settings: Settings,
    *,
    run_id: str,
    candidate: float,
    submitted_at: str,
    newest: DeployedRun | None,
    live: LiveModel | None,
) -> tuple[bool, str]:
    """The local workspace's deployment gate, in its order and with its reasons: the minimum,
    never an older run over a newer deployed one (late, out-of-order events), then the margin."""
    metric_name = settings.primary_metric
    minimum = settings.min_primary_metric
    margin = settings.deploy_margin
    if candidate < minimum:
        return False, f"{metric_name} {candidate:.4f} is below the minimum {minimum:.4f}"
    if newest and newest.run_id != run_id and newest.submitted_at > submitted_at:
        return False, (
            f"run was submitted before run {newest.run_id}, whose model was already deployed: "
            "a late or out-of-order event never replaces a newer model with an older one"
        )
    if live is None:
        return True, f"first model: {metric_name} {candidate:.4f} >= minimum {minimum:.4f}"
    if candidate <= live.metric + margin:
        return False, (
            f"{metric_name} {candidate:.4f} does not beat the live {live.name} ({live.metric:.4f}) "
            f"by more than {margin:g} {BASIS}"
        )
    return True, f"{metric_name} {candidate:.4f} beats the live {live.name} ({live.metric:.4f}) by more than {margin:g} {BASIS}"


def endpoint_key(ml_client: Any, endpoint: str) -> str:
    """The key (key auth) or token (aml_token / aad_token auth) the endpoint takes as Bearer."""
    keys = ml_client.online_endpoints.get_keys(endpoint)
    value = getattr(keys, "primary_key", None) or getattr(keys, "access_token", None)
    if not value:
        raise DeploymentError(f"endpoint {endpoint} gave no key or token")
    return str(value)


def smoke_request(scoring_script: str) -> dict[str, Any]:
    rows = [dict(c) for c in TUTORIAL_CUSTOMERS]
    if "v_2" in scoring_script:
        return {"Inputs": {"data": rows}, "GlobalParameters": {"method": "predict"}}
    return {"data": rows}


class OnlineDeployer:
    """The Azure ML calls of one blue/green deployment (an MLClient, real or fake)."""

    def __init__(self, ml_client: Any, settings: Settings, *, session: requests.Session | None = None) -> None:
        self.ml = ml_client
        self.settings = settings
        self.endpoint_name = settings.azure_online_endpoint
        self.session = session or requests.Session()
        self.smoke_attempts = 3
        self.retry_delay_s = 5.0

    def register_model(self, cand: Candidate) -> Any:
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

        model = Model(
            name=MODEL_NAME,
            path=f"azureml://jobs/{cand.best_child_run_id}/outputs/artifacts/outputs/model.pkl",
            type=AssetTypes.CUSTOM_MODEL,
            description=f"AutoML best child {cand.best_child_run_id} of run {cand.run_id}",
            tags={
                "run_id": cand.run_id,
                "best_child_run_id": cand.best_child_run_id,
                "algorithm": cand.algorithm or "",
                self.settings.primary_metric: str(cand.metrics.get(self.settings.primary_metric, "")),
            },
        )
        registered = self.ml.models.create_or_update(model)
        log.info("registered model %s:%s from %s", registered.name, registered.version, cand.best_child_run_id)
        return registered

    def ensure_endpoint(self) -> Any:
        from azure.ai.ml.entities import ManagedOnlineEndpoint
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.ml.online_endpoints.get(self.endpoint_name)
        except ResourceNotFoundError:
            pass
        log.info("creating managed online endpoint %s (key auth)", self.endpoint_name)
        endpoint = ManagedOnlineEndpoint(
            name=self.endpoint_name, auth_mode="key", description="bankml: the live Bank Marketing model", tags={"app": "bankml"}
        )
        self.ml.online_endpoints.begin_create_or_update(endpoint).result()
        return self.ml.online_endpoints.get(self.endpoint_name)

    def download_outputs(self, best_child_run_id: str, into: Path) -> Path:
        """The child's ``outputs/`` (scoring scripts, conda file) for the deployment's code and environment."""
        self.ml.jobs.download(best_child_run_id, download_path=str(into))
        outputs = into / "artifacts" / "outputs"
        for name in (self.settings.azure_scoring_script, CONDA_FILE):
            if not (outputs / name).is_file():
                raise DeploymentError(f"run {best_child_run_id} has no outputs/{name} to deploy with", run_id=best_child_run_id)
        return outputs

    def create_deployment(self, name: str, model: Any, outputs: Path) -> None:
        from azure.ai.ml.entities import CodeConfiguration, Environment, ManagedOnlineDeployment

        deployment = ManagedOnlineDeployment(
            name=name,
            endpoint_name=self.endpoint_name,
            model=model,
            code_configuration=CodeConfiguration(code=str(outputs), scoring_script=self.settings.azure_scoring_script),
            environment=Environment(image=BASE_IMAGE, conda_file=str(outputs / CONDA_FILE)),
            instance_type=self.settings.azure_instance_type,
            instance_count=self.settings.azure_instance_count,
            app_insights_enabled=True,
            tags={"app": "bankml"},
        )
        log.info("creating deployment %s on %s (%s x%d)", name, self.endpoint_name, self.settings.azure_instance_type, self.settings.azure_instance_count)
        self.ml.online_deployments.begin_create_or_update(deployment).result()

    def smoke_test(self, scoring_uri: str, key: str, name: str) -> None:
        """Score the tutorial customers through the new deployment alone (``azureml-model-deployment``)."""
        body = smoke_request(self.settings.azure_scoring_script)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "azureml-model-deployment": name}
        last = "no answer"
        for attempt in range(self.smoke_attempts):
            if attempt:
                time.sleep(self.retry_delay_s)
            try:
                r = self.session.post(scoring_uri, data=json.dumps(body), headers=headers, timeout=60)
            except requests.RequestException as err:
                last = type(err).__name__
                continue
            if r.status_code >= 500:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code != 200:
                raise DeploymentError(f"scoring check on {name} answered {r.status_code}: {r.text[:200]}", deployment=name)
            try:
                doc = unwrap(r.json())
            except ValueError:
                doc = None
            result = doc.get("result", doc.get("Results")) if isinstance(doc, dict) else None
            if not isinstance(result, list) or len(result) != len(TUTORIAL_CUSTOMERS):
                raise DeploymentError(f"scoring check on {name} gave an unexpected answer: {r.text[:200]}", deployment=name)
            return
        raise DeploymentError(f"scoring check on {name} failed: {last}", deployment=name)

    def switch_traffic(self, name: str) -> list[str]:
        """All traffic to ``name``; returns the deployments that had some before."""
        endpoint = self.ml.online_endpoints.get(self.endpoint_name)
        before = dict(endpoint.traffic or {})
        endpoint.traffic = {**{d: 0 for d in before if d != name}, name: 100}
        self.ml.online_endpoints.begin_create_or_update(endpoint).result()
        return [d for d, share in before.items() if d != name and share]

    def delete(self, name: str) -> None:
        """Start deleting a deployment (it holds a VM); not waited for."""
        try:
            self.ml.online_deployments.begin_delete(name=name, endpoint_name=self.endpoint_name)
        except Exception as err:  # noqa: BLE001 - a leftover deployment costs money, not correctness
            log.warning("could not delete deployment %s: %s", name, type(err).__name__)

    def deploy(self, cand: Candidate) -> tuple[str, Any, str, list[str]]:
        """Register and deploy; returns (deployment name, model, scoring URI, replaced deployments).
        Raises DeploymentError with the reason; a half-made deployment is deleted."""
        from azure.core.exceptions import AzureError

        try:
            model = self.register_model(cand)
        except AzureError as err:
            raise DeploymentError(f"model registration failed: {_azure_message(err)}") from err
        name = f"bankml-v{model.version}"
        created = False
        try:
            with tempfile.TemporaryDirectory(prefix="bankml-deploy-") as tmp:
                outputs = self.download_outputs(cand.best_child_run_id, Path(tmp))
                endpoint = self.ensure_endpoint()
                created = True
                self.create_deployment(name, model, outputs)
            key = endpoint_key(self.ml, self.endpoint_name)
            self.smoke_test(endpoint.scoring_uri, key, name)
            replaced = self.switch_traffic(name)
        except DeploymentError:
            if created:
                self.delete(name)
            raise
        except (AzureError, NotFound) as err:
            if created:
                self.delete(name)
            raise DeploymentError(f"deployment {name} failed: {_azure_message(err)}", deployment=name) from err
        for old in replaced:
            self.delete(old)
        return name, model, str(endpoint.scoring_uri), replaced


def _azure_message(err: Exception) -> str:
    message = getattr(err, "message", None) or str(err)
    return f"{type(err).__name__}: {str(message)[:300]}"
