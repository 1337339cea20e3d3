"""A benchmark run against a real model server process and the real relay handler.

The module shares one data dir with a live deployment (the session's trained model, served by the
real model server) and a relay on loopback that checks the function key and calls the real
``score`` handler, as the function host does. The last test deploys a second model.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

import cli
from functions.benchmark import benchmark as benchmark_timer
from functions.benchmark import benchmarks_latest
from functions.relay import score as relay_score
from shared import bench
from shared.benchrun import LOCK_FILE, bench_lock, build_payload, run_benchmark
from shared.config import Settings
from shared.contract import TUTORIAL_CUSTOMERS
from shared.datagen import generate_frame
from shared.errors import ConfigError
from shared.ingest import canonical_csv, parse_csv
from shared.workspace.base import COMPLETED
from shared.workspace.local.registry import utcnow
from shared.workspace.local.workspace import LocalWorkspace

if TYPE_CHECKING:  # the fixture lives in conftest.py, which tests do not import at run time
    from conftest import TrainedModel

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT.parent / "shared" / "cases"
RELAY_KEY = "relay-key-0123456789abcdef"
TIMER = benchmark_timer.build().get_user_function()
LATEST = benchmarks_latest.build().get_user_function()
SCORE = relay_score.build().get_user_function()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _RelayHandler(BaseHTTPRequestHandler):
    """The function host's part: route, function key, then the real ``score`` handler."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _RelayServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/api/score":
            return self._send(404, b"{}", {})
        if self.headers.get("x-functions-key") != RELAY_KEY:
            return self._send(401, b'{"error": "unauthorized"}', {})
        with self.server.lock:
            self.server.rows.append(len(json.loads(body)["data"]))
        resp = SCORE(func.HttpRequest("POST", "http://relay/api/score", headers=dict(self.headers), body=body))
        return self._send(resp.status_code, resp.get_body(), dict(resp.headers))

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "content-type"):
                self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _RelayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.lock = threading.Lock()
        self.rows: list[int] = []


@dataclass
class Stack:
    home: Path
    ws: LocalWorkspace
    relay: _RelayServer
    env: dict[str, str] = field(default_factory=dict)

    @property
    def relay_url(self) -> str:
        return f"http://127.0.0.1:{self.relay.server_address[1]}"

    def settings(self, **overrides: str) -> Settings:
        return Settings.from_env({**self.env, **overrides})

    def report_ids(self) -> list[str]:
        reports = self.home / "reports"
        return sorted(d.name for d in reports.iterdir() if d.is_dir()) if reports.is_dir() else []

    def deploy(self, auc: float) -> Any:
        d = self.ws.register_dataset(
            parse_csv(canonical_csv(generate_frame(200, 3)), max_bytes=10**8), source_blob="incoming/a.csv", etag="1"
        )
        run = self.ws.submit_run(d.version, trigger="api")
        self.ws.registry.update_run(
            run.run_id,
            status=COMPLETED,
            best={"metrics": {"AUC_weighted": auc}},
            model_dir=str(self.ws.store_model(run.run_id, self.model_dir)),
            ended_at=utcnow(),
        )
        # The gate re-scores both models on the same held-out rows; these are the same model, so a
        # negative margin lets the second one through (the gate is not under test here).
        gate = LocalWorkspace(self.settings(BANKML_DEPLOY_MARGIN="-1"))
        decision = gate.deploy_run(run.run_id)
        assert decision.deployed, decision.reason
        return decision.deployment

    model_dir: Path = Path()


