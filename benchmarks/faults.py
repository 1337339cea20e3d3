"""Fault benchmark: inject real faults into a running `bankml up` stack and measure what users see.

    .venv/bin/python -m benchmarks.faults [--quick] [--json FILE]

What it does, on generated data in a throw-away data dir (free ports, small training budget):

1. starts `bankml up` (a subprocess, as a user runs it), drops a CSV and waits for a live model;
2. keeps scoring clients busy through the relay (``POST /api/score``, varied 1-3 row payloads)
   during each fault, and checks every 200 answer's labels against the model's own prediction for
   that payload (the model that answered, by ``x-bankml-model-version``, loaded here);
3. faults, one after the other:
   * **kill**: once the live server's warm standby is ready (``BANKML_WARM_STANDBY``, on by
     default), the live model server is SIGKILLed; the supervisor hands the traffic to the
     standby. Measured: time from the kill until the live deployment answers its health check
     on its new process, and until the relay answers 200 again;
   * **hang**: the live model server is SIGSTOPped; the supervisor's health checks find it hung
     (``BANKML_LIVENESS_FAILURES`` in a row), kill it and hand over to the standby. Same figures;
   * **kill both**: the standby and then the live server are SIGKILLed; the supervisor must
     restart the server (what happens without a standby). Same figures;
   * **storage**: Azurite is stopped (SIGSTOP, then SIGCONT) for 20 s (``--quick``: 8 s) while a
     CSV waits in ``incoming/``; measured: relay answers during the outage, what `bankml status
     --json` says, and the time from Azurite's return until the file is registered with its run.
     The full run then SIGKILLs Azurite and measures how soon `bankml up` has it running again.

Every answer that is not a 200 is counted by status (0: no answer at all). The library part
(``Load``, the scenario functions) is what tests/e2e/test_faults.py drives and asserts on; this
script prints the figures and renders them with ``markdown(result)`` for docs/benchmarks.md.
Nothing here fails on a time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A small, fast stack: tiny training budget, no benchmark timer, every completed run deploys.
STACK_ENV = {
    "BANKML_TIME_BUDGET_S": "5",
    "BANKML_MIN_PRIMARY_METRIC": "0.5",
    "BANKML_DEPLOY_MARGIN": "-1",
    "BANKML_BENCH_REQUESTS": "20",
    "BANKML_BENCH_DURATION_S": "2",
    "BANKML_BENCH_CONCURRENCY": "1",
    "BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *",
}


# -- registry and storage access from outside the stack ----------------------------------------
def registry_rows(home: Path, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    db = sqlite3.connect(home / "registry.sqlite", timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, args)]
    finally:
        db.close()


def live_row(home: Path) -> dict[str, Any] | None:
    rows = registry_rows(home, "SELECT * FROM deployments WHERE status = 'live' ORDER BY live_at DESC LIMIT 1")
    return rows[0] if rows else None


def blob_service(home: Path, port: int) -> Any:
    from azure.storage.blob import BlobServiceClient

    account = json.loads((home / "azurite" / "azurite-account.json").read_text())
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={account['accountName']};AccountKey={account['accountKey']};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{account['accountName']};"
    )
    return BlobServiceClient.from_connection_string(conn, retry_total=1)


def upload(home: Path, port: int, name: str, data: bytes) -> str:
    """Upload ``incoming/<name>`` straight to Azurite; returns its ETag (bare)."""
    container = blob_service(home, port).get_container_client("incoming")
    blob = container.upload_blob(name, data, overwrite=True)
    return str(blob.get_blob_properties().etag).strip('"')


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def wait(what: str, predicate: Any, timeout: float, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


# -- scoring load with answer checks ------------------------------------------------------------
@dataclass
class Answer:
    t0: float  # time.monotonic() when sent
    t1: float  # when the answer (or the error) came
    status: int  # 0: no HTTP answer
    payload: int
    version: str | None = None
    result: list[Any] | None = None
    retry_after: str | None = None


@dataclass
class Load:
    """Scoring clients through the relay; every answer is recorded (see ``check``)."""

    url: str
    key: str
    home: Path
    clients: int = 4
    timeout_s: float = 60.0
    answers: list[Answer] = field(default_factory=list)
    payloads: list[list[dict[str, Any]]] = field(default_factory=list)
    models: dict[str | None, Any] = field(default_factory=dict)  # version -> its model, for the checks

    def __post_init__(self) -> None:
        from shared.contract import FEATURE_NAMES
        from shared.datagen import generate_frame

        frame = generate_frame(120, seed=99)[list(FEATURE_NAMES)]
        records = json.loads(frame.to_json(orient="records"))
        self.payloads = [records[i : i + 1 + i % 3] for i in range(0, 117, 3)]
        self._bodies = [json.dumps({"data": p}).encode() for p in self.payloads]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> Load:
        for n in range(self.clients):
            t = threading.Thread(target=self._client, args=(n,), daemon=True, name=f"faults-client-{n}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5)
        self._threads = []
        self._stop = threading.Event()

    def _client(self, n: int) -> None:
        session = requests.Session()
        headers = {"x-functions-key": self.key, "Content-Type": "application/json"}
        i = n
        while not self._stop.is_set():
            i = (i + self.clients) % len(self._bodies)
            t0 = time.monotonic()
            try:
                r = session.post(f"{self.url}/api/score", data=self._bodies[i], headers=headers, timeout=self.timeout_s)
                a = Answer(t0, time.monotonic(), r.status_code, i, r.headers.get("x-bankml-model-version"),
                           retry_after=r.headers.get("Retry-After"))
                if r.status_code == 200:
                    a.result = r.json().get("result")
                else:
                    time.sleep(0.05)  # a client backs off a little on an error
            except requests.RequestException:
                a = Answer(t0, time.monotonic(), 0, i)
                session = requests.Session()
            with self._lock:
                self.answers.append(a)

    def window(self, start: float, end: float, *, sent_within: bool = False) -> list[Answer]:
        """Answers to requests in flight between ``start`` and ``end`` (or only sent then)."""
        with self._lock:
            if sent_within:
                return [a for a in self.answers if start <= a.t0 < end]
            return [a for a in self.answers if start <= a.t0 < end or start <= a.t1 < end]

    def first_ok_after(self, t: float) -> float | None:
        with self._lock:
            oks = [a.t1 for a in self.answers if a.t0 >= t and a.status == 200]
        return min(oks) if oks else None

    def wrong_answers(self, answers: list[Answer]) -> list[dict[str, Any]]:
        """200 answers whose labels differ from the answering model's own prediction (each version's
        model is loaded once, when it first answered, and kept: a test may damage its files later)."""
        from shared.workspace.local.training import load_model

        models = self.models
        wrong = []
        for a in answers:
            if a.status != 200:
                continue
            if a.version not in models:
                rows = registry_rows(self.home, "SELECT model_dir FROM deployments WHERE model_version = ?", (int(a.version or 0),))
                models[a.version] = load_model(rows[0]["model_dir"]) if rows else None
            model = models[a.version]
            expected = model.predict(self.payloads[a.payload])[0] if model is not None else None
            if a.result != expected:
                wrong.append({"payload": a.payload, "version": a.version, "got": a.result, "expected": expected})
        return wrong

    def figures(self, start: float, end: float, *, sent_within: bool = False) -> dict[str, Any]:
        answers = self.window(start, end, sent_within=sent_within)
        by_status = Counter(a.status for a in answers)
        errors = [a for a in answers if a.status != 200]
        return {
            "requests": len(answers),
            "by_status": {str(k): v for k, v in sorted(by_status.items())},
            "errors": len(errors),
            "errors_without_retry_after": sum(1 for a in errors if a.status == 503 and not a.retry_after),
            "wrong_answers": len(self.wrong_answers(answers)),
            "max_latency_s": round(max((a.t1 - a.t0 for a in answers), default=0.0), 3),
        }


# -- scenarios ----------------------------------------------------------------------------------
def standby_ready(home: Path) -> bool:
    """The live deployment's warm standby (BANKML_WARM_STANDBY) is loaded and checked."""
    row = live_row(home)
    path = home / "deployments" / str(row["name"] if row else "") / "standby.json"
    try:
        return bool(row) and bool(json.loads(path.read_text()).get("ready"))
    except (OSError, ValueError):
        return False


