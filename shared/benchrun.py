"""One benchmark run: load the live model server and the relay, write the report with plots.

Runs never overlap, whoever starts them (the timer in the function host, `bankml bench` from a
terminal, two hosts on one data dir): a run first takes an exclusive, non-blocking lock on
``<data dir>/bench.lock``; a second run finds it taken and reports "already running" instead. The
operating system drops the lock when its holder exits, however it exits, so a crashed run never
blocks the next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.bench import (
    ALREADY_RUNNING,
    NOTHING_TO_MEASURE,
    build_nothing_report,
    build_report,
    error_result,
    latency_png,
    load_history,
    load_latest,
    mark_stale,
    render_html,
    run_load,
    save_report,
)
from shared.config import Settings
from shared.contract import DEFAULT_LABEL, TUTORIAL_CUSTOMERS
from shared.errors import BankmlError, BenchError, ConfigError, RequestError

try:  # POSIX (Linux in Azure Functions, macOS)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

APP_ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = "bench.lock"
# Generated payload rows are the same on every run (fixed seed), so runs stay comparable.
PAYLOAD_SEED = 0
PAYLOAD_FILE_SETTING = "BANKML_BENCH_PAYLOAD_FILE"
PAYLOAD_ROWS_SETTING = "BANKML_BENCH_PAYLOAD_ROWS"


def reports_dir(settings: Settings) -> Path:
    return settings.home / "reports"


# --------------------------------------------------------------------------- the lock


class AlreadyRunning(Exception):
    """Another benchmark run holds the lock; ``holder`` is what it wrote there (pid, since)."""

    def __init__(self, holder: dict[str, Any]) -> None:
        who = f"pid {holder.get('pid', '?')} since {holder.get('since', '?')}"
        super().__init__(f"a benchmark is already running ({who})")
        self.holder = holder


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            # flock locks belong to the open file description: they exclude other processes and
            # also another open() of the same file in this process (a second thread).
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt  # pragma: no cover - Windows

    try:  # pragma: no cover - Windows
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # pragma: no cover - Windows
        return False
    return True  # pragma: no cover - Windows


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return
    import msvcrt  # pragma: no cover - Windows

    os.lseek(fd, 0, os.SEEK_SET)  # pragma: no cover - Windows
    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # pragma: no cover - Windows


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 4096) or b"{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):  # being written right now, or locked for reading (Windows)
        return {}


@contextmanager
def bench_lock(home: Path) -> Iterator[None]:
    """Hold the data dir's benchmark lock for the block; raises AlreadyRunning when it is taken."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            raise AlreadyRunning(_read_holder(fd))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "since": datetime.now(UTC).isoformat()}).encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            _unlock(fd)
    finally:
        os.close(fd)  # also releases the lock


# --------------------------------------------------------------------------- the payload


