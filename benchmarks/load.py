"""Load benchmark (issue 10, "Load"): the relay under steady load, a redeploy under load, and a
burst of CSV drops, each against a real `bankml up` stack.

    .venv/bin/python -m benchmarks.load [--quick] [--json FILE]

What it does (``--quick`` shortens the loads to 15 s):

1. **steady**: starts `bankml up` in a throw-away data dir on free ports, drops a generated CSV
   (`bankml drop`, small AutoML budget) and waits for the live deployment; then 32 concurrent
   clients (``shared.loadgen``, its own process) POST a 4-row payload to ``/api/score`` for 60 s.
   The rows are picked so that the live model is sure of them (two clear "yes", two clear "no",
   predicted in this process from the deployment's own model files), and every answer is checked
   against those labels, not only its status. The RSS of each stack process (the `bankml up`
   process with the function host, the live model server, Azurite) is sampled every second; the
   growth is the mean of the last 10 s minus the mean of the first 10 s.
2. **redeploy**: the same load while a second training run is started through the published
   pipeline call (``POST /api/pipeline/runs``, small budget); it completes, the gate deploys it
   blue/green (the stack runs with ``BANKML_DEPLOY_MARGIN=-1`` so that the second run always
   passes), then `bankml rollback` switches back the same way. The load generator records which
   model version (``x-bankml-model-version``) answered each request; every answer is checked
   against the labels of the model that answered it.
3. **burst**: a second stack (AutoML budget 1 s) gets ten CSVs uploaded at once straight into
   Azurite ``incoming/``: seven different files, the same bytes as one of them under another
   name, the same rows as another one exported with ';' (the same content, so the same
   version), and one file without the ``euribor3m`` column. Expected: seven dataset versions,
   seven runs (one per version), one file in ``rejected/`` with its reason, nothing lost.

Figures go to stdout (and ``--json``); ``markdown(result)`` renders them for docs/benchmarks.md.
Nothing fails on a time here; tests/e2e/test_load.py asserts the functional properties.
The function key reaches the load generator on stdin, never argv or output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

from shared.loadgen import MAX_REQUESTS
from shared.workspace.local.stack import stack_ready

ROOT = Path(__file__).resolve().parents[1]
VERSION_HEADER = "x-bankml-model-version"
CONCURRENCY = 32
WINDOW_S = 10.0  # RSS windows compared: the first and the last WINDOW_S of the load
# Allowed RSS growth between the windows, per process. Measured without a leak (see
# docs/benchmarks.md, "Load"): the largest growth of any process over 60 s at c=32 was about
# 1 MB (allocator arenas and caches settle in the warm-up before the measured load). A leak of
# one 1 KB object per request at this stack's ~300-600 req/s grows 15-30 MB between the windows.
RSS_MARGIN_MB = 8.0
# The stack's settings for these scenarios (the redeploy needs a second run to pass the gate).
STACK_ENV = {
    "BANKML_TIME_BUDGET_S": "6",
    "BANKML_DEPLOY_MARGIN": "-1",
    "BANKML_MIN_PRIMARY_METRIC": "0.5",
    "BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *",  # not during the load
}
BURST_ENV = {"BANKML_TIME_BUDGET_S": "1", "BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *"}
TRAIN_ROWS = 3000
SWITCH_WINDOW_S = 3.0  # a switch's "gap": the longest stretch without an answer this close to it


class Stack(Protocol):
    """What the scenarios need of a running `bankml up` (tests/e2e/conftest.py RunningStack fits)."""

    home: Path
    azurite_port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str: ...


# --------------------------------------------------------------------------- the stack


@dataclass
class LaunchedStack:
    home: Path
    port: int
    azurite_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_stack(home: Path, env_extra: dict[str, str], *, timeout_s: float = 120.0) -> LaunchedStack:
    """`bankml up` in a subprocess on free ports, ready when the host answers and stack.json exists."""
    home.mkdir(parents=True, exist_ok=True)
    port, azport = _free_port(), _free_port()
    log = home.parent / f"{home.name}-up.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--home", str(home), "--port", str(port), "--azurite-port", str(azport)],
            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env_extra}, start_new_session=True,
        )
    stack = LaunchedStack(home, port, azport, proc, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bankml up exited: {log.read_text()[-2000:]}")
        if stack_ready(home, stack.url):
            return stack
        time.sleep(0.3)
    stop_stack(stack)
    raise RuntimeError(f"bankml up did not become ready: {log.read_text()[-2000:]}")


def stop_stack(stack: Stack) -> None:
    """SIGTERM to `bankml up` (it stops Azurite, the agent and the model servers), by PID."""
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGTERM)
        try:
            stack.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(stack.proc.pid, signal.SIGKILL)
            stack.proc.wait(timeout=10)


def function_key(home: Path) -> str:
    from devhost.keys import HostKeys

    return HostKeys.load_or_create(home).function_key


def registry(home: Path) -> Any:
    from shared.workspace.local.registry import Registry

    return Registry(home / "registry.sqlite")


def cli(home: Path, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args, "--home", str(home)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False,
    )


def wait_for(what: str, predicate: Callable[[], Any], timeout_s: float, *, poll_s: float = 0.2,
             alive: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"bankml up exited while waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")


def deploy_first_model(stack: Stack, work: Path, *, rows: int = TRAIN_ROWS, seed: int = 7) -> dict[str, Any]:
    """Drop generated rows with `bankml drop` and wait for the live deployment (the whole loop)."""
    from shared.datagen import write_csv

    csv = write_csv(work / "train.csv", rows, seed=seed)
    started = time.monotonic()
    out = cli(stack.home, "drop", str(csv), "--name", "train.csv")
    if out.returncode != 0 or "registered as dataset v1" not in out.stdout:
        raise RuntimeError(f"bankml drop failed ({out.returncode}): {out.stdout[-800:]} {out.stderr[-800:]}")
    reg = registry(stack.home)
    live = wait_for("the first live deployment", reg.live_deployment, 600, poll_s=0.5, alive=stack.proc)
    return {"live": live, "drop_to_live_s": round(time.monotonic() - started, 1), "csv": csv}


# --------------------------------------------------------------------------- payload and answers


def clear_rows(model_dir: Path | str, *, each: int = 2, pool: int = 400, seed: int = 99) -> tuple[list[dict[str, Any]], list[str]]:
    """``2 * each`` generated rows the model is sure of (the most certain "yes" and "no" rows,
    interleaved), and the labels it gives them. Rows far from the threshold keep their labels
    across models trained on the same kind of data and across ONNX/native serving."""
    from shared.datagen import generate_frame
    from shared.workspace.local.training import load_model

    model = load_model(model_dir)
    frame = generate_frame(pool, seed=seed).drop(columns=["y"])
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in frame.to_dict("records")]
    _, proba = model.predict(records)
    order = sorted(range(len(records)), key=lambda i: proba[i][1])
    yes, no = order[::-1][:each], order[:each]
    picked = [records[i] for pair in zip(yes, no, strict=True) for i in pair]
    labels, _ = model.predict(picked)
    return picked, labels


def expected_answer(model_dir: Path | str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a model server of this model must answer to ``{"data": rows}``, from the model files."""
    from shared.workspace.local.training import load_model

    labels, _ = load_model(model_dir).predict(rows)
    return {"result": labels}