def model_server_fault(
    home: Path, load: Load, sig: signal.Signals, *, settle_s: float = 2.0, standby: bool = True
) -> dict[str, Any]:
    """SIGKILL or SIGSTOP the live model server under load; measure until it serves again.
    ``standby``: wait until the warm standby is ready first (the stack's default)."""
    if standby:
        wait("the warm standby to be ready", lambda: standby_ready(home), timeout=180, poll=0.2)
    before = live_row(home)
    assert before is not None and before["pid"], "no live model server"
    time.sleep(settle_s)  # some traffic on the healthy server first
    spare = None
    if not standby:  # both die: the standby first, so that the supervisor must restart the server
        path = home / "deployments" / before["name"] / "standby.json"
        spare = json.loads(path.read_text())["pid"] if path.exists() else None
        if spare:
            os.kill(int(spare), signal.SIGKILL)
    t_fault = time.monotonic()
    os.kill(int(before["pid"]), sig)

    def back() -> dict[str, Any] | None:
        row = live_row(home)
        # The reason is written once the restarted server has passed its checks.
        if row and row["pid"] and row["pid"] != before["pid"] and row["reason"] != before["reason"] and healthy(int(row["port"])):
            return row
        return None

    after = wait("the live model server to be back", back, timeout=120)
    t_back = time.monotonic()
    t_ok = wait("a 200 through the relay", lambda: load.first_ok_after(t_back), timeout=60)
    time.sleep(settle_s)
    out = {
        "signal": sig.name,
        "standby_killed_too": bool(spare),
        "deployment": before["name"],
        "old_pid": before["pid"],
        "new_pid": after["pid"],
        "server_back_s": round(t_back - t_fault, 2),
        "relay_200_again_s": round(t_ok - t_fault, 2),
        "reason": after["reason"],
        **load.figures(t_fault - settle_s, time.monotonic()),
    }
    return out


