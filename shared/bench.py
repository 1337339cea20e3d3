"""Benchmark of the scoring endpoints: run the load generator, summarise, report, store.

``run_load`` starts ``shared.loadgen`` in its own process; ``summarise`` turns its raw result into
Apache-Bench-like figures; ``build_report`` collects the targets of one run; ``render_html``,
``latency_png`` and ``ab_summary`` present it; ``save_report`` / ``load_history`` store and read it
(blob container ``reports`` and a local directory with the same layout).

Percentiles use the nearest-rank method (the value below which p% of the requests fall, always a
measured latency), like ``ab``. Secrets never reach a report: header values stay in the job,
setting names that look secret are dropped, and URL query values are masked.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.errors import BenchError, ConfigError
from shared.files import write_atomic
from shared.loadgen import JobError, parse_job, redact_url, scrub

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
# Report ids are UTC start times to the millisecond, e.g. 20261203T190512345Z (earlier reports
# have whole seconds, 20261203T190512Z, and are still read). Two runs started in the
# same second no longer share an id.
ID_RE = re.compile(r"^\d{8}T\d{6}(\d{3})?Z$")


def report_id(started: datetime) -> str:
    """The id (and folder / blob prefix) of a report started at ``started``."""
    started = _as_utc(started)
    return started.strftime("%Y%m%dT%H%M%S") + f"{started.microsecond // 1000:03d}Z"


STATUS_ORDER = {"ok": 0, "failed": 1, "unreachable": 2}
# Status of a run that found no live deployment: recorded, but it has no targets and no figures.
NOTHING_TO_MEASURE = "nothing to measure"
# Status (never stored) of a run that did not start because another one held the lock.
ALREADY_RUNNING = "already running"
AB_PERCENTILES = (50, 66, 75, 80, 90, 95, 98, 99, 100)
# Above this many requests a report keeps the histogram only, so report.json stays small.
REPORT_LATENCIES_CAP = 10_000
SCHEMA_VERSION = 2
# Seconds allowed for interpreter start-up and the final join on top of the job's own bounds.
SPAWN_SLACK_S = 15.0
# A setting whose name matches is left out of a report whatever its value.
SECRET_NAME_RE = re.compile(r"key|secret|token|passw|authori|connection|credential|header|sas|sig", re.IGNORECASE)
BLOB_CONTENT_TYPES = {
    "report.json": "application/json",
    "report.html": "text/html; charset=utf-8",
    "latency.png": "image/png",
    "latest.json": "application/json",
}



# --------------------------------------------------------------------------- running


def run_load(job: dict[str, Any], *, hard_timeout_s: float | None = None) -> dict[str, Any]:
    """Run one load job in a separate process and return its raw result.

    The job goes through stdin so header values never show in the process list. The process is
    killed after ``max_seconds + 2 * timeout_s`` plus start-up slack, whatever the target does.
    """
    try:
        parsed = parse_job(job)
    except JobError as err:
        raise ConfigError(f"invalid benchmark job: {err}") from err
    limit = hard_timeout_s or parsed.max_seconds + 2 * parsed.timeout_s + SPAWN_SLACK_S
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "shared.loadgen"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=limit,
            # cwd is the app root so `-m shared.loadgen` resolves to this package.
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"load generator did not finish within {limit:.0f} s", url=redact_url(parsed.url)) from err
    if proc.returncode != 0:
        tail = scrub(proc.stderr.strip()[-500:], parsed.secrets)
        raise BenchError(f"load generator exited with code {proc.returncode}", url=redact_url(parsed.url), stderr=tail)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise BenchError("load generator wrote no readable result", url=redact_url(parsed.url)) from err


def error_result(message: str, *, url: str | None = None) -> dict[str, Any]:
    """A raw result for a target that could not be load-tested at all (summarises as unreachable)."""
    now = datetime.now(UTC).isoformat()
    return {
        "started_at": now,
        "ended_at": now,
        "duration_s": 0.0,
        "job": {"url": redact_url(url)} if url else {},
        "requests": 0,
        "ok": 0,
        "non_2xx": {},
        "connection_errors": 0,
        "error_samples": [message[:200]],
        "latencies_ms": [],
        "timeline": [],
        "bytes_received": 0,
        "bytes_sent": 0,
    }


# --------------------------------------------------------------------------- figures


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None for an empty list."""
    if not sorted_values:
        return None
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def _rate(amount: float, seconds: float) -> float | None:
    return round(amount / seconds, 3) if seconds > 0 else None


