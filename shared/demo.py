"""`bankml demo`: the whole loop on one machine, with progress on the terminal."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import requests

from shared.contract import TUTORIAL_CUSTOMERS


def say(msg: str) -> None:
    print(msg, flush=True)


def fetch_data(source: str, home: Path) -> Path:
    """A local path as it is; a URL downloaded once into the data dir."""
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise SystemExit(f"bankml demo: no such file: {path}\n  pass the CSV with: make demo DATA=/path/to/bankmarketing_train.csv")
        return path
    target = home / "downloads" / (source.rstrip("/").rsplit("/", 1)[-1] or "data.csv")
    if target.exists() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    say(f"downloading {source} ...")
    try:
        with urllib.request.urlopen(source, timeout=30) as r, open(target.with_suffix(".part"), "wb") as fh:  # noqa: S310 - http(s) URL given by the user
            shutil.copyfileobj(r, fh)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise SystemExit(
            f"bankml demo: could not download {source} ({err}).\n"
            "  This machine may have no internet access. Pass a local copy of the file instead:\n"
            "    make demo DATA=/path/to/bankmarketing_train.csv"
        ) from None
    os.replace(target.with_suffix(".part"), target)
    return target


class Waiter:
    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def check(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise SystemExit(f"bankml demo: gave up waiting for {what} (see `bankml status` and the logs in the data dir)")
        time.sleep(0.5)


def run_demo(args: argparse.Namespace) -> int:
    from azure.storage.blob import BlobServiceClient

    from devhost.keys import HostKeys
    from shared.benchrun import run_benchmark
    from shared.config import Settings
    from shared.ingest import parse_csv
    from shared.workspace.local.stack import LocalStack

    home: Path = args.home
    home.mkdir(parents=True, exist_ok=True)
    data = fetch_data(args.data, home)
    env: dict[str, str] = {}
    if args.time_budget:
        env["BANKML_TIME_BUDGET_S"] = str(args.time_budget)
    settings = Settings.from_env({**os.environ, **env, "BANKML_HOME": str(home)})
    parsed = parse_csv(data.read_bytes(), label=settings.label_column, max_bytes=settings.max_upload_bytes)
    say(f"[demo] {data}: {parsed.rows} rows, yes/no {parsed.class_balance.get('yes')}/{parsed.class_balance.get('no')}")

    wait = Waiter(args.timeout)
    with LocalStack(home, port=args.port, azurite_port=args.azurite_port, environ=env) as stack:
        say(f"[demo] local stack up: function host {stack.url}, Azurite on port {stack.azurite.port}")
        ws = stack.workspace
        service = BlobServiceClient.from_connection_string(stack.azurite.connection_string)
        incoming = service.get_container_client("incoming")
        if not incoming.exists():
            incoming.create_container()
        with data.open("rb") as fh:
            incoming.upload_blob(data.name, fh, overwrite=True)
        say(f"[demo] uploaded to incoming/{data.name}; waiting for ingest ...")

        dataset = None
        while dataset is None:
            dataset = next((d for d in ws.registry.list_datasets() if d["content_hash"] == parsed.content_hash), None)
            if dataset is None:
                wait.check("the dataset to be registered")
        say(f"[demo] dataset {dataset['name']} v{dataset['version']} registered ({dataset['rows']} rows) at {wait.elapsed():.1f} s")

        run = None
        shown: tuple[str, float | None] = ("", None)
        last_line = 0.0
        while True:
            runs = [r for r in ws.registry.list_runs() if r["dataset_version"] == dataset["version"]]
            run = runs[0] if runs else None
            if run and run["status"] in ("Completed", "Failed"):
                break
            if run:
                children = ws.registry.child_runs(run["run_id"])
                best = max((c["metric"] for c in children if c["metric"] is not None), default=None)
                # A line when the status or the best metric changes, else one every 10 s.
                if (run["status"], best) != shown or time.monotonic() - last_line > 10:
                    shown, last_line = (run["status"], best), time.monotonic()
                    best_s = f", best validation AUC {best:.4f}" if best is not None else ""
                    say(f"[demo] run {run['run_id']}: {run['status']}, {len(children)} trials{best_s} ({wait.elapsed():.0f} s)")
            wait.check("training to finish")
        if run["status"] == "Failed":
            say(f"[demo] run {run['run_id']} failed: {run['error']}")
            return 1
        best = run["best"]
        say(f"[demo] run {run['run_id']} completed: best model {best.get('learner')}")
        for k, v in sorted((best.get("metrics") or {}).items()):
            if isinstance(v, int | float):
                say(f"         {k:28s} {v:.4f}")

        live = None
        while True:
            decision = next((d for d in ws.registry.decisions() if d["run_id"] == run["run_id"]), None)
            live = ws.live_deployment()
            if decision is not None and (live is not None or not decision["deployed"]):
                break
            wait.check("the deployment decision")
        say(f"[demo] deployment decision: {'deployed' if decision['deployed'] else 'not deployed'} ({decision['reason']})")
        if live is None:
            say("[demo] no live deployment")
            return 1
        say(f"[demo] live deployment {live.name} (model v{live.model_version}, run {live.run_id}) at {live.scoring_uri}")

        key = HostKeys.load_or_create(home).function_key
        r = requests.post(
            f"{stack.url}/api/score",
            data=json.dumps({"data": list(TUTORIAL_CUSTOMERS)}),
            headers={"Content-Type": "application/json", "x-functions-key": key},
            timeout=30,
        )
        say(f"[demo] relay POST {stack.url}/api/score for the two tutorial customers (ages 17 and 87): {r.status_code} {r.text}")
        say(f"[demo] swagger: {stack.url}/api/swagger.json  (Swagger UI: {stack.url}/api/docs)")

        bench_settings = Settings.from_env(os.environ)
        result = run_benchmark(bench_settings, ws)
        if "report" in result:
            rep = result["report"]
            for name, t in rep["targets"].items():
                say(
                    f"[demo] benchmark {name}: {t.get('requests_per_s') or 0:.0f} req/s, "
                    f"p50 {(t.get('latency_ms') or {}).get('p50') or 0:.2f} ms, "
                    f"p99 {(t.get('latency_ms') or {}).get('p99') or 0:.2f} ms, failures {t.get('failures', 0)} ({t.get('status')})"
                )
        report_path = (result.get("paths") or {}).get("local:report.html")
        say(f"[demo] first benchmark report: {report_path}")
        say(f"[demo] done in {wait.elapsed():.0f} s. Serve it again with: bankml up --home {home}")
    return 0