def check_answers(result: dict[str, Any], expected_by_version: dict[str, Any]) -> dict[str, Any]:
    """Every 2xx answer against the answer its model version must give: counts by version and
    the wrong ones (an unknown version, a body that differs, or answers past the loadgen's cap)."""
    by_version: dict[str, int] = {}
    wrong: list[dict[str, Any]] = []
    for a in result.get("answers") or []:
        version = a["header"]
        try:
            body = json.loads(a["body"]) if a["body"] is not None else None
        except ValueError:
            body = None
        if version is not None:
            by_version[version] = by_version.get(version, 0) + a["count"]
        if version not in expected_by_version or body != expected_by_version[version]:
            wrong.append({"version": version, "body": (a["body"] or "")[:200], "count": a["count"]})
    return {"by_version": by_version, "wrong": wrong, "wrong_count": sum(w["count"] for w in wrong)}


# --------------------------------------------------------------------------- load generator


def start_load(url: str, key: str, body: str, *, seconds: float, concurrency: int = CONCURRENCY,
               expect: list[Any] | None = None) -> subprocess.Popen[str]:
    """shared.loadgen in its own process (no GIL shared with the servers); the job, key included,
    goes on stdin."""
    job: dict[str, Any] = {
        "url": f"{url}/api/score", "method": "POST", "body": body, "concurrency": concurrency, "timeout_s": 60,
        "headers": {"x-functions-key": key, "Content-Type": "application/json"},
        "max_requests": MAX_REQUESTS, "max_seconds": seconds, "record_header": VERSION_HEADER,
    }
    if expect is not None:
        job["expect_json"] = expect
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.loadgen"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    return proc