def summarise(result: Mapping[str, Any]) -> dict[str, Any]:
    """Figures of one raw loadgen result; status is ok, failed or unreachable.

    Every non-2xx answer and every connection error is a failure. Latencies cover every request
    that got an HTTP answer, so with non-2xx answers they include failures (flagged). A run that
    got no HTTP answer at all is "unreachable" and has no rates or latencies (None, not 0).
    """
    requests = int(result.get("requests", 0))
    ok = int(result.get("ok", 0))
    non_2xx = {str(k): int(v) for k, v in (result.get("non_2xx") or {}).items()}
    non_2xx_total = sum(non_2xx.values())
    connection_errors = int(result.get("connection_errors", 0))
    failures = non_2xx_total + connection_errors
    duration = float(result.get("duration_s", 0.0))
    latencies = sorted(float(x) for x in result.get("latencies_ms") or [])
    job = result.get("job") or {}

    if ok + non_2xx_total == 0:
        status = "unreachable"
    elif failures:
        status = "failed"
    else:
        status = "ok"
    reachable = status != "unreachable"

    latency: dict[str, float | None] | None = None
    percentiles: dict[str, float | None] | None = None
    if reachable and latencies:
        latency = {
            "min": latencies[0],
            "mean": round(sum(latencies) / len(latencies), 3),
            **{f"p{p}": percentile(latencies, p) for p in (50, 90, 95, 99)},
            "max": latencies[-1],
        }
        percentiles = {str(p): percentile(latencies, p) for p in AB_PERCENTILES}

    concurrency = job.get("concurrency")
    note = None
    latency_label = None
    if status == "unreachable":
        samples = result.get("error_samples") or []
        note = "no HTTP answer" + (f": {samples[0]}" if samples else "")
    elif status == "failed":
        note = f"{failures} of {requests} requests failed"
        if latency is not None:
            # The figures of a failed run describe something else than clean scoring: say what.
            parts = []
            if non_2xx_total:
                parts.append(f"include {non_2xx_total} non-2xx answers")
            if connection_errors:
                parts.append(f"leave out {connection_errors} requests that got no HTTP answer")
            latency_label = "failed run: latencies " + " and ".join(parts)
    return {
        "status": status,
        "note": note,
        "url": job.get("url"),
        "method": job.get("method"),
        "concurrency": concurrency,
        "body_bytes": job.get("body_bytes"),
        "started_at": result.get("started_at"),
        "duration_s": round(duration, 3),
        "requests": requests,
        "successes": ok,
        "failures": failures,
        "non_2xx": non_2xx,
        "non_2xx_total": non_2xx_total,
        "connection_errors": connection_errors,
        "error_kinds": dict(result.get("error_kinds") or {}),
        "error_samples": list(result.get("error_samples") or []),
        # Like ab's "Requests per second": requests that got an HTTP answer; refused connections
        # and timeouts are failures, not throughput.
        "requests_per_s": _rate(ok + non_2xx_total, duration) if reachable else None,
        "successes_per_s": _rate(ok, duration) if reachable else None,
        # ab's two "Time per request" lines: per client, and across all concurrent clients.
        "time_per_request_ms": (
            round(concurrency * duration * 1000 / requests, 3) if reachable and concurrency and requests else None
        ),
        "time_per_request_all_ms": round(duration * 1000 / requests, 3) if reachable and requests else None,
        "latency_ms": latency,
        "percentiles_ms": percentiles,
        "latency_includes_failures": bool(non_2xx_total) and latency is not None,
        "latency_label": latency_label,
        "bytes_received": int(result.get("bytes_received", 0)),
        "bytes_sent": int(result.get("bytes_sent", 0)),
        "received_kb_per_s": _rate(int(result.get("bytes_received", 0)) / 1024, duration) if reachable else None,
        "sent_kb_per_s": _rate(int(result.get("bytes_sent", 0)) / 1024, duration) if reachable else None,
    }


def histogram(latencies: list[float], max_bins: int = 40) -> dict[str, list[float]] | None:
    if not latencies:
        return None
    import numpy as np

    bins = min(max_bins, max(5, int(math.sqrt(len(latencies)))))
    counts, edges = np.histogram(np.asarray(latencies, dtype=float), bins=bins)
    return {"edges": [round(float(e), 3) for e in edges], "counts": [int(c) for c in counts]}


