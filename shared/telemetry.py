"""Request telemetry of a model server with OpenTelemetry, and reading it back for `bankml logs`.

Writing (inside the model server, only while insights are on):

* one SERVER span per scoring request (``POST /score``) carrying the HTTP status, the rows scored,
  the deployment, the model version and the request ids; and three metrics: a latency histogram
  (ms), a request counter and a row counter, keyed by status, deployment and model version (never
  by request id: that would be one time series per request);
* the request path only appends a tuple to a queue (about a microsecond): creating an SDK span
  and three metric points costs 50-200 microseconds of Python, so a telemetry thread does it a
  few times a second, with the request's own start and end times, in chunks that hand the GIL
  back to the event loop; spans then go through a ``BatchSpanProcessor`` (exported in batches
  every second) and metrics through a ``PeriodicExportingMetricReader`` (every 10 s);
* locally the exporters write JSON lines into the deployment's directory in the data dir:
  ``telemetry.jsonl`` (one request record per span: time, request_id, deployment, model_version,
  status, latency_ms, rows: the local "requests" table) and ``metrics.jsonl`` (one line per data
  point per export);
* with ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set, the same spans and metrics also go to
  Application Insights through the Azure Monitor exporters (requests and customMetrics tables).
  The connection string is handed to the exporter and never logged or printed.

Reading: ``read_requests`` / ``filter_requests`` / ``summarize`` turn those files into what
`bankml logs` prints.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

logger = logging.getLogger(__name__)

SERVICE_NAME = "bankml-model-server"
SPAN_NAME = "POST /score"
SCOPE = "bankml.modelserver"
SPAN_EXPORT_INTERVAL_MS = 1000
CONVERT_INTERVAL_S = 0.25  # how often queued requests become spans and metric points
CONVERT_CHUNK = 32  # requests converted between two GIL hand-backs
MAX_PENDING = 20_000  # requests queued for conversion at most; more are counted and dropped
METRIC_EXPORT_INTERVAL_MS = 10_000
# Latency buckets in ms: a 2-row request takes about a millisecond, a 10,000-row one a second.
LATENCY_BUCKETS_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)

# Span attribute names: OpenTelemetry HTTP semantic conventions, then ours.
A_METHOD = "http.request.method"
A_ROUTE = "http.route"
A_STATUS = "http.response.status_code"
A_REQUEST_ID = "bankml.request_id"
A_CLIENT_REQUEST_ID = "bankml.client_request_id"
A_ROWS = "bankml.rows"
A_DEPLOYMENT = "bankml.deployment"
A_MODEL_VERSION = "bankml.model_version"


def iso_ns(ns: int) -> str:
    """Epoch nanoseconds -> ISO 8601 UTC with milliseconds and a Z."""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_record(span: ReadableSpan) -> dict[str, Any]:
    """A span as one line of the local requests table (the shape `bankml logs` reads)."""
    attrs = span.attributes or {}
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "time": iso_ns(end),
        "request_id": attrs.get(A_REQUEST_ID),
        "deployment": attrs.get(A_DEPLOYMENT),
        "model_version": attrs.get(A_MODEL_VERSION),
        "status": attrs.get(A_STATUS),
        "latency_ms": round((end - start) / 1e6, 3),
        "rows": attrs.get(A_ROWS),
    }


class _Appender:
    """Appends lines to a file from exporter threads; a write error loses that batch, not the server."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, lines: Sequence[str]) -> bool:
        if not lines:
            return True
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as fh:
                fh.writelines(lines)
            return True
        except OSError:
            logger.warning("could not write telemetry to %s", self.path, exc_info=True)
            return False


