"""`bankml`: run the local stack and drive the loop from a terminal."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Longest blob name Azure Storage accepts; `rejected/<name>.error.json` must fit beside a rejected file.
MAX_BLOB_NAME = 1024 - len(".error.json")
DROP_STORAGE_WAIT_S = 5.0  # `bankml drop`: how long a storage that does not answer may take to come back
DEFAULT_DATA_URL = (
    "https://automlsamplenotebookdata.blob.core.windows.net/automl-sample-notebook-data/bankmarketing_train.csv"
)


def _settings(home: Path) -> Any:
    from shared.config import Settings

    env = dict(os.environ)
    env["BANKML_HOME"] = str(home)
    return Settings.from_env(env)


def _existing_home(home: Path) -> Path:
    """Commands that read state need a data dir that exists: a typo must not create a new one."""
    if not (home / "registry.sqlite").exists():
        raise SystemExit(f"bankml: no bankml data dir at {home} (start one with `bankml up --home {home}`)")
    return home


def _workspace(home: Path) -> Any:
    from shared.workspace.local.workspace import LocalWorkspace

    return LocalWorkspace(_settings(_existing_home(home)))


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

    if os.environ.get("BANKML_BACKEND", "local").strip().lower() not in ("", "local"):
        raise SystemExit(
            "bankml: `bankml up` runs the local stack; BANKML_BACKEND is set to "
            f"{os.environ['BANKML_BACKEND']!r}. The azure backend runs in Azure Functions (README: Deploying to Azure)."
        )
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

    from shared.errors import shown
    from shared.ingest_service import unsafe_name_reason

    path = Path(args.file)
    if not path.exists():
        raise SystemExit(f"bankml: no such file: {path}")
    if not path.is_file():
        raise SystemExit(f"bankml: not a file: {path}")
    name = args.name or path.name
    # The same rule as ingest (which would reject the file), checked before anything is uploaded:
    # a name that leaves incoming/ must never reach a storage URL, and Azurite cannot even list a
    # container holding a name with a control character (the scanner would stop for every file).
    reason = unsafe_name_reason(name)
    if reason is None and len(name) > MAX_BLOB_NAME:
        reason = f"the blob name is {len(name):,} characters long, storage allows {MAX_BLOB_NAME:,}"
    if reason is not None:
        raise SystemExit(f"bankml: {reason}: {shown(name, 80)!r}; choose another --name")
    info = _need_stack(args.home)
    _need_storage(int(info["azurite_port"]))
    service = BlobServiceClient.from_connection_string(_connection(args.home, info))
    client = service.get_container_client("incoming")
    if not client.exists():
        client.create_container()
    with path.open("rb") as fh:
        blob = client.upload_blob(name, fh, overwrite=True)
    etag = str(blob.get_blob_properties().etag).strip('"')
    print(f"uploaded {path} to incoming/{name} (etag {etag})", flush=True)
    if args.no_wait:
        return 0
    return _wait_for_outcome(args.home, service, name, etag, args.wait)


def _need_storage(port: int, *, wait_s: float = DROP_STORAGE_WAIT_S) -> None:
    """Fail at once, saying why, when the stack's storage does not answer (rather than the storage
    client's retries for over a minute); a killed Azurite that the stack is restarting gets
    ``wait_s`` to come back."""
    from shared.workspace.local.workspace import probe_storage

    deadline = time.monotonic() + wait_s
    while True:
        probe = probe_storage(port)
        if probe["reachable"]:
            return
        if time.monotonic() >= deadline:
            raise SystemExit(f"bankml: {probe['detail']} ({probe['endpoint']}); nothing was uploaded. "
                             "`bankml status` shows the stack's services")
        time.sleep(0.5)


def _has_receipt(home: Path, name: str, etag: str) -> bool:
    from devhost.store import HostStore

    store = HostStore(home)
    try:
        return any(store.has_receipt("ingest", n, etag) for n in (name, f"incoming/{name}"))
    finally:
        store.close()


def _wait_for_outcome(home: Path, service: Any, name: str, etag: str, timeout_s: float) -> int:
    """Tell what ingest did with the file: registered (which version and run), or rejected (why)."""
    from shared.ingest_service import ERROR_SUFFIX, rejected_name

    ws = _workspace(home)
    stored = rejected_name(name)  # a name ending in .error.json is kept under another name
    rejected = service.get_container_client("rejected").get_blob_client(f"{stored}{ERROR_SUFFIX}")
    deadline = time.monotonic() + timeout_s
    seen_receipt = False
    while time.monotonic() < deadline:
        for d in ws.registry.list_datasets():
            if d["source_blob"] == f"incoming/{name}" and d["etag"].strip('"') == etag:
                runs = [r["run_id"] for r in ws.registry.list_runs() if r["dataset_version"] == d["version"]]
                print(f"registered as dataset v{d['version']} ({d['rows']} rows); training run {', '.join(runs) or 'queued'}")
                print("follow it with `bankml runs watch` or `bankml status`")
                return 0
        try:
            reason = json.loads(rejected.download_blob().readall()) if rejected.exists() else None
        except Exception as err:  # noqa: BLE001 - storage hiccups: keep looking until the deadline
            logging.getLogger("bankml").debug("waiting for the outcome: %s", type(err).__name__)
            reason = None
        # A reason left by an earlier upload under the same name is not this file's outcome.
        if reason is not None and str(reason.get("etag", "")).strip('"') == etag:
            error = reason.get("error", reason)
            print(f"rejected: {error.get('message', error)}")
            details = {k: v for k, v in error.items() if k not in ("code", "message")}
            if details:
                print(f"  details: {json.dumps(details, default=str)}")
            print(f"  the file is kept as rejected/{stored}, the reason as rejected/{stored}{ERROR_SUFFIX}")
            return 1
        if _has_receipt(home, name, etag):
            # Processed, yet no version from this upload and no rejection of it: the content was
            # known. Look once more first: the receipt is written just after the function's work.
            if seen_receipt:
                print("processed: the same content is already registered, so no new dataset version and no new run")
                return 0
            seen_receipt = True
            continue
        time.sleep(0.5)
    print(
        f"no outcome within {timeout_s:.0f} s (the same content may have been registered before, under another name): "
        "see `bankml status`"
    )
    return 0


def _fmt_metrics(metrics: dict[str, Any]) -> str:
    keys = ("AUC_weighted", "accuracy", "f1_score_weighted", "precision_score_weighted", "recall_score_weighted")
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), int | float))


def _poisoned_blobs(home: Path) -> list[dict[str, Any]]:
    """Blob versions whose function failed every retry (the function host retries them later)."""
    from devhost.store import DB_FILE, HostStore

    if not (home / DB_FILE).exists():
        return []
    store = HostStore(home)
    try:
        return store.poisoned()
    finally:
        store.close()


def cmd_status(args: argparse.Namespace) -> int:
    status = _workspace(args.home).status()
    status["poisoned_blobs"] = _poisoned_blobs(args.home)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"data dir {status['home']}")
    print("datasets:")
    for d in status["datasets"]:
        bal = d["class_balance"]
        yes, no = int(bal.get("yes", 0)), int(bal.get("no", 0))
        share = f" ({100 * yes / (yes + no):.1f}% yes)" if yes + no else ""
        print(
            f"  v{d['version']}  {d['rows']} rows  yes/no {yes}/{no}{share}  sha256 {str(d['content_hash'])[:12]}"
            f"  from {d['source_blob']}  ETag {d['etag']}  {d['created_at']}"
        )
        print("      columns: " + " ".join(f"{n}:{t}" for n, t in d["column_types"].items()))
        profile = d["profile"] or {}
        missing = {n: c for n, c in profile.get("missing", {}).items() if c}
        print("      missing: " + (", ".join(f"{n} {c}" for n, c in missing.items()) or "none"))
        ranges = [f"{n} {s['min']:g}..{s['max']:g}" for n, s in profile.get("numeric", {}).items()]
        print("      ranges: " + ", ".join(ranges))
        categories = []
        for n, counts in profile.get("categories", {}).items():
            top = max(counts, key=counts.get) if counts else None
            categories.append(f"{n} {len(counts)}" + (f" (top {top} {counts[top]})" if top is not None else ""))
        print("      categories: " + ", ".join(categories))
        for n, values in profile.get("unseen_categories", {}).items():
            print(f"      undocumented values in {n}: {', '.join(map(str, values))}")
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
        line = f" {mark}{d['name']}  {d['status']}  run {d['run_id']}  {d['scoring_uri']}  insights {'on' if d['insights'] else 'off'}"
        print(line + (f"  ({d['reason']})" if d.get("reason") else ""))
    for d in status["decisions"]:
        print(f"  decision for {d['run_id']}: {'deployed' if d['deployed'] else 'not deployed'} ({d['reason']})")
    if status["poisoned_blobs"]:
        print("poisoned blobs (every attempt failed; the function host retries them later):")
    for p in status["poisoned_blobs"]:
        retry = f"next retry {p['retry_at']}" if p["retry_at"] else "not retried"
        print(f"  {p['blob']}  ETag {p['etag']}  function {p['function']}  {p['attempts']} attempts  {retry}")
        print(f"      last error ({p['last_failure_at']}): {p['last_error']}")
    from shared.workspace.local.stack import read_stack

    running = read_stack(args.home)
    note = f" (stack running at {running['url']})" if running else " (stack not running: `bankml up` serves it again)"
    print(f"live: {status['live'] or 'none'}" + (note if status["live"] else ""))
    services = status.get("services") or {}
    storage, server = services.get("storage") or {}, services.get("live_server") or {}
    if storage.get("reachable") is False:
        print(f"storage: {storage.get('detail') or 'unreachable'} (ingest waits for it; scoring goes on)")
    if server.get("healthy") is False:
        print(f"live server {server.get('name')}: {server.get('detail')} (the supervisor of `bankml up` replaces it)")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """Per-request telemetry with filters and a latency/throughput summary, or (``--server``) a
    deployment's own server log, like ``get_logs()`` of an Azure ML deployment."""
    from shared.errors import RequestError
    from shared.telemetry import filter_requests, parse_since, read_requests, status_filter, summarize

    ws = _workspace(args.home)
    deps = ws.registry.list_deployments()
    names = [d["name"] for d in deps]
    if args.deployment and args.deployment not in names:
        raise RequestError(
            f"no deployment named {args.deployment!r} (deployments: {', '.join(names) or 'none'})",
            field="--deployment", value=args.deployment,
        )
    if args.server:
        live = next((d for d in reversed(deps) if d["status"] == "live"), None)
        target = next((d for d in deps if d["name"] == args.deployment), None) if args.deployment else live
        target = target or (deps[-1] if deps else None)
        if target is None:
            print("no deployments yet")
            return 0
        log_file = ws.server_log(target["name"])
        if not log_file.exists():
            print(f"no server log yet for {target['name']}")
            return 0
        lines = log_file.read_text(errors="replace").splitlines()
        print(f"== {target['name']} ({target['status']}), last {min(args.tail, len(lines))} of {len(lines)} lines of {log_file}")
        for line in lines[-args.tail :] if args.tail > 0 else lines:
            print(line)
        return 0
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as err:
        raise RequestError(str(err), field="--since", value=args.since) from None
    try:
        if args.status:
            status_filter(args.status)
    except ValueError as err:
        raise RequestError(str(err), field="--status", value=args.status) from None
    records = filter_requests(
        read_requests(ws.telemetry_file(n) for n in names), since=since, status=args.status, deployment=args.deployment
    )
    if not records:
        print("no telemetry yet (it starts when a deployment's insights are on and it gets requests)")
        return 0
    if args.slowest:
        shown = sorted(records, key=lambda r: -float(r.get("latency_ms") or 0.0))[: args.slowest]
    else:
        shown = records[-args.tail :] if args.tail > 0 else records
    for r in shown:
        print(
            f"{r.get('time')}  {r.get('deployment')} v{r.get('model_version')}  {r.get('status')}  "
            f"{float(r.get('latency_ms') or 0.0):.2f} ms  rows {r.get('rows')}  {r.get('request_id')}"
        )
    for line in summarize(records).lines():
        print(line)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Put the previous model back through the blue/green path (the running stack supervises it)."""
    from shared.errors import DeploymentError

    _need_stack(args.home)
    ws = _workspace(args.home)
    before = ws.live_deployment()
    try:
        dep = ws.rollback(args.to)
    except DeploymentError as err:
        print(f"bankml: rollback failed, {before.name if before else 'the live model'} keeps serving: {err.message}", file=sys.stderr)
        return 1
    print(f"{dep.name} is live: the model of run {dep.run_id} at {dep.scoring_uri}")
    if before:
        print(f"{before.name} drained and stopped")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from devhost.keys import HostKeys

    keys = HostKeys.load_or_create(_existing_home(args.home))
    print(keys.function_key)
    return 0


# `bankml bench` exit codes: 0 ok or nothing to measure, 1 failed/unreachable, 75 another run is on.
BENCH_EXIT_BUSY = 75  # EX_TEMPFAIL: try again later


def cmd_bench(args: argparse.Namespace) -> int:
    from shared.bench import ALREADY_RUNNING, NOTHING_TO_MEASURE, ab_summary, history_text
    from shared.benchrun import report_history, run_benchmark
    from shared.workspace.local.workspace import LocalWorkspace

    if args.history:
        # Reads the data dir only: works with the stack stopped too.
        settings = _settings(_existing_home(args.home))
        print(history_text(report_history(settings, LocalWorkspace(settings), limit=args.limit)), end="")
        return 0
    info = _need_stack(args.home)
    # The stack's own settings (what its timer uses), then what this shell sets explicitly.
    env = {**info.get("settings", {}), **os.environ}
    env.update({"BANKML_HOME": str(args.home), "BANKML_FUNCTION_HOST_URL": info["url"]})
    env["AzureWebJobsStorage"] = _connection(args.home, info)
    from devhost.keys import HostKeys

    env["BANKML_RELAY_KEY"] = HostKeys.load_or_create(args.home).function_key
    from shared.config import Settings

    settings = Settings.from_env(env)
    result = run_benchmark(settings, LocalWorkspace(settings))
    if result["status"] == ALREADY_RUNNING:
        print(f"benchmark not started: {result['message']}")
        return BENCH_EXIT_BUSY
    print(ab_summary(result["report"]))
    for k, v in result["paths"].items():
        print(f"  {k}: {v}")
    return 0 if result["status"] in ("ok", NOTHING_TO_MEASURE) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from shared.demo import run_demo

    return run_demo(args)


def cmd_runs(args: argparse.Namespace) -> int:
    """`bankml runs` (list), `bankml runs show RUN`, `bankml runs watch [RUN]`."""
    from shared.runreport import run_details, runs_table, watch
    from shared.workspace.local.registry import Registry

    registry = Registry(args.home / "registry.sqlite")
    action = getattr(args, "runs_action", None)
    if action == "show":
        print(run_details(registry, args.run), end="")
        return 0
    if action == "watch":
        final = watch(registry, args.run, say=lambda line: print(line, flush=True), poll_s=args.poll, timeout_s=args.timeout)
        return 0 if final["status"] == "Completed" else 1
    print(runs_table(registry), end="")
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0-65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bankml", description="The Bank Marketing ML loop on Azure Functions, locally or on Azure.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def home(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--home", type=lambda s: Path(s).resolve(), default=Path(os.environ.get("BANKML_HOME", ".bankml")).resolve(), help="data dir (default .bankml/)")

    sp = sub.add_parser("up", help="run the local stack in the foreground until interrupted")
    home(sp)
    sp.add_argument("--port", type=_port, default=7071, help="function host port (default 7071; 0 picks a free one)")
    sp.add_argument("--azurite-port", type=_port, default=10000, help="Azurite blob port (default 10000; 0: free)")
    sp.set_defaults(func=cmd_up)

    sp = sub.add_parser("drop", help="upload a CSV into incoming/")
    home(sp)
    sp.add_argument("file")
    sp.add_argument("--name", help="blob name (default: the file name)")
    sp.add_argument("--wait", type=float, default=60, help="seconds to wait for ingest's outcome (default 60)")
    sp.add_argument("--no-wait", action="store_true", help="upload and return at once")
    sp.set_defaults(func=cmd_drop)

    sp = sub.add_parser("status", help="datasets, runs, deployments, which one is live, poisoned blobs")
    home(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("logs", help="scoring telemetry of the deployments (or their server logs)")
    home(sp)
    sp.add_argument("--server", action="store_true", help="the deployment's own server log (like get_logs())")
    sp.add_argument("--since", help="records at or after this time: ISO 8601 (UTC without offset) or an age like 15m, 2h")
    sp.add_argument("--status", help="only these statuses: 200, 4xx, 5xx, ok or error")
    sp.add_argument("--slowest", type=int, default=0, help="the N slowest records")
    sp.add_argument("--tail", type=int, default=50, help="the last N records, or N lines with --server (default 50)")
    sp.add_argument("--deployment", help="only this deployment (default: all; with --server: the live one)")
    sp.set_defaults(func=cmd_logs)

    sp = sub.add_parser("rollback", help="put the previous model back (blue/green, no downtime)")
    home(sp)
    sp.add_argument("--to", help="deployment whose model to put back (default: the one live before the current one)")
    sp.set_defaults(func=cmd_rollback)

    sp = sub.add_parser(
        "bench",
        help="run a benchmark now against the running stack (exit 0 ok, 1 failures, 75 already running)",
    )
    home(sp)
    sp.add_argument("--history", action="store_true", help="print the trend of earlier runs instead")
    sp.add_argument("--limit", type=int, default=20, help="with --history: the last N runs (default 20)")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("runs", help="training runs: list, `runs show RUN`, `runs watch [RUN]`")
    home(sp)
    sp.set_defaults(func=cmd_runs)
    runs_sub = sp.add_subparsers(dest="runs_action")
    rp = runs_sub.add_parser("show", help="a run's best model, held-out metrics, thresholds, features, child runs")
    # --home after the action too; SUPPRESS keeps the outer --home when it is not repeated here.
    rp.add_argument("--home", type=lambda s: Path(s).resolve(), default=argparse.SUPPRESS, help="data dir (default .bankml/)")
    rp.add_argument("run", nargs="?", default="latest", help="run id, a unique prefix of it, or latest (default)")
    rp = runs_sub.add_parser("watch", help="follow a run's trials and best metric until it ends")
    # --home after the action too; SUPPRESS keeps the outer --home when it is not repeated here.
    rp.add_argument("--home", type=lambda s: Path(s).resolve(), default=argparse.SUPPRESS, help="data dir (default .bankml/)")
    rp.add_argument("run", nargs="?", default="latest", help="run id, a unique prefix of it, or latest (default)")
    rp.add_argument("--poll", type=float, default=1.0, help="seconds between looks (default 1)")
    rp.add_argument("--timeout", type=float, default=None, help="stop watching after this many seconds")

    sp = sub.add_parser("keys", help="print the local function key")
    home(sp)
    sp.set_defaults(func=cmd_keys)

    sp = sub.add_parser("demo", help="the whole loop: start, drop the CSV, train, deploy, score, benchmark")
    home(sp)
    sp.add_argument("--data", default=os.environ.get("DATA") or DEFAULT_DATA_URL, help="CSV path or URL")
    sp.add_argument("--port", type=_port, default=7071)
    sp.add_argument("--azurite-port", type=_port, default=10000)
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
    from azure.core.exceptions import AzureError

    from devhost.azurite import AzuriteError
    from devhost.catalog import HostError
    from shared.errors import BankmlError

    try:
        return int(args.func(args) or 0)
    except BankmlError as err:
        print(f"bankml: {err.message}", file=sys.stderr)
        return 2
    except (AzuriteError, HostError) as err:
        print(f"bankml: {err}", file=sys.stderr)
        return 2
    except AzureError as err:
        print(f"bankml: storage did not answer ({type(err).__name__}); is the stack up? (`bankml up`)", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"bankml: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2



if __name__ == "__main__":
    sys.exit(main())