def finish_load(proc: subprocess.Popen[str], *, stop: bool = False, timeout_s: float = 300.0) -> dict[str, Any]:
    """The loadgen's result; ``stop`` ends its run first (SIGTERM: requests in flight finish)."""
    if stop and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None
    out = proc.stdout.read()  # the result comes at the end of the run
    if proc.wait(timeout=timeout_s) != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {out[:500]}")
    return json.loads(out)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(q * len(ordered)) // 100))
    return round(ordered[min(rank, len(ordered)) - 1], 2)


def load_figures(result: dict[str, Any]) -> dict[str, Any]:
    lat = result["latencies_ms"]
    failed = result["requests"] - result["ok"]
    return {
        "requests": result["requests"],
        "seconds": result["duration_s"],
        "stopped_by": result.get("stopped_by"),
        "req_per_s": round(result["requests"] / result["duration_s"], 1) if result["duration_s"] else None,
        "ok": result["ok"],
        "failed": failed,
        "errors_by_kind": {
            **{f"HTTP {k}": v for k, v in result["non_2xx"].items()},
            **result["error_kinds"],
            **({"wrong body": result["wrong_body"]} if result.get("wrong_body") else {}),
        },
        "error_samples": result["error_samples"],
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": round(max(lat), 1) if lat else None,
        "max_gap_ms": result.get("max_gap_ms"),
    }


