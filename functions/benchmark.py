"""Timer: a bounded load test against scoring, stored as a report with plots."""

from __future__ import annotations

import logging
import threading

import azure.functions as func

from shared.benchrun import run_benchmark
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)
_running = threading.Lock()


@bp.function_name("benchmark")
@bp.timer_trigger(arg_name="timer", schedule="%BANKML_BENCHMARK_SCHEDULE%", run_on_startup=False, use_monitor=True)
def benchmark(timer: func.TimerRequest) -> None:
    if not _running.acquire(blocking=False):
        log.info("benchmark already running: skipped")
        return
    try:
        settings, workspace = current()
        result = run_benchmark(settings, workspace)
        log.info("benchmark: %s", result["status"])
    finally:
        _running.release()