class JsonLinesSpanExporter(SpanExporter):
    """OpenTelemetry span exporter: one JSON request record per span, appended to a file."""

    def __init__(self, path: Path) -> None:
        self._out = _Appender(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(request_record(s), separators=(",", ":")) + "\n" for s in spans]
        return SpanExportResult.SUCCESS if self._out.write(lines) else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class JsonLinesMetricExporter(MetricExporter):
    """OpenTelemetry metric exporter: one JSON line per data point, appended to a file."""

    def __init__(self, path: Path) -> None:
        # Delta: each line says what happened during one export interval, and an idle server
        # writes nothing (cumulative points would be re-written every interval forever).
        super().__init__(
            preferred_temporality={Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA},
            preferred_aggregation=None,
        )
        self._out = _Appender(path)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        lines = []
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        rec: dict[str, Any] = {
                            "time": iso_ns(point.time_unix_nano),
                            "name": metric.name,
                            "unit": metric.unit,
                            "attributes": dict(point.attributes or {}),
                        }
                        if hasattr(point, "bucket_counts"):
                            rec.update(
                                count=point.count, sum=point.sum, min=point.min, max=point.max,
                                bounds=list(point.explicit_bounds), buckets=list(point.bucket_counts),
                            )
                        else:
                            rec["value"] = point.value
                        lines.append(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
        return MetricExportResult.SUCCESS if self._out.write(lines) else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class RequestTelemetry:
    """The OpenTelemetry pipeline of one model server."""

    def __init__(
        self,
        *,
        requests_file: Path | None,
        metrics_file: Path | None,
        deployment: str,
        model_version: int,
        connection_string: str = "",
        storage_dir: Path | None = None,
        span_interval_ms: int = SPAN_EXPORT_INTERVAL_MS,
        metric_interval_ms: int = METRIC_EXPORT_INTERVAL_MS,
    ) -> None:
        self.deployment = deployment
        self.model_version = model_version
        resource = Resource.create(
            {
                "service.name": SERVICE_NAME,
                "service.instance.id": deployment,  # App Insights: cloud_RoleInstance
                "service.version": str(model_version),
            }
        )
        self.span_exporters: list[SpanExporter] = []
        self.metric_exporters: list[MetricExporter] = []
        if requests_file is not None:
            self.span_exporters.append(JsonLinesSpanExporter(requests_file))
        if metrics_file is not None:
            self.metric_exporters.append(JsonLinesMetricExporter(metrics_file))
        if connection_string:
            self._add_azure_monitor(connection_string, storage_dir)

        self.tracer_provider = TracerProvider(resource=resource)
        for exporter in self.span_exporters:
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    exporter, schedule_delay_millis=span_interval_ms, max_queue_size=8192, max_export_batch_size=512
                )
            )
        readers: list[MetricReader] = [
            PeriodicExportingMetricReader(e, export_interval_millis=metric_interval_ms) for e in self.metric_exporters
        ]
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        # Providers are used directly, not installed globally: nothing else in the process is traced.
        self.tracer = self.tracer_provider.get_tracer(SCOPE)
        meter = self.meter_provider.get_meter(SCOPE)
        self.duration = meter.create_histogram(
            "bankml.request.duration", unit="ms", description="scoring request latency",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_MS),
        )
        self.requests = meter.create_counter("bankml.requests", unit="{request}", description="scoring requests")
        self.rows = meter.create_counter("bankml.rows", unit="{row}", description="rows scored")
        self._metric_attrs: dict[int, dict[str, Any]] = {}
        self._closed = False
        self.dropped = 0
        self._pending: deque[tuple[int, int, int, int, str, str | None]] = deque()
        self._convert_lock = threading.Lock()
        self._stop = threading.Event()
        self._converter = threading.Thread(target=self._convert_loop, name="bankml-telemetry", daemon=True)
        self._converter.start()

    def _add_azure_monitor(self, connection_string: str, storage_dir: Path | None) -> None:
        from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter, AzureMonitorTraceExporter

        options: dict[str, Any] = {"connection_string": connection_string}
        if storage_dir is not None:
            # Retries of failed uploads are kept in the data dir, not in the shared /tmp.
            options["storage_directory"] = str(storage_dir)
        self.span_exporters.append(AzureMonitorTraceExporter(**options))
        self.metric_exporters.append(AzureMonitorMetricExporter(**options))
        logger.info("request telemetry also goes to Application Insights")

    def record(
        self,
        *,
        start_ns: int,
        end_ns: int,
        status: int,
        rows: int,
        request_id: str,
        client_request_id: str | None = None,
    ) -> None:
        """Queue one request (epoch-ns start and end); the telemetry thread turns it into a span
        and metric points. Called on the request path, so it only appends to a deque."""
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1  # the exporters are far behind: lose telemetry, never latency
            return
        self._pending.append((start_ns, end_ns, status, rows, request_id, client_request_id))

    def _convert_loop(self) -> None:
        while not self._stop.wait(CONVERT_INTERVAL_S):
            self.convert_pending()

    def convert_pending(self) -> int:
        """Turn every queued request into its span and metric points; returns how many."""
        done = 0
        with self._convert_lock:
            while True:
                try:
                    item = self._pending.popleft()
                except IndexError:
                    return done
                self._emit(*item)
                done += 1
                if done % CONVERT_CHUNK == 0:
                    time.sleep(0)  # let the event loop thread take the GIL between chunks

    def _emit(
        self, start_ns: int, end_ns: int, status: int, rows: int, request_id: str, client_request_id: str | None
    ) -> None:
        """One request: a SERVER span with explicit start/end times and three metric points."""
        attrs: dict[str, Any] = {
            A_METHOD: "POST",
            A_ROUTE: "/score",
            A_STATUS: status,
            A_ROWS: rows,
            A_DEPLOYMENT: self.deployment,
            A_MODEL_VERSION: self.model_version,
            A_REQUEST_ID: request_id,
        }
        if client_request_id:
            attrs[A_CLIENT_REQUEST_ID] = client_request_id
        span = self.tracer.start_span(SPAN_NAME, kind=SpanKind.SERVER, attributes=attrs, start_time=start_ns)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end_ns)
        metric_attrs = self._metric_attrs.get(status)
        if metric_attrs is None:
            metric_attrs = {A_STATUS: status, A_DEPLOYMENT: self.deployment, A_MODEL_VERSION: self.model_version}
            self._metric_attrs[status] = metric_attrs
        self.duration.record((end_ns - start_ns) / 1e6, metric_attrs)
        self.requests.add(1, metric_attrs)
        if rows:
            self.rows.add(rows, metric_attrs)

    def force_flush(self) -> None:
        self.convert_pending()
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()

    def shutdown(self) -> None:
        """Convert and export what is pending and stop the threads (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._converter.join(timeout=10)
        self.convert_pending()
        if self.dropped:
            logger.warning("%d requests were not recorded: the telemetry queue was full", self.dropped)
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


# -- reading it back (bankml logs) -----------------------------------------------------------
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 time (UTC when no offset) or a relative age such as 30s, 15m, 2h, 1d."""
    m = _RELATIVE.match(text)
    if m:
        delta = timedelta(**{_UNITS[m.group(2).lower()]: float(m.group(1))})
        return (now or datetime.now(UTC)) - delta
    value = parse_time(text)
    if value is None:
        raise ValueError(
            f"--since {text!r} is neither an ISO time (2026-01-31T10:00:00Z) nor an age like 30s, 15m, 2h, 1d"
        )
    return value


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text.strip():
        return None
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(t)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def status_filter(spec: str) -> Any:
    """``--status``: 200, 4xx, 5xx, ok (< 400) or error (>= 400); returns a predicate on the status."""
    s = spec.strip().lower()
    if s == "ok":
        return lambda code: code < 400
    if s in ("error", "errors", "failed"):
        return lambda code: code >= 400
    if re.fullmatch(r"[1-5]xx", s):
        first = int(s[0])
        return lambda code: code // 100 == first
    if s.isdigit():
        wanted = int(s)
        return lambda code: code == wanted
    raise ValueError(f"--status {spec!r} is not a status: use e.g. 200, 4xx, 5xx, ok or error")


