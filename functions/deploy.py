"""Event Grid trigger: a run finished -> deploy its best model if it beats the live one.

Takes the Event Grid schema and CloudEvents 1.0 alike (the worker passes ``func.CloudEvent`` for a
body with ``specversion``; the annotation stays ``func.EventGridEvent`` because the worker accepts
only a class there). Anything that is not a completed run of this app is acknowledged (2xx) and left
alone; redelivered events and the same run reported twice end in one decision (see deploy_run).
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.errors import DeploymentError
from shared.events import RUN_COMPLETED, run_event_of
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("deploy_best_model")
@bp.event_grid_trigger(arg_name="event")
def deploy_best_model(event: func.EventGridEvent) -> None:
    info, run_event = run_event_of(event)
    if run_event is None or run_event.is_child:
        log.info("ignored event %s (%s%s)", info.id, info.type, ", a child run" if run_event else "")
        return
    _, workspace = current()
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
