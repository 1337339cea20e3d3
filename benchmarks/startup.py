"""Startup benchmark: `bankml up` to ready, and a deployment from process start to first answer.

    .venv/bin/python -m benchmarks.startup [--quick] [--repeats N] [--json FILE]

1. **`bankml up` to ready**: the real command (``python -m cli up`` in its own process group, a
   throw-away data dir, free ports), timed from the moment the process is started until the
   function host answers ``GET /`` with 200 and ``stack.json`` is written (what
   the end-to-end tests wait for), and until the relay's liveness ``GET /api/`` answers. Twice per
   repeat: on a **fresh** data dir (Azurite's first start, keys and registry created) and on an
   **existing** one holding a live deployment, where ready also means the restarted model server
   answers a real scoring request through the relay (``POST /api/score`` 200). The stack is stopped
   with SIGTERM between runs, as Ctrl-C does.
2. **A deployment from start to first answer**: ``shared.workspace.local.servers.start_model_server``
   (what a deployment runs) on a trained model, timed from the process start until ``GET /``
   answers (liveness) and until the first ``POST /score`` answers 200; and the whole
   ``LocalWorkspace.deploy_run`` (gate, server start, its checks, the switch) once.

The model: a small one trained here (3,000 generated rows, a few seconds of AutoML), or
``--model-dir``. Nothing fails on a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from shared.contract import TUTORIAL_CUSTOMERS
from shared.workspace.local.stack import stack_ready

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"data": [dict(c) for c in TUTORIAL_CUSTOMERS]})
QUIET_TIMERS = {"BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *"}  # the benchmark timer must not fire during a measure


def free_port() -> int:
    from shared.workspace.local.servers import free_port as _free_port

    return _free_port()


@dataclass
class UpStack:
    """`bankml up` running in its own process group."""

    home: Path
    port: int
    azurite_port: int
    proc: subprocess.Popen[bytes]
    log: Path
    started: float  # time.time() just before the process was started

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def function_key(self) -> str:
        from devhost.keys import HostKeys

        return HostKeys.load_or_create(self.home).function_key

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Seconds from the process start until the host answers and stack.json is written."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bankml up exited ({self.proc.returncode}): {self.log_tail()}")
            if stack_ready(self.home, self.url):
                return time.time() - self.started
            time.sleep(0.05)
        raise RuntimeError(f"bankml up was not ready within {timeout_s:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        stop_model_servers(self.home)


def start_up(home: Path, env_extra: dict[str, str] | None = None) -> UpStack:
    """``python -m cli up`` on free ports, output to ``<home>-up.log``; not waited for."""
    port, azport = free_port(), free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home.parent / f"{home.name}-up.log"
    env = {**os.environ, **QUIET_TIMERS, **(env_extra or {})}
    with log.open("ab") as fh:
        started = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--home", str(home), "--port", str(port), "--azurite-port", str(azport)],
            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    return UpStack(home, port, azport, proc, log, started)


def stop_model_servers(home: Path) -> None:
    """Model servers the registry knows, stopped by PID (a stack stopped with SIGKILL leaves them)."""
    import sqlite3

    from shared.workspace.local.servers import stop_model_server

    db_path = home / "registry.sqlite"
    if not db_path.exists():
        return
    db = sqlite3.connect(db_path, timeout=30)
    try:
        rows = list(db.execute("SELECT name, pid FROM deployments WHERE pid IS NOT NULL"))
    finally:
        db.close()
    for name, pid in rows:
        stop_model_server(pid, name)  # only if that PID is still this deployment's model server


def score_until_ok(url: str, key: str, timeout_s: float = 120.0) -> tuple[float, dict[str, str]]:
    """POST the tutorial body to the relay until it answers 200; time.time() of that answer, headers."""
    headers = {"Content-Type": "application/json", "x-functions-key": key}
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = requests.post(f"{url}/api/score", data=BODY, headers=headers, timeout=10)
            if r.status_code == 200:
                return time.time(), dict(r.headers)
            last = f"{r.status_code} {r.text[:200]}"
        except requests.RequestException as err:
            last = type(err).__name__
        time.sleep(0.05)
    raise RuntimeError(f"the relay did not answer 200 within {timeout_s:.0f} s (last: {last})")


def _until_ok(method: str, url: str, headers: dict[str, str] | None = None, data: str | None = None,
              timeout_s: float = 120.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.request(method, url, headers=headers, data=data, timeout=5).status_code == 200:
                return time.time()
        time.sleep(0.02)
    raise RuntimeError(f"{method} {url} did not answer 200 within {timeout_s:.0f} s")


# --------------------------------------------------------------------------- the model


def train_small(work: Path, quick: bool) -> Path:
    from shared.datagen import write_csv
    from shared.workspace.local.training import train

    csv = write_csv(work / "train.csv", 3000, seed=7)
    train(csv, work / "model", time_budget_s=3.0 if quick else 5.0, seed=0)
    return work / "model"


def deploy_into(home: Path, model_dir: Path) -> dict[str, Any]:
    """A completed run with ``model_dir`` in a fresh data dir, deployed like the loop does; timed."""
    from benchmarks.scoring import completed_run_of

    ws, run_id = completed_run_of(home, model_dir, "startup")
    t0 = time.perf_counter()
    decision = ws.deploy_run(run_id)
    wall = time.perf_counter() - t0
    if not decision.deployed:
        raise RuntimeError(f"the model was not deployed: {decision.reason}")
    ws.stop_servers()  # `bankml up` restarts the live one
    return {"deploy_run_s": wall}


# --------------------------------------------------------------------------- measures


def up_fresh(base: Path, i: int) -> dict[str, Any]:
    stack = start_up(base / f"fresh{i}" / "home")
    try:
        ready = stack.wait_ready()
        relay = _until_ok("GET", f"{stack.url}/api/") - stack.started
    finally:
        stack.stop()
    return {"ready_s": ready, "relay_liveness_s": relay}


def up_existing(home: Path) -> dict[str, Any]:
    stack = start_up(home)
    try:
        ready = stack.wait_ready()
        answered, headers = score_until_ok(stack.url, stack.function_key())
    finally:
        stack.stop()
    return {"ready_s": ready, "first_answer_s": answered - stack.started,
            "model_version": headers.get("x-bankml-model-version")}


def server_start(model_dir: Path, work: Path, i: int) -> dict[str, Any]:
    """start_model_server as a deployment runs it: process start -> liveness -> first scoring answer."""
    from shared.workspace.local.servers import start_model_server, stop_pid

    port, key = free_port(), secrets.token_urlsafe(24)
    d = work / f"server{i}"
    t0 = time.time()
    pid = start_model_server(model_dir=model_dir, port=port, name=f"startup-{i}", version=1, key=key,
                             deploy_dir=d, telemetry_file=d / "telemetry.jsonl", insights_flag=d / "insights.flag")
    try:
        live = _until_ok("GET", f"http://127.0.0.1:{port}/")
        first = _until_ok("POST", f"http://127.0.0.1:{port}/score", data=BODY,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    finally:
        stop_pid(pid)
    return {"liveness_s": live - t0, "first_answer_s": first - t0}


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one start of each kind, 2 server starts")
    ap.add_argument("--repeats", type=int, default=None, help="`bankml up` starts of each kind (default 3; --quick 1)")
    ap.add_argument("--model-dir", type=Path, help="use this trained model (model.pkl + model.json)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    server_repeats = 2 if args.quick else 7
    result: dict[str, Any] = {"repeats": repeats, "server_repeats": server_repeats, "loadavg_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bankml-bench-startup-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir.resolve() if args.model_dir else train_small(work, args.quick)
        print(f"model: {model_dir}", flush=True)

        fresh = []
        for i in range(repeats):
            fresh.append(up_fresh(work, i))
            print(f"bankml up, fresh data dir: ready {fresh[-1]['ready_s']:.2f} s, relay liveness "
                  f"{fresh[-1]['relay_liveness_s']:.2f} s", flush=True)

        home = work / "existing" / "home"
        result["deploy_run"] = deploy_into(home, model_dir)
        print(f"deploy_run (gate, start, checks, switch): {result['deploy_run']['deploy_run_s']:.2f} s", flush=True)
        existing = []
        for _ in range(repeats):
            existing.append(up_existing(home))
            print(f"bankml up, data dir with a live model: ready {existing[-1]['ready_s']:.2f} s, first relay answer "
                  f"{existing[-1]['first_answer_s']:.2f} s", flush=True)

        servers = []
        for i in range(server_repeats):
            servers.append(server_start(model_dir, work, i))
            print(f"model server start: liveness {servers[-1]['liveness_s']:.2f} s, first scoring answer "
                  f"{servers[-1]['first_answer_s']:.2f} s", flush=True)

    result["fresh"] = {k: _stats([r[k] for r in fresh]) for k in ("ready_s", "relay_liveness_s")}
    result["existing"] = {k: _stats([r[k] for r in existing]) for k in ("ready_s", "first_answer_s")}
    result["server"] = {k: _stats([r[k] for r in servers]) for k in ("liveness_s", "first_answer_s")}
    result["raw"] = {"fresh": fresh, "existing": existing, "server": servers}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _cell(s: dict[str, float]) -> str:
    if s["n"] == 1:
        return f"{s['median']:.2f} s (once)"
    return f"{s['median']:.2f} s ({s['min']:.2f}-{s['max']:.2f}, n={s['n']:.0f})"


def markdown(result: dict[str, Any]) -> str:
    """The startup section of docs/benchmarks.md."""
    f, e, s = result["fresh"], result["existing"], result["server"]
    ratio = e["ready_s"]["median"] / f["ready_s"]["median"] if f["ready_s"]["median"] else 0.0
    return "\n".join([
        "`bankml up` is the real command in its own process (throw-away data dir, free ports), timed from the "
        "process start; **ready** = the function host answers `GET /` and `bankml up` has written `stack.json` "
        "(what the end-to-end tests wait for). A data dir with a live deployment also restarts its model server; "
        "there the clock runs until the relay answers a real `POST /api/score` with 200. A deployment's start is "
        "`start_model_server` (what the blue/green switch runs) on a small model (3,000 generated rows), from the "
        "process start until `GET /` answers and until the first `POST /score` answers 200. Medians (min-max).",
        "",
        "| measure | figure |",
        "|---|---:|",
        f"| `bankml up`, fresh data dir -> ready | {_cell(f['ready_s'])} |",
        f"| same -> relay liveness `GET /api/` | {_cell(f['relay_liveness_s'])} |",
        f"| `bankml up`, data dir with a live model -> ready | {_cell(e['ready_s'])} |",
        f"| same -> first relay answer from the restarted model server | {_cell(e['first_answer_s'])} |",
        f"| model server process start -> liveness | {_cell(s['liveness_s'])} |",
        f"| model server process start -> first scoring answer | {_cell(s['first_answer_s'])} |",
        f"| `LocalWorkspace.deploy_run` (gate, start, checks, switch), once | "
        f"{result['deploy_run']['deploy_run_s']:.2f} s |",
        "",
        f"Ready with a live model / fresh: {ratio:.2f}x.",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
