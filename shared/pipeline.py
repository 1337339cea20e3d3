"""The training pipeline's one submission path: the published-pipeline REST call, the ingest
function and the scheduled retraining all start their runs here.

The REST body is Azure ML's published-pipeline call (v1 ``PipelineEndpoint``/``PublishedPipeline``
REST): ``{"ExperimentName": ..., "ParameterAssignments": {"dataset_version": 3,
"time_budget_s": 60}, "Description": ..., "Tags": {...}, "RunSource": "API"}``; the answer carries
the run id as ``Id``. Parameter values may be strings, as the Azure ML studio sends them.

Every body key has one JSON type (``BODY_TYPES``); ``null`` is none of them, so it is refused naming
the key, like any other wrong type (leave a key out to get its default). Numbers are range-checked
before they reach the workspace: a version is 1..``MAX_DATASET_VERSION``, a budget is finite and in
(0, ``MAX_TIME_BUDGET_S``].
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from shared.config import Settings
from shared.contract import MAX_INTEGER
from shared.errors import NotFound, RequestError, json_safe, json_type, shown, shown_number
from shared.workspace.base import COMPLETED, QUEUED, RUNNING, Run

log = logging.getLogger(__name__)

# Pipeline parameters a caller may assign, and what each must be.
PARAMETERS = {
    "dataset_version": "the registered dataset version to train on (default: the latest)",
    "time_budget_s": "AutoML time budget in seconds (default: BANKML_TIME_BUDGET_S)",
}
MAX_TIME_BUDGET_S = 3600.0
# Dataset versions count registrations from 1; the bound is JSON's exact integers (2**53,
# shared.contract.MAX_INTEGER), well inside SQLite's INTEGER (a larger one overflowed it: a 500).
MAX_DATASET_VERSION = MAX_INTEGER
# The published-pipeline body's keys and the one JSON type each takes (azure-reference.md §4).
BODY_TYPES: dict[str, type] = {
    "ExperimentName": str,
    "ParameterAssignments": dict,
    "Description": str,
    "Tags": dict,
    "RunSource": str,
    "DataSetDefinitionValueAssignments": dict,
    "DataPathAssignments": dict,
}
BODY_KEYS = set(BODY_TYPES)
_JSON_TYPES = {str: "a string", dict: "an object"}
TRIGGERS = ("ingest", "api", "schedule")


def latest_dataset_version(workspace: Any) -> int | None:
    versions = [int(d["version"]) for d in workspace.status().get("datasets", [])]
    return max(versions) if versions else None


def _shown(value: Any) -> Any:
    """A sent value as an error quotes it: scalars as they are (cut when long; non-finite numbers
    become "NaN"/"Infinity" in BankmlError.to_dict), arrays and objects by their JSON type."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return shown_number(value)
    return json_type(value)


def _refuse(name: str, value: Any, what: str, **details: Any) -> RequestError:
    shown = _shown(value)
    if value is None or isinstance(value, list | dict):
        quoted = json_type(value)
    elif isinstance(shown, float) and not math.isfinite(shown):
        quoted = json_safe(shown)  # NaN, Infinity: as the error's value reads
    else:
        quoted = repr(shown)
    return RequestError(
        f"ParameterAssignments.{name} {what}, got {quoted}", field=name, value=shown, got=json_type(value), **details
    )


def _version(value: Any) -> int:
    whole = f"an integer from 1 to {MAX_DATASET_VERSION}"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _refuse("dataset_version", value, "must be a whole number", expected=whole)
    try:
        version = int(value.strip()) if isinstance(value, str) else value
    except ValueError:  # not digits, or more of them than int() reads
        raise _refuse("dataset_version", value, "must be a whole number", expected=whole) from None
    if not 1 <= version <= MAX_DATASET_VERSION:
        raise _refuse("dataset_version", value, f"must be from 1 to {MAX_DATASET_VERSION}", expected=whole)
    return version


def _budget(value: Any) -> float:
    seconds = f"a number of seconds above 0 and at most {MAX_TIME_BUDGET_S:g}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _refuse("time_budget_s", value, "must be a number of seconds", expected=seconds)
    try:
        budget = float(value)
    except (ValueError, OverflowError):  # not a number, or an integer beyond any float
        raise _refuse("time_budget_s", value, "must be a number of seconds", expected=seconds) from None
    if not math.isfinite(budget) or not 0 < budget <= MAX_TIME_BUDGET_S:
        raise _refuse("time_budget_s", value, f"must be above 0 and at most {MAX_TIME_BUDGET_S:g}", expected=seconds)
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
            f"unknown pipeline parameter {_shown(unknown[0])!r}; valid: {', '.join(PARAMETERS)}",
            field=_shown(unknown[0]),
            expected=list(PARAMETERS),
        )
    if "dataset_version" in params:
        dataset_version = params.pop("dataset_version")
        if dataset_version is None:  # an explicit null is not "the latest": leave the key out for that
            raise _refuse("dataset_version", None, "must be a whole number (leave it out for the latest)")
    if dataset_version is None:
        version = latest_dataset_version(workspace)
        if version is None:
            raise NotFound("no dataset is registered yet; drop a CSV into incoming/ first", field="dataset_version")
    else:
        version = _version(dataset_version)
    run_params: dict[str, Any] = {}
    if "time_budget_s" in params and params["time_budget_s"] is None:
        raise _refuse("time_budget_s", None, "must be a number of seconds (leave it out for the default)")
    if "time_budget_s" in params and params["time_budget_s"] != "":  # "" is the studio's empty field
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
        raise RequestError(f"unknown body key {_shown(unknown[0])!r}; valid: {', '.join(sorted(BODY_KEYS))}", field=_shown(unknown[0]))
    for key, kind in BODY_TYPES.items():
        if key in doc and not isinstance(doc[key], kind):
            # null included: the body shape has no nullable key; leaving a key out takes its default.
            raise RequestError(
                f"{key} must be {_JSON_TYPES[kind]}, got {json_type(doc[key])}"
                + (" (leave it out instead)" if doc[key] is None else ""),
                field=key,
                value=_shown(doc[key]),
                got=json_type(doc[key]),
                expected=_JSON_TYPES[kind].split(" ", 1)[1],
            )
    for name, tag in (doc.get("Tags") or {}).items():
        if not isinstance(tag, str):
            raise RequestError(
                f"Tags.{_shown(name)} must be a string, got {json_type(tag)}",
                field=f"Tags.{_shown(name)}",
                value=_shown(tag),
                got=json_type(tag),
                expected="string",
            )
    experiment = doc.get("ExperimentName")
    if experiment not in (None, "", settings.experiment_name):
        raise RequestError(
            f"ExperimentName {_shown(experiment)!r} is not this app's experiment; use {settings.experiment_name!r} or leave it out",
            field="ExperimentName",
            value=_shown(experiment),
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
