"""Deployment benchmark: zero-downtime redeploys under load, and the cost of request telemetry.

    .venv/bin/python -m benchmarks.deploy [--quick] [--model-dir DIR] [--clients 16] [--json FILE]

What it does:

1. takes ``--model-dir`` (written by ``shared.workspace.local.training.train``) or trains a small
   model on generated rows (a few seconds of AutoML);
2. starts the local stack (Azurite, the function host with the relay, the workspace agent, the
   supervisor) in a throw-away data dir on free ports, registers the training rows as a dataset
   and deploys a first run, with insights (telemetry) on as in the loop;
3. telemetry cost: 2-row requests straight to the model server at concurrency 1, with the
   insights flag off and on, twice each (interleaved), and prints p50/p99 of each;
4. zero downtime: ``shared.loadgen`` (its own process) sends ``--clients`` concurrent clients of
   2-row requests through the relay (``POST /api/score`` on the function host) while the
   benchmark redeploys again and again, alternating two paths:
   * **event**: a new completed run is put in the registry; the workspace agent publishes its
     RunCompleted event, the function host runs ``deploy_best_model`` and the gate (margin -1,
     so every run passes) starts the blue/green switch;
   * **rollback**: ``LocalWorkspace.rollback()``, what ``bankml rollback`` calls;
   each one starts a new model server, checks it, switches, drains the old one and stops it.
   Every answer that is not a 2xx, and every request without an answer, counts as failed.

Figures go to stdout (and ``--json``); the targets of the issue are printed next to them, but
nothing fails on a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.contract import TUTORIAL_CUSTOMERS
from shared.loadgen import MAX_REQUESTS

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"data": [dict(c) for c in TUTORIAL_CUSTOMERS]}, separators=(",", ":"))
FLAG_SETTLE_S = 1.5  # the model server re-checks the insights flag once a second


@dataclass
class Switch:
    kind: str  # event | rollback
    old: str
    new: str
    started_s: float  # wall clock (time.time())
    live_s: float
    drained_s: float

    @property
    def to_live_s(self) -> float:
        return self.live_s - self.started_s

    @property
    def drain_s(self) -> float:
        return self.drained_s - self.live_s


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(q * len(ordered)) // 100))
    return ordered[min(rank, len(ordered)) - 1]


def loadgen(job: dict[str, Any], *, wait: bool = True) -> Any:
    """Run shared.loadgen with ``job`` on stdin (keys never in argv); the result, or the process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.loadgen"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    return finish(proc) if wait else proc


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {out[:500]}")
    return json.loads(out)


def train_model(work: Path, *, rows_n: int, budget_s: float) -> tuple[Path, Path]:
    from shared.datagen import write_csv
    from shared.workspace.local.training import train

    csv = write_csv(work / "train.csv", rows_n, seed=7)
    print(f"training a model on {rows_n} generated rows ({budget_s:g} s AutoML budget) ...", flush=True)
    result = train(csv, work / "model", time_budget_s=budget_s, seed=0)
    print(f"trained {result['learner']}: held-out AUC_weighted {result['metrics']['AUC_weighted']:.3f}", flush=True)
    return csv, work / "model"


@contextlib.contextmanager
def local_stack(home: Path) -> Iterator[Any]:
    from shared.workspace.local.servers import free_port
    from shared.workspace.local.stack import LocalStack

    # Margin -1: every run passes the gate, so every RunCompleted event redeploys.
    env = {"BANKML_MIN_PRIMARY_METRIC": "0", "BANKML_DEPLOY_MARGIN": "-1"}
    stack = LocalStack(home, port=free_port(), azurite_port=free_port(), environ=env)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def add_completed_run(ws: Any, dataset_version: int, model_dir: Path, *, published: bool) -> str:
    """A completed run as the training worker leaves it. Inserted in one statement: a Queued run
    would be picked up by the agent for training."""
    from shared.workspace.local.registry import utcnow

    meta = json.loads((model_dir / "model.json").read_text())
    best = {"learner": meta.get("learner"), "metrics": meta.get("metrics", {}), "threshold": meta.get("threshold")}
    run_id = f"AutoML_{uuid.uuid4()}"
    model_dir = ws.store_model(run_id, model_dir)  # models are served only from the workspace's store
    now = utcnow()
    with ws.registry.transaction() as db:
        db.execute(
            "INSERT INTO runs (run_id, experiment, dataset_version, trigger, status, parameters, submitted_at,"
            " started_at, ended_at, best, model_dir, event_published) VALUES (?, ?, ?, 'benchmark', 'Completed', '{}',"
            " ?, ?, ?, ?, ?, ?)",
            (run_id, ws.settings.experiment_name, dataset_version, now, now, now, json.dumps(best), str(model_dir), int(published)),
        )
    return run_id


