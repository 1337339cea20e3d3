"""Load generator and benchmark report, against a real HTTP/1.1 server on a free loopback port."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared import bench
from shared.errors import ConfigError

KEY = "fk-SECRET-0123456789abcdef"
TOKEN = "Bearer tok-SECRET-fedcba9876543210"
CODE = "code-SECRET-55555"
ROOT = Path(__file__).resolve().parents[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real endpoints
    # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms each.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet test output
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.connections.add(self.client_address)
            self.server.hits += 1
            hit = self.server.hits
        path = self.path.split("?", 1)[0]
        if path == "/ok":
            self._answer(200, b'{"result": [0.1, 0.9]}')
        elif path == "/slow":
            time.sleep(0.2)
            self._answer(200, b'{"result": [0.5]}')
        elif path == "/flaky":
            # Every third request fails, counted over the whole server.
            self._answer(503 if hit % 3 == 0 else 200, b"{}")
        elif path == "/echo-error":
            # A careless server that reflects the key in its error body.
            self._answer(500, json.dumps({"error": "bad", "key": self.headers.get("x-functions-key")}).encode())
        else:
            self._answer(404, b"{}")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.connections: set[tuple[str, int]] = set()
        self.hits = 0


@pytest.fixture()
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _url(srv: _Server, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def _job(url: str, **overrides: Any) -> dict[str, Any]:
    job = {
        "url": url,
        "method": "POST",
        "headers": {"Content-Type": "application/json", "x-functions-key": KEY, "Authorization": TOKEN},
        "body": json.dumps({"data": [{"age": 41, "job": "admin."}]}),
        "max_requests": 40,
        "max_seconds": 10.0,
        "concurrency": 4,
        "timeout_s": 5.0,
    }
    return {**job, **overrides}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _report(targets: dict[str, dict[str, Any]], started: str = "2025-01-02T03:04:05+00:00") -> dict[str, Any]:
    return bench.build_report(
        targets,
        settings={
            "max_requests": 40,
            "concurrency": 4,
            "function_key": KEY,
            "headers": {"Authorization": TOKEN},
            "relay_url": f"http://127.0.0.1:7071/api/score?code={CODE}",
        },
        model_version="3",
        dataset_version="2",
        deployment="bankml-live",
        payload_rows=1,
        started_at=started,
    )


# --------------------------------------------------------------------------- load generator


def test_counts_add_up_over_keep_alive_connections(server: _Server) -> None:
    raw = bench.run_load(_job(_url(server, "/ok")))

    assert raw["requests"] == 40 == raw["ok"] == server.hits
    assert raw["non_2xx"] == {} and raw["connection_errors"] == 0
    assert len(raw["latencies_ms"]) == 40 == len(raw["timeline"])
    assert all(lat > 0 for lat in raw["latencies_ms"])
    starts = [point[0] for point in raw["timeline"]]
    assert starts == sorted(starts)
    # Keep-alive: one connection per worker, not one per request.
    assert len(server.connections) <= 4
    assert raw["bytes_received"] > 40 * len(b'{"result": [0.1, 0.9]}')
    assert raw["bytes_sent"] > 40 * len(_job("")["body"])

    s = bench.summarise(raw)
    assert s["status"] == "ok" and s["failures"] == 0 and s["successes"] == 40
    assert s["requests"] == s["successes"] + s["failures"]
    assert s["requests_per_s"] == pytest.approx(40 / raw["duration_s"], rel=0.01)
    lat = s["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert s["latency_includes_failures"] is False


def test_max_requests_caps_even_with_more_workers_than_requests(server: _Server) -> None:
    raw = bench.run_load(_job(_url(server, "/ok"), max_requests=3, concurrency=8))
    assert raw["requests"] == 3 == server.hits


def test_max_seconds_stops_the_run(server: _Server) -> None:
    began = time.monotonic()
    raw = bench.run_load(_job(_url(server, "/slow"), max_requests=10_000, max_seconds=1.0, concurrency=2))
    elapsed = time.monotonic() - began

    # 2 workers x 0.2 s per request: about 10 requests in 1 s, plus the ones in flight at the deadline.
    assert 4 <= raw["requests"] <= 14
    assert raw["requests"] == raw["ok"] == server.hits
    assert 1.0 <= raw["duration_s"] < 1.0 + 0.2 + 0.5
    assert elapsed < 5


def test_non_2xx_are_failures_with_their_codes(server: _Server) -> None:
    raw = bench.run_load(_job(_url(server, "/flaky"), max_requests=30))
    s = bench.summarise(raw)

    assert s["non_2xx"] == {"503": 10} and s["successes"] == 20
    assert s["requests"] == s["successes"] + s["failures"] == 30
    assert s["status"] == "failed" and s["latency_includes_failures"] is True
    assert "10 of 30" in s["note"]
    report = _report({"relay": raw, "model_server": bench.run_load(_job(_url(server, "/ok"), max_requests=5))})
    assert report["status"] == "failed"
    assert report["targets"]["model_server"]["status"] == "ok"
    assert "Non-2xx responses:      10  (503: 10)" in bench.ab_summary(report)


def test_unreachable_target_reports_no_fake_zeros() -> None:
    raw = bench.run_load(_job(f"http://127.0.0.1:{_free_port()}/score", max_requests=5))
    s = bench.summarise(raw)

    assert raw["connection_errors"] == 5 == raw["requests"] and raw["latencies_ms"] == []
    assert s["status"] == "unreachable"
    assert s["requests_per_s"] is None and s["latency_ms"] is None and s["percentiles_ms"] is None
    assert "Connection" in s["note"]
    report = _report({"model_server": raw})
    assert report["status"] == "unreachable"
    text = bench.ab_summary(report)
    assert "Requests per second:    — [#/sec]" in text and "Percentage of the requests" not in text
    assert "no HTTP answer" in bench.render_html(report, [])


def test_error_result_summarises_as_unreachable() -> None:
    s = bench.summarise(bench.error_result("no live deployment", url=f"http://h/x?code={CODE}"))
    assert s["status"] == "unreachable" and "no live deployment" in s["note"] and CODE not in json.dumps(s)


def test_keys_never_reach_argv_result_report_or_html(server: _Server, tmp_path: Path) -> None:
    url = _url(server, f"/echo-error?code={CODE}")
    found: list[bytes] = []

    def spy() -> None:
        # Read the command line of our loadgen child while it runs (Linux /proc).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not found:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    if int(stat.read_text().split(") ", 1)[1].split()[1]) == os.getpid():
                        cmdline = (stat.parent / "cmdline").read_bytes()
                        if b"shared.loadgen" in cmdline:
                            found.append(cmdline)
                except (OSError, IndexError, ValueError):
                    continue
            time.sleep(0.01)

    watcher = threading.Thread(target=spy)
    watcher.start()
    raw = bench.run_load(_job(url, max_requests=200, max_seconds=0.5, concurrency=1))
    watcher.join()

    assert raw["non_2xx"] and raw["error_samples"], "the server did echo the key into its error bodies"
    report = _report({"relay": raw})
    html_text = bench.render_html(report, [])
    outputs = {
        "result": json.dumps(raw),
        "report": json.dumps(report),
        "html": html_text,
        "ab": bench.ab_summary(report),
    }
    bench.save_report(report, html_text, bench.latency_png(report), local_dir=tmp_path)
    outputs |= {str(p): p.read_text(errors="replace") for p in tmp_path.rglob("*.json")}
    for secret in (KEY, TOKEN, CODE, "tok-SECRET"):
        for name, text in outputs.items():
            assert secret not in text, f"{secret[:6]}... leaked into {name}"
    assert "***" in raw["error_samples"][0]
    assert "function_key" not in report["settings"] and "headers" not in report["settings"]
    if Path("/proc").is_dir():
        assert found and all(KEY.encode() not in c and CODE.encode() not in c for c in found)


def test_invalid_job_fails_fast_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="max_requests"):
        bench.run_load(_job("http://127.0.0.1:1/x", max_requests=0))
    with pytest.raises(ConfigError, match="url"):
        bench.run_load(_job("file:///etc/passwd"))


def test_hard_timeout_kills_a_stuck_loadgen(server: _Server) -> None:
    began = time.monotonic()
    with pytest.raises(bench.BenchError, match="did not finish"):
        bench.run_load(_job(_url(server, "/slow"), max_seconds=5.0), hard_timeout_s=0.8)
    assert time.monotonic() - began < 3


# --------------------------------------------------------------------------- figures


def test_percentiles_nearest_rank_on_a_known_list() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [bench.percentile(values, p) for p in (1, 50, 66, 90, 95, 99, 100)] == [1, 50, 66, 90, 95, 99, 100]
    assert bench.percentile([7.0], 99) == 7.0
    assert bench.percentile([], 50) is None
    assert bench.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # nearest rank: a measured value, never 2.5

    raw = {
        "requests": 100,
        "ok": 100,
        "duration_s": 2.0,
        "job": {"concurrency": 4},
        "latencies_ms": list(reversed(values)),
        "bytes_received": 2048,
    }
    s = bench.summarise(raw)
    assert s["latency_ms"] == {"min": 1, "mean": 50.5, "p50": 50, "p90": 90, "p95": 95, "p99": 99, "max": 100}
    assert s["percentiles_ms"] == {
        "50": 50,
        "66": 66,
        "75": 75,
        "80": 80,
        "90": 90,
        "95": 95,
        "98": 98,
        "99": 99,
        "100": 100,
    }
    assert s["requests_per_s"] == 50 and s["received_kb_per_s"] == 1
    assert s["time_per_request_ms"] == 80 and s["time_per_request_all_ms"] == 20


# --------------------------------------------------------------------------- report, HTML, storage


def _fake_raw(latencies: list[float], statuses: list[int] | None = None) -> dict[str, Any]:
    statuses = statuses or [200] * len(latencies)
    non_2xx: dict[str, int] = {}
    for st in statuses:
        if not 200 <= st < 300:
            non_2xx[str(st)] = non_2xx.get(str(st), 0) + 1
    return {
        "started_at": "2025-01-02T03:04:05+00:00",
        "duration_s": 1.0,
        "job": {"url": "http://127.0.0.1:5001/score", "concurrency": 2, "method": "POST"},
        "requests": len(latencies),
        "ok": sum(200 <= s < 300 for s in statuses),
        "non_2xx": non_2xx,
        "connection_errors": 0,
        "error_samples": [],
        "latencies_ms": latencies,
        "timeline": [[i * 0.01, lat, st] for i, (lat, st) in enumerate(zip(latencies, statuses, strict=True))],
        "bytes_received": 100 * len(latencies),
        "bytes_sent": 50 * len(latencies),
    }


def test_report_fields() -> None:
    report = _report(
        {"model_server": _fake_raw([5.0, 6.0, 7.0]), "relay": _fake_raw([9.0, 11.0])},
        started=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat(),
    )
    assert report["id"] == "20250102T030405000Z"
    assert report["status"] == "ok"
    assert {"created_at", "settings", "model_version", "dataset_version", "deployment", "payload_rows"} <= set(report)
    assert report["settings"]["relay_url"] == "http://127.0.0.1:7071/api/score?code=***"
    t = report["targets"]["relay"]
    assert t["latencies_ms"] == [9.0, 11.0] and len(t["timeline"]) == 2
    assert sum(t["latency_histogram"]["counts"]) == 2
    json.dumps(report)  # storable as is


def test_html_is_self_contained_and_escaped() -> None:
    report = _report(
        {"model_server": _fake_raw([5.0, 6.0, 30.0]), "relay": _fake_raw([9.0, 11.0, 12.0], [200, 500, 200])}
    )
    report["deployment"] = "<script>alert(1)</script>"
    older = _report({"model_server": _fake_raw([4.0, 5.0])}, started="2025-01-01T00:00:00+00:00")
    html_text = bench.render_html(report, [older])

    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)
    assert len(images) >= 4  # overview, one per target, trend
    assert all(base64.b64decode(img).startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//|url\(|<script|<link|@import', html_text, re.I)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "20250101T000000000Z" in html_text and "20250102T030405000Z" in html_text  # comparison rows
    assert "Latency figures of a failed run: latencies include 1 non-2xx answers." in html_text
    assert "Latency p50 (failed run)" in html_text and "Latency p50 (failed run)" not in bench.render_html(older, [])
    assert bench.latency_png(report).startswith(b"\x89PNG")


def test_save_report_and_history_newest_first(tmp_path: Path) -> None:
    first = _report({"model_server": _fake_raw([5.0])}, started="2025-01-01T00:00:00Z")
    second = _report({"model_server": _fake_raw([6.0])}, started="2025-01-02T00:00:00Z")
    for r in (first, second):
        paths = bench.save_report(r, bench.render_html(r, []), bench.latency_png(r), local_dir=tmp_path)
    (tmp_path / "20240101T000000Z").mkdir()
    (tmp_path / "20240101T000000Z" / "report.json").write_text("{broken")  # skipped, not fatal

    assert paths["local:report.json"] == str(tmp_path / second["id"] / "report.json")
    assert Path(paths["local:latency.png"]).read_bytes().startswith(b"\x89PNG")
    assert "<html" in Path(paths["local:report.html"]).read_text()
    assert json.loads((tmp_path / "latest.json").read_text())["id"] == second["id"]
    assert [h["id"] for h in bench.load_history(tmp_path)] == [second["id"], first["id"]]
    assert [h["id"] for h in bench.load_history(tmp_path, limit=1)] == [second["id"]]
    assert bench.load_history(tmp_path / "missing") == []
    with pytest.raises(ValueError):
        bench.save_report({**first, "id": "../escape"}, "", b"", local_dir=tmp_path)


# Azurite's published development account; not a secret.
_AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture()
def azurite_container(tmp_path: Path) -> Iterator[Any]:
    exe = ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not exe.exists() or shutil.which("node") is None:
        pytest.skip("azurite-blob is not installed")
    from azure.storage.blob import BlobServiceClient

    port = _free_port()
    proc = subprocess.Popen(
        [
            str(exe),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.skip("azurite-blob did not start")
                time.sleep(0.1)
        conn = (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={_AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
        yield BlobServiceClient.from_connection_string(conn).create_container("reports")
    finally:
        # In-memory store, nothing to flush: kill rather than wait for a graceful shutdown.
        proc.kill()
        proc.wait(10)


def test_save_report_to_blob_container(azurite_container: Any, tmp_path: Path) -> None:
    report = _report({"model_server": _fake_raw([5.0, 7.0])})
    paths = bench.save_report(
        report,
        bench.render_html(report, []),
        bench.latency_png(report),
        container_client=azurite_container,
        local_dir=tmp_path,
    )

    rid = report["id"]
    assert {paths[f"blob:{n}"] for n in ("report.json", "report.html", "latency.png", "latest.json")} == {
        f"{rid}/report.json",
        f"{rid}/report.html",
        f"{rid}/latency.png",
        "latest.json",
    }
    props = azurite_container.get_blob_client(f"{rid}/latency.png").get_blob_properties()
    assert props.content_settings.content_type == "image/png"
    assert json.loads(azurite_container.download_blob("latest.json").readall())["id"] == rid
    assert [h["id"] for h in bench.load_history(None, container_client=azurite_container)] == [rid]


# --------------------------------------------------------------------------- issue 7: trust and read at a glance


class _VaryingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    count = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).count += 1
        body = json.dumps({"result": ["no"] * (1 + type(self).count % 7)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_answers_of_varying_length_are_not_failures() -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _VaryingHandler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        raw = bench.run_load(_job(f"http://127.0.0.1:{srv.server_address[1]}/score", max_requests=21))
    finally:
        srv.shutdown()
        srv.server_close()
    s = bench.summarise(raw)
    assert s["status"] == "ok" and s["failures"] == 0 and s["successes"] == 21
    assert s["latency_label"] is None


def test_failed_run_labels_its_latencies_everywhere() -> None:
    # 2 non-2xx answers and 3 requests without any answer: both kinds are named in the label.
    raw = _fake_raw([5.0, 6.0, 7.0, 8.0], [200, 500, 200, 503])
    raw["requests"] += 3
    raw["connection_errors"] = 3
    s = bench.summarise(raw)
    assert s["status"] == "failed" and s["failures"] == 5
    assert s["latency_label"] == (
        "failed run: latencies include 2 non-2xx answers and leave out 3 requests that got no HTTP answer"
    )
    # Throughput counts answered requests only (as ab does): 4 answers in 1 s, not 7.
    assert s["requests_per_s"] == 4 and s["successes_per_s"] == 2
    only_dropped = {**_fake_raw([5.0, 6.0]), "requests": 3, "connection_errors": 1}
    assert bench.summarise(only_dropped)["latency_label"] == (
        "failed run: latencies leave out 1 requests that got no HTTP answer"
    )

    report = _report({"relay": raw, "model_server": _fake_raw([4.0, 5.0])})
    assert report["status"] == "failed" and report["note"].startswith("relay: 5 of 7 requests failed")
    text = bench.ab_summary(report)
    relay_block = text.split("== relay")[1]
    assert "[failed run: latencies include 2 non-2xx answers" in relay_block
    assert "Percentage of the requests served within a certain time (ms) [failed run" in relay_block
    assert "failed run" not in text.split("== model_server")[1]  # the clean target is not labelled
    page = bench.render_html(report, [])
    assert page.count("(failed run)") == 7  # min, mean, p50, p90, p95, p99, max of the relay only
    assert "relay: 5 of 7 requests failed" in page


def test_ab_summary_shows_payload_and_latency_line() -> None:
    report = bench.build_report(
        {"model_server": _fake_raw([5.0, 6.0, 7.0])},
        settings={},
        model_version=3,
        dataset_version=2,
        deployment="bankml-v3",
        started_at="2025-01-02T03:04:05Z",
        payload={"source": "tutorial customers", "rows": 2, "bytes": 1234},
    )
    text = bench.ab_summary(report)
    assert "rows per request: 2 (tutorial customers, 1234 bytes)" in text
    assert "Latency (ms):           min 5.0  mean 6.0  p50 6.0" in text
    assert report["payload_rows"] == 2 and report["payload"]["bytes"] == 1234


def test_nothing_to_measure_record_renders_and_saves_without_a_plot(tmp_path: Path) -> None:
    record = bench.build_nothing_report(settings={"bench_requests": 5}, started_at="2025-01-03T00:00:00Z")
    assert record["status"] == bench.NOTHING_TO_MEASURE and record["targets"] == {}
    assert record["note"] == "no live deployment" and record["model_version"] is None
    earlier = _report({"model_server": _fake_raw([5.0])}, started="2025-01-02T00:00:00Z")
    page = bench.render_html(record, [earlier])
    assert "Nothing was measured" in page and "no live deployment" in page and earlier["id"] in page
    paths = bench.save_report(record, page, None, local_dir=tmp_path)
    assert "local:latency.png" not in paths
    assert sorted(p.name for p in (tmp_path / record["id"]).iterdir()) == ["report.html", "report.json"]
    assert bench.load_latest(tmp_path)["status"] == bench.NOTHING_TO_MEASURE
    assert bench.ab_summary(record) == (
        "Benchmark 20250103T000000000Z  status: nothing to measure\nNothing was measured: no live deployment\n"
    )


def test_staleness_against_the_live_deployment() -> None:
    report = bench.build_report(
        {"model_server": _fake_raw([5.0])},
        settings={},
        model_version=1,
        dataset_version=1,
        deployment="bankml-v1",
        started_at="2025-01-02T10:00:00Z",
        deployment_live_since="2025-01-02T09:00:00.000Z",
    )
    v1 = {"name": "bankml-v1", "model_version": 1, "live_since": "2025-01-02T09:00:00.000Z"}
    assert bench.staleness(report, v1) is None
    marked = bench.mark_stale(report, v1)
    assert marked["stale"] is False and marked["stale_reason"] is None and "stale" not in report

    v2 = {"name": "bankml-v2", "model_version": 2, "live_since": "2025-01-02T11:00:00Z"}
    assert bench.staleness(report, v2) == "it measured bankml-v1 (model 1); the live deployment is bankml-v2 (model 2)"
    # Same name and version, but live only since after the run (a rebuilt data dir): stale too.
    again = {"name": "bankml-v1", "model_version": 1, "live_since": "2025-01-02T10:30:00Z"}
    assert "before bankml-v1 went live at 2025-01-02T10:30:00Z" in bench.staleness(report, again)
    assert bench.staleness(report, None) == "it measured bankml-v1; no deployment is live now"

    nothing = bench.build_nothing_report(settings={}, started_at="2025-01-02T08:00:00Z")
    assert bench.staleness(nothing, None) is None
    assert bench.staleness(nothing, v1) == "no deployment was live when it ran; bankml-v1 (model 1) is live now"


def test_history_text_reads_as_a_trend() -> None:
    ok = _report({"model_server": _fake_raw([5.0, 6.0]), "relay": _fake_raw([9.0, 11.0])}, started="2025-01-02T00:00:00Z")
    failed = _report({"relay": _fake_raw([9.0, 30.0], [200, 502])}, started="2025-01-03T00:00:00Z")
    down = _report(
        {"model_server": bench.error_result("ConnectionRefusedError: refused", url="http://127.0.0.1:1/score")},
        started="2025-01-04T00:00:00Z",
    )
    nothing = bench.build_nothing_report(settings={}, started_at="2025-01-01T00:00:00Z")
    live = {"name": "bankml-live", "model_version": "3", "live_since": "2025-01-02T12:00:00Z"}
    marked = [bench.mark_stale(r, live) for r in (down, failed, ok, nothing)]  # newest first, as stored

    lines = bench.history_text(marked).splitlines()
    assert lines[0].split() == [
        "date", "(UTC)", "target", "req/s", "p50", "ms", "p99", "ms", "failures", "status", "model", "note",
    ]
    body = [line.split() for line in lines[1:]]
    # oldest first; one line per target; the empty run has a line of its own
    assert [b[0] for b in body[:5]] == ["2025-01-01", "2025-01-02", "2025-01-02", "2025-01-03", "2025-01-04"]
    assert body[0][2:9] == ["—", "—", "—", "—", "—", "nothing", "to"] and "stale:" in lines[1]
    assert body[1][2:4] == ["model_server", "2.0"] and body[1][4:6] == ["5.00", "6.00"]
    assert "stale: it ran at 2025-01-02T00:00:00+00:00, before bankml-live went live" in lines[2]
    assert body[3][2:4] == ["relay", "2.0"] and body[3][4:6] == ["9.00*", "30.00*"] and body[3][6:8] == ["1", "failed"]
    assert body[4][2:8] == ["model_server", "—", "—", "—", "0", "unreachable"]
    assert "stale" not in lines[4] + lines[5] and "v3" in lines[5]
    assert lines[-1].startswith("* latency of a failed run")
    assert bench.history_text([]) == "no benchmark reports yet\n"


def test_load_latest_local_then_container(azurite_container: Any, tmp_path: Path) -> None:
    assert bench.load_latest(tmp_path) is None
    assert bench.load_latest(tmp_path, container_client=azurite_container) is None
    report = _report({"model_server": _fake_raw([5.0])})
    bench.save_report(report, "<html></html>", None, container_client=azurite_container, local_dir=tmp_path / "a")
    # A data dir without the file falls back to the container; one with it answers from disk.
    assert bench.load_latest(tmp_path / "b", container_client=azurite_container)["id"] == report["id"]
    assert bench.load_latest(tmp_path / "a")["id"] == report["id"]
    (tmp_path / "a" / "latest.json").write_text("{half")
    with pytest.raises(bench.BenchError, match="unreadable"):
        bench.load_latest(tmp_path / "a")


def test_reports_started_in_the_same_second_get_their_own_ids(tmp_path: Path) -> None:
    first = _report({"relay": _fake_raw([5.0])}, started=datetime(2026, 12, 3, 19, 5, 12, 1000, tzinfo=UTC).isoformat())
    second = _report({"relay": _fake_raw([6.0])}, started=datetime(2026, 12, 3, 19, 5, 12, 2000, tzinfo=UTC).isoformat())
    assert (first["id"], second["id"]) == ("20261203T190512001Z", "20261203T190512002Z")
    for report in (first, second):
        bench.save_report(report, "<html></html>", None, local_dir=tmp_path)
    assert [r["id"] for r in bench.load_history(tmp_path)] == [second["id"], first["id"]]
    # Reports written before ids had milliseconds are still found, in time order.
    old = {**first, "id": "20261203T190511Z"}
    bench.save_report(old, "<html></html>", None, local_dir=tmp_path)
    assert [r["id"] for r in bench.load_history(tmp_path)][-1] == "20261203T190511Z"
    with pytest.raises(ValueError, match="YYYYMMDDTHHMMSSmmmZ"):
        bench.save_report({**first, "id": "../x"}, "", None, local_dir=tmp_path)
