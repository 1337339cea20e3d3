"""The training pipeline's one submission path: the published-pipeline REST call, the ingest
function and the scheduled retraining all start their runs here.

The REST body is Azure ML's published-pipeline call (v1 ``PipelineEndpoint``/``PublishedPipeline``
REST): ``{"ExperimentName": ..., "ParameterAssignments": {"dataset_version": 3,
"time_budget_s": 60}, "Description": ..., "Tags": {...}, "RunSource": "API"}``; the answer carries
the run id as ``Id``. Parameter values may be strings, as the Azure ML studio sends them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from shared.config import Settings
from shared.errors import NotFound, RequestError
from shared.workspace.base import COMPLETED, QUEUED, RUNNING, Run

log = logging.getLogger(__name__)

# Pipeline parameters a caller may assign, and what each must be.
PARAMETERS = {
    "dataset_version": "the registered dataset version to train on (default: the latest)",
    "time_budget_s": "AutoML time budget in seconds (default: BANKML_TIME_BUDGET_S)",
}
MAX_TIME_BUDGET_S = 3600.0
BODY_KEYS = {"ExperimentName", "ParameterAssignments", "Description", "Tags", "RunSource", "DataSetDefinitionValueAssignments", "DataPathAssignments"}
TRIGGERS = ("ingest", "api", "schedule")


def latest_dataset_version(workspace: Any) -> int | None:
    versions = [int(d["version"]) for d in workspace.status().get("datasets", [])]
    return max(versions) if versions else None


def _version(value: Any) -> int:
    if isinstance(value, bool):
        raise RequestError(f"ParameterAssignments.dataset_version must be a whole number, got {value!r}", field="dataset_version", value=value)
    try:
        version = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise RequestError(
            f"ParameterAssignments.dataset_version must be a whole number, got {value!r}", field="dataset_version", value=value
        ) from None
    if version < 1:
        raise RequestError(f"ParameterAssignments.dataset_version must be 1 or more, got {value!r}", field="dataset_version", value=value)
    return version


def _budget(value: Any) -> float:
    if isinstance(value, bool):
        raise RequestError(f"ParameterAssignments.time_budget_s must be a number of seconds, got {value!r}", field="time_budget_s", value=value)
    try:
        budget = float(value)
    except (TypeError, ValueError):
        raise RequestError(
            f"ParameterAssignments.time_budget_s must be a number of seconds, got {value!r}", field="time_budget_s", value=value
        ) from None
    if not math.isfinite(budget) or not 0 < budget <= MAX_TIME_BUDGET_S:
        raise RequestError(
            f"ParameterAssignments.time_budget_s must be above 0 and at most {MAX_TIME_BUDGET_S:g}, got {value!r}",
            field="time_budget_s",
            value=value,
        )
    return budget


def submit_pipeline_run(
    settings: Settings,
    workspace: Any,
    *,
    trigger: str,
    dataset_version: Any = None,
    parameters: Mapping[str, Any] | None = None,
) -> Run:
    """Validate the pipeline parameters and queue a training run; the one path every trigger takes.

    ``dataset_version`` None means the latest registered version. Ingest runs are idempotent per
    dataset version (the workspace returns the existing run, ``created`` False).
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}; valid: {', '.join(TRIGGERS)}")
    params = dict(parameters or {})
    unknown = sorted(set(params) - set(PARAMETERS) - {"dataset_version"})
    if unknown:
        raise RequestError(
            f"unknown pipeline parameter {unknown[0]!r}; valid: {', '.join(PARAMETERS)}", field=unknown[0], expected=list(PARAMETERS)
        )
    if "dataset_version" in params:
        dataset_version = params.pop("dataset_version")
    if dataset_version is None:
        version = latest_dataset_version(workspace)
        if version is None:
            raise NotFound("no dataset is registered yet; drop a CSV into incoming/ first", field="dataset_version")
    else:
        version = _version(dataset_version)
    run_params: dict[str, Any] = {}
    if "time_budget_s" in params and params["time_budget_s"] not in (None, ""):
        run_params["time_budget_s"] = _budget(params["time_budget_s"])
    run = workspace.submit_run(version, trigger=trigger, parameters=run_params or None)
    log.info(
        "pipeline run %s %s on dataset v%d (%s)", run.run_id, "submitted" if run.created else "exists", version, trigger
    )
    return run