def public_settings(value: Any) -> Any:
    """A copy of settings fit for a report: secret-looking names dropped, URL query values masked."""
    if isinstance(value, Mapping):
        return {str(k): public_settings(v) for k, v in value.items() if not SECRET_NAME_RE.search(str(k))}
    if isinstance(value, list | tuple):
        return [public_settings(v) for v in value]
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return redact_url(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _as_utc(moment: datetime | str) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _report_head(
    started: datetime,
    *,
    settings: Mapping[str, Any],
    payload: Mapping[str, Any] | None,
    status: str,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "id": report_id(started),
        "created_at": datetime.now(UTC).isoformat(),
        "started_at": started.isoformat(),
        "status": status,
        "note": None,
        "settings": public_settings(dict(settings)),
        "payload": public_settings(dict(payload)) if payload else None,
        "payload_rows": (payload or {}).get("rows"),
    }


def build_report(
    targets: Mapping[str, Mapping[str, Any]],
    *,
    settings: Mapping[str, Any],
    model_version: str | int | None,
    dataset_version: str | int | None,
    deployment: str | None,
    payload_rows: int | None = None,
    started_at: datetime | str,
    run_id: str | None = None,
    deployment_live_since: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One report from the raw loadgen results of each target; status is the worst target's.

    ``deployment`` / ``model_version`` / ``deployment_live_since`` identify what was measured, so a
    report read back later can tell whether it still describes the live deployment (``staleness``).
    """
    if not targets:
        raise ValueError("a report needs at least one target")
    started = _as_utc(started_at)
    out: dict[str, dict[str, Any]] = {}
    for name, raw in targets.items():
        summary = summarise(raw)
        latencies = [float(x) for x in raw.get("latencies_ms") or []]
        summary["latency_histogram"] = histogram(latencies)
        summary["latencies_truncated"] = len(latencies) > REPORT_LATENCIES_CAP
        summary["latencies_ms"] = latencies if len(latencies) <= REPORT_LATENCIES_CAP else []
        summary["timeline"] = list(raw.get("timeline") or [])
        summary["timeline_stride"] = int(raw.get("timeline_stride", 1))
        out[str(name)] = summary
    if payload is None and payload_rows is not None:
        payload = {"rows": payload_rows}
    status = max((t["status"] for t in out.values()), key=STATUS_ORDER.__getitem__)
    report = _report_head(started, settings=settings, payload=payload, status=status)
    failing = [name for name, t in out.items() if t["status"] != "ok"]
    if failing:
        report["note"] = "; ".join(f"{name}: {out[name]['note']}" for name in failing)
    report.update(
        {
            "model_version": model_version,
            "dataset_version": dataset_version,
            "deployment": deployment,
            "run_id": run_id,
            "deployment_live_since": deployment_live_since,
            "targets": out,
        }
    )
    return report


def build_nothing_report(
    *, settings: Mapping[str, Any], started_at: datetime | str, note: str = "no live deployment"
) -> dict[str, Any]:
    """The record of a run that found nothing to load-test: no targets, no figures, the reason."""
    report = _report_head(_as_utc(started_at), settings=settings, payload=None, status=NOTHING_TO_MEASURE)
    report.update(
        {
            "note": note,
            "model_version": None,
            "dataset_version": None,
            "deployment": None,
            "run_id": None,
            "deployment_live_since": None,
            "targets": {},
        }
    )
    return report


def staleness(report: Mapping[str, Any], live: Mapping[str, Any] | None) -> str | None:
    """Why ``report`` no longer describes the live deployment, or None when it still does.

    ``live`` is ``{"name", "model_version", "live_since"}`` of the deployment live now (None: none
    is). A report is stale when it measured another deployment or model version than the live one,
    or was started before the live one went live (a data dir rebuilt with the same names).
    """
    measured = report.get("deployment")
    if live is None:
        return f"it measured {measured}; no deployment is live now" if measured else None
    live_name, live_version = live.get("name"), live.get("model_version")
    if not measured:
        return f"no deployment was live when it ran; {live_name} (model {live_version}) is live now"
    if measured != live_name or str(report.get("model_version")) != str(live_version):
        return (
            f"it measured {measured} (model {report.get('model_version')}); "
            f"the live deployment is {live_name} (model {live_version})"
        )
    since, started = live.get("live_since"), report.get("started_at")
    if since and started:
        try:
            older = _as_utc(str(started)) < _as_utc(str(since))
        except ValueError:
            older = False
        if older:
            return f"it ran at {started}, before {live_name} went live at {since}"
    return None


def mark_stale(report: Mapping[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``report`` with ``stale`` (bool) and ``stale_reason`` set against ``live``."""
    reason = staleness(report, live)
    return {**report, "stale": reason is not None, "stale_reason": reason}


# --------------------------------------------------------------------------- text


def _num(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _payload_text(report: Mapping[str, Any]) -> str:
    payload = report.get("payload") or {}
    if not payload:
        return str(report.get("payload_rows") or "—")
    return f"{payload.get('rows')} ({payload.get('source', '?')}, {payload.get('bytes', '?')} bytes)"


def ab_summary(report: Mapping[str, Any]) -> str:
    """Apache-Bench-like text, one block per target, for the CLI."""
    lines = [f"Benchmark {report['id']}  status: {report['status']}"]
    if report.get("stale"):
        lines.append(f"STALE: {report.get('stale_reason')}")
    if not report.get("targets"):
        lines.append(f"Nothing was measured: {report.get('note') or 'no target'}")
        return "\n".join(lines) + "\n"
    lines.append(
        f"Deployment: {report.get('deployment') or '—'}  model: {report.get('model_version') or '—'}  "
        f"dataset: {report.get('dataset_version') or '—'}  rows per request: {_payload_text(report)}"
    )
    for name, t in report["targets"].items():
        non_2xx = ", ".join(f"{code}: {n}" for code, n in t["non_2xx"].items())
        lines += [
            "",
            f"== {name}  ({t['status']})",
            f"Document URL:           {t.get('url') or '—'}",
            f"Document Length:        {t.get('body_bytes') or 0} bytes sent per request",
            f"Concurrency Level:      {t.get('concurrency') or '—'}",
            f"Time taken for tests:   {t['duration_s']:.3f} seconds",
            f"Complete requests:      {t['requests']}",
            f"Failed requests:        {t['failures']}",
            f"Non-2xx responses:      {t['non_2xx_total']}" + (f"  ({non_2xx})" if non_2xx else ""),
            f"Connection errors:      {t['connection_errors']}",
            f"Total transferred:      {t['bytes_received']} bytes",
            f"Requests per second:    {_num(t['requests_per_s'])} [#/sec] (mean)",
            f"Time per request:       {_num(t['time_per_request_ms'], 3)} [ms] (mean)",
            f"Time per request:       {_num(t['time_per_request_all_ms'], 3)} [ms] (mean, across all concurrent requests)",
            f"Transfer rate:          {_num(t['received_kb_per_s'])} [Kbytes/sec] received",
        ]
        if t["note"]:
            lines.append(f"Note:                   {t['note']}")
        if t["percentiles_ms"]:
            label = t.get("latency_label")
            lat = t.get("latency_ms") or {}
            lines.append(
                "Latency (ms):           "
                + "  ".join(f"{k} {_num(lat.get(k), 1)}" for k in ("min", "mean", "p50", "p90", "p95", "p99", "max"))
                + (f"  [{label}]" if label else "")
            )
            caveat = f" [{label}]" if label else ""
            lines.append(f"\nPercentage of the requests served within a certain time (ms){caveat}")
            for p, v in t["percentiles_ms"].items():
                lines.append(f" {p:>3}%  {_num(v, 1):>9}" + ("  (longest request)" if p == "100" else ""))
    return "\n".join(lines) + "\n"


_HISTORY_COLUMNS = (
    ("date (UTC)", 19, "<"),
    ("target", 12, "<"),
    ("req/s", 9, ">"),
    ("p50 ms", 9, ">"),
    ("p99 ms", 9, ">"),
    ("failures", 8, ">"),
    ("status", 18, "<"),
    ("model", 6, "<"),
)


def history_text(reports: Iterable[Mapping[str, Any]]) -> str:
    """The trend of earlier runs, oldest first, one line per target (a line for an empty run).

    Latencies of a failed target carry ``*``; a report marked stale (``mark_stale``) says why.
    """
    ordered = sorted(reports, key=lambda r: str(r.get("id", "")))
    if not ordered:
        return "no benchmark reports yet\n"

    def row(values: list[str]) -> str:
        cells = [f"{v:{align}{width}}" for v, (_, width, align) in zip(values, _HISTORY_COLUMNS, strict=True)]
        return "  ".join(cells).rstrip()

    lines = [row([c[0] for c in _HISTORY_COLUMNS]) + "  note"]
    starred = False
    for r in ordered:
        date = str(r.get("started_at") or r.get("created_at") or "")[:19].replace("T", " ")
        model = f"v{r['model_version']}" if r.get("model_version") not in (None, "") else "—"
        note = f"stale: {r['stale_reason']}" if r.get("stale") else ""
        targets = r.get("targets") or {}
        if not targets:
            lines.append(
                row([date, "—", "—", "—", "—", "—", str(r.get("status", "?")), model])
                + f"  {note or r.get('note') or ''}".rstrip()
            )
            continue
        for name, t in targets.items():
            lat = t.get("latency_ms") or {}
            star = "*" if t.get("latency_label") else ""
            starred = starred or bool(star)
            cells = [
                date,
                str(name),
                _num(t.get("requests_per_s"), 1),
                _num(lat.get("p50"), 2) + star if lat.get("p50") is not None else "—",
                _num(lat.get("p99"), 2) + star if lat.get("p99") is not None else "—",
                str(t.get("failures", "?")),
                str(t.get("status", "?")),
                model,
            ]
            lines.append(row(cells) + (f"  {note}" if note else ""))
    if starred:
        lines.append("* latency of a failed run (see its report for what the figures include)")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots

_COLOURS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _new_figure(width: float, height: float, ncols: int) -> tuple[Any, Any]:
    # Figure without pyplot: no global state and no GUI backend, safe inside the function host.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols)


def _latency_figure(targets: Mapping[str, Mapping[str, Any]], title: str) -> bytes:
    fig, (hist_ax, time_ax) = _new_figure(11, 3.6, 2)
    fig.suptitle(title, fontsize=11)
    failed_drawn = False
    for i, (name, t) in enumerate(targets.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        h = t.get("latency_histogram")
        if h:
            hist_ax.stairs(h["counts"], h["edges"], fill=len(targets) == 1, alpha=0.55, color=colour, label=name)
            p50 = (t.get("latency_ms") or {}).get("p50")
            if p50 is not None:
                hist_ax.axvline(p50, color=colour, linestyle="--", linewidth=1)
        timeline = t.get("timeline") or []
        good = [(x, y) for x, y, s in timeline if 200 <= s < 300]
        bad = [(x, y) for x, y, s in timeline if not 200 <= s < 300]
        if good:
            time_ax.scatter(*zip(*good, strict=True), s=6, color=colour, alpha=0.6, label=name)
        if bad:
            time_ax.scatter(
                *zip(*bad, strict=True),
                s=18,
                marker="x",
                color="#dc2626",
                label=None if failed_drawn else "failed (non-2xx / no answer)",
            )
            failed_drawn = True
    for ax, xlabel, ylabel, heading in (
        (hist_ax, "latency (ms)", "requests", "Latency distribution (dashed: median)"),
        (time_ax, "time since start (s)", "latency (ms)", "Latency over time"),
    ):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(heading, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8, loc="upper right")
        else:
            ax.text(0.5, 0.5, "no HTTP answers", ha="center", va="center", transform=ax.transAxes, color="#6b7280")
    return _png(fig)


def latency_png(report: Mapping[str, Any]) -> bytes:
    """Histogram and latency-over-time of every target in one PNG (saved as latency.png)."""
    return _latency_figure(report["targets"], f"Benchmark {report['id']}")


def _history_rows(report: Mapping[str, Any], history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r, current in [(report, True), *((h, False) for h in history if h.get("id") != report.get("id"))]:
        for name, t in (r.get("targets") or {}).items():
            lat = t.get("latency_ms") or {}
            rows.append(
                {
                    "id": r.get("id", "?"),
                    "date": str(r.get("started_at") or r.get("created_at") or "")[:19].replace("T", " "),
                    "target": name,
                    "model": r.get("model_version"),
                    "rps": t.get("requests_per_s"),
                    "p50": lat.get("p50"),
                    "p99": lat.get("p99"),
                    "failures": t.get("failures"),
                    "failed_latency": bool(t.get("latency_label")),
                    "status": t.get("status", "?"),
                    "current": current,
                }
            )
    return rows


def _trend_png(rows: list[dict[str, Any]]) -> bytes | None:
    runs = sorted({r["id"] for r in rows})
    if len(runs) < 2:
        return None
    fig, (lat_ax, rps_ax) = _new_figure(11, 3.0, 2)
    index = {run: i for i, run in enumerate(runs)}
    for i, name in enumerate(sorted({r["target"] for r in rows})):
        colour = _COLOURS[i % len(_COLOURS)]
        mine = sorted((r for r in rows if r["target"] == name), key=lambda r: r["id"])
        x = [index[r["id"]] for r in mine]
        lat_ax.plot(
            x, [r["p50"] if r["p50"] is not None else math.nan for r in mine], "o-", color=colour, label=f"{name} p50"
        )
        lat_ax.plot(
            x, [r["p99"] if r["p99"] is not None else math.nan for r in mine], "^:", color=colour, label=f"{name} p99"
        )
        rps_ax.plot(x, [r["rps"] if r["rps"] is not None else math.nan for r in mine], "o-", color=colour, label=name)
    step = max(1, len(runs) // 8)
    for ax, heading, ylabel in ((lat_ax, "Latency per run", "ms"), (rps_ax, "Throughput per run", "requests/s")):
        # Run ids are YYYYMMDDTHHMMSS[mmm]Z; show them as "MM-DD HH:MM".
        labels = [f"{r[4:6]}-{r[6:8]} {r[9:11]}:{r[11:13]}" for r in runs[::step]]
        ax.set_xticks(range(0, len(runs), step), labels, fontsize=7)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # from zero, with room for the top point
        ax.set_title(heading, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1f2937;background:#f3f4f6;margin:0}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:0 0 12px}
.meta{color:#4b5563;margin-bottom:20px}.meta span{margin-right:18px}
.card{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:18px 22px;margin-bottom:20px}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:13px;font-weight:600;color:#fff;vertical-align:middle}
.ok{background:#059669}.failed{background:#dc2626}.unreachable{background:#6b7280}.nothing{background:#9ca3af}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{padding:6px 10px;border-bottom:1px solid #e5e7eb;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f9fafb;font-weight:600}
tr.current td{background:#eff6ff;font-weight:600}
.grid{display:grid;grid-template-columns:minmax(280px,1fr) 2fr;gap:20px;align-items:start}
img{max-width:100%;height:auto}.warn{color:#b45309}.muted{color:#6b7280}
code{font-size:13px;background:#f3f4f6;padding:1px 4px;border-radius:4px}
ul.errors{margin:8px 0 0;padding-left:18px;font-size:13px;color:#7f1d1d}
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _badge(status: str) -> str:
    cls = status if status in STATUS_ORDER else "nothing" if status == NOTHING_TO_MEASURE else "unreachable"
    return f'<span class="badge {cls}">{html.escape(status)}</span>'


def _target_section(name: str, t: Mapping[str, Any]) -> str:
    e = html.escape
    lat = t.get("latency_ms") or {}
    codes = ", ".join(f"{code}×{n}" for code, n in t["non_2xx"].items()) or "—"
    rows: list[tuple[str, str]] = [
        ("URL", f"<code>{e(str(t.get('url') or '—'))}</code>"),
        ("Concurrency", e(_num(t.get("concurrency")))),
        ("Duration", f"{e(_num(t['duration_s'], 3))} s"),
        ("Requests", e(_num(t["requests"]))),
        ("Successes (2xx)", e(_num(t["successes"]))),
        ("Failures", e(_num(t["failures"]))),
        ("Non-2xx by status", e(codes)),
        ("Connection errors", e(_num(t["connection_errors"]))),
        ("Requests/s", e(_num(t["requests_per_s"]))),
        ("Time per request (mean)", f"{e(_num(t['time_per_request_ms']))} ms"),
    ]
    for key, label in (
        ("min", "min"),
        ("mean", "mean"),
        ("p50", "p50"),
        ("p90", "p90"),
        ("p95", "p95"),
        ("p99", "p99"),
        ("max", "max"),
    ):
        # A failed run's latencies are labelled on every line, not only in a note below the table.
        suffix = " (failed run)" if t.get("latency_label") else ""
        rows.append((f"Latency {label}{suffix}", f"{e(_num(lat.get(key)))} ms"))
    rows.append(
        ("Transfer rate", f"{e(_num(t['received_kb_per_s']))} KB/s received, {e(_num(t['sent_kb_per_s']))} KB/s sent")
    )
    table = "".join(f'<tr><th>{e(k)}</th><td class="n">{v}</td></tr>' for k, v in rows)
    notes = ""
    if t.get("note"):
        notes += f'<p class="warn">{e(t["note"])}</p>'
    if t.get("latency_label"):
        notes += f'<p class="warn">Latency figures of a {e(t["latency_label"])}.</p>'
    if t.get("error_samples"):
        notes += '<ul class="errors">' + "".join(f"<li>{e(s)}</li>" for s in t["error_samples"]) + "</ul>"
    plot = _img(_latency_figure({name: t}, name), f"latency of {name}")
    return (
        f'<section class="card"><h2>{e(name)} {_badge(t["status"])}</h2>'
        f'<div class="grid"><div><table>{table}</table>{notes}</div><div>{plot}</div></div></section>'
    )


def _history_section(rows: list[dict[str, Any]]) -> str:
    e = html.escape
    body = "".join(
        f'<tr class="{"current" if r["current"] else ""}"><td>{e(r["date"])}</td><td>{e(str(r["id"]))}</td>'
        f"<td>{e(str(r['target']))}</td><td>{e(str(r['model'] if r['model'] is not None else '—'))}</td>"
        f'<td class="n">{e(_num(r["rps"]))}</td><td class="n">{e(_num(r["p50"]))}{"*" if r["failed_latency"] else ""}</td>'
        f'<td class="n">{e(_num(r["p99"]))}{"*" if r["failed_latency"] else ""}</td>'
        f'<td class="n">{e(_num(r["failures"]))}</td><td>{_badge(str(r["status"]))}</td></tr>'
        for r in rows
    )
    trend = _trend_png(rows)
    return (
        '<section class="card"><h2>Compared with earlier runs</h2>'
        + (_img(trend, "trend of latency and throughput") if trend else "")
        + "<table><tr><th>Date (UTC)</th><th>Run</th><th>Target</th><th>Model</th><th>Req/s</th>"
        "<th>p50 ms</th><th>p99 ms</th><th>Failures</th><th>Status</th></tr>" + body + "</table>"
        '<p class="muted">Highlighted: this run. * latency of a failed run.</p></section>'
    )


def render_html(
    report: Mapping[str, Any], history: list[dict[str, Any]], *, overview_png: bytes | None = None
) -> str:
    """A self-contained page: inline CSS, plots as data URIs, nothing fetched from the network.

    ``overview_png``: ``latency_png(report)`` when the caller made it already (it is also saved).
    """
    e = html.escape
    meta = "".join(
        f"<span><b>{e(label)}:</b> {e(str(value) if value not in (None, '') else '—')}</span>"
        for label, value in (
            ("Started", str(report.get("started_at", ""))[:19].replace("T", " ") + " UTC"),
            ("Deployment", report.get("deployment")),
            ("Model", report.get("model_version")),
            ("Dataset", report.get("dataset_version")),
            ("Rows per request", _payload_text(report)),
        )
    )
    settings = "".join(
        f"<tr><th>{e(str(k))}</th><td>{e(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
        for k, v in (report.get("settings") or {}).items()
    )
    overview = ""
    if not report["targets"]:
        overview = (
            f'<section class="card"><h2>Nothing was measured</h2><p>{e(str(report.get("note") or ""))}</p></section>'
        )
    elif len(report["targets"]) > 1:
        overview = (
            '<section class="card"><h2>All targets</h2>'
            f'{_img(overview_png or latency_png(report), "latency of all targets")}</section>'
        )
    sections = "".join(_target_section(name, t) for name, t in report["targets"].items())
    warning = ""
    if report.get("note") and report["targets"]:
        warning = f'<p class="warn">{e(str(report["note"]))}</p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Benchmark {e(report['id'])}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>Benchmark {e(report['id'])} {_badge(report['status'])}</h1>"
        f'<div class="meta">{meta}</div>{warning}'
        f"{overview}{sections}{_history_section(_history_rows(report, history))}"
        f'<section class="card"><h2>Settings</h2><table>{settings}</table></section>'
        "</main></body></html>"
    )


# --------------------------------------------------------------------------- storage



def save_report(
    report: Mapping[str, Any],
    html_text: str,
    png: bytes | None,
    *,
    container_client: Any = None,
    local_dir: Path,
) -> dict[str, str]:
    """Write ``<id>/report.json|report.html|latency.png`` and ``latest.json`` locally and, when given,
    to the blob container. Returns ``{"local:<name>": path, "blob:<name>": blob name}``.

    ``latest.json`` is written last (and is a full copy of report.json) so it never names a run whose
    files are not all there yet.
    """
    run_id = str(report["id"])
    if not ID_RE.match(run_id):
        # The id becomes a path and a blob name: refuse anything but the timestamp format.
        raise ValueError(f"report id {run_id!r} is not of the form YYYYMMDDTHHMMSSmmmZ")
    report_json = json.dumps(report, indent=1).encode("utf-8")
    files = {"report.json": report_json, "report.html": html_text.encode("utf-8")}
    if png is not None:  # a run with nothing measured has no plot
        files["latency.png"] = png
    written: dict[str, str] = {}

    run_dir = Path(local_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_atomic(run_dir / name, data)
        written[f"local:{name}"] = str(run_dir / name)
    write_atomic(Path(local_dir) / "latest.json", report_json)
    written["local:latest.json"] = str(Path(local_dir) / "latest.json")

    if container_client is not None:
        from azure.core.exceptions import AzureError
        from azure.storage.blob import ContentSettings

        try:
            for name, data in [*((f"{run_id}/{n}", d) for n, d in files.items()), ("latest.json", report_json)]:
                content_type = BLOB_CONTENT_TYPES[name.rsplit("/", 1)[-1]]
                container_client.upload_blob(
                    name, data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
                )
                written[f"blob:{name.rsplit('/', 1)[-1]}"] = name
        except AzureError as err:
            raise BenchError("could not upload the benchmark report", run_id=run_id) from err
    return written


def load_history(local_dir: Path | None, limit: int = 20, *, container_client: Any = None) -> list[dict[str, Any]]:
    """Earlier report.json dicts, newest first; from the container when given, else from local_dir.

    Unreadable reports are skipped (logged): a damaged old report must not stop a new benchmark.
    """
    reports: list[dict[str, Any]] = []
    if container_client is not None:
        from azure.core.exceptions import AzureError

        names = sorted(
            (b.name for b in container_client.list_blobs() if ID_RE.match(b.name.removesuffix("/report.json")) and b.name.endswith("/report.json")),
            reverse=True,
        )
        for name in names[:limit]:
            try:
                reports.append(json.loads(container_client.download_blob(name).readall()))
            except (AzureError, ValueError) as err:
                logger.warning("skipping unreadable benchmark report %s: %s", name, type(err).__name__)
        return reports
    if local_dir is None or not Path(local_dir).is_dir():
        return reports
    dirs = sorted((d for d in Path(local_dir).iterdir() if d.is_dir() and ID_RE.match(d.name)), reverse=True)
    for d in dirs:
        if len(reports) >= limit:
            break
        try:
            reports.append(json.loads((d / "report.json").read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            logger.warning("skipping unreadable benchmark report %s: %s", d.name, type(err).__name__)
    return reports


def load_latest(local_dir: Path | None, *, container_client: Any = None) -> dict[str, Any] | None:
    """``latest.json``: from ``local_dir`` when it is there, else from the container; None when neither has it.

    The local copy comes first: on one machine the function host and the CLI share the data dir, and
    it is what ``save_report`` wrote last. The container is the fallback for an instance whose data
    dir is new (another Functions instance, a fresh machine).
    """
    if local_dir is not None:
        path = Path(local_dir) / "latest.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as err:
            raise BenchError(f"the latest benchmark report {path} is unreadable: {type(err).__name__}") from err
    if container_client is not None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return json.loads(container_client.download_blob("latest.json").readall())
        except ResourceNotFoundError:
            return None
        except (AzureError, ValueError) as err:
            raise BenchError(f"the latest benchmark report in the container is unreadable: {type(err).__name__}") from err
    return None
