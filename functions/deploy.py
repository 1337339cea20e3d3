"""Event Grid trigger: a run finished -> deploy its best model if it beats the live one."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.errors import DeploymentError
from shared.events import RUN_COMPLETED, parse_run_event
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("deploy_best_model")
@bp.event_grid_trigger(arg_name="event")
def deploy_best_model(event: func.EventGridEvent) -> None:
    settings, workspace = current()
    run_event = parse_run_event(
        event_id=event.id, event_type=event.event_type, data=event.get_json(), subject=event.subject, topic=event.topic
    )
    if run_event is None or run_event.is_child:
        log.info("ignored event %s (%s)", event.id, event.event_type)
        return
    if not workspace.is_own_run(run_event.run_id, run_event.experiment_name):
        log.info("ignored run %s: not submitted by this app", run_event.run_id)
        return
    if run_event.event_type != RUN_COMPLETED:
        log.warning("run %s ended with status %s: nothing to deploy", run_event.run_id, run_event.run_status)
        return
    try:
        decision = workspace.deploy_run(run_event.run_id)
    except DeploymentError as err:
        # Recorded as the run's decision; the live model keeps serving. Not retried by Event Grid.
        log.error("deployment of run %s failed: %s", run_event.run_id, err.message)
        return
    log.info(
        "run %s: %s%s", run_event.run_id, "deployed" if decision.deployed else "not deployed",
        f" ({decision.reason})" + (" [duplicate event]" if decision.duplicate else ""),
    )