def build_payload(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The request body every benchmark request sends, and what it is (for the report).

    Default: the two tutorial customers. ``BANKML_BENCH_PAYLOAD_FILE``: a JSON scoring request,
    checked against the contract like the relay checks it. ``BANKML_BENCH_PAYLOAD_ROWS``: that many
    rows from ``shared.datagen`` (fixed seed, label dropped).
    """
    file_setting, rows = settings.bench_payload_file, settings.bench_payload_rows
    if file_setting and rows:
        raise ConfigError(
            f"set {PAYLOAD_FILE_SETTING} or {PAYLOAD_ROWS_SETTING}, not both", setting=PAYLOAD_ROWS_SETTING
        )
    if not 0 <= rows <= settings.max_rows:
        raise ConfigError(
            f"setting {PAYLOAD_ROWS_SETTING} must be between 0 and BANKML_MAX_ROWS ({settings.max_rows}), got {rows}",
            setting=PAYLOAD_ROWS_SETTING,
            value=rows,
        )
    if file_setting:
        return _payload_from_file(settings, file_setting)
    if rows:
        from shared.datagen import generate_frame

        frame = generate_frame(rows, seed=PAYLOAD_SEED).drop(columns=[DEFAULT_LABEL])
        # to_json turns numpy scalars into JSON numbers; the records then serialise like any request.
        body = json.dumps({"data": json.loads(frame.to_json(orient="records"))})
        if len(body.encode()) > settings.max_body_bytes:
            raise ConfigError(
                f"setting {PAYLOAD_ROWS_SETTING}: {rows} rows make a {len(body.encode())}-byte body, "
                f"above BANKML_MAX_BODY_MB ({settings.max_body_bytes} bytes)",
                setting=PAYLOAD_ROWS_SETTING,
                value=rows,
            )
        return body, _payload_info(body, rows, f"generated (shared.datagen, seed {PAYLOAD_SEED})")
    body = json.dumps({"data": list(TUTORIAL_CUSTOMERS)})
    return body, _payload_info(body, len(TUTORIAL_CUSTOMERS), "tutorial customers (ages 17 and 87)")


def _payload_info(body: str, rows: int, source: str, **extra: Any) -> dict[str, Any]:
    data = body.encode("utf-8")
    return {
        "source": source,
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest()[:16],
        **extra,
    }


def _payload_from_file(settings: Settings, name: str) -> tuple[str, dict[str, Any]]:
    from shared.scoring import parse_request

    path = Path(name).expanduser()
    if not path.is_absolute():
        path = APP_ROOT / path
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"setting {PAYLOAD_FILE_SETTING}: cannot read {path}: {err.strerror or type(err).__name__}",
            setting=PAYLOAD_FILE_SETTING,
            value=str(path),
        ) from err
    try:
        parsed = parse_request(
            data, "application/json", max_rows=settings.max_rows, max_body_bytes=settings.max_body_bytes
        )
        body = data.decode("utf-8")
    except RequestError as err:
        raise ConfigError(
            f"setting {PAYLOAD_FILE_SETTING}: {path} is not a valid scoring request: {err.message}",
            setting=PAYLOAD_FILE_SETTING,
            file=str(path),
            **err.details,
        ) from err
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"setting {PAYLOAD_FILE_SETTING}: {path} is not UTF-8", setting=PAYLOAD_FILE_SETTING, file=str(path)
        ) from err
    return body, _payload_info(body, parsed.rows, "file", file=str(path))


# --------------------------------------------------------------------------- a run


def live_info(live: Any) -> dict[str, Any] | None:
    """What staleness is judged against: the live deployment's name, model version and live time."""
    if live is None:
        return None
    # The workspace port's Deployment has created_at; a backend that knows when it went live says so.
    since = getattr(live, "live_at", None) or getattr(live, "created_at", None)
    return {"name": live.name, "model_version": live.model_version, "live_since": since}


def _reports_container(settings: Settings) -> Any:
    from shared.storage import container, has_storage

    if not has_storage(settings):
        return None
    return container(settings, settings.reports_container)


def run_benchmark(settings: Settings, workspace: Any) -> dict[str, Any]:
    """One run, never overlapping another on the same data dir.

    Returns ``{"status": "already running", "message", "holder"}`` when another run holds the lock,
    else ``{"status", "report", "paths"}`` where status is ok, failed, unreachable or "nothing to
    measure" (no live deployment: a small record is stored all the same).
    """
    try:
        with bench_lock(settings.home):
            return _run_locked(settings, workspace)
    except AlreadyRunning as busy:
        log.info("benchmark not started: %s", busy)
        return {"status": ALREADY_RUNNING, "message": str(busy), "holder": busy.holder}


def _run_locked(settings: Settings, workspace: Any) -> dict[str, Any]:
    started = datetime.now(UTC)
    local = reports_dir(settings)
    # A wrong payload setting fails now, even when there is nothing to measure yet.
    body, payload = build_payload(settings)
    live = workspace.live_deployment()
    if live is None:
        log.info("benchmark: no live deployment, nothing to measure")
        report = build_nothing_report(settings=settings.public_dict(), started_at=started)
        html = render_html(report, load_history(local))
        paths = save_report(report, html, None, container_client=_reports_container(settings), local_dir=local)
        return {"status": NOTHING_TO_MEASURE, "report": report, "paths": paths}

    common = {
        "method": "POST",
        "body": body,
        "max_requests": settings.bench_requests,
        "max_seconds": settings.bench_duration_s,
        "concurrency": settings.bench_concurrency,
        "timeout_s": settings.relay_timeout_s,
    }
    relay_headers = {"Content-Type": "application/json"}
    if settings.relay_key:
        relay_headers["x-functions-key"] = settings.relay_key
    jobs = {
        "model_server": {
            **common,
            "url": live.scoring_uri,
            "headers": {"Authorization": f"Bearer {live.key}", "Content-Type": "application/json"},
        },
        "relay": {**common, "url": f"{settings.function_host_url}/api/score", "headers": relay_headers},
    }
    targets: dict[str, dict[str, Any]] = {}
    for name, job in jobs.items():
        try:
            targets[name] = run_load(job)
        except BenchError as err:
            # The load generator itself failed (not the target): recorded as "no answer", with why.
            log.warning("benchmark %s: %s", name, err.message)
            targets[name] = error_result(f"load generator: {err.message}", url=job["url"])

    dataset_version = None
    try:
        dataset_version = workspace.get_run(live.run_id).dataset_version
    except BankmlError as err:
        log.warning("benchmark: no dataset version for run %s: %s", live.run_id, err.message)
    info = live_info(live) or {}
    report = build_report(
        targets,
        settings=settings.public_dict(),
        model_version=live.model_version,
        dataset_version=dataset_version,
        deployment=live.name,
        started_at=started,
        run_id=live.run_id,
        deployment_live_since=info.get("live_since"),
        payload=payload,
    )
    png = latency_png(report)
    html = render_html(report, load_history(local), overview_png=png)
    paths = save_report(report, html, png, container_client=_reports_container(settings), local_dir=local)
    log.info("benchmark %s: %s", report["id"], report["status"])
    return {"status": report["status"], "report": report, "paths": paths}


# --------------------------------------------------------------------------- reading back


def latest_report(settings: Settings, workspace: Any) -> dict[str, Any] | None:
    """``reports/latest.json`` marked stale or not against the deployment live now; None if none."""
    report = load_latest(reports_dir(settings), container_client=_latest_container(settings))
    if report is None:
        return None
    return mark_stale(report, live_info(workspace.live_deployment()))


def _latest_container(settings: Settings) -> Any:
    from shared.storage import has_storage

    # Only consulted when the local copy is missing; a storage error then is the answer's error.
    if not has_storage(settings) or (reports_dir(settings) / "latest.json").exists():
        return None
    return _reports_container(settings)


def report_history(settings: Settings, workspace: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` reports of the data dir, newest first, each marked stale or not."""
    live = live_info(workspace.live_deployment())
    return [mark_stale(r, live) for r in load_history(reports_dir(settings), limit=limit)]
