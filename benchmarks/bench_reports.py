"""Benchmark-report benchmark: what one scheduled run costs and what it measures.

    .venv/bin/python -m benchmarks.bench_reports [--quick] [--model-dir DIR] [--requests N] [--concurrency C]
                                                [--json FILE]

1. takes ``--model-dir`` (written by ``shared.workspace.local.training.train``) or trains a small
   model on generated rows (a few seconds of AutoML);
2. deploys it through the local workspace in a throw-away data dir (a real model-server process)
   and starts the local function host with the relay and benchmark blueprints on a free port (no
   Azurite: reports go to the data dir only);
3. runs ``run_benchmark`` as the timer does, with the tutorial payload and with 100 generated
   rows, and prints the ab-style summary, the wall time of a run and the size of what it stores;
4. times the report pieces on their own (build, HTML with 20 earlier runs, PNG), a refused
   overlapping run, and ``GET /api/benchmarks/latest`` through the host.

Figures go to stdout; nothing fails on a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from shared import bench
from shared.benchrun import bench_lock, run_benchmark
from shared.config import Settings
from shared.datagen import generate_frame, write_csv
from shared.ingest import canonical_csv, parse_csv
from shared.workspace.base import COMPLETED
from shared.workspace.local.registry import utcnow
from shared.workspace.local.workspace import LocalWorkspace

APP = """import azure.functions as func
from functions.benchmark import bp as benchmark_bp
from functions.relay import bp as relay_bp
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for bp in (relay_bp, benchmark_bp):
    app.register_functions(bp)