def parse_pipeline_body(settings: Settings, body: bytes) -> dict[str, Any]:
    """The published-pipeline request body -> ``{"parameters": {...}, "experiment": name}``."""
    try:
        doc = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise RequestError("body is not JSON", field="body") from None
    if not isinstance(doc, dict):
        raise RequestError(
            'body must be a JSON object like {"ExperimentName": "...", "ParameterAssignments": {"dataset_version": 1}}',
            field="body",
        )
    unknown = sorted(set(doc) - BODY_KEYS)
    if unknown:
        raise RequestError(f"unknown body key {unknown[0]!r}; valid: {', '.join(sorted(BODY_KEYS))}", field=unknown[0])
    experiment = doc.get("ExperimentName")
    if experiment not in (None, "", settings.experiment_name):
        raise RequestError(
            f"ExperimentName {experiment!r} is not this app's experiment; use {settings.experiment_name!r} or leave it out",
            field="ExperimentName",
            value=experiment,
            expected=settings.experiment_name,
        )
    assignments = doc.get("ParameterAssignments") or {}
    if not isinstance(assignments, dict):
        raise RequestError("ParameterAssignments must be an object of parameter name -> value", field="ParameterAssignments")
    for key in ("DataSetDefinitionValueAssignments", "DataPathAssignments"):
        if doc.get(key):
            raise RequestError(
                f"{key} is not supported here: pass ParameterAssignments.dataset_version (a registered version)", field=key
            )
    return {"parameters": assignments, "experiment": settings.experiment_name}


def run_view(workspace: Any, run_id: str) -> dict[str, Any]:
    """A run as ``GET /api/pipeline/runs/{id}`` reports it (Azure ML's PascalCase run fields)."""
    run = workspace.get_run(run_id)
    best = run.best or {}
    children: list[dict[str, Any]] = []
    registry = getattr(workspace, "registry", None)
    if registry is not None:
        children = registry.child_runs(run_id)
    done = [c for c in children if c.get("metric") is not None]
    out: dict[str, Any] = {
        "Id": run.run_id,
        "ExperimentName": run.experiment,
        "Status": run.status,
        "Trigger": run.trigger,
        "DatasetVersion": run.dataset_version,
        "ParameterAssignments": run.parameters,
        "SubmittedAt": run.submitted_at,
        "StartedAt": run.started_at,
        "EndedAt": run.ended_at,
        "Error": run.error,
        "ChildRuns": len(children),
        "BestChildMetric": max((c["metric"] for c in done), default=None),
        "PrimaryMetric": "AUC_weighted",
    }
    if run.status == COMPLETED:
        out["BestModel"] = {
            "Learner": best.get("learner"),
            "Members": [m.get("learner") for m in best.get("members") or []],
            "Threshold": best.get("threshold"),
            "Serving": best.get("serving"),
        }
        out["Metrics"] = {k: v for k, v in (best.get("metrics") or {}).items()}
    return out


def active_run(workspace: Any) -> dict[str, Any] | None:
    """A queued or running run, if any (the schedule does not pile runs up)."""
    for r in workspace.status().get("runs", []):
        if r.get("status") in (QUEUED, RUNNING):
            return r
    return None


def scheduled_retrain(settings: Settings, workspace: Any) -> Run | None:
    """The retraining timer: a run on the latest dataset version unless one is already under way.

    The run goes through the same gate as any other (deploy_best_model on its RunCompleted event).
    """
    busy = active_run(workspace)
    if busy is not None:
        log.info("scheduled retraining skipped: run %s is %s", busy["run_id"], busy["status"])
        return None
    try:
        return submit_pipeline_run(settings, workspace, trigger="schedule")
    except NotFound as err:
        log.info("scheduled retraining skipped: %s", err.message)
        return None