@pytest.fixture(scope="module")
def stack(trained_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    relay = _RelayServer()
    threading.Thread(target=relay.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    home = tmp_path_factory.mktemp("benchrun")
    env = {
        "BANKML_HOME": str(home),
        "BANKML_BACKEND": "local",
        "BANKML_FUNCTION_HOST_URL": f"http://127.0.0.1:{relay.server_address[1]}",
        "BANKML_RELAY_KEY": RELAY_KEY,
        "BANKML_BENCH_REQUESTS": "30",
        "BANKML_BENCH_DURATION_S": "20",
        "BANKML_BENCH_CONCURRENCY": "2",
    }
    with pytest.MonkeyPatch.context() as mp:
        # The handlers read settings from the process environment, like in the function host.
        for k, v in env.items():
            mp.setenv(k, v)
        for k in ("AzureWebJobsStorage", "BANKML_BENCH_PAYLOAD_FILE", "BANKML_BENCH_PAYLOAD_ROWS"):
            mp.delenv(k, raising=False)
        ws = LocalWorkspace(Settings.from_env(env))
        s = Stack(home=home, ws=ws, relay=relay, env=env, model_dir=trained_model.model_dir)
        s.deploy(0.9)
        try:
            yield s
        finally:
            relay.shutdown()
            relay.server_close()
            ws.stop_servers()


def _get_latest() -> tuple[int, dict[str, Any]]:
    resp = LATEST(func.HttpRequest("GET", "http://host/api/benchmarks/latest", body=b""))
    assert resp.mimetype == "application/json"
    return resp.status_code, json.loads(resp.get_body())


def _history(home: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    assert cli.main(["bench", "--history", "--home", str(home)]) == 0
    return capsys.readouterr().out.splitlines()


def _next_second(after_id: str) -> None:
    # Report ids have millisecond resolution: the next run must start after the previous id.
    while bench.report_id(datetime.now(UTC)) <= after_id:
        time.sleep(0.05)


# --------------------------------------------------------------------------- a real run


def test_timer_run_then_cli_run_make_complete_reports(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    live = stack.ws.live_deployment()
    assert live is not None
    TIMER(TimerRequest(past_due=False))
    [first_id] = stack.report_ids()
    first = json.loads((stack.home / "reports" / first_id / "report.json").read_text())

    assert first["status"] == "ok" and set(first["targets"]) == {"model_server", "relay"}
    for t in first["targets"].values():
        assert t["requests"] == t["successes"] == 30 and t["failures"] == 0 and t["latency_label"] is None
        assert t["latency_ms"]["p50"] > 0 and len(t["latencies_ms"]) == 30 and len(t["timeline"]) == 30
    # what was measured: settings, deployment, model and dataset versions, the payload
    assert first["settings"]["bench_requests"] == 30 and first["settings"]["bench_concurrency"] == 2
    assert "relay_key" not in first["settings"] and RELAY_KEY not in json.dumps(first)
    assert (first["deployment"], first["model_version"], first["dataset_version"]) == ("bankml-v1", 1, 1)
    assert first["run_id"] == live.run_id and first["deployment_live_since"] == live.created_at
    body = json.dumps({"data": list(TUTORIAL_CUSTOMERS)})
    assert first["payload"]["rows"] == 2 and first["payload"]["bytes"] == len(body.encode())
    assert first["payload"]["source"].startswith("tutorial customers")
    assert {t["body_bytes"] for t in first["targets"].values()} == {len(body.encode())}
    assert stack.relay.rows == [2] * 30  # the relay got the two customers, 30 times

    # a second run (here through run_benchmark, as `bankml bench` does) compares with the first
    _next_second(first_id)
    result = run_benchmark(stack.settings(), stack.ws)
    second = result["report"]
    assert result["status"] == "ok" and stack.report_ids() == [first_id, second["id"]]
    run_dir = stack.home / "reports" / second["id"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["latency.png", "report.html", "report.json"]
    assert (run_dir / "latency.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert json.loads((stack.home / "reports" / "latest.json").read_text()) == second
    page = (run_dir / "report.html").read_text()
    images = dict(re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page))
    assert set(images) == {
        "latency of all targets",
        "latency of model_server",
        "latency of relay",
        "trend of latency and throughput",
    }
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images.values())
    assert base64.b64decode(images["latency of all targets"]) == (run_dir / "latency.png").read_bytes()
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//|url\(|<script|<link|@import', page, re.I)
    assert "Compared with earlier runs" in page and first_id in page and second["id"] in page

    text = bench.ab_summary(second)
    assert "Complete requests:      30" in text and "Failed requests:        0" in text
    assert "Percentage of the requests served within a certain time (ms)\n" in text

    status, latest = _get_latest()
    assert status == 200 and latest["id"] == second["id"]
    assert latest["stale"] is False and latest["stale_reason"] is None

    lines = _history(stack.home, capsys)
    assert lines[0].startswith("date (UTC)") and len(lines) == 1 + 4
    assert [line.split()[2] for line in lines[1:]] == ["model_server", "relay"] * 2
    assert all(" ok " in line and line.rstrip().endswith("v1") for line in lines[1:])


def test_generated_rows_payload_reaches_the_model(stack: Stack) -> None:
    stack.relay.rows.clear()
    settings = stack.settings(BANKML_BENCH_PAYLOAD_ROWS="25", BANKML_BENCH_REQUESTS="6")
    body, info = build_payload(settings)
    assert build_payload(settings) == (body, info)  # the same rows every run: runs stay comparable
    rows = json.loads(body)["data"]
    assert len(rows) == 25 and "y" not in rows[0] and set(rows[0]) == set(TUTORIAL_CUSTOMERS[0])

    _next_second(stack.report_ids()[-1])
    report = run_benchmark(settings, stack.ws)["report"]
    assert report["status"] == "ok", report["note"]
    assert report["payload"] == info and info["rows"] == 25 and info["source"].startswith("generated")
    assert report["payload_rows"] == 25
    assert stack.relay.rows == [25] * 6
    assert report["targets"]["model_server"]["successes"] == 6


def test_a_run_with_failures_is_marked_failed_and_labelled(stack: Stack) -> None:
    _next_second(stack.report_ids()[-1])
    report = run_benchmark(stack.settings(BANKML_RELAY_KEY="not-the-key", BANKML_BENCH_REQUESTS="8"), stack.ws)[
        "report"
    ]
    relay = report["targets"]["relay"]
    assert report["status"] == "failed" and relay["status"] == "failed"
    assert relay["non_2xx"] == {"401": 8} and relay["failures"] == 8 and relay["successes"] == 0
    assert relay["latency_label"] == "failed run: latencies include 8 non-2xx answers"
    assert report["targets"]["model_server"]["status"] == "ok"
    assert "relay: 8 of 8 requests failed" in report["note"]
    assert "[failed run: latencies include 8 non-2xx answers]" in bench.ab_summary(report)


def test_an_unreachable_target_says_so(stack: Stack) -> None:
    _next_second(stack.report_ids()[-1])
    closed = f"http://127.0.0.1:{_free_port()}"
    report = run_benchmark(stack.settings(BANKML_FUNCTION_HOST_URL=closed, BANKML_BENCH_REQUESTS="5"), stack.ws)[
        "report"
    ]
    relay = report["targets"]["relay"]
    assert report["status"] == "unreachable" and relay["status"] == "unreachable"
    assert relay["connection_errors"] == 5 and relay["latency_ms"] is None and relay["requests_per_s"] is None
    assert relay["note"].startswith("no HTTP answer: ConnectionRefusedError")
    text = bench.ab_summary(report)
    assert "Note:                   no HTTP answer" in text
    assert "Requests per second:    — [#/sec]" in text


# --------------------------------------------------------------------------- never overlapping


def _hold_lock(home: Path) -> subprocess.Popen[str]:
    code = (
        "import sys\nfrom pathlib import Path\nfrom shared.benchrun import bench_lock\n"
        "with bench_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(home)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_runs_never_overlap_across_processes(
    stack: Stack, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    before = stack.report_ids()
    holder = _hold_lock(stack.home)
    try:
        busy = run_benchmark(stack.settings(), stack.ws)
        assert busy["status"] == "already running" and busy["holder"]["pid"] == holder.pid
        assert f"a benchmark is already running (pid {holder.pid} since" in busy["message"]

        with caplog.at_level(logging.INFO, logger="functions.benchmark"):
            TIMER(TimerRequest(past_due=False))  # the timer in the host: skipped, cleanly
        assert "already running" in caplog.text

        # `bankml bench` from a terminal: the stack file names a live process and the relay
        (stack.home / "stack.json").write_text(
            json.dumps({"pid": os.getpid(), "url": stack.relay_url, "azurite_port": _free_port()})
        )
        capsys.readouterr()
        assert cli.main(["bench", "--home", str(stack.home)]) == cli.BENCH_EXIT_BUSY
        assert f"benchmark not started: a benchmark is already running (pid {holder.pid}" in capsys.readouterr().out
        assert stack.report_ids() == before
    finally:
        holder.communicate("\n", timeout=10)
        (stack.home / "stack.json").unlink(missing_ok=True)
    assert holder.returncode == 0
    # The lock went with its holder; a crashed holder (killed) releases it too.
    killed = _hold_lock(stack.home)
    killed.kill()
    killed.wait(10)
    with bench_lock(stack.home):
        pass


def test_a_second_thread_of_the_same_process_is_refused_too(stack: Stack) -> None:
    result: dict[str, Any] = {}
    with bench_lock(stack.home):
        worker = threading.Thread(target=lambda: result.update(run_benchmark(stack.settings(), stack.ws)))
        worker.start()
        worker.join(30)
    assert result["status"] == "already running" and result["holder"]["pid"] == os.getpid()
    assert (stack.home / LOCK_FILE).read_text() == ""  # released: no holder recorded


# --------------------------------------------------------------------------- stale reports


def test_a_report_older_than_the_live_deployment_is_stale(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    old_latest = json.loads((stack.home / "reports" / "latest.json").read_text())
    assert old_latest["deployment"] == "bankml-v1"
    v2 = stack.deploy(0.95)
    assert v2.name == "bankml-v2" and stack.ws.live_deployment().name == "bankml-v2"

    status, latest = _get_latest()
    assert status == 200 and latest["id"] == old_latest["id"] and latest["stale"] is True
    assert latest["stale_reason"] == (
        "it measured bankml-v1 (model 1); the live deployment is bankml-v2 (model 2)"
    )
    stored = json.loads((stack.home / "reports" / "latest.json").read_text())
    assert "stale" not in stored  # marked when read back, never written into the report

    rows = [line for line in _history(stack.home, capsys)[1:] if re.match(r"\d{4}-", line)]
    assert len(rows) == 2 * 5 and all("stale: it measured bankml-v1 (model 1)" in line for line in rows)

    _next_second(stack.report_ids()[-1])
    fresh = run_benchmark(stack.settings(BANKML_BENCH_REQUESTS="5"), stack.ws)["report"]
    assert fresh["deployment"] == "bankml-v2" and fresh["model_version"] == 2
    status, latest = _get_latest()
    assert latest["id"] == fresh["id"] and latest["stale"] is False
    rows = [line for line in _history(stack.home, capsys)[1:] if re.match(r"\d{4}-", line)]
    assert all("stale" not in line and line.rstrip().endswith("v2") for line in rows[-2:])


# --------------------------------------------------------------------------- no deployment, no report


@pytest.fixture()
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BANKML_HOME", str(tmp_path))
    monkeypatch.setenv("BANKML_BACKEND", "local")
    for k in ("AzureWebJobsStorage", "BANKML_BENCH_PAYLOAD_FILE", "BANKML_BENCH_PAYLOAD_ROWS"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def test_latest_is_a_clear_404_before_any_run(empty_home: Path) -> None:
    status, body = _get_latest()
    assert status == 404
    assert body["error"]["code"] == "not_found" and "no benchmark report yet" in body["error"]["message"]


def test_nothing_to_measure_is_recorded_and_ends_cleanly(empty_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert TIMER(TimerRequest(past_due=False)) is None
    [run_id] = [d.name for d in (empty_home / "reports").iterdir() if d.is_dir()]
    record = json.loads((empty_home / "reports" / run_id / "report.json").read_text())
    assert record["status"] == "nothing to measure" and record["note"] == "no live deployment"
    assert record["targets"] == {} and record["settings"]["bench_requests"] == Settings.from_env().bench_requests
    assert "Nothing was measured" in (empty_home / "reports" / run_id / "report.html").read_text()

    status, latest = _get_latest()
    assert status == 200 and latest["id"] == run_id and latest["stale"] is False

    lines = _history(empty_home, capsys)
    assert len(lines) == 2 and "nothing to measure" in lines[1] and "no live deployment" in lines[1]


def test_bankml_bench_with_nothing_live_exits_0_and_stores_the_record(
    empty_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite

    if not (ROOT / "node_modules" / ".bin" / "azurite-blob").exists():
        pytest.skip("Azurite is not installed")
    with Azurite(empty_home / "azurite", port=0) as azurite:
        (empty_home / "stack.json").write_text(
            json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:9", "azurite_port": azurite.port})
        )
        capsys.readouterr()
        assert cli.main(["bench", "--home", str(empty_home)]) == 0
        out = capsys.readouterr().out
        assert "status: nothing to measure\nNothing was measured: no live deployment" in out
        reports = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("reports")
        latest = json.loads(reports.download_blob("latest.json").readall())
        assert latest["status"] == "nothing to measure"
        assert {b.name for b in reports.list_blobs()} == {f"{latest['id']}/report.json", f"{latest['id']}/report.html", "latest.json"}


# --------------------------------------------------------------------------- the payload setting


def _settings(**env: str) -> Settings:
    return Settings.from_env({"BANKML_HOME": "/nonexistent", **env})


def test_payload_defaults_to_the_two_tutorial_customers() -> None:
    body, info = build_payload(_settings())
    assert json.loads(body) == {"data": list(TUTORIAL_CUSTOMERS)}
    assert info["rows"] == 2 and info["bytes"] == len(body.encode())


def test_payload_file_is_checked_against_the_contract(tmp_path: Path) -> None:
    good = tmp_path / "three.json"
    rows = [dict(TUTORIAL_CUSTOMERS[0]), dict(TUTORIAL_CUSTOMERS[1]), {**TUTORIAL_CUSTOMERS[0], "age": 40}]
    good.write_text(json.dumps({"data": rows}))
    body, info = build_payload(_settings(BANKML_BENCH_PAYLOAD_FILE=str(good)))
    assert body == good.read_text() and info["rows"] == 3 and info["file"] == str(good)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{**TUTORIAL_CUSTOMERS[0], "campaign": "often"}]}))
    with pytest.raises(ConfigError) as err:
        build_payload(_settings(BANKML_BENCH_PAYLOAD_FILE=str(bad)))
    assert "BANKML_BENCH_PAYLOAD_FILE" in err.value.message and "campaign" in err.value.message
    assert err.value.details["setting"] == "BANKML_BENCH_PAYLOAD_FILE" and err.value.details["field"] == "campaign"

    with pytest.raises(ConfigError, match=r"BANKML_BENCH_PAYLOAD_FILE: cannot read .*missing\.json"):
        build_payload(_settings(BANKML_BENCH_PAYLOAD_FILE=str(tmp_path / "missing.json")))
    with pytest.raises(ConfigError, match="not both"):
        build_payload(_settings(BANKML_BENCH_PAYLOAD_FILE=str(good), BANKML_BENCH_PAYLOAD_ROWS="3"))
    with pytest.raises(ConfigError, match=r"BANKML_BENCH_PAYLOAD_ROWS must be between 0 and BANKML_MAX_ROWS \(100\)"):
        build_payload(_settings(BANKML_BENCH_PAYLOAD_ROWS="101", BANKML_MAX_ROWS="100"))


@pytest.mark.parametrize(("case", "rows", "problem"), [("v2_predict_proba.json", 2, None), ("missing_field.json", 0, "age")])
def test_payload_file_from_the_shared_cases(case: str, rows: int, problem: str | None) -> None:
    path = CASES / "payloads" / case
    if not path.exists():
        pytest.skip(f"shared case {path} is not available")
    settings = _settings(BANKML_BENCH_PAYLOAD_FILE=str(path))
    if problem is None:
        assert build_payload(settings)[1]["rows"] == rows
    else:
        with pytest.raises(ConfigError, match=problem):
            build_payload(settings)