"""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _timed(fn: Any, repeat: int = 5) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def _deploy(ws: LocalWorkspace, model_dir: Path) -> None:
    d = ws.register_dataset(parse_csv(canonical_csv(generate_frame(200, 3)), max_bytes=10**8), source_blob="x", etag="1")
    run = ws.submit_run(d.version, trigger="api")
    ws.registry.update_run(
        run.run_id, status=COMPLETED, best={"metrics": {"AUC_weighted": 0.9}}, model_dir=str(ws.store_model(run.run_id, model_dir)), ended_at=utcnow()
    )
    decision = ws.deploy_run(run.run_id)
    if not decision.deployed:
        raise SystemExit(f"deployment failed: {decision.reason}")


def _target_row(t: dict[str, Any]) -> dict[str, Any]:
    lat = t.get("latency_ms") or {}
    return {
        "status": t.get("status"), "requests": t.get("requests"), "failures": t.get("failures"),
        "req_per_s": t.get("requests_per_s"), "p50_ms": lat.get("p50"), "p99_ms": lat.get("p99"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--requests", type=int, default=None, help="requests per target (default 200; --quick 100)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="100 requests per target, a smaller model")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    n_requests = args.requests or (100 if args.quick else 200)
    out: dict[str, Any] = {"requests": n_requests, "concurrency": args.concurrency, "runs": []}

    from devhost.host import FunctionHost

    with tempfile.TemporaryDirectory(prefix="bankml-benchreports-") as tmp:
        base = Path(tmp)
        model_dir = args.model_dir
        if model_dir is None:
            from shared.workspace.local.training import train

            model_dir = base / "model"
            t0 = time.perf_counter()
            train(write_csv(base / "train.csv", 3000, seed=7), model_dir, time_budget_s=3.0 if args.quick else 5.0, seed=0)
            print(f"trained a small model in {time.perf_counter() - t0:.1f} s")
        home, app_dir = base / "home", base / "app"
        app_dir.mkdir()
        (app_dir / "function_app.py").write_text(APP)
        env = {
            "BANKML_HOME": str(home),
            "BANKML_BACKEND": "local",
            "BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *",
            "AzureWebJobs.benchmark.Disabled": "true",
            "BANKML_BENCH_REQUESTS": str(n_requests),
            "BANKML_BENCH_CONCURRENCY": str(args.concurrency),
        }
        os.environ.pop("AzureWebJobsStorage", None)
        ws = LocalWorkspace(Settings.from_env(env))
        _deploy(ws, model_dir)
        host = FunctionHost(app_dir, home=home, port=0, environ=env).start()
        try:
            env |= {"BANKML_FUNCTION_HOST_URL": host.url, "BANKML_RELAY_KEY": host.keys.function_key}
            for label, extra in (("tutorial payload (2 rows)", {}), ("100 generated rows", {"BANKML_BENCH_PAYLOAD_ROWS": "100"})):
                settings = Settings.from_env({**env, **extra})
                t0 = time.perf_counter()
                result = run_benchmark(settings, ws)
                wall = time.perf_counter() - t0
                report = result["report"]
                sizes = {k.split(":", 1)[1]: Path(v).stat().st_size for k, v in result["paths"].items() if k.startswith("local:")}
                print(f"\n=== run_benchmark, {label}: {result['status']} in {wall:.2f} s wall")
                print(bench.ab_summary(report))
                print("stored bytes: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
                out["runs"].append({
                    "payload": label, "status": result["status"], "wall_s": round(wall, 2), "stored_bytes": sizes,
                    "body_bytes": (report.get("payload") or {}).get("bytes"),
                    "targets": {name: _target_row(t) for name, t in (report.get("targets") or {}).items()},
                })
                time.sleep(1.0)  # report ids have one-second resolution

            report = json.loads((home / "reports" / "latest.json").read_text())
            history = [report] * 20
            t_html, page = _timed(lambda: bench.render_html(report, history))
            t_png, _ = _timed(lambda: bench.latency_png(report))
            t_hist, _ = _timed(lambda: bench.history_text(history))
            print(f"\nrender_html with 20 earlier runs: {_ms(t_html)} ({len(page):,} bytes); latency_png: {_ms(t_png)}; "
                  f"history_text (20 runs): {_ms(t_hist)}")
            out["pieces"] = {"render_html_s": t_html, "html_bytes": len(page), "latency_png_s": t_png, "history_text_s": t_hist}

            with bench_lock(home):
                t_busy, busy = _timed(lambda: run_benchmark(Settings.from_env(env), ws))
            print(f"overlapping run refused ({busy['status']}) in {_ms(t_busy)}")
            out["overlap"] = {"status": busy["status"], "s": t_busy}

            key = host.keys.function_key
            session = requests.Session()
            url = f"{host.url}/api/benchmarks/latest"
            times = []
            for _ in range(50):
                t0 = time.perf_counter()
                r = session.get(url, headers={"x-functions-key": key}, timeout=10)
                times.append(time.perf_counter() - t0)
                r.raise_for_status()
            times.sort()
            print(f"GET /api/benchmarks/latest x50: p50 {_ms(times[24])}, p90 {_ms(times[44])}, {len(r.content):,} bytes")
            out["latest_endpoint"] = {"p50_s": times[24], "p90_s": times[44], "bytes": len(r.content)}
        finally:
            host.stop()
            ws.stop_servers()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def _num(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The benchmark-reports section of docs/benchmarks.md."""
    out = [
        "A real model-server process and the relay through the local function host; `run_benchmark` as the timer "
        f"calls it, {result['requests']} requests per target at concurrency {result['concurrency']}, keep-alive, load "
        "from a separate process. The figures are what one scheduled run measures and what it costs.",
        "",
        "| payload | target | status | req/s | p50 ms | p99 ms | failures | run wall time |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for run in result["runs"]:
        first = True
        for name, t in run["targets"].items():
            label = f"{run['payload']} ({run['body_bytes'] or 0:,} B)" if first else ""
            wall = f"{run['wall_s']:.1f} s" if first else ""
            out.append(f"| {label} | {name} | {t['status']} | {_num(t['req_per_s'])} | {_num(t['p50_ms'])} | "
                       f"{_num(t['p99_ms'])} | {t['failures']} | {wall} |")
            first = False
        names = list(run["targets"])
        if len(names) == 2:
            a, b = (run["targets"][n]["req_per_s"] for n in names)
            if a and b:
                ratios.append(f"{run['payload']}: {names[1]} / {names[0]} req/s {b / a:.2f}x")
    if ratios:
        out += ["", "Ratios: " + "; ".join(ratios) + "."]
    pc, ov, le = result.get("pieces") or {}, result.get("overlap") or {}, result.get("latest_endpoint") or {}
    sizes = result["runs"][-1]["stored_bytes"] if result["runs"] else {}
    out += [
        "",
        "| item | figure |",
        "|---|---:|",
        *(f"| stored `{k}` | {v / 1024:.0f} KB |" for k, v in sizes.items()),
        f"| `render_html` with 20 earlier runs | {_ms(pc.get('render_html_s', 0))} ({pc.get('html_bytes', 0) / 1024:.0f} KB) |",
        f"| `latency_png` | {_ms(pc.get('latency_png_s', 0))} |",
        f"| `bankml bench --history` text for 20 runs | {_ms(pc.get('history_text_s', 0))} |",
        f"| a second run while one holds `bench.lock` | {ov.get('status')} in {_ms(ov.get('s', 0))} |",
        f"| `GET /api/benchmarks/latest` through the host, x50 | p50 {_ms(le.get('p50_s', 0))}, p90 "
        f"{_ms(le.get('p90_s', 0))} ({le.get('bytes', 0) / 1024:.0f} KB) |",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
