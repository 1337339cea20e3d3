"""Timer: scheduled retraining on the latest dataset version (off unless BANKML_RETRAIN_SCHEDULE is set).

The function is registered only when the schedule setting holds an NCRONTAB expression: a timer
binding with an empty schedule fails indexing (in the Functions host and in devhost alike), and
NCRONTAB has no "never". Changing an app setting restarts the app, which re-indexes the functions.
The disabled-function convention (``AzureWebJobs.retrain.Disabled``) pauses it without unsetting
the schedule. The run goes through the same submission path and deployment gate as any other.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.config import Settings
from shared.pipeline import scheduled_retrain
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)
FUNCTION_NAME = "retrain"
SCHEDULE = "%BANKML_RETRAIN_SCHEDULE%"


def retrain(timer: func.TimerRequest) -> None:
    settings, workspace = current()
    run = scheduled_retrain(settings, workspace)
    if run is not None:
        log.info("scheduled retraining: run %s on dataset v%d%s", run.run_id, run.dataset_version, " (past due)" if timer.past_due else "")


def register(blueprint: func.Blueprint, settings: Settings) -> bool:
    """Register the timer on ``blueprint`` when ``settings`` hold a retraining schedule."""
    if not settings.retrain_schedule:
        return False
    blueprint.function_name(FUNCTION_NAME)(
        blueprint.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False, use_monitor=True)(retrain)
    )
    return True


register(bp, Settings.from_env())
