"""Request telemetry: the OpenTelemetry pipeline and its JSON-lines exporters, the Azure Monitor
exporters (construction only), and `bankml logs` reading it back with filters and a summary."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from deploy_fixtures import fake_live

import cli
from shared.config import Settings
from shared.telemetry import (
    RequestTelemetry,
    filter_requests,
    parse_since,
    read_requests,
    status_filter,
    summarize,
)
from shared.workspace.local.workspace import LocalWorkspace

# A well-formed but fake connection string; its endpoint is a closed local port, so nothing leaves.
FAKE_KEY = "00000000-1111-2222-3333-444444444444"
FAKE_CONNECTION = f"InstrumentationKey={FAKE_KEY};IngestionEndpoint=http://127.0.0.1:9/;LiveEndpoint=http://127.0.0.1:9/"


def ns(dt: datetime) -> int:
    return int(dt.timestamp() * 1e9)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_each_request_becomes_a_span_record_and_metric_points(tmp_path: Path) -> None:
    t = RequestTelemetry(
        requests_file=tmp_path / "telemetry.jsonl", metrics_file=tmp_path / "metrics.jsonl",
        deployment="bankml-v9", model_version=9,
    )
    start = datetime(2026, 1, 31, 10, 0, 0, tzinfo=UTC)
    for i, (status, rows, ms) in enumerate([(200, 2, 1.5), (200, 100, 12.0), (400, 0, 0.4), (500, 1, 3.0)]):
        begin = start + timedelta(seconds=i)
        t.record(
            start_ns=ns(begin), end_ns=ns(begin) + int(ms * 1e6), status=status, rows=rows,
            request_id=f"req-{i}", client_request_id=f"client-{i}",
        )
    t.shutdown()  # exports what the batch processors hold
    t.shutdown()  # idempotent

    records = lines(tmp_path / "telemetry.jsonl")
    assert [(r["request_id"], r["status"], r["rows"], r["latency_ms"]) for r in records] == [
        ("req-0", 200, 2, 1.5), ("req-1", 200, 100, 12.0), ("req-2", 400, 0, 0.4), ("req-3", 500, 1, 3.0),
    ]
    assert {(r["deployment"], r["model_version"]) for r in records} == {("bankml-v9", 9)}
    assert records[0]["time"] == "2026-01-31T10:00:00.001Z"  # the span's end

    points = lines(tmp_path / "metrics.jsonl")
    by = {(p["name"], p["attributes"]["http.response.status_code"]): p for p in points}
    assert by[("bankml.requests", 200)]["value"] == 2 and by[("bankml.requests", 500)]["value"] == 1
    assert by[("bankml.rows", 200)]["value"] == 102 and ("bankml.rows", 400) not in by
    latency = by[("bankml.request.duration", 200)]
    assert (latency["count"], latency["sum"], latency["unit"]) == (2, 13.5, "ms")
    assert latency["attributes"] == {
        "http.response.status_code": 200, "bankml.deployment": "bankml-v9", "bankml.model_version": 9,
    }  # never the request id: one series per status, not per request


def test_azure_monitor_exporters_are_built_from_the_connection_string_without_logging_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter, AzureMonitorTraceExporter

    # No SDK self-telemetry or remote configuration calls from a test.
    for name in ("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED",
                 "APPLICATIONINSIGHTS_SDKSTATS_DISABLED"):
        monkeypatch.setenv(name, "true")
    caplog.set_level(logging.DEBUG)
    t = RequestTelemetry(
        requests_file=tmp_path / "telemetry.jsonl", metrics_file=None, deployment="bankml-v1", model_version=1,
        connection_string=FAKE_CONNECTION, storage_dir=tmp_path / "retry",
    )
    try:
        assert [type(e).__name__ for e in t.span_exporters] == ["JsonLinesSpanExporter", "AzureMonitorTraceExporter"]
        assert isinstance(t.span_exporters[1], AzureMonitorTraceExporter)
        assert any(isinstance(e, AzureMonitorMetricExporter) for e in t.metric_exporters)
        assert "Application Insights" in caplog.text
    finally:
        t.shutdown()
    assert FAKE_KEY not in caplog.text
    settings = Settings.from_env({"APPLICATIONINSIGHTS_CONNECTION_STRING": FAKE_CONNECTION})
    assert settings.appinsights_connection == FAKE_CONNECTION and FAKE_KEY not in repr(settings)


def test_summary_percentiles_and_throughput() -> None:
    t0 = datetime(2026, 1, 31, tzinfo=UTC)
    recs = [
        {"_at": t0 + timedelta(seconds=i / 10), "status": 200 if i % 10 else 503, "latency_ms": float(i + 1), "rows": 2}
        for i in range(100)
    ]
    s = summarize(recs)
    assert (s.requests, s.errors, s.by_status, s.rows) == (100, 10, {200: 90, 503: 10}, 200)
    assert (s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms) == (50.0, 95.0, 99.0, 100.0)
    assert s.window_s == pytest.approx(9.9) and s.throughput == pytest.approx(100 / 9.9)
    assert summarize([]).lines() == ["summary: no requests"]


def test_since_and_status_filters_parse_or_name_the_problem() -> None:
    now = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    assert parse_since("15m", now=now) == now - timedelta(minutes=15)
    assert parse_since("2h", now=now) == now - timedelta(hours=2)
    assert parse_since("2026-01-31T10:00:00", now=now) == datetime(2026, 1, 31, 10, tzinfo=UTC)  # UTC when naive
    assert parse_since("2026-01-31T11:00:00+01:00") == datetime(2026, 1, 31, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="--since 'yesterday'"):
        parse_since("yesterday")
    assert [status_filter(s)(404) for s in ("404", "4xx", "error", "ok", "5xx")] == [True, True, True, False, False]
    with pytest.raises(ValueError, match="--status 'teapot'"):
        status_filter("teapot")


@pytest.fixture()
def home_with_telemetry(tmp_path: Path) -> Path:
    """Two deployments whose servers wrote requests 2 h, 30 min and 5 min ago."""
    ws = LocalWorkspace(Settings.from_env({"BANKML_HOME": str(tmp_path)}))
    now = datetime.now(UTC)
    plan = {
        "bankml-v1": [(now - timedelta(hours=2), 200, 3.0), (now - timedelta(minutes=30), 404, 1.0)],
        "bankml-v2": [(now - timedelta(minutes=5, seconds=s), st, ms) for s, st, ms in ((3, 200, 2.0), (2, 200, 40.0), (1, 500, 7.0))],
    }
    for name, reqs in plan.items():
        fake_live(ws, f"run-{name}", tmp_path / "no-model-files", name=name)  # logs read no model
        ws.deploy_dir(name).mkdir(parents=True)
        t = RequestTelemetry(requests_file=ws.telemetry_file(name), metrics_file=None, deployment=name, model_version=int(name[-1]))
        for i, (at, status, ms) in enumerate(reqs):
            t.record(start_ns=ns(at) - int(ms * 1e6), end_ns=ns(at), status=status, rows=2, request_id=f"{name}-{i}")
        t.shutdown()
    return tmp_path


def run_logs(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert cli.main(["logs", "--home", str(home), *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_bankml_logs_filters_and_summarises(home_with_telemetry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = home_with_telemetry
    out = run_logs(home, capsys)
    assert [line.split()[-1] for line in out[:5]] == ["bankml-v1-0", "bankml-v1-1", "bankml-v2-0", "bankml-v2-1", "bankml-v2-2"]
    assert out[5].startswith("summary: 5 requests (200: 3, 404: 1, 500: 1), 2 errors, 10 rows")
    assert out[6] == "latency ms: p50 3.00  p95 40.00  p99 40.00  max 40.00"

    recent = run_logs(home, capsys, "--since", "1h")
    assert [line.split()[-1] for line in recent[:-2]] == ["bankml-v1-1", "bankml-v2-0", "bankml-v2-1", "bankml-v2-2"]
    assert [line.split()[-1] for line in run_logs(home, capsys, "--status", "error")[:-2]] == ["bankml-v1-1", "bankml-v2-2"]
    assert [line.split()[-1] for line in run_logs(home, capsys, "--status", "5xx")[:-2]] == ["bankml-v2-2"]
    slowest = run_logs(home, capsys, "--slowest", "2")
    assert [line.split()[-1] for line in slowest[:2]] == ["bankml-v2-1", "bankml-v2-2"] and "40.00 ms" in slowest[0]
    only_v2 = run_logs(home, capsys, "--deployment", "bankml-v2", "--tail", "1")
    assert len(only_v2) == 3 and only_v2[0].split()[-1] == "bankml-v2-2" and only_v2[1].startswith("summary: 3 requests")
    assert run_logs(home, capsys, "--since", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 60))) == [
        "no telemetry yet (it starts when a deployment's insights are on and it gets requests)"
    ]


def test_bankml_logs_names_a_bad_filter(home_with_telemetry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, named in ((["--since", "yesterday"], "--since"), (["--status", "teapot"], "--status"),
                        (["--deployment", "bankml-v7"], "bankml-v7")):
        assert cli.main(["logs", "--home", str(home_with_telemetry), *args]) == 2
        assert named in capsys.readouterr().err
    assert run_logs(home_with_telemetry, capsys, "--server") == ["no server log yet for bankml-v2"]


def test_request_files_with_bad_lines_are_read_around_them(tmp_path: Path) -> None:
    f = tmp_path / "telemetry.jsonl"
    f.write_text('{"time": "2026-01-31T10:00:00.000Z", "status": 200, "latency_ms": 1}\nnot json\n{"status": 200}\n')
    recs = read_requests([f, tmp_path / "missing.jsonl"])
    assert len(recs) == 1 and filter_requests(recs, status="200") == recs