def stack_pid(home: Path) -> int:
    return int(json.loads((home / "stack.json").read_text())["pid"])


def azurite_saved_since(home: Path, t: float) -> bool:
    """Azurite keeps blob metadata in memory and saves it every 5 s (LokiJS autosave): true once
    its metadata file was written after ``t`` (time.time())."""
    db = home / "azurite" / "azurite" / "__azurite_db_blob__.json"
    return db.exists() and db.stat().st_mtime > t


def storage_outage(
    stack: Any, load: Load, data: bytes, name: str, *, seconds: float, mode: str
) -> dict[str, Any]:
    """Stop Azurite for ``seconds`` while ``incoming/<name>`` waits to be ingested.

    The stack is paused (SIGSTOP) for the upload so that the blob scanner cannot pick the file
    up before storage goes: ingest meets the outage for sure. ``mode`` "stop": SIGSTOP for
    ``seconds``, then SIGCONT (storage gone, nothing to restart); "kill": SIGKILL, and `bankml up`
    itself starts Azurite again on the same port and folder (``seconds`` is ignored: the outage
    lasts until that restart, which is measured).
    """
    home = stack.home
    info = json.loads((home / "stack.json").read_text())
    az_pid, az_port = int(info["azurite_pid"]), int(info["azurite_port"])
    datasets_before = len(registry_rows(home, "SELECT version FROM datasets"))
    up = stack_pid(home)
    os.kill(up, signal.SIGSTOP)
    try:
        uploaded_at = time.time()
        etag = upload(home, az_port, name, data)
        if mode == "kill":
            # A SIGKILL before Azurite's next save would lose the upload (Azurite, not the app).
            wait("Azurite to save the upload", lambda: azurite_saved_since(home, uploaded_at + 0.05), timeout=30, poll=0.2)
        os.kill(az_pid, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
        if mode == "kill":
            wait("Azurite to exit", lambda: not _alive(az_pid), timeout=10)
    finally:
        os.kill(up, signal.SIGCONT)
    t_down = time.monotonic()
    statuses: list[dict[str, Any]] = []
    restarted_pid = None
    if mode == "kill":
        def new_azurite() -> int | None:
            pid = int(json.loads((home / "stack.json").read_text()).get("azurite_pid") or 0)
            return pid if pid != az_pid and _alive(pid) else None

        restarted_pid = wait("the stack to start Azurite again", new_azurite, timeout=120, poll=0.05)
        status_text = subprocess.run(
            [sys.executable, "-m", "cli", "status", "--home", str(home)], cwd=ROOT, capture_output=True, text=True,
            timeout=120,
        )
        statuses.append(stack.status()["services"])
    else:
        time.sleep(min(3.0, seconds / 2))
        statuses.append(stack.status()["services"])
        status_text = subprocess.run(
            [sys.executable, "-m", "cli", "status", "--home", str(home)], cwd=ROOT, capture_output=True, text=True,
            timeout=120,
        )
        time.sleep(max(0.0, seconds - (time.monotonic() - t_down)))
        os.kill(az_pid, signal.SIGCONT)
    t_up = time.monotonic()

    def registered() -> dict[str, Any] | None:
        rows = registry_rows(home, "SELECT * FROM datasets WHERE source_blob = ? AND etag = ?", (f"incoming/{name}", etag))
        if not rows:
            return None
        runs = registry_rows(home, "SELECT run_id FROM runs WHERE dataset_version = ?", (rows[0]["version"],))
        return {"version": rows[0]["version"], "runs": [r["run_id"] for r in runs]} if runs else None

    done = wait("the file to be registered with its run", registered, timeout=180, poll=0.2)
    t_done = time.monotonic()
    return {
        "mode": mode,
        "outage_s": round(t_up - t_down, 1),
        "restarted_azurite_pid": restarted_pid,
        "ingest_done_after_return_s": round(t_done - t_up, 2),
        "dataset_version": done["version"],
        "runs": done["runs"],
        "datasets_added": len(registry_rows(home, "SELECT version FROM datasets")) - datasets_before,
        # "stop": while storage was gone; "kill": right after the stack restarted Azurite.
        "status_during_outage": statuses[0] if statuses else None,
        "status_text_during_outage": status_text.stdout + status_text.stderr,
        "status_exit_during_outage": status_text.returncode,
        "relay_during_outage": load.figures(t_down, t_up, sent_within=True),
    }


def _alive(pid: int) -> bool:
    from shared.workspace.local.servers import pid_alive

    return pid_alive(pid)


# -- the benchmark ------------------------------------------------------------------------------
def run(quick: bool) -> dict[str, Any]:
    from shared.datagen import write_csv
    from tests.e2e.conftest import start_stack, stop_stack

    outage = 8.0 if quick else 20.0
    with tempfile.TemporaryDirectory(prefix="bankml-faults-") as tmp:
        work = Path(tmp)
        stack = start_stack(work / "home", STACK_ENV)
        try:
            csv = write_csv(work / "first.csv", 2000, 7)
            stack.cli("drop", str(csv), "--name", "first.csv")
            t0 = time.monotonic()
            wait("a live model", lambda: live_row(stack.home), timeout=600, poll=0.5)
            result: dict[str, Any] = {
                "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                "quick": quick,
                "cpus": os.cpu_count(),
                "first_live_s": round(time.monotonic() - t0, 1),
            }
            load = Load(stack.url, stack.key(), stack.home).start()
            try:
                result["kill"] = model_server_fault(stack.home, load, signal.SIGKILL)
                result["hang"] = model_server_fault(stack.home, load, signal.SIGSTOP)
                wait("the warm standby to be ready", lambda: standby_ready(stack.home), timeout=180, poll=0.2)
                result["kill_both"] = model_server_fault(stack.home, load, signal.SIGKILL, standby=False)
                second = write_csv(work / "second.csv", 2000, 8).read_bytes()
                result["storage"] = storage_outage(
                    stack, load, second, "during-outage.csv", seconds=outage, mode="stop",
                )
                if not quick:
                    third = write_csv(work / "third.csv", 2000, 9).read_bytes()
                    result["storage_killed"] = storage_outage(
                        stack, load, third, "azurite-killed.csv", seconds=0, mode="kill",
                    )
            finally:
                load.stop()
            result["settings"] = {
                k: v for k, v in json.loads((stack.home / "stack.json").read_text())["settings"].items()
                if k.startswith("BANKML_LIVENESS") or k in ("BANKML_RELAY_TIMEOUT_S", "BANKML_WARM_STANDBY")
            }
        finally:
            stop_stack(stack)
    return result


def markdown(result: dict[str, Any]) -> str:
    """The "Faults" section of docs/benchmarks.md from ``run``'s result."""

    def statuses(f: dict[str, Any]) -> str:
        return ", ".join(f"{'no answer' if k == '0' else k}: {v}" for k, v in f["by_status"].items())

    s = result.get("settings", {})
    lines = [
        "## Faults",
        "",
        f"`.venv/bin/python -m benchmarks.faults{' --quick' if result.get('quick') else ''}` ({result.get('date')}, "
        f"{result.get('cpus')} cores, shared machine): `bankml up` on generated data, 4 scoring clients through the "
        "relay during each fault (1-3 row payloads); every 200 answer is checked against the answering model's own "
        "prediction. Liveness settings: interval "
        f"{s.get('BANKML_LIVENESS_INTERVAL_S', '1')} s, timeout {s.get('BANKML_LIVENESS_TIMEOUT_S', '2')} s, "
        f"{s.get('BANKML_LIVENESS_FAILURES', '3')} failures; warm standby {s.get('BANKML_WARM_STANDBY', '1')}; "
        f"relay timeout {s.get('BANKML_RELAY_TIMEOUT_S', '30')} s.",
        "",
        "| fault | requests | answers by status | wrong answers | longest answer | recovery |",
        "|---|---:|---|---:|---:|---|",
    ]
    for key, label in (
        ("kill", "model server SIGKILL (warm standby takes over)"),
        ("hang", "model server SIGSTOP: hung, found by the health checks (warm standby takes over)"),
        ("kill_both", "model server and its standby SIGKILL (restart)"),
    ):
        f = result.get(key)
        if f:
            lines.append(
                f"| {label} | {f['requests']} | {statuses(f)} | {f['wrong_answers']} | {f['max_latency_s']:.2f} s "
                f"| server back {f['server_back_s']:.1f} s, relay 200 again {f['relay_200_again_s']:.1f} s |"
            )
    for st in (result.get("storage"), result.get("storage_killed")):
        if not st:
            continue
        r = st["relay_during_outage"]
        during = (st.get("status_during_outage") or {}).get("storage", {})
        what = (f"Azurite SIGKILL, restarted by `bankml up` after {st['outage_s']:.1f} s" if st["mode"] == "kill"
                else f"Azurite SIGSTOP for {st['outage_s']:.0f} s, then SIGCONT")
        seen = (f"`bankml status` meanwhile: {during.get('detail', 'n/a')}" if st["mode"] != "kill"
                else f"storage reachable right after the restart: {during.get('reachable')}")
        lines.append(
            f"| {what} | {r['requests']} | {statuses(r)} | {r['wrong_answers']} | {r['max_latency_s']:.2f} s "
            f"| file ingested {st['ingest_done_after_return_s']:.1f} s after storage returned "
            f"({st['datasets_added']} version, {len(st['runs'])} run); {seen} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter outage (8 s, SIGSTOP) for a smoke run")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    result = run(args.quick)
    print(json.dumps(result, indent=2, default=str))
    print()
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