# --------------------------------------------------------------------------- RSS


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples the RSS of named processes every ``interval_s`` in a thread: ``samples`` is a list
    of ``(seconds since start, {name: kB or None})``."""

    def __init__(self, pids: dict[str, int], interval_s: float = 1.0) -> None:
        self.pids = dict(pids)
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, int | None]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self.t0 = 0.0

    def _loop(self) -> None:
        next_at = self.t0
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.t0, {n: rss_kb(p) for n, p in self.pids.items()}))
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> RssSampler:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, dict[str, int | None]]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def rss_growth(samples: list[tuple[float, dict[str, int | None]]], *, window_s: float = WINDOW_S,
               margin_mb: float = RSS_MARGIN_MB) -> dict[str, dict[str, Any]]:
    """Per process: RSS at start and end, the means of the first and last ``window_s``, their
    difference (growth) and whether it is within ``margin_mb``. A process that disappeared during
    the load (a sample without a value) is reported as such and is not flat."""
    if not samples:
        return {}
    end = samples[-1][0]
    out: dict[str, dict[str, Any]] = {}
    for name in samples[0][1]:
        values = [(t, v.get(name)) for t, v in samples]
        if any(v is None for _, v in values):
            out[name] = {"flat": False, "reason": "the process was gone during the load"}
            continue
        first = [v / 1024 for t, v in values if t < window_s and v is not None]
        last = [v / 1024 for t, v in values if t >= end - window_s and v is not None]
        growth = statistics.fmean(last) - statistics.fmean(first)
        mb = [v / 1024 for _, v in values if v is not None]
        out[name] = {
            "start_mb": round(mb[0], 1),
            "end_mb": round(mb[-1], 1),
            "max_mb": round(max(mb), 1),
            "first_window_mb": round(statistics.fmean(first), 2),
            "last_window_mb": round(statistics.fmean(last), 2),
            "growth_mb": round(growth, 2),
            "samples": len(mb),
            "margin_mb": margin_mb,
            "flat": growth <= margin_mb,
        }
    return out


def stack_pids(stack: Stack) -> dict[str, int]:
    """The stack's long-lived processes: `bankml up` (function host, agent), the live model
    server, Azurite."""
    info = json.loads((stack.home / "stack.json").read_text())
    live = registry(stack.home).live_deployment()
    if live is None or not live.get("pid"):
        raise RuntimeError("no live model server")
    return {"function host (bankml up)": stack.proc.pid, "model server": int(live["pid"]), "azurite": int(info["azurite_pid"])}


# --------------------------------------------------------------------------- scenarios


def warm_up(url: str, key: str, body: str, expected: Any, *, seconds: float = 5.0) -> dict[str, Any]:
    """A short load first: connections, thread pools and allocator arenas reach their steady size
    before memory is compared."""
    return finish_load(start_load(url, key, body, seconds=seconds, expect=[expected]))


def steady_load(stack: Stack, key: str, *, seconds: float, concurrency: int = CONCURRENCY) -> dict[str, Any]:
    """Scenario 1: ``concurrency`` clients for ``seconds``, every answer checked, RSS sampled."""
    live = registry(stack.home).live_deployment()
    rows, labels = clear_rows(live["model_dir"])
    expected = {"result": labels}
    body = json.dumps({"data": rows}, separators=(",", ":"))
    warm = warm_up(stack.url, key, body, expected)
    sampler = RssSampler(stack_pids(stack)).start()
    result = finish_load(start_load(stack.url, key, body, seconds=seconds, concurrency=concurrency, expect=[expected]))
    samples = sampler.stop()
    checked = check_answers(result, {str(live["model_version"]): expected})
    return {
        "concurrency": concurrency,
        "labels": labels,
        "warm_up_failed": warm["requests"] - warm["ok"],
        "load": load_figures(result),
        "answers": checked,
        "rss": rss_growth(samples),
        "rss_samples": [[round(t, 2), v] for t, v in samples],
        "raw_answers": result.get("answers"),
    }


def _wait_live(reg: Any, predicate: Callable[[dict[str, Any]], bool], what: str, timeout_s: float,
               alive: subprocess.Popen[bytes]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        live = reg.live_deployment()
        return live if live and predicate(live) else None

    return wait_for(what, check, timeout_s, alive=alive)


def redeploy_under_load(stack: Stack, key: str, *, settle_s: float = 5.0, budget_s: float = 3.0,
                        concurrency: int = CONCURRENCY, max_seconds: float = 400.0) -> dict[str, Any]:
    """Scenario 2: load while (a) a second run trains, completes and the gate deploys it, then
    (b) `bankml rollback` switches back. Every answer is checked against its version's model."""
    reg = registry(stack.home)
    first = reg.live_deployment()
    dataset_version = int((reg.get_run(first["run_id"]) or {}).get("dataset_version") or 1)
    rows, _ = clear_rows(first["model_dir"])
    body = json.dumps({"data": rows}, separators=(",", ":"))
    expected = {str(first["model_version"]): expected_answer(first["model_dir"], rows)}
    warm_up(stack.url, key, body, expected[str(first["model_version"])], seconds=3.0)
    proc = start_load(stack.url, key, body, seconds=max_seconds, concurrency=concurrency)
    t0 = time.monotonic()
    switches: list[dict[str, Any]] = []
    try:
        time.sleep(settle_s)
        # (a) a second run through the published pipeline call; the gate deploys it when it completes.
        r = requests.post(
            f"{stack.url}/api/pipeline/runs", headers={"x-functions-key": key}, timeout=60,
            json={"ExperimentName": "bankmarketing-automl",
                  "ParameterAssignments": {"dataset_version": dataset_version, "time_budget_s": budget_s}},
        )
        r.raise_for_status()
        run_id = r.json()["Id"]
        started = time.monotonic()
        second = _wait_live(reg, lambda d: d["run_id"] == run_id, "the second run's deployment", 300, stack.proc)
        switches.append({"kind": "new run (gate)", "from": first["name"], "to": second["name"],
                         "at_s": round(started - t0, 2), "to_live_s": round(time.monotonic() - started, 2)})
        run = reg.get_run(run_id) or {}
        switches[-1]["train_s"] = _seconds_between(run.get("started_at"), run.get("ended_at"))
        expected[str(second["model_version"])] = expected_answer(second["model_dir"], rows)
        time.sleep(settle_s)
        # (b) rollback through the CLI, as an operator does it.
        started = time.monotonic()
        out = cli(stack.home, "rollback")
        if out.returncode != 0:
            raise RuntimeError(f"bankml rollback failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
        third = _wait_live(reg, lambda d: d["name"] not in (first["name"], second["name"]), "the rollback", 120, stack.proc)
        switches.append({"kind": "rollback", "from": second["name"], "to": third["name"],
                         "at_s": round(started - t0, 2), "to_live_s": round(time.monotonic() - started, 2)})
        expected[str(third["model_version"])] = expected_answer(third["model_dir"], rows)
        # The old servers drain and stop; keep the load on until they have.
        wait_for("the replaced servers to be retired", lambda: all(
            d["status"] == "retired" for d in reg.list_deployments() if d["name"] in (first["name"], second["name"])), 60)
        time.sleep(settle_s)
    finally:
        result = finish_load(proc, stop=True)
    checked = check_answers(result, expected)
    versions = [str(first["model_version"]), str(second["model_version"]), str(third["model_version"])]
    spans = result.get("header_spans") or {}
    for sw, (old, new) in zip(switches, zip(versions, versions[1:], strict=False), strict=True):
        o, n = spans.get(old, {}), spans.get(new, {})
        sw["versions"] = [old, new]
        # From the first answer by the new version to the last by the old one: both answered.
        if o and n:
            sw["overlap_s"] = round(o["last_end_s"] - n["first_end_s"], 3)
            sw["gap_ms"] = round(switch_gap_ms(result, n["first_end_s"]), 1)
    return {
        "concurrency": concurrency,
        "versions": versions,
        "expected": expected,
        "load": load_figures(result),
        "answers": checked,
        "switches": switches,
        "header_spans": spans,
        "per_second": result.get("per_second"),
    }


def switch_gap_ms(result: dict[str, Any], at_s: float, around_s: float = SWITCH_WINDOW_S) -> float:
    """The longest stretch without any answer within ``around_s`` of a switch (loadgen time). When
    none of the run's 100 longest stretches is that close, the shortest of them is an upper bound."""
    near = [g for at, g in result.get("longest_gaps") or [] if at_s - around_s <= at <= at_s + around_s]
    if near:
        return max(near)
    # None of the run's longest stretches is near the switch: it had none longer than those.
    return min((g for _, g in result.get("longest_gaps") or []), default=0.0)


def _seconds_between(a: str | None, b: str | None) -> float | None:
    from datetime import datetime

    if not a or not b:
        return None
    return round((datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds(), 1)


@dataclass
class BurstFile:
    name: str
    data: bytes
    content: str  # which distinct content it carries ("A".."G"), or "invalid"


def burst_files(work: Path, *, distinct: int = 7, rows: int = 2000) -> list[BurstFile]:
    """Ten files: ``distinct`` different ones, one byte-identical copy under another name, one
    with the same rows as another exported with ';', one without the euribor3m column."""
    from shared.datagen import generate_frame

    files: list[BurstFile] = []
    frames = {}
    for i in range(distinct):
        label = chr(ord("A") + i)
        frame = generate_frame(rows, seed=1000 + i)
        frames[label] = frame
        files.append(BurstFile(f"burst-{i + 1:02d}.csv", frame.to_csv(index=False).encode(), label))
    files.append(BurstFile(f"burst-{distinct + 1:02d} copy of 01.csv", files[0].data, "A"))
    files.append(BurstFile(f"burst-{distinct + 2:02d} semicolons.csv", frames["B"].to_csv(index=False, sep=";").encode(), "B"))
    files.append(BurstFile(f"burst-{distinct + 3:02d} no euribor3m.csv",
                           frames["C"].drop(columns=["euribor3m"]).to_csv(index=False).encode(), "invalid"))
    return files


def blob_service(stack: Stack) -> Any:
    from azure.storage.blob import BlobServiceClient

    account = json.loads((stack.home / "azurite" / "azurite-account.json").read_text())
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={account['accountName']};AccountKey={account['accountKey']};"
        f"BlobEndpoint=http://127.0.0.1:{stack.azurite_port}/{account['accountName']};"
    )
    return BlobServiceClient.from_connection_string(conn)


def drop_burst(stack: Stack, work: Path, *, timeout_s: float = 300.0, settle_s: float = 5.0,
               wait_runs: bool = False) -> dict[str, Any]:
    """Scenario 3: ten uploads at once into incoming/, then what became of each. With
    ``wait_runs`` it also waits until every run has ended (they queue: one trains at a time)."""
    from devhost.store import HostStore

    files = burst_files(work)
    service = blob_service(stack)
    incoming = service.get_container_client("incoming")
    if not incoming.exists():
        incoming.create_container()
    reg = registry(stack.home)
    before = {d["version"] for d in reg.list_datasets()}

    def upload(f: BurstFile) -> str:
        blob = incoming.upload_blob(f.name, f.data, overwrite=True)
        return str(blob.get_blob_properties().etag).strip('"')

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        etags = list(pool.map(upload, files))
    uploaded_s = time.monotonic() - started

    def processed() -> bool:
        store = HostStore(stack.home)
        try:
            return all(store.has_receipt("ingest", f.name, e) or store.has_receipt("ingest", f"incoming/{f.name}", e)
                       for f, e in zip(files, etags, strict=True))
        finally:
            store.close()

    wait_for("every upload to be processed", processed, timeout_s, poll_s=0.2, alive=stack.proc)
    all_done_s = time.monotonic() - started
    runs_done_s = None
    if wait_runs:
        wait_for("every run to end", lambda: all(r["status"] in ("Completed", "Failed") for r in reg.list_runs()),
                 timeout_s * 3, poll_s=0.5, alive=stack.proc)
        runs_done_s = round(time.monotonic() - started, 1)
    time.sleep(settle_s)  # the scanner looks at incoming/ again a few times: nothing is done twice

    distinct = sorted({f.content for f in files if f.content != "invalid"})
    datasets = [d for d in reg.list_datasets() if d["version"] not in before]
    runs = [r for r in reg.list_runs() if r["dataset_version"] in {d["version"] for d in datasets}]
    runs_per_version = {d["version"]: sum(1 for r in runs if r["dataset_version"] == d["version"]) for d in datasets}
    rejected = service.get_container_client("rejected")
    rejected_names = {b.name for b in rejected.list_blobs()}
    incoming_names = {b.name for b in incoming.list_blobs()}
    outcomes = []
    for f in files:
        reason = None
        if f"{f.name}.error.json" in rejected_names:
            reason = json.loads(rejected.download_blob(f"{f.name}.error.json").readall())
        outcomes.append({
            "name": f.name, "content": f.content,
            "in_incoming": f.name in incoming_names,
            "in_rejected": f.name in rejected_names,
            "reason": (reason or {}).get("message") or ((reason or {}).get("error") or {}).get("message"),
            "reason_field": (reason or {}).get("field") or ((reason or {}).get("error") or {}).get("field"),
        })
    registered_times = sorted(d["created_at"] for d in datasets)
    return {
        "files": len(files),
        "expected_versions": len(distinct),
        "versions": len(datasets),
        "dataset_rows": sorted(d["rows"] for d in datasets),
        "runs": len(runs),
        "runs_per_version": runs_per_version,
        "runs_by_status": {s: sum(1 for r in runs if r["status"] == s) for s in sorted({r["status"] for r in runs})},
        "rejected": [o for o in outcomes if o["in_rejected"]],
        "outcomes": outcomes,
        "lost": [o["name"] for o in outcomes if not o["in_incoming"] and not o["in_rejected"]],
        "content_hashes": sorted(d["content_hash"] for d in datasets),
        "upload_s": round(uploaded_s, 2),
        "runs_ended_s": runs_done_s,
        "all_processed_s": round(all_done_s, 2),
        "first_registered_at": registered_times[0] if registered_times else None,
        "last_registered_at": registered_times[-1] if registered_times else None,
    }


# --------------------------------------------------------------------------- the benchmark


@contextmanager
def running_stack(home: Path, env: dict[str, str]) -> Iterator[LaunchedStack]:
    stack = launch_stack(home, env)
    try:
        yield stack
    finally:
        stop_stack(stack)


def run_all(*, seconds: float, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"seconds": seconds, "concurrency": CONCURRENCY, "loadavg_start": os.getloadavg()[0],
                              "cpus": os.cpu_count()}
    print(f"starting `bankml up` in {work / 'load'} ...", flush=True)
    with running_stack(work / "load" / "home", STACK_ENV) as stack:
        first = deploy_first_model(stack, work)
        result["drop_to_live_s"] = first["drop_to_live_s"]
        print(f"first model live after {first['drop_to_live_s']} s (drop -> live)", flush=True)
        key = function_key(stack.home)
        print(f"\nsteady: {CONCURRENCY} clients for {seconds:g} s through the relay", flush=True)
        result["steady"] = steady_load(stack, key, seconds=seconds)
        print_steady(result["steady"])
        print(f"\nredeploy under load: {CONCURRENCY} clients, a second run deploys, then `bankml rollback`", flush=True)
        result["redeploy"] = redeploy_under_load(stack, key, settle_s=max(3.0, seconds / 12))
        print_redeploy(result["redeploy"])
    print("\nburst: ten CSVs uploaded at once into incoming/ of a second stack (AutoML budget 1 s)", flush=True)
    with running_stack(work / "burst" / "home", BURST_ENV) as stack:
        result["burst"] = drop_burst(stack, work / "burst", wait_runs=True)
        print_burst(result["burst"])
    result["loadavg_end"] = os.getloadavg()[0]
    return result


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def print_steady(s: dict[str, Any]) -> None:
    ld = s["load"]
    print(f"requests {ld['requests']}, {ld['req_per_s']} req/s, p50 {_ms(ld['p50_ms'])} ms, p99 {_ms(ld['p99_ms'])} ms, "
          f"failed {ld['failed']} {ld['errors_by_kind'] or ''}, wrong answers {s['answers']['wrong_count']}")
    for name, r in s["rss"].items():
        if "growth_mb" in r:
            print(f"  RSS {name}: {r['start_mb']} -> {r['end_mb']} MB, first/last 10 s mean {r['first_window_mb']} / "
                  f"{r['last_window_mb']} MB, growth {r['growth_mb']:+.2f} MB ({'flat' if r['flat'] else 'GROWS'})")
        else:
            print(f"  RSS {name}: {r['reason']}")


def print_redeploy(s: dict[str, Any]) -> None:
    ld = s["load"]
    print(f"requests {ld['requests']}, {ld['req_per_s']} req/s, p50 {_ms(ld['p50_ms'])} ms, p99 {_ms(ld['p99_ms'])} ms, "
          f"failed {ld['failed']} {ld['errors_by_kind'] or ''}, wrong answers {s['answers']['wrong_count']}, "
          f"longest stretch without an answer {_ms(ld['max_gap_ms'])} ms")
    print(f"  answers by model version: {s['answers']['by_version']}")
    for sw in s["switches"]:
        print(f"  {sw['kind']}: {sw['from']} -> {sw['to']} live {sw['to_live_s']} s after it started"
              + (f" (training {sw['train_s']} s)" if sw.get("train_s") is not None else "")
              + (f"; both versions answered for {sw['overlap_s']} s, longest stretch without an answer around it "
                 f"{sw['gap_ms']} ms" if "overlap_s" in sw else ""))


def print_burst(s: dict[str, Any]) -> None:
    print(f"files {s['files']}, dataset versions {s['versions']} (expected {s['expected_versions']}), runs {s['runs']} "
          f"{s['runs_by_status']}, rejected {[o['name'] for o in s['rejected']]}, lost {s['lost']}")
    print(f"  uploads took {s['upload_s']} s; every file processed {s['all_processed_s']} s after the burst started"
          + (f"; every run ended {s['runs_ended_s']} s after it" if s.get("runs_ended_s") is not None else ""))


def markdown(result: dict[str, Any]) -> str:
    """The "Load" section of docs/benchmarks.md from a result of ``run_all`` (or ``--json``)."""
    lines = ["## Load", ""]
    lines.append(
        f"`python -m benchmarks.load{' --quick' if result.get('seconds', 60) < 60 else ''}`: a real `bankml up` stack, "
        f"{result.get('concurrency', CONCURRENCY)} concurrent clients (`shared.loadgen` in its own process) posting 4 rows "
        f"to `/api/score`, every answer checked against the labels the answering model's files give; "
        f"{result.get('cpus')} CPUs shared with the stack and the load generator, load average "
        f"{result.get('loadavg_start', 0):.1f} at the start. First model: drop -> live in {result.get('drop_to_live_s')} s."
    )
    lines.append("")
    rows = [("steady", result.get("steady")), ("redeploy + rollback", result.get("redeploy"))]
    lines.append("| scenario | requests | req/s | p50 ms | p99 ms | max ms | failed | errors by kind | wrong answers | longest gap ms |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for name, s in rows:
        if not s:
            continue
        ld = s["load"]
        kinds = ", ".join(f"{k}: {v}" for k, v in ld["errors_by_kind"].items()) or "none"
        lines.append(f"| {name} ({ld['seconds']:.0f} s) | {ld['requests']} | {ld['req_per_s']} | {_ms(ld['p50_ms'])} | "
                     f"{_ms(ld['p99_ms'])} | {_ms(ld['max_ms'])} | {ld['failed']} | {kinds} | "
                     f"{s['answers']['wrong_count']} | {_ms(ld['max_gap_ms'])} |")
    steady = result.get("steady")
    if steady:
        lines += ["", f"RSS during the steady load (sampled every second; growth = mean of the last {WINDOW_S:g} s "
                  f"minus mean of the first {WINDOW_S:g} s, allowed {RSS_MARGIN_MB:g} MB):", "",
                  "| process | start MB | end MB | max MB | growth MB | flat |", "|---|---|---|---|---|---|"]
        for name, r in steady["rss"].items():
            if "growth_mb" in r:
                lines.append(f"| {name} | {r['start_mb']} | {r['end_mb']} | {r['max_mb']} | {r['growth_mb']:+.2f} | "
                             f"{'yes' if r['flat'] else 'NO'} |")
            else:
                lines.append(f"| {name} | - | - | - | - | NO ({r['reason']}) |")
    red = result.get("redeploy")
    if red:
        lines += ["", "Switches under that load (answers by model version: "
                  + ", ".join(f"v{k}: {v}" for k, v in red["answers"]["by_version"].items()) + "):", "",
                  "| switch | from -> to | live after s | training s | both versions answered for s | longest gap ms |",
                  "|---|---|---|---|---|---|"]
        for sw in red["switches"]:
            lines.append(f"| {sw['kind']} | {sw['from']} -> {sw['to']} | {sw['to_live_s']} | "
                         f"{sw.get('train_s') if sw.get('train_s') is not None else '-'} | {sw.get('overlap_s', '-')} | "
                         f"{_ms(sw.get('gap_ms'))} |")
    burst = result.get("burst")
    if burst:
        lines += ["", f"Burst of {burst['files']} CSV uploads at once into `incoming/` (7 different files of 2,000 "
                  "rows, a byte copy, the same rows with ';', one without `euribor3m`; AutoML budget 1 s; runs queue "
                  "and train one at a time):", "",
                  "| versions (expected) | runs | rejected | lost | uploads s | all processed s | all runs ended s |",
                  "|---|---|---|---|---|---|---|",
                  f"| {burst['versions']} ({burst['expected_versions']}) | {burst['runs']} {burst['runs_by_status']} | "
                  f"{len(burst['rejected'])} | {len(burst['lost'])} | {burst['upload_s']} | {burst['all_processed_s']} | "
                  f"{burst.get('runs_ended_s') or '-'} |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 s loads instead of 60 s")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    seconds = 15.0 if args.quick else 60.0
    with tempfile.TemporaryDirectory(prefix="bankml-bench-load-") as tmp:
        result = run_all(seconds=seconds, work=Path(tmp))
    print()
    print(markdown(result))
    if args.json:
        slim = dict(result)
        if "steady" in slim:
            slim["steady"] = {k: v for k, v in slim["steady"].items() if k != "raw_answers"}
        args.json.write_text(json.dumps(slim, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
