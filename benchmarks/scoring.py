"""Scoring benchmark: the model server, the relay through the local function host, and
``mlflow models serve`` on the same model, one load at a time.

    .venv/bin/python -m benchmarks.scoring [--quick] [--model-dir DIR] [--tool auto|wrk|ab|loadgen]
                                           [--no-mlflow] [--mlflow-venv DIR] [--json FILE]

What it does:

1. takes ``--model-dir`` (a directory written by ``shared.workspace.local.training.train``) or
   trains a small model on generated rows (``shared.datagen``, a few seconds of AutoML);
2. registers it in a throw-away data dir as a completed run and deploys it through the local
   workspace (a real model-server process, telemetry on as in the loop), then starts the local
   stack (Azurite, the function host with the relay, the agent) on free ports;
3. loads each target in turn with wrk, else ab, else ``shared.loadgen`` (nothing is installed
   silently: ``apt-get install -y wrk apache2-utils`` brings the first two): 2-row requests at
   concurrency 1 and 8, 100 rows, 10,000 rows;
4. unless ``--no-mlflow``, installs MLflow into its own virtual environment (``--mlflow-venv``,
   default ``~/.cache/bankml/mlflow-venv``; the command is printed first), saves the same trained
   estimator as an MLflow sklearn model (a ColumnTransformer doing the same encoding + the
   estimator), checks that it predicts what our model server predicts, serves it with
   ``mlflow models serve`` and loads it the same way; then prints the ratios.

Keys never appear in argv or output: wrk reads them from its environment, the load generator
from stdin; ab (fallback) gets them on its command line, but they are keys of the throw-away
data dir, deleted at the end. Figures go to stdout (and ``--json``); targets in the issue are
printed next to them but nothing fails on a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from shared.contract import TUTORIAL_CUSTOMERS

logger = logging.getLogger("benchmarks.scoring")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MLFLOW_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bankml" / "mlflow-venv"
# Same versions as requirements.txt so that the pickled estimator loads unchanged in MLflow's venv.
MLFLOW_PACKAGES = ("mlflow", "lightgbm==4.7.0", "scikit-learn==1.7.2", "numpy==2.3.5", "pandas==2.3.3", "joblib")
INSTALL_HINT = "apt-get install -y wrk apache2-utils"
TARGETS = {
    "model server 2 rows c=1 p50 ms": 2.0,
    "relay 2 rows c=1 p50 ms": 4.0,
    "relay 2 rows c=8 req/s": 500.0,
    "relay 10000 rows p50 ms": 250.0,
}


# --------------------------------------------------------------------------- payloads


def rows(n: int) -> list[dict[str, Any]]:
    """``n`` rows cycling through the two tutorial customers with varying durations."""
    out = []
    for i in range(n):
        row = dict(TUTORIAL_CUSTOMERS[i % 2])
        row["duration"] = 60 + (i * 37) % 1500
        out.append(row)
    return out


def legacy_body(n: int) -> bytes:
    return json.dumps({"data": rows(n)}, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- load tools


@dataclass
class Load:
    name: str
    url: str
    headers: dict[str, str]
    body: bytes
    concurrency: int
    seconds: float
    max_requests: int = 1_000_000


@dataclass
class Figures:
    name: str
    tool: str
    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    concurrency: int
    body_bytes: int
    # 1-minute load average when the load started: the machine is shared, read figures with it.
    loadavg: float = 0.0

    def row(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        return (
            f"| {self.name} | {self.concurrency} | {self.requests} | {self.errors} | {self.rps:.0f} | "
            f"{ms(self.p50_ms)} | {ms(self.p90_ms)} | {ms(self.p99_ms)} | {self.loadavg:.1f} |"
        )


_WRK_SCRIPT = r"""
wrk.method = "POST"
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local name = os.getenv("BENCH_HEADER_NAME")
if name and name ~= "" then wrk.headers[name] = os.getenv("BENCH_HEADER_VALUE") end
local non2xx = 0
response = function(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"mean":%f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def _one_header(headers: dict[str, str]) -> tuple[str, str]:
    extra = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    if len(extra) > 1:
        raise ValueError("the wrk script sends one header besides Content-Type")
    return next(iter(extra.items()), ("", ""))


def run_wrk(load: Load, work: Path) -> Figures:
    body_file = work / "body.json"
    body_file.write_bytes(load.body)
    script = work / "post.lua"
    script.write_text(_WRK_SCRIPT)
    name, value = _one_header(load.headers)
    # The key travels in the environment of wrk, never in its argv.
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_HEADER_NAME": name, "BENCH_HEADER_VALUE": value}
    cmd = [
        "wrk", "-t", str(min(load.concurrency, 2)), "-c", str(load.concurrency), "-d", f"{load.seconds:g}s",
        "--timeout", "30s", "-s", str(script), load.url,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=load.seconds + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("{")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    r = json.loads(line)
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    seconds = r["duration_us"] / 1e6
    return Figures(
        load.name, "wrk", r["requests"], errors, r["requests"] / seconds if seconds else 0.0,
        r["p50"] / 1000, r["p90"] / 1000, r["p99"] / 1000, r["mean"] / 1000, load.concurrency, len(load.body),
    )


def run_ab(load: Load, work: Path) -> Figures:
    body_file = work / "body.json"
    body_file.write_bytes(load.body)
    csv = work / "ab.csv"
    requests_n = max(load.concurrency, min(load.max_requests, 50_000))
    cmd = ["ab", "-q", "-k", "-t", f"{load.seconds:g}", "-n", str(requests_n), "-c", str(load.concurrency)]
    cmd += ["-p", str(body_file), "-T", "application/json", "-e", str(csv)]
    for k, v in load.headers.items():
        if k.lower() != "content-type":
            cmd += ["-H", f"{k}: {v}"]
    cmd.append(load.url)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=load.seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ab failed ({done.returncode}): {done.stderr.strip()[-300:]}")

    def grab(label: str) -> float:
        for line in done.stdout.splitlines():
            if line.startswith(label):
                return float(line.split(":", 1)[1].split()[0])
        return 0.0

    pct = {}
    for line in csv.read_text().splitlines()[1:]:
        p, v = line.split(",")
        pct[int(float(p))] = float(v)
    errors = int(grab("Failed requests")) + int(grab("Non-2xx responses"))
    return Figures(
        load.name, "ab", int(grab("Complete requests")), errors, grab("Requests per second"),
        pct.get(50), pct.get(90), pct.get(99), grab("Time per request"), load.concurrency, len(load.body),
    )


def run_loadgen(load: Load, work: Path) -> Figures:
    from shared.bench import percentile, run_load

    result = run_load(
        {
            "url": load.url,
            "method": "POST",
            "headers": {"Content-Type": "application/json", **load.headers},
            "body": load.body.decode(),
            "max_requests": min(load.max_requests, 100_000),
            "max_seconds": load.seconds,
            "concurrency": load.concurrency,
            "timeout_s": 30.0,
        }
    )
    lat = sorted(result["latencies_ms"])
    errors = result["requests"] - result["ok"]
    return Figures(
        load.name, "loadgen", result["requests"], errors,
        result["requests"] / result["duration_s"] if result["duration_s"] else 0.0,
        percentile(lat, 50), percentile(lat, 90), percentile(lat, 99),
        statistics.fmean(lat) if lat else None, load.concurrency, len(load.body),
    )


def choose_tool(wanted: str) -> str:
    if wanted != "auto":
        if wanted != "loadgen" and shutil.which(wanted) is None:
            raise SystemExit(f"{wanted} is not installed ({INSTALL_HINT})")
        return wanted
    for tool in ("wrk", "ab"):
        if shutil.which(tool):
            return tool
    print(f"neither wrk nor ab is installed ({INSTALL_HINT}); using shared.loadgen (Python threads, "
          "which take CPU from the servers on this 2-core machine)")
    return "loadgen"


def measure(tool: str, load: Load) -> Figures:
    # A few requests first: connections, caches and the first prediction's set-up are not measured.
    headers = {"Content-Type": "application/json", **load.headers}
    for _ in range(3):
        r = requests.post(load.url, data=load.body, headers=headers, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"{load.name}: warm-up answered {r.status_code}: {r.text[:300]}")
    loadavg = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        runner = {"wrk": run_wrk, "ab": run_ab, "loadgen": run_loadgen}[tool]
        figures = runner(load, Path(tmp))
    figures.loadavg = loadavg
    print(figures.row(), flush=True)
    return figures


# --------------------------------------------------------------------------- the stack


def describe_model(model_dir: Path) -> dict[str, Any]:
    """The model's size and what LightGBM alone takes for 10,000 rows (the part no server can save)."""
    from shared.modelserver import FeatureEncoder
    from shared.scoring import parse_request
    from shared.workspace.local.training import load_model

    model = load_model(model_dir)
    booster = getattr(model.estimator, "booster_", None)
    trees = booster.num_trees() if booster is not None else 0
    req = parse_request(legacy_body(10_000), None, max_rows=10_000, max_body_bytes=1 << 26)
    X = FeatureEncoder(model.spec).matrix(req)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        model.predict_matrix(X)
        times.append((time.perf_counter() - started) * 1000)
    predict_ms = min(times)
    line = f"model: {model.meta.get('learner')}, {trees} trees; its predict of 10,000 rows alone: {predict_ms:.0f} ms"
    return {"trees": trees, "predict_ms": predict_ms, "line": line}


def train_model(out: Path, *, rows_n: int, budget_s: float) -> Path:
    from shared.datagen import write_csv
    from shared.workspace.local.training import train

    csv = write_csv(out / "train.csv", rows_n, seed=7)
    print(f"training a model on {rows_n} generated rows ({budget_s:g} s AutoML budget) ...", flush=True)
    result = train(csv, out / "model", time_budget_s=budget_s, seed=0)
    print(f"trained {result['learner']}: held-out AUC_weighted {result['metrics']['AUC_weighted']:.3f}", flush=True)
    return out / "model"


def deploy(home: Path, model_dir: Path) -> None:
    """Register ``model_dir`` as a completed run in ``home`` and deploy it like the loop does."""
    from shared.config import Settings
    from shared.datagen import generate_frame
    from shared.ingest import canonical_csv, parse_csv
    from shared.workspace.base import COMPLETED
    from shared.workspace.local.registry import utcnow
    from shared.workspace.local.workspace import LocalWorkspace

    settings = Settings.from_env({"BANKML_HOME": str(home), "BANKML_MIN_PRIMARY_METRIC": "0"})
    ws = LocalWorkspace(settings)
    parsed = parse_csv(canonical_csv(generate_frame(300, 1)), max_bytes=settings.max_upload_bytes)
    dataset = ws.register_dataset(parsed, source_blob="incoming/benchmark.csv", etag="benchmark")
    run = ws.submit_run(dataset.version, trigger="benchmark")
    meta = json.loads((model_dir / "model.json").read_text())
    best = {"learner": meta.get("learner"), "metrics": meta.get("metrics", {}), "threshold": meta.get("threshold")}
    # event_published=1: the agent must not deliver this run's event (the benchmark deploys it).
    ws.registry.update_run(
        run.run_id, status=COMPLETED, best=best, model_dir=str(model_dir.resolve()), started_at=utcnow(),
        ended_at=utcnow(), event_published=1,
    )
    ws.enable_insights(run.run_id)  # telemetry on, as enable_insights does in the loop
    decision = ws.deploy_run(run.run_id)
    if not decision.deployed:
        raise RuntimeError(f"the model was not deployed: {decision.reason}")


@contextlib.contextmanager
def local_stack(home: Path) -> Iterator[Any]:
    from shared.workspace.local.servers import free_port
    from shared.workspace.local.stack import LocalStack

    stack = LocalStack(home, port=free_port(), azurite_port=free_port(), environ={"BANKML_MIN_PRIMARY_METRIC": "0"})
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def stop_model_servers(home: Path) -> None:
    from shared.config import Settings
    from shared.workspace.local.workspace import LocalWorkspace

    if (home / "registry.sqlite").exists():
        LocalWorkspace(Settings.from_env({"BANKML_HOME": str(home)})).stop_servers()


def run_stack_loads(home: Path, tool: str, seconds: float, big_seconds: float) -> list[Figures]:
    results: list[Figures] = []
    with local_stack(home) as stack:
        from shared.workspace.local.workspace import LocalWorkspace

        live = LocalWorkspace(stack.workspace.settings).live_deployment()
        assert live is not None
        relay_url = f"{stack.url}/api/score"
        relay_key = {"x-functions-key": stack.host.keys.function_key}
        server_key = {"Authorization": f"Bearer {live.key}"}
        two, hundred, big = legacy_body(2), legacy_body(100), legacy_body(10_000)
        print("| load | concurrency | requests | errors | req/s | p50 ms | p90 ms | p99 ms | load avg |")
        print("|---|---|---|---|---|---|---|---|---|")
        plan = [
            Load("model server 2 rows", live.scoring_uri, server_key, two, 1, seconds),
            Load("model server 2 rows", live.scoring_uri, server_key, two, 8, seconds),
            Load("relay 2 rows", relay_url, relay_key, two, 1, seconds),
            Load("relay 2 rows", relay_url, relay_key, two, 8, seconds),
            Load("relay 100 rows", relay_url, relay_key, hundred, 1, seconds),
            Load("model server 10000 rows", live.scoring_uri, server_key, big, 1, big_seconds),
            Load("relay 10000 rows", relay_url, relay_key, big, 1, big_seconds),
        ]
        for load in plan:
            results.append(measure(tool, load))
    return results


# --------------------------------------------------------------------------- MLflow

_MLFLOW_EXPORT = r'''
import json, sys
from pathlib import Path
import joblib, numpy as np, pandas as pd
import mlflow.sklearn
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

model_dir, out = Path(sys.argv[1]), sys.argv[2]
meta = json.loads((model_dir / "model.json").read_text())
spec = meta["features"]
estimator = joblib.load(model_dir / "model.pkl")
parts = []
for name in spec["columns"]:
    if name in spec["categories"]:
        # Same codes as shared.features: index in the training vocabulary, unseen -> NaN.
        enc = OrdinalEncoder(categories=[spec["categories"][name]], handle_unknown="use_encoded_value",
                             unknown_value=np.nan, dtype=np.float64)
        parts.append((name, enc, [name]))
    else:
        parts.append((name, "passthrough", [name]))
features = ColumnTransformer(parts, remainder="drop")
sample = pd.DataFrame([{n: (spec["categories"][n][0] if n in spec["categories"] else 0.0) for n in spec["columns"]}])
features.fit(sample)
pipe = Pipeline([("features", features), ("model", estimator)])
mlflow.sklearn.save_model(pipe, out, serialization_format="cloudpickle")
print("saved")
'''


def mlflow_ready(venv: Path) -> bool:
    py = venv / "bin" / "python"
    if not py.exists():
        return False
    return subprocess.run([str(py), "-c", "import mlflow, lightgbm, sklearn"], capture_output=True, check=False).returncode == 0


def install_mlflow(venv: Path) -> bool:
    pip = venv / "bin" / "pip"
    print(f"installing MLflow into its own venv: python3 -m venv {venv} && {pip} install {' '.join(MLFLOW_PACKAGES)}",
          flush=True)
    try:
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(pip), "install", "--quiet", "--disable-pip-version-check", *MLFLOW_PACKAGES],
                       check=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as err:
        print(f"MLflow could not be installed ({type(err).__name__}); skipping the MLflow comparison")
        return False
    return mlflow_ready(venv)


@contextlib.contextmanager
def mlflow_server(venv: Path, model_dir: Path, work: Path) -> Iterator[str]:
    from shared.workspace.local.servers import free_port, stop_pid

    out = work / "mlflow-model"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _MLFLOW_EXPORT, str(model_dir), str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"could not save the MLflow model: {done.stderr.strip()[-500:]}")
    port = free_port()
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    log = open(work / "mlflow-serve.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(out), "-h", "127.0.0.1", "-p", str(port),
         "--env-manager", "local"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited: {(work / 'mlflow-serve.log').read_text()[-500:]}")
            try:
                if requests.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow models serve did not answer /ping within 120 s")
            time.sleep(0.3)
        yield url
    finally:
        stop_pid(proc.pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)


# --------------------------------------------------------------------------- main


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per load instead of 10 s; smaller training")
    parser.add_argument("--model-dir", type=Path, help="use this trained model (model.pkl + model.json)")
    parser.add_argument("--tool", choices=("auto", "wrk", "ab", "loadgen"), default="auto")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the mlflow models serve comparison")
    parser.add_argument("--mlflow-venv", type=Path, default=DEFAULT_MLFLOW_VENV)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    seconds = 3.0 if args.quick else 10.0
    big_seconds = 5.0 if args.quick else 15.0
    tool = choose_tool(args.tool)
    print(f"load tool: {tool}; {seconds:g} s per load, one load at a time", flush=True)
    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="bankml-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir.resolve() if args.model_dir else train_model(
            work, rows_n=3000 if args.quick else 8000, budget_s=4.0 if args.quick else 10.0
        )
        model_note = describe_model(model_dir)
        print(model_note["line"], flush=True)
        home = work / "home"
        try:
            deploy(home, model_dir)
            results += run_stack_loads(home, tool, seconds, big_seconds)
        finally:
            stop_model_servers(home)  # also when the stack did not start

        mlflow: list[Figures] = []
        if args.no_mlflow:
            print("MLflow comparison skipped (--no-mlflow)")
        elif mlflow_ready(args.mlflow_venv) or install_mlflow(args.mlflow_venv):
            try:
                with mlflow_server(args.mlflow_venv, model_dir, work) as url:
                    check_mlflow(url, model_dir)
                    records = {"dataframe_records": rows(2)}
                    mbody = json.dumps(records).encode()
                    for c in (1, 8):
                        mlflow.append(measure(tool, Load("mlflow models serve 2 rows", url + "/invocations", {}, mbody, c, seconds)))
            except RuntimeError as err:
                print(f"MLflow comparison skipped: {err}")
        results += mlflow

    summary = summarise(results)
    summary["values"]["predict 10000 rows ms"] = model_note["predict_ms"]
    summary["values"]["trees"] = model_note["trees"]
    big = next((f for f in results if f.name == "relay 10000 rows"), None)
    if big and big.p50_ms:
        summary["lines"].append(
            f"  10,000 rows through the relay: {big.p50_ms:.0f} ms, of which the model's own predict "
            f"~{model_note['predict_ms']:.0f} ms ({model_note['trees']} trees); serving ~{big.p50_ms - model_note['predict_ms']:.0f} ms"
        )
    for line in summary["lines"]:
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"figures": [f.__dict__ for f in results], "summary": summary["values"]}, indent=2))
    return 0


