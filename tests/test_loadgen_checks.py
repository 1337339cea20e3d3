"""shared.loadgen's answer checks (expect_json, record_header), its early stop on SIGTERM and its
longest-gap figure, against a real HTTP/1.1 server on a free loopback port and the real loadgen
process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared import loadgen

ROOT = Path(__file__).resolve().parents[1]
KEY = "fk-SECRET-0123456789abcdef"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.hits += 1
            hit = self.server.hits
            version = self.server.version
            pause = self.server.pause_s
        if pause:
            time.sleep(pause)
        path = self.path.split("?", 1)[0]
        if path == "/versioned":
            body = json.dumps({"result": ["yes", "no"] if version == "1" else ["no", "no"]}).encode()
        elif path == "/every-fifth-wrong":
            body = b'{"result": ["no", "yes"]}' if hit % 5 == 0 else b'{"result": ["yes", "no"]}'
        elif path == "/not-json":
            body = b"<html>ok</html>"
        else:
            body = b'{"result": ["yes", "no"]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-bankml-model-version", version)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.hits = 0
        self.version = "1"
        self.pause_s = 0.0


@pytest.fixture()
def server() -> Iterator[_Server]:
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def job(srv: _Server, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "url": f"http://127.0.0.1:{srv.server_address[1]}{path}", "method": "POST", "body": "{}",
        "headers": {"x-functions-key": KEY, "Content-Type": "application/json"},
        "max_requests": loadgen.MAX_REQUESTS, "max_seconds": 2, "concurrency": 4, "timeout_s": 5, **extra,
    }


def start(j: dict[str, Any]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.loadgen"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(j))
    proc.stdin.close()
    return proc


def result_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    return json.loads(out)


def test_expect_json_counts_wrong_bodies_as_failed(server: _Server) -> None:
    r = loadgen.run(loadgen.parse_job(job(server, "/every-fifth-wrong", max_requests=200, expect_json=[{"result": ["yes", "no"]}])))
    assert r["requests"] == 200
    assert r["wrong_body"] == 40 and r["ok"] == 160
    assert any(s.startswith("wrong body:") for s in r["error_samples"])
    # Without expect_json the same answers are all "ok": status alone does not see them.
    plain = loadgen.run(loadgen.parse_job(job(server, "/every-fifth-wrong", max_requests=50)))
    assert plain["ok"] == 50 and plain["wrong_body"] == 0


def test_a_body_that_is_not_json_is_wrong(server: _Server) -> None:
    r = loadgen.run(loadgen.parse_job(job(server, "/not-json", max_requests=10, expect_json=[{"result": ["yes", "no"]}])))
    assert r["wrong_body"] == 10 and r["ok"] == 0


def test_record_header_keeps_every_answer_by_version(server: _Server) -> None:
    def switch() -> None:
        time.sleep(0.8)
        with server.lock:
            server.version = "2"

    threading.Thread(target=switch, daemon=True).start()
    r = loadgen.run(loadgen.parse_job(job(server, "/versioned", max_seconds=1.6, record_header="X-Bankml-Model-Version")))
    counts = {(a["header"], a["body"]): a["count"] for a in r["answers"]}
    assert set(counts) == {("1", '{"result": ["yes", "no"]}'), ("2", '{"result": ["no", "no"]}')}
    assert sum(counts.values()) == r["requests"] == r["ok"]
    spans = r["header_spans"]
    assert spans["1"]["first_start_s"] < spans["2"]["first_start_s"]
    assert spans["1"]["last_start_s"] < spans["2"]["last_start_s"]
    assert sum(sec["requests"] for sec in r["per_second"]) == r["requests"]
    assert {v for sec in r["per_second"] for v in sec["headers"]} == {"1", "2"}


def test_sigterm_ends_the_run_early_and_still_writes_the_result(server: _Server) -> None:
    proc = start(job(server, "/ok", max_seconds=120, record_header="x-bankml-model-version"))
    time.sleep(1.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    r = result_of(proc)
    assert time.monotonic() - started < 30  # ended by the signal, not by max_seconds (120 s)
    assert r["requests"] > 0 and r["ok"] == r["requests"]
    assert r["duration_s"] < 60
    assert KEY not in json.dumps(r)


def test_max_gap_sees_a_stall(server: _Server) -> None:
    def stall() -> None:
        time.sleep(0.5)
        with server.lock:
            server.pause_s = 1.0
        time.sleep(0.2)
        with server.lock:
            server.pause_s = 0.0

    threading.Thread(target=stall, daemon=True).start()
    r = loadgen.run(loadgen.parse_job(job(server, "/ok", max_seconds=2.5, concurrency=2)))
    # Both clients were held for about a second: nothing completed meanwhile.
    assert r["max_gap_ms"] >= 700
    quiet = loadgen.run(loadgen.parse_job(job(server, "/ok", max_seconds=1.0, concurrency=2)))
    assert quiet["max_gap_ms"] < r["max_gap_ms"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("record_header", ""), ("record_header", 5), ("expect_json", {"a": 1}), ("expect_json", []), ("expect_json", [0] * 17)],
)
def test_bad_check_fields_are_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(loadgen.JobError, match=field):
        loadgen.parse_job({**job(_Dummy(), "/ok"), field: value})


class _Dummy:
    server_address = ("127.0.0.1", 1)
