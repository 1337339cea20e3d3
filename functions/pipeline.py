"""HTTP: the published training pipeline (Azure ML's published-pipeline REST shape).

``POST /api/pipeline/runs`` with ``{"ExperimentName": ..., "ParameterAssignments": {...}}`` starts a
run and answers ``{"Id": "<run id>", ...}``; ``GET /api/pipeline/runs/{run_id}`` reports its status
and, once it completed, its held-out metrics. Both need a function key.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.errors import BankmlError
from shared.http import error_response, json_response
from shared.pipeline import parse_pipeline_body, run_view, submit_pipeline_run
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("pipeline_submit")
@bp.route(route="pipeline/runs", methods=["POST"])
def pipeline_submit(req: func.HttpRequest) -> func.HttpResponse:
    settings, workspace = current()
    try:
        body = parse_pipeline_body(settings, req.get_body())
        run = submit_pipeline_run(settings, workspace, trigger="api", parameters=body["parameters"])
    except BankmlError as err:
        return error_response(err)
    return json_response(
        {"Id": run.run_id, "Status": run.status, "ExperimentName": run.experiment, "DatasetVersion": run.dataset_version}
    )


@bp.function_name("pipeline_run")
@bp.route(route="pipeline/runs/{run_id}", methods=["GET"])
def pipeline_run(req: func.HttpRequest) -> func.HttpResponse:
    _, workspace = current()
    try:
        return json_response(run_view(workspace, req.route_params.get("run_id") or ""))
    except BankmlError as err:
        return error_response(err)