def check_mlflow(url: str, model_dir: Path) -> None:
    """The MLflow server must predict what our model predicts (at MLflow's 0.5 threshold)."""
    from shared.scoring import parse_request
    from shared.workspace.local.training import load_model

    data = rows(50)
    model = load_model(model_dir)
    req = parse_request(json.dumps({"data": data}).encode(), None, max_rows=100, max_body_bytes=10**7)
    _, probas = model.predict(req.records)
    ours = [1 if p_yes >= 0.5 else 0 for _, p_yes in probas]
    r = requests.post(url + "/invocations", json={"dataframe_records": data}, timeout=30)
    if r.status_code != 200:
        raise RuntimeError(f"MLflow answered {r.status_code}: {r.text[:300]}")
    theirs = [int(v) for v in r.json()["predictions"]]
    if theirs != ours:
        raise RuntimeError(f"MLflow's predictions differ from ours: {theirs[:10]} vs {ours[:10]}")
    print(f"MLflow serves the same model: {len(ours)} predictions agree", flush=True)


def summarise(results: list[Figures]) -> dict[str, Any]:
    def find(name: str, c: int) -> Figures | None:
        return next((f for f in results if f.name == name and f.concurrency == c), None)

    values: dict[str, float | None] = {}
    ms1, r1, r8 = find("model server 2 rows", 1), find("relay 2 rows", 1), find("relay 2 rows", 8)
    big = find("relay 10000 rows", 1)
    values["model server 2 rows c=1 p50 ms"] = ms1.p50_ms if ms1 else None
    values["relay 2 rows c=1 p50 ms"] = r1.p50_ms if r1 else None
    values["relay 2 rows c=8 req/s"] = r8.rps if r8 else None
    values["relay 2 rows c=8 errors"] = r8.errors if r8 else None
    values["relay 10000 rows p50 ms"] = big.p50_ms if big else None
    lines = ["", "targets (issue 6):"]
    for name, target in TARGETS.items():
        got = values.get(name)
        better = got is not None and (got >= target if "req/s" in name else got <= target)
        lines.append(f"  {name}: {'-' if got is None else f'{got:.2f}'} (target {'>=' if 'req/s' in name else '<='} "
                     f"{target:g}) {'met' if better else 'NOT met'}")
    m1, m8 = find("mlflow models serve 2 rows", 1), find("mlflow models serve 2 rows", 8)
    if m1 and r1 and ms1:
        values["mlflow / model server p50"] = (m1.p50_ms or 0) / (ms1.p50_ms or 1)
        values["mlflow / relay p50"] = (m1.p50_ms or 0) / (r1.p50_ms or 1)
        lines.append(f"  p50 at c=1: mlflow {m1.p50_ms:.2f} ms; model server {_ratio(m1.p50_ms, ms1.p50_ms)} faster, "
                     f"relay {_ratio(m1.p50_ms, r1.p50_ms)} faster")
    if m8 and r8:
        values["relay / mlflow req/s c=8"] = r8.rps / m8.rps if m8.rps else None
        ms8 = find("model server 2 rows", 8)
        lines.append(f"  req/s at c=8: mlflow {m8.rps:.0f}; relay {_ratio(r8.rps, m8.rps)}"
                     + (f", model server {_ratio(ms8.rps, m8.rps)}" if ms8 else ""))
    return {"values": values, "lines": lines}


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        raise SystemExit(main())
