"""GET /api/benchmarks/latest through the real local function host: function-key auth and answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devhost.host import FunctionHost
from shared import bench

APP = '''"""Only the benchmark blueprint: the HTTP function under test (its timer is disabled)."""
import azure.functions as func

from functions.benchmark import bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)
'''


@pytest.fixture()
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FunctionHost, Path]]:
    app_dir, home = tmp_path / "app", tmp_path / "home"
    app_dir.mkdir()
    (app_dir / "function_app.py").write_text(APP)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    env = {
        "BANKML_HOME": str(home),
        "BANKML_BACKEND": "local",
        "BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *",
        "AzureWebJobs.benchmark.Disabled": "true",
    }
    h = FunctionHost(app_dir, home=home, port=0, environ=env).start()
    try:
        yield h, home
    finally:
        h.stop()


def test_latest_needs_a_function_key_and_answers_json(host: tuple[FunctionHost, Path]) -> None:
    h, home = host
    url = f"{h.url}/api/benchmarks/latest"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"x-functions-key": "wrong"}, timeout=10).status_code == 401

    key = h.keys.function_key
    none_yet = requests.get(url, headers={"x-functions-key": key}, timeout=10)
    assert none_yet.status_code == 404 and none_yet.headers["content-type"].startswith("application/json")
    assert none_yet.json()["error"]["code"] == "not_found"

    record = bench.build_nothing_report(settings={}, started_at="2025-01-02T03:04:05Z")
    bench.save_report(record, bench.render_html(record, []), None, local_dir=home / "reports")
    found = requests.get(url, params={"code": key}, timeout=10)
    assert found.status_code == 200 and found.headers.get("cache-control") == "no-store"
    body = found.json()
    assert body["id"] == "20250102T030405000Z" and body["status"] == "nothing to measure" and body["stale"] is False
    assert json.loads((home / "reports" / "latest.json").read_text())["id"] == body["id"]
    assert requests.post(url, headers={"x-functions-key": key}, timeout=10).status_code in (404, 405)