def wait_for(what: str, predicate: Any, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def telemetry_cost(ws: Any, requests_n: int) -> list[dict[str, Any]]:
    live = ws.live_deployment()
    flag = ws.insights_flag(live.name)
    job = {
        "url": live.scoring_uri, "method": "POST", "body": BODY, "concurrency": 1, "timeout_s": 10,
        "headers": {"Authorization": f"Bearer {live.key}", "Content-Type": "application/json"},
        "max_requests": requests_n, "max_seconds": 120,
    }
    rows = []
    for insights in (False, True, False, True):
        if insights:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)
        time.sleep(FLAG_SETTLE_S)
        loadgen(dict(job, max_requests=50))  # warm-up after the toggle
        r = loadgen(job)
        lat = r["latencies_ms"]
        rows.append({
            "insights": "on" if insights else "off", "requests": r["requests"], "failed": r["requests"] - r["ok"],
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
        })
    flag.touch()
    return rows


def record_cost(calls: int) -> tuple[float, float]:
    """Microseconds per request of RequestTelemetry in this process: on the request path
    (``record``: queue the request) and in the telemetry thread (``convert_pending``: the span and
    three metric points), with the exporters writing to a scratch file as in the server."""
    from shared.telemetry import RequestTelemetry

    with tempfile.TemporaryDirectory(prefix="bankml-bench-otel-") as tmp:
        t = RequestTelemetry(
            requests_file=Path(tmp) / "t.jsonl", metrics_file=Path(tmp) / "m.jsonl", deployment="bench", model_version=1
        )
        on_path = in_thread = float("inf")
        ids = [str(uuid.uuid4()) for _ in range(calls)]
        for _ in range(3):
            now = time.time_ns()
            started = time.perf_counter()
            for rid in ids:
                t.record(start_ns=now - 1_000_000, end_ns=now, status=200, rows=2, request_id=rid)
            on_path = min(on_path, (time.perf_counter() - started) / calls * 1e6)
            started = time.perf_counter()
            converted = t.convert_pending()  # the telemetry thread may have taken some already
            if converted:
                in_thread = min(in_thread, (time.perf_counter() - started) / converted * 1e6)
        t.shutdown()
    return on_path, in_thread


def redeploy_under_load(stack: Any, version: int, model_dir: Path, *, clients: int, seconds: float) -> dict[str, Any]:
    ws = stack.workspace
    job = {
        "url": f"{stack.url}/api/score", "method": "POST", "body": BODY, "concurrency": clients, "timeout_s": 30,
        "headers": {"x-functions-key": stack.host.keys.function_key, "Content-Type": "application/json"},
        "max_requests": MAX_REQUESTS, "max_seconds": seconds,  # time-bound: loadgen's upper bound
    }
    proc = loadgen(job, wait=False)
    load_started = time.time()
    switches: list[Switch] = []
    time.sleep(3.0)  # steady load on the first deployment
    kind = "event"
    # Stop starting switches when one might not finish (start, check, drain) before the load ends.
    while time.time() - load_started < seconds - 25:
        old = ws.live_deployment()
        started = time.time()
        if kind == "event":
            run_id = add_completed_run(ws, version, model_dir, published=False)  # the agent publishes it
            new = wait_for("the event's deployment", lambda rid=run_id: (d := ws.live_deployment()) and d.run_id == rid and d)
        else:
            new = ws.rollback()
        live_at = time.time()
        wait_for(f"{old.name} to drain", lambda n=old.name: any(
            d["name"] == n and d["status"] == "retired" for d in ws.registry.list_deployments()))
        switches.append(Switch(kind, old.name, new.name, started, live_at, time.time()))
        print(f"  {kind:8s} {old.name} -> {new.name}: live after {live_at - started:.1f} s, "
              f"old one drained and stopped {time.time() - live_at:.1f} s later", flush=True)
        kind = "rollback" if kind == "event" else "event"
        time.sleep(2.0)
    result = finish(proc)
    return {"load": result, "switches": switches, "load_started": load_started}


