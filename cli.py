"""`bankml`: run the local stack and drive the loop from a terminal."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

DEFAULT_DATA_URL = (
    "https://automlsamplenotebookdata.blob.core.windows.net/automl-sample-notebook-data/bankmarketing_train.csv"
)


def _settings(home: Path) -> Any:
    from shared.config import Settings

    env = dict(os.environ)
    env["BANKML_HOME"] = str(home)
    return Settings.from_env(env)


def _workspace(home: Path) -> Any:
    from shared.workspace.local.workspace import LocalWorkspace

    return LocalWorkspace(_settings(home))


def _need_stack(home: Path) -> dict[str, Any]:
    from shared.workspace.local.stack import read_stack

    info = read_stack(home)
    if info is None:
        raise SystemExit(f"bankml: no stack is running for {home}; start one with `bankml up --home {home}`")
    return info


def _connection(home: Path, info: dict[str, Any]) -> str:
    from devhost.azurite import load_or_create_account

    name, key = load_or_create_account(home / "azurite")
    return (
        f"DefaultEndpointsProtocol=http;AccountName={name};AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{info['azurite_port']}/{name};"
    )


# -- commands ---------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from shared.workspace.local.stack import LocalStack

    stack = LocalStack(args.home, port=args.port, azurite_port=args.azurite_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stack.start()
    try:
        _print_urls(stack)
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping the local stack ...", flush=True)
        stack.stop()
    return 0


def _print_urls(stack: Any) -> None:
    url = stack.url
    print(f"bankml local stack is up (data dir {stack.home})")
    print(f"  function host   {url}")
    print(f"  scoring relay   POST {url}/api/score   (key: `bankml keys`)")
    print(f"  swagger         {url}/api/swagger.json")
    print(f"  swagger UI      {url}/api/docs")
    print(f"  azurite blob    http://127.0.0.1:{stack.azurite.port}  (containers incoming/, rejected/, reports/)")
    live = stack.workspace.live_deployment() if stack.workspace else None
    if live:
        print(f"  live model      {live.name} at {live.scoring_uri}")
    sys.stdout.flush()


def cmd_drop(args: argparse.Namespace) -> int:
    from azure.storage.blob import BlobServiceClient

    info = _need_stack(args.home)
    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"bankml: no such file: {path}")
    name = args.name or path.name
    service = BlobServiceClient.from_connection_string(_connection(args.home, info))
    client = service.get_container_client("incoming")
    if not client.exists():
        client.create_container()
    with path.open("rb") as fh:
        blob = client.upload_blob(name, fh, overwrite=True)
    etag = str(blob.get_blob_properties().etag).strip('"')
    print(f"uploaded {path} to incoming/{name} (etag {etag})")
    return 0


def _fmt_metrics(metrics: dict[str, Any]) -> str:
    keys = ("AUC_weighted", "accuracy", "f1_score_weighted", "precision_score_weighted", "recall_score_weighted")
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), int | float))


def cmd_status(args: argparse.Namespace) -> int:
    status = _workspace(args.home).status()
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"data dir {status['home']}")
    print("datasets:")
    for d in status["datasets"]:
        bal = d["class_balance"]
        print(f"  v{d['version']}  {d['rows']} rows  yes/no {bal.get('yes')}/{bal.get('no')}  from {d['source_blob']}  {d['created_at']}")
        for w in d["warnings"]:
            print(f"      drift warning: {w}")
    print("runs:")
    for r in status["runs"]:
        best = r["best"] or {}
        line = f"  {r['run_id']}  dataset v{r['dataset_version']}  {r['status']}  trials {r['child_runs']}"
        if best.get("learner"):
            line += f"  best {best['learner']}: {_fmt_metrics(best.get('metrics', {}))}"
        if r["error"]:
            line += f"  error: {r['error']}"
        print(line)
    print("deployments:")
    for d in status["deployments"]:
        mark = "*" if d["status"] == "live" else " "
        print(f" {mark}{d['name']}  {d['status']}  run {d['run_id']}  {d['scoring_uri']}  insights {'on' if d['insights'] else 'off'}")
    for d in status["decisions"]:
        print(f"  decision for {d['run_id']}: {'deployed' if d['deployed'] else 'not deployed'} ({d['reason']})")
    print(f"live: {status['live'] or 'none'}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    ws = _workspace(args.home)
    deps = ws.registry.list_deployments()
    if args.server:
        for d in deps:
            log_file = ws.deploy_dir(d["name"]) / "server.log"
            if log_file.exists():
                print(f"== {d['name']} ({log_file})")
                print(log_file.read_text(errors="replace")[-20000:])
        return 0
    rows: list[dict[str, Any]] = []
    for d in deps:
        f = ws.telemetry_file(d["name"])
        if f.exists():
            for line in f.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    rows.sort(key=lambda r: r.get("time", ""))
    if args.since:
        rows = [r for r in rows if r.get("time", "") >= args.since]
    if args.status:
        rows = [r for r in rows if str(r.get("status")) == str(args.status)]
    if args.slowest:
        rows = sorted(rows, key=lambda r: -float(r.get("latency_ms", 0)))[: args.slowest]
    for r in rows[-args.tail :] if not args.slowest else rows:
        print(
            f"{r.get('time')}  {r.get('deployment')} v{r.get('model_version')}  {r.get('status')}  "
            f"{float(r.get('latency_ms', 0)):.2f} ms  rows {r.get('rows')}  {r.get('request_id')}"
        )
    if not rows:
        print("no telemetry yet (it starts when a deployment's insights are on and it gets requests)")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from devhost.keys import HostKeys

    keys = HostKeys.load_or_create(args.home)
    print(keys.function_key)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from shared.bench import ab_summary
    from shared.benchrun import run_benchmark

    info = _need_stack(args.home)
    env = dict(os.environ)
    env.update({"BANKML_HOME": str(args.home), "BANKML_FUNCTION_HOST_URL": info["url"]})
    env["AzureWebJobsStorage"] = _connection(args.home, info)
    from devhost.keys import HostKeys

    env["BANKML_RELAY_KEY"] = HostKeys.load_or_create(args.home).function_key
    from shared.config import Settings
    from shared.workspace.local.workspace import LocalWorkspace

    settings = Settings.from_env(env)
    result = run_benchmark(settings, LocalWorkspace(settings))
    if "report" not in result:
        print(f"benchmark: {result['status']}")
        return 0
    print(ab_summary(result["report"]))
    for k, v in result["paths"].items():
        print(f"  {k}: {v}")
    return 0 if result["status"] == "ok" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from shared.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bankml", description="The Bank Marketing ML loop on Azure Functions, locally or on Azure.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def home(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--home", type=lambda s: Path(s).resolve(), default=Path(os.environ.get("BANKML_HOME", ".bankml")).resolve(), help="data dir (default .bankml/)")

    sp = sub.add_parser("up", help="run the local stack in the foreground until interrupted")
    home(sp)
    sp.add_argument("--port", type=int, default=7071, help="function host port (default 7071)")
    sp.add_argument("--azurite-port", type=int, default=10000, help="Azurite blob port (default 10000)")
    sp.set_defaults(func=cmd_up)

    sp = sub.add_parser("drop", help="upload a CSV into incoming/")
    home(sp)
    sp.add_argument("file")
    sp.add_argument("--name", help="blob name (default: the file name)")
    sp.set_defaults(func=cmd_drop)

    sp = sub.add_parser("status", help="datasets, runs, deployments and which one is live")
    home(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("logs", help="scoring telemetry of the deployments (or their server logs)")
    home(sp)
    sp.add_argument("--server", action="store_true", help="the model servers' own logs")
    sp.add_argument("--since", help="only records at or after this UTC ISO time")
    sp.add_argument("--status", help="only records with this HTTP status")
    sp.add_argument("--slowest", type=int, default=0, help="the N slowest records")
    sp.add_argument("--tail", type=int, default=50, help="the last N records (default 50)")
    sp.set_defaults(func=cmd_logs)

    sp = sub.add_parser("bench", help="run a benchmark now against the running stack")
    home(sp)
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("keys", help="print the local function key")
    home(sp)
    sp.set_defaults(func=cmd_keys)

    sp = sub.add_parser("demo", help="the whole loop: start, drop the CSV, train, deploy, score, benchmark")
    home(sp)
    sp.add_argument("--data", default=os.environ.get("DATA") or DEFAULT_DATA_URL, help="CSV path or URL")
    sp.add_argument("--port", type=int, default=7071)
    sp.add_argument("--azurite-port", type=int, default=10000)
    sp.add_argument("--time-budget", type=float, default=None, help="AutoML budget in seconds (default: the setting)")
    sp.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from shared.errors import BankmlError

    try:
        return int(args.func(args) or 0)
    except BankmlError as err:
        print(f"bankml: {err.message}", file=sys.stderr)
        return 2



if __name__ == "__main__":
    sys.exit(main())
