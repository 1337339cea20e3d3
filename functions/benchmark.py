"""Timer: a bounded load test against scoring, stored as a report with plots.
HTTP: ``GET /api/benchmarks/latest`` answers the latest report (function key)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.benchrun import latest_report, run_benchmark
from shared.errors import BankmlError, NotFound
from shared.http import error_response, json_response
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("benchmark")
@bp.timer_trigger(arg_name="timer", schedule="%BANKML_BENCHMARK_SCHEDULE%", run_on_startup=False, use_monitor=True)
def benchmark(timer: func.TimerRequest) -> None:
    # No overlap, also with `bankml bench` in another process: run_benchmark holds a lock file in
    # the data dir and answers "already running" when another run has it.
    settings, workspace = current()
    result = run_benchmark(settings, workspace)
    log.info("benchmark: %s", result.get("message") or result["status"])


@bp.function_name("benchmarks_latest")
@bp.route(route="benchmarks/latest", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def benchmarks_latest(req: func.HttpRequest) -> func.HttpResponse:
    try:
        settings, workspace = current()
        report = latest_report(settings, workspace)
        if report is None:
            raise NotFound(
                "no benchmark report yet: the benchmark timer writes one, or run `bankml bench`",
                field="reports/latest.json",
            )
    except BankmlError as err:
        return error_response(err)
    return json_response(report, headers={"Cache-Control": "no-store"})
