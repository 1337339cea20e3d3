"""The relay's large-body path (a local model server's acceptance stands for the relay's own
validation) against a real HTTP upstream on loopback, and the scoring benchmark's report."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.contract import TUTORIAL_CUSTOMERS
from shared.relay import OVERLAP_BYTES, ROWS_HEADER, Relay
from shared.workspace.base import Deployment
from shared.workspace.local.servers import free_port

KEY = "upstream-key-0123456789"


class Vouching(BaseHTTPRequestHandler):
    """Answers like shared.modelserver: 200 naming the rows it scored, or its own 400."""

    protocol_version = "HTTP/1.1"
    refuse = False
    bodies: list[bytes] = []  # noqa: RUF012 - shared by the test server

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).bodies.append(body)
        if type(self).refuse:
            self._send(400, {"error": {"code": "bad_request", "message": "upstream words", "field": "x"}}, {})
            return
        n = len(json.loads(body)["data"])
        self._send(200, {"result": ["no"] * n}, {ROWS_HEADER: str(n)})

    def _send(self, status: int, payload: Any, extra: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def upstream() -> Iterator[ThreadingHTTPServer]:
    Vouching.refuse = False
    Vouching.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Vouching)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


class Live:
    def __init__(self, port: int) -> None:
        self.dep = Deployment(
            name="bankml-v1", run_id="AutoML_x", model_version=1, status="live",
            scoring_uri=f"http://127.0.0.1:{port}/score", created_at="", key=KEY,
        )

    def live_deployment(self) -> Deployment:
        return self.dep


def relay(port: int, tmp_path: Path, **env: str) -> Relay:
    return Relay(Settings.from_env({"BANKML_HOME": str(tmp_path), **env}), Live(port))


def large(n: int = 1000, **change: Any) -> bytes:
    rows = [dict(TUTORIAL_CUSTOMERS[i % 2]) for i in range(n)]
    rows[-1].update(change)
    body = json.dumps({"data": rows}).encode()
    assert len(body) >= OVERLAP_BYTES
    return body


def test_a_vouched_large_body_is_answered(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    answer = relay(upstream.server_port, tmp_path).score(large(), "application/json")
    assert answer.status == 200 and len(answer.body["result"]) == 1000
    assert ROWS_HEADER not in answer.headers  # between the relay and its model server only
    assert len(Vouching.bodies) == 1


def test_the_relay_row_limit_holds_when_the_upstream_accepts_more(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    answer = relay(upstream.server_port, tmp_path, BANKML_MAX_ROWS="999").score(large(), "application/json")
    err = answer.body["error"]
    assert answer.status == 413 and err["field"] == "data" and err["value"] == 1000


def test_a_refused_large_body_is_named_in_the_relay_words(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    Vouching.refuse = True
    answer = relay(upstream.server_port, tmp_path).score(large(age="old"), "application/json")
    err = answer.body["error"]
    assert answer.status == 400 and (err["field"], err["row"], err["value"]) == ("age", 999, "old")


def test_cheap_checks_come_before_anything_is_sent(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    r = relay(upstream.server_port, tmp_path)
    assert r.score(large(), "text/csv").status == 415
    small = relay(upstream.server_port, tmp_path, BANKML_MAX_BODY_MB="0.1")
    assert small.score(large(), "application/json").status == 413
    assert Vouching.bodies == []


def test_bad_input_is_a_4xx_even_with_the_upstream_down(tmp_path: Path) -> None:
    r = relay(free_port(), tmp_path)  # nothing listens there
    bad = r.score(large(campaign="three"), "application/json")
    assert bad.status == 400 and bad.body["error"]["field"] == "campaign"
    good = r.score(large(), "application/json")
    assert good.status == 503 and good.headers["Retry-After"]


# --- the scoring benchmark's report ------------------------------------------------------------


def figures(target: str, n: int, c: int, rps: float, p50: float, errors: int = 0) -> Any:
    from benchmarks.scoring import Figures

    cpu = {"bankml up": 1.25, "model server": 0.5, "wrk": 0.125} if target == "relay" else {}
    return Figures(f"{target} {n} rows", "wrk", int(rps * 10), errors, rps, p50, p50 * 2, p50 * 5, p50, c, 100,
                   loadavg=1.5, target=target, rows=n, seconds=10.0, cpu_ms=cpu)


def test_cpu_time_of_a_process_is_read_from_proc() -> None:
    import os
    import time

    from benchmarks.scoring import cpu_ms

    start = cpu_ms(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert start is not None and cpu_ms(os.getpid()) - start >= 100  # type: ignore[operator]
    assert cpu_ms(2**22 + 12345) is None  # no such process


def test_the_plan_covers_every_target_size_and_concurrency() -> None:
    from benchmarks.scoring import BIG_ROWS, plan

    loads = plan({"model server": ("u1", {}, lambda n: b"x" * n), "relay": ("u2", {}, lambda n: b"y" * n)}, 10, 15)
    seen = {(load.target, load.rows, load.concurrency) for load in loads}
    assert seen == {(t, n, c) for t in ("model server", "relay") for n in (2, 100) for c in (1, 8)} | {
        ("model server", BIG_ROWS, 1), ("relay", BIG_ROWS, 1)}
    assert all(load.seconds == (15 if load.rows == BIG_ROWS else 10) for load in loads)


def test_markdown_renders_every_load_the_targets_and_the_ratios() -> None:
    from benchmarks.scoring import build_result, markdown

    figs = [
        figures("model server", 2, 1, 1500, 0.5), figures("relay", 2, 1, 400, 2.0),
        figures("relay", 2, 8, 520, 14.0, errors=3), figures("relay", 10_000, 1, 4, 240.0),
        figures("mlflow", 2, 1, 40, 25.0), figures("mlflow", 2, 8, 35, 220.0),
    ]
    model = {"learner": "VotingEnsemble", "members": ["XGBClassifier (136 trees)", "LGBMClassifier (856 trees)"],
             "serving": "onnx", "trees": 992, "predict_ms": 150.0, "auc": 0.948, "source": "test"}
    method = {"tool": "wrk", "quick": False, "seconds_per_load": 10, "seconds_10000_rows": 15, "cores": 2,
              "loadavg_start": 1.0, "loadavg_end": 2.0, "wall_s": 300, "date": "2026-12-03 19:00 UTC"}
    result = json.loads(json.dumps(build_result(figs, model=model, mlflow={"status": "measured", "version": "3"},
                                                method=method)))  # what the runner reads back from --json
    text = markdown(result)
    assert text.startswith("## Scoring")
    lines = text.splitlines()
    assert sum(line.startswith(("| model server |", "| relay |", "| `mlflow models serve` |")) for line in lines) == 6
    assert ("| relay | 2 | 1 | 4,000 | 0 | 400 | 2.00 | 4.00 | 10.00 | 10.0x | 12.5x | "
            "bankml up 1.25 + model server 0.50 (wrk 0.12) | 1.5 |") in lines
    met = {t["key"]: t["met"] for t in result["targets"]}
    assert met == {"model server 2 rows c=1 p50 ms": True, "relay 2 rows c=1 p50 ms": True,
                   "relay 2 rows c=8 req/s": False, "relay 10000 rows p50 ms": True}  # 520 req/s but 3 errors
    assert "3 errors (target >= 500): **not met**" in text
    assert "VotingEnsemble (XGBClassifier (136 trees) + LGBMClassifier (856 trees)), served by onnx" in text
    skipped = markdown(build_result(figs[:4], model=model, mlflow={"status": "skipped", "reason": "--no-mlflow"},
                                    method=method))
    assert "MLflow was not measured in this run (--no-mlflow)" in skipped and "x MLflow" in skipped


# --- Content-Encoding: gzip --------------------------------------------------------------------


def test_a_gzip_body_is_inflated_and_the_upstream_gets_it_plain(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    import gzip

    plain = json.dumps({"data": list(TUTORIAL_CUSTOMERS)}).encode()
    answer = relay(upstream.server_port, tmp_path).score(gzip.compress(plain), "application/json", content_encoding="gzip")
    assert answer.status == 200 and answer.body == {"result": ["no", "no"]}
    assert Vouching.bodies == [plain]
    big = large()
    answer = relay(upstream.server_port, tmp_path).score(gzip.compress(big), "application/json", content_encoding="GZIP")
    assert answer.status == 200 and Vouching.bodies[-1] == big


def test_a_gzip_body_that_inflates_past_the_limit_is_413(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    import gzip

    bomb = gzip.compress(b'{"data": [' + b" " * (3 * 1024 * 1024) + b"]}")
    assert len(bomb) < 1024 * 1024 // 10
    answer = relay(upstream.server_port, tmp_path, BANKML_MAX_BODY_MB="1").score(
        bomb, "application/json", content_encoding="gzip"
    )
    assert answer.status == 413 and answer.body["error"]["field"] == "body"
    assert "after decompression" in answer.body["error"]["expected"]
    assert Vouching.bodies == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not gzip at all", "not a valid gzip stream"),
        (None, "cut short"),  # a stream cut in the middle
        (b"trailing", "other bytes follow it"),  # a whole stream, then garbage
    ],
)
def test_a_bad_gzip_stream_is_400_naming_the_header(
    upstream: ThreadingHTTPServer, tmp_path: Path, body: bytes | None, why: str
) -> None:
    import gzip

    whole = gzip.compress(json.dumps({"data": list(TUTORIAL_CUSTOMERS)}).encode())
    raw = whole[: len(whole) // 2] if body is None else (whole + body if body == b"trailing" else body)
    answer = relay(upstream.server_port, tmp_path).score(raw, "application/json", content_encoding="gzip")
    err = answer.body["error"]
    assert answer.status == 400 and err["field"] == "Content-Encoding" and why in err["message"]
    assert Vouching.bodies == []


def test_an_unknown_content_encoding_is_415(upstream: ThreadingHTTPServer, tmp_path: Path) -> None:
    answer = relay(upstream.server_port, tmp_path).score(b"{}", "application/json", content_encoding="br")
    assert answer.status == 415 and answer.body["error"]["field"] == "Content-Encoding"
    plain = json.dumps({"data": list(TUTORIAL_CUSTOMERS)}).encode()
    assert relay(upstream.server_port, tmp_path).score(plain, "application/json", content_encoding="identity").status == 200
