"""Event Grid trigger: a run finished -> turn on request telemetry for its deployment."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.events import RUN_COMPLETED, parse_run_event
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("enable_insights")
@bp.event_grid_trigger(arg_name="event")
def enable_insights(event: func.EventGridEvent) -> None:
    _, workspace = current()
    run_event = parse_run_event(
        event_id=event.id, event_type=event.event_type, data=event.get_json(), subject=event.subject, topic=event.topic
    )
    if run_event is None or run_event.is_child or run_event.event_type != RUN_COMPLETED:
        log.info("ignored event %s (%s)", event.id, event.event_type)
        return
    if not workspace.is_own_run(run_event.run_id, run_event.experiment_name):
        log.info("ignored run %s: not submitted by this app", run_event.run_id)
        return
    log.info("run %s: %s", run_event.run_id, workspace.enable_insights(run_event.run_id))