def read_requests(files: Iterable[Path]) -> list[dict[str, Any]]:
    """Request records of all files, oldest first; malformed lines are skipped."""
    out: list[dict[str, Any]] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            when = parse_time(rec.get("time")) if isinstance(rec, dict) else None
            if when is None or not isinstance(rec.get("status"), int):
                continue
            rec["_at"] = when
            out.append(rec)
    out.sort(key=lambda r: r["_at"])
    return out


def filter_requests(
    records: list[dict[str, Any]],
    *,
    since: datetime | None = None,
    status: str | None = None,
    deployment: str | None = None,
) -> list[dict[str, Any]]:
    keep = status_filter(status) if status else None
    return [
        r for r in records
        if (since is None or r["_at"] >= since)
        and (keep is None or keep(int(r["status"])))
        and (deployment is None or r.get("deployment") == deployment)
    ]


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Summary:
    requests: int
    errors: int
    by_status: dict[int, int]
    rows: int
    first: datetime | None
    last: datetime | None
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def window_s(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        return (self.last - self.first).total_seconds()

    @property
    def throughput(self) -> float:
        """Requests per second over the window (first to last request)."""
        return self.requests / self.window_s if self.window_s > 0 else float(self.requests)

    def lines(self) -> list[str]:
        if not self.requests:
            return ["summary: no requests"]
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_status.items()))
        return [
            f"summary: {self.requests} requests ({statuses}), {self.errors} errors, {self.rows} rows, "
            f"{self.window_s:.1f} s from {iso(self.first)} to {iso(self.last)}, {self.throughput:.1f} req/s",
            f"latency ms: p50 {self.p50_ms:.2f}  p95 {self.p95_ms:.2f}  p99 {self.p99_ms:.2f}  max {self.max_ms:.2f}",
        ]


def iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else "-"


def summarize(records: list[dict[str, Any]]) -> Summary:
    latencies = sorted(float(r.get("latency_ms") or 0.0) for r in records)
    by_status: dict[int, int] = {}
    for r in records:
        by_status[int(r["status"])] = by_status.get(int(r["status"]), 0) + 1
    return Summary(
        requests=len(records),
        errors=sum(v for k, v in by_status.items() if k >= 400),
        by_status=by_status,
        rows=sum(int(r.get("rows") or 0) for r in records),
        first=records[0]["_at"] if records else None,
        last=records[-1]["_at"] if records else None,
        p50_ms=_percentile(latencies, 50),
        p95_ms=_percentile(latencies, 95),
        p99_ms=_percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else math.nan,
    )