def window_figures(result: dict[str, Any], switches: list[Switch]) -> dict[str, Any]:
    """Latency of requests that started during a switch (start to drained) vs the rest."""
    t0 = datetime.fromisoformat(result["started_at"]).timestamp()
    inside, outside = [], []
    for start_s, latency_ms, status in result["timeline"]:
        at = t0 + start_s
        if status and any(s.started_s <= at <= s.drained_s for s in switches):
            inside.append(latency_ms)
        elif status:
            outside.append(latency_ms)
    return {
        "during_switches": {"sampled": len(inside), "p50_ms": percentile(inside, 50), "p99_ms": percentile(inside, 99)},
        "steady": {"sampled": len(outside), "p50_ms": percentile(outside, 50), "p99_ms": percentile(outside, 99)},
    }


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 40 s of load (1-2 switches) instead of 75 s (3-4)")
    parser.add_argument("--model-dir", type=Path, help="use this trained model (model.pkl + model.json)")
    parser.add_argument("--csv", type=Path, help="with --model-dir: the CSV it was trained on (default: generated rows)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients during the redeploys (default 16)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--no-drain", action="store_true",
        help="control run: kill the old server (SIGKILL) the moment the new one is live, to see what draining saves",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.no_drain:
        from shared.workspace.local import workspace as local_workspace

        local_workspace.DRAIN_S = 0.0  # read when each switch schedules the drain
        local_workspace.DRAIN_GRACE_S = 0.0  # SIGTERM then SIGKILL at once: in-flight requests are cut
        print("control run: no draining", flush=True)

    seconds = 40.0 if args.quick else 75.0  # the full run: 3-4 switches; `make bench` stays under 30 min
    with tempfile.TemporaryDirectory(prefix="bankml-bench-deploy-") as tmp:
        work = Path(tmp)
        if args.model_dir:
            model_dir = args.model_dir.resolve()
            from shared.datagen import write_csv

            csv = args.csv or write_csv(work / "rows.csv", 3000, seed=7)
        else:
            csv, model_dir = train_model(work, rows_n=3000, budget_s=4.0 if args.quick else 8.0)
        home = work / "home"
        print(f"starting the local stack in {home} ...", flush=True)
        with local_stack(home) as stack:
            from shared.ingest import parse_csv

            ws = stack.workspace
            dataset = ws.register_dataset(parse_csv(csv.read_bytes(), max_bytes=10**9), source_blob="incoming/bench.csv", etag="b")
            first = add_completed_run(ws, dataset.version, model_dir, published=True)
            ws.enable_insights(first)
            decision = ws.deploy_run(first)
            assert decision.deployed, decision.reason

            print("\ntelemetry cost: 2-row requests straight to the model server, concurrency 1", flush=True)
            cost = telemetry_cost(ws, 500 if args.quick else 2000)
            on_path_us, in_thread_us = record_cost(5000)
            print(f"telemetry per request, in-process (best of 3 x 5000): {on_path_us:.1f} us on the request path, "
                  f"{in_thread_us:.1f} us in the telemetry thread (span + 3 metric points)")
            print("| insights | requests | failed | p50 ms | p99 ms |\n|---|---|---|---|---|")
            for row in cost:
                print(f"| {row['insights']} | {row['requests']} | {row['failed']} | {ms(row['p50_ms'])} | {ms(row['p99_ms'])} |")

            print(f"\nredeploys under load: {args.clients} clients through the relay for {seconds:g} s", flush=True)
            run = redeploy_under_load(stack, dataset.version, model_dir, clients=args.clients, seconds=seconds)

    load, switches = run["load"], run["switches"]
    failed = load["requests"] - load["ok"]
    windows = window_figures(load, switches)
    on = [r["p50_ms"] for r in cost if r["insights"] == "on" and r["p50_ms"] is not None]
    off = [r["p50_ms"] for r in cost if r["insights"] == "off" and r["p50_ms"] is not None]
    summary = {
        "drain": not args.no_drain,
        "clients": args.clients,
        "seconds": load["duration_s"],
        "requests": load["requests"],
        "failed": failed,
        "non_2xx": load["non_2xx"],
        "connection_errors": load["connection_errors"],
        "error_samples": load["error_samples"],
        "req_per_s": round(load["requests"] / load["duration_s"], 1) if load["duration_s"] else None,
        "p50_ms": percentile(load["latencies_ms"], 50),
        "p99_ms": percentile(load["latencies_ms"], 99),
        "switches": [dict(asdict(s), to_live_s=round(s.to_live_s, 2), drain_s=round(s.drain_s, 2)) for s in switches],
        "windows": windows,
        "telemetry": cost,
        "record_us_on_request_path": round(on_path_us, 2),
        "record_us_in_telemetry_thread": round(in_thread_us, 2),
    }
    print("\n| switches | requests | failed | req/s | p50 ms | p99 ms | p50 ms during switches | p99 ms during switches |")
    print("|---|---|---|---|---|---|---|---|")
    d = windows["during_switches"]
    print(f"| {len(switches)} | {load['requests']} | {failed} | {summary['req_per_s']} | {ms(summary['p50_ms'])} | "
          f"{ms(summary['p99_ms'])} | {ms(d['p50_ms'])} | {ms(d['p99_ms'])} |")
    if switches:
        print(f"time to live (start, checks, switch): {', '.join(f'{s.to_live_s:.1f}' for s in switches)} s; "
              f"drain and stop: {', '.join(f'{s.drain_s:.1f}' for s in switches)} s")
    if failed:
        print(f"failed requests: non-2xx {load['non_2xx']}, no answer {load['connection_errors']}; samples: {load['error_samples']}")
    print(f"target: 0 failed requests during redeploys -> {'met' if failed == 0 and switches else 'NOT met'}")
    if on and off:
        print(f"target: model server p50 <= 2 ms for 2 rows with telemetry on -> {max(on):.2f} ms "
              f"({'met' if max(on) <= 2.0 else 'NOT met'}; off: {max(off):.2f} ms)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0


def markdown(result: dict[str, Any]) -> str:
    """The deployments section of docs/benchmarks.md."""
    r = result
    sw = r.get("switches") or []
    d, st = r["windows"]["during_switches"], r["windows"]["steady"]
    out = [
        "The whole local stack runs in a throw-away data dir with a small model (3,000 generated rows, a few seconds "
        f"of AutoML) deployed with insights on. `shared.loadgen`, in its own process, sends {r['clients']} concurrent "
        f"clients of 2-row requests through the relay for {r['seconds']:.0f} s while the benchmark redeploys, "
        "alternating the **event** path (a completed run in the registry, its RunCompleted event, `deploy_best_model`, "
        "the gate, the blue/green switch) and the **rollback** path (`LocalWorkspace.rollback()`). Each switch starts a "
        "new model server, checks liveness and a real scoring request, switches, drains the old one "
        f"({'SIGTERM after the drain' if r.get('drain', True) else 'control run: SIGKILL at once'}). A non-2xx answer "
        "or a request without an answer counts as failed.",
        "",
        "| switches | requests | failed | req/s | p50 ms | p99 ms | p50 / p99 ms during switches | p50 / p99 ms steady |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(sw)} | {r['requests']:,} | **{r['failed']}** | {r['req_per_s']} | {ms(r['p50_ms'])} | {ms(r['p99_ms'])} | "
        f"{ms(d['p50_ms'])} / {ms(d['p99_ms'])} | {ms(st['p50_ms'])} / {ms(st['p99_ms'])} |",
        "",
    ]
    if sw:
        out.append("Switch start to the new model taking the traffic: "
                   + ", ".join(f"{s['kind']} {s['to_live_s']:.1f} s" for s in sw)
                   + "; draining and stopping the old server: " + ", ".join(f"{s['drain_s']:.1f}" for s in sw) + " s.")
    if d["p50_ms"] and st["p50_ms"]:
        out.append("")
        out.append(f"p50 during switches / steady: {d['p50_ms'] / st['p50_ms']:.2f}x (a second server starting on a "
                   "2-core machine takes CPU).")
    if r["failed"]:
        out.append("")
        out.append(f"Failed requests: non-2xx {r['non_2xx']}, no answer {r['connection_errors']}; samples: "
                   f"`{json.dumps(r['error_samples'])[:300]}`.")
    tel = r.get("telemetry") or []
    if tel:
        out += ["", "Telemetry cost: 2-row requests straight to the model server at concurrency 1, insights off and "
                "on, interleaved twice.", "", "| insights | requests | failed | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
        out += [f"| {t['insights']} | {t['requests']} | {t['failed']} | {ms(t['p50_ms'])} | {ms(t['p99_ms'])} |" for t in tel]
        on = [t["p50_ms"] for t in tel if t["insights"] == "on" and t["p50_ms"]]
        off = [t["p50_ms"] for t in tel if t["insights"] == "off" and t["p50_ms"]]
        if on and off:
            out.append("")
            out.append(f"p50 with insights on / off (means of two): {sum(on) / len(on) / (sum(off) / len(off)):.2f}x. "
                       f"In-process, a request costs {r['record_us_on_request_path']:.1f} µs of telemetry on the request "
                       f"path (queued) and {r['record_us_in_telemetry_thread']:.0f} µs in the telemetry thread (a span "
                       "and three metric points).")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
