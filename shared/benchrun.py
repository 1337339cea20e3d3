"""One benchmark run: load the live model server and the relay, write the report with plots."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.bench import build_report, latency_png, load_history, render_html, run_load, save_report
from shared.config import Settings
from shared.contract import TUTORIAL_CUSTOMERS
from shared.storage import container

log = logging.getLogger(__name__)


def reports_dir(settings: Settings) -> Path:
    return settings.home / "reports"


def run_benchmark(settings: Settings, workspace: Any) -> dict[str, Any]:
    """Returns {"status": "nothing to measure"} or {"report": ..., "paths": ...}."""
    live = workspace.live_deployment()
    if live is None:
        log.info("benchmark: no live deployment, nothing to measure")
        return {"status": "nothing to measure"}
    body = json.dumps({"data": list(TUTORIAL_CUSTOMERS)})
    common = {
        "method": "POST",
        "body": body,
        "max_requests": settings.bench_requests,
        "max_seconds": settings.bench_duration_s,
        "concurrency": settings.bench_concurrency,
        "timeout_s": settings.relay_timeout_s,
    }
    started = datetime.now(UTC).isoformat()
    targets: dict[str, dict[str, Any]] = {
        "model_server": run_load(
            {**common, "url": live.scoring_uri, "headers": {"Authorization": f"Bearer {live.key}", "Content-Type": "application/json"}}
        )
    }
    relay_headers = {"Content-Type": "application/json"}
    if settings.relay_key:
        relay_headers["x-functions-key"] = settings.relay_key
    targets["relay"] = run_load({**common, "url": f"{settings.function_host_url}/api/score", "headers": relay_headers})
    run = workspace.get_run(live.run_id)
    report = build_report(
        targets,
        settings=settings.public_dict(),
        model_version=live.model_version,
        dataset_version=run.dataset_version,
        deployment=live.name,
        payload_rows=len(TUTORIAL_CUSTOMERS),
        started_at=started,
    )
    local = reports_dir(settings)
    history = load_history(local)
    html = render_html(report, history)
    png = latency_png(report)
    client = container(settings, settings.reports_container) if settings.storage_connection else None
    paths = save_report(report, html, png, container_client=client, local_dir=local)
    log.info("benchmark %s: %s", report["id"], report["status"])
    return {"status": report["status"], "report": report, "paths": paths}
