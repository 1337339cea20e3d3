"""Event Grid trigger: a run finished -> turn on request telemetry for its deployment.

Accepts the Event Grid schema and CloudEvents 1.0 like deploy_best_model; telemetry is remembered
for the run, so it is on whether this event arrives before or after the deployment exists.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.events import RUN_COMPLETED, run_event_of
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("enable_insights")
@bp.event_grid_trigger(arg_name="event")
def enable_insights(event: func.EventGridEvent) -> None:
    info, run_event = run_event_of(event)
    if run_event is None or run_event.is_child or run_event.event_type != RUN_COMPLETED:
        log.info("ignored event %s (%s)", info.id, info.type)
        return
    _, workspace = current()
    if not workspace.is_own_run(run_event.run_id, run_event.experiment_name):
        log.info("ignored run %s: not submitted by this app", run_event.run_id)
        return
    log.info("run %s: %s", run_event.run_id, workspace.enable_insights(run_event.run_id))
