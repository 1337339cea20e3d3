"""Scale benchmark: how training cost grows with rows, and batch scoring rows/s.

    .venv/bin/python -m benchmarks.scale [--quick] [--data CSV] [--sizes 10000,32950,100000,330000]
                                        [--budget S] [--json FILE]

Data at each size, from the real file (``--data`` or ``$BANKML_REAL_DATA``): 10,000 rows are a
stratified sample of it, 32,950 the file itself, and the larger sizes are made by ``resample``:
rows drawn with replacement, numeric columns jittered (age +-1-2 years, duration and campaign
scaled by a few per cent, the five economic indicators by a fraction of a per cent), and 2 % of
each categorical column's cells swapped for another value of that column (drawn by frequency).
The label stays with its row. Written to a temp dir; nothing is kept.

Work per size, each in a fresh process whose peak RSS (the process and its children, sampled
every 0.1 s with psutil; also its own ``ru_maxrss``) is recorded:

1. **fixed work**: read and encode the CSV as training does (``FeatureSpec``), then fit the two
   members of the usual final ensemble with fixed configs and one thread each: LightGBM with the
   search's regularised starting point (300 trees, 15 leaves, rate 0.05, colsample 0.7, native
   categoricals) and XGBoost (300 trees, depth 5, hist). Same trees at every size, so the time is
   the cost of rows alone; a fitted exponent ``time ~ rows^b`` says how it grows.
2. **AutoML with a fixed budget** (full mode): ``training.train`` as the worker calls it. Its time
   is the budget by design. FLAML starts trials on a sample of the fit rows (10,000) and grows the
   sample only for promising configs, so the number of configs tried hardly falls with rows; the
   cost of rows shows in the largest sample it reached within the budget and in whether the
   members could be refitted on all rows in time.
3. **batch scoring**: the AutoML model of the real file (quick mode: a 6 s run) predicts the
   100,000-row set: directly (``FeatureSpec.encode_frame`` + ``LoadedModel.predict_matrix``) and
   through a real model-server process (10 requests of 10,000 rows, the request limit, one at a
   time), as rows per second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SIZES = (10_000, 32_950, 100_000, 330_000)
QUICK_SIZES = (10_000, 32_950, 100_000)
REAL_ROWS = 32_950
SWAP_FRACTION = 0.02
BUDGET_S = 30.0
QUICK_BATCH_BUDGET_S = 6.0
BATCH_ROWS = 100_000
REQUEST_ROWS = 10_000
LGBM_FIXED = {"n_estimators": 300, "num_leaves": 15, "min_child_samples": 40, "learning_rate": 0.05,
              "max_bin": 255, "colsample_bytree": 0.7, "reg_alpha": 1 / 1024, "reg_lambda": 1.0}
XGB_FIXED = {"n_estimators": 300, "max_depth": 5, "learning_rate": 0.1, "tree_method": "hist"}


# --------------------------------------------------------------------------- the generator


def read_real(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def resample(real: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows drawn with replacement from ``real``, numeric columns jittered, a few
    categories swapped; same columns, same text format (read with ``dtype=str``)."""
    from shared.contract import BY_NAME, FEATURE_NAMES

    rng = np.random.default_rng(seed)
    out = real.iloc[rng.integers(0, len(real), rows)].reset_index(drop=True).copy()
    for name in FEATURE_NAMES:
        col = BY_NAME[name]
        if col.kind == "string":
            values = out[name].to_numpy(dtype=object)
            swap = rng.random(rows) < SWAP_FRACTION
            vocab, counts = np.unique(real[name].to_numpy(dtype=object), return_counts=True)
            values[swap] = rng.choice(vocab, size=int(swap.sum()), p=counts / counts.sum())
            out[name] = values
            continue
        x = pd.to_numeric(out[name]).to_numpy(dtype=np.float64)
        if name == "age":
            x = np.clip(x + rng.integers(-2, 3, rows), 17, 98)
        elif name in ("duration", "campaign"):
            x = np.maximum(np.rint(x * rng.normal(1.0, 0.05, rows)), 1 if name == "campaign" else 0)
        elif name in ("pdays", "previous"):
            pass  # 999 = never contacted; counts stay as they are
        else:  # the economic indicators: a fraction of a per cent
            x = np.round(x * rng.normal(1.0, 0.002, rows), 3)
        out[name] = [f"{v:g}" if name not in ("age", "duration", "campaign") else str(int(v)) for v in x]
    return out


def dataset(real: pd.DataFrame, real_path: Path, rows: int, work: Path) -> tuple[Path, str]:
    """The CSV for ``rows`` rows, and how it was made."""
    if rows == len(real):
        return real_path, "the real file"
    path = work / f"rows_{rows}.csv"
    if rows < len(real):
        from sklearn.model_selection import train_test_split

        part, _ = train_test_split(real, train_size=rows, stratify=real["y"], random_state=0)
        part.to_csv(path, index=False)
        return path, "stratified sample of the real file"
    resample(real, rows, seed=rows).to_csv(path, index=False)
    return path, "resampled with noise"


# --------------------------------------------------------------------------- children


def child_fixed(csv: Path) -> dict[str, Any]:
    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

    from shared.features import FeatureSpec
    from shared.workspace.local.training import _read_dataset

    t0 = time.perf_counter()
    frame, y = _read_dataset(csv, "y")
    spec = FeatureSpec.fit(frame)
    X = spec.encode_frame(frame)
    read_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    LGBMClassifier(**LGBM_FIXED, n_jobs=1, verbose=-1).fit(X, y, categorical_feature=spec.categorical_indices)
    lgbm_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    XGBClassifier(**XGB_FIXED, n_jobs=1).fit(X, y)
    xgb_s = time.perf_counter() - t2
    return {"rows": len(y), "read_encode_s": read_s, "lgbm_s": lgbm_s, "xgboost_s": xgb_s,
            "total_s": time.perf_counter() - t0}


def child_automl(csv: Path, budget: float, model_dir: Path) -> dict[str, Any]:
    from shared.workspace.local import training

    t0 = time.perf_counter()
    result = training.train(csv, model_dir, time_budget_s=budget)
    done = [c for c in result["child_runs"] if c.get("status") == "Completed"]
    samples = [int(c.get("sample_size") or 0) for c in result["child_runs"]]
    largest = max(samples, default=0)
    return {
        "train_s": time.perf_counter() - t0,
        "configs": len(result["child_runs"]),
        "configs_completed": len(done),
        "largest_sample": largest,
        "configs_on_largest_sample": sum(1 for n in samples if n == largest),
        "refit": [bool(m.get("refit")) for m in result["members"]],
        "timings_s": result.get("timings_s"),
        "learner": result["learner"],
        "members": [m["learner"] for m in result["members"]],
        "AUC_weighted": result["metrics"]["AUC_weighted"],
    }


def run_child(args: list[str]) -> dict[str, Any]:
    """``python -m benchmarks.scale --child ...``; its result with the peak RSS of it and its children."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.scale", "--child", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            p = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not stop.is_set():
            try:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
            except psutil.Error:
                rss = 0
            peak = max(peak, rss)
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"scale child {args} failed ({proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(peak / 2**20, 1)
    return result


def _child_main(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.mode == "fixed":
        result = child_fixed(args.csv)
    else:
        result = child_automl(args.csv, args.budget, args.model_dir)
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ru_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["ru_maxrss_mb"] = round(max(ru, ru_children), 1)
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- batch scoring


def batch_scoring(model_dir: Path, csv: Path) -> dict[str, Any]:
    import orjson
    import requests

    from shared.workspace.local.servers import free_port, start_model_server, stop_pid
    from shared.workspace.local.training import _read_dataset, load_model

    frame, _ = _read_dataset(csv, "y")
    frame = frame.iloc[:BATCH_ROWS]
    n = len(frame)
    model = load_model(model_dir)
    t0 = time.perf_counter()
    X = model.spec.encode_frame(frame)
    encode_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model.predict_matrix(X)
    predict_s = time.perf_counter() - t1

    records = frame.to_dict(orient="records")
    bodies = [orjson.dumps({"data": records[i:i + REQUEST_ROWS]}) for i in range(0, n, REQUEST_ROWS)]
    port, key = free_port(), secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="bankml-bench-scale-server-") as tmp:
        d = Path(tmp)
        pid = start_model_server(model_dir=model_dir, port=port, name="scale", version=1, key=key, deploy_dir=d,
                                 telemetry_file=d / "telemetry.jsonl", insights_flag=d / "insights.flag")
        try:
            url = f"http://127.0.0.1:{port}/score"
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            session = requests.Session()
            deadline = time.monotonic() + 60
            while True:  # liveness, then one warm-up request
                try:
                    if session.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the model server did not start within 60 s")
                time.sleep(0.1)
            session.post(url, data=bodies[0], headers=headers, timeout=120).raise_for_status()
            t2 = time.perf_counter()
            answered = 0
            for body in bodies:
                r = session.post(url, data=body, headers=headers, timeout=120)
                r.raise_for_status()
                answered += len(r.json()["result"])
            server_s = time.perf_counter() - t2
        finally:
            stop_pid(pid)
    meta = json.loads((model_dir / "model.json").read_text())
    return {
        "rows": n, "model": meta.get("learner"), "serving": meta.get("serving"),
        "encode_s": encode_s, "predict_s": predict_s,
        "direct_rows_per_s": n / (encode_s + predict_s), "predict_only_rows_per_s": n / predict_s,
        "server_s": server_s, "server_rows": answered, "server_rows_per_s": answered / server_s,
        "requests": len(bodies), "request_rows": REQUEST_ROWS,
    }


# --------------------------------------------------------------------------- main


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    """b in y = a * x^b, least squares on logs."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=os.environ.get("BANKML_REAL_DATA") or None)
    ap.add_argument("--sizes", default=None, help="rows per size (default 10000,32950,100000,330000; --quick "
                    "without 330000)")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help=f"AutoML budget per size (default {BUDGET_S:g} s)")
    ap.add_argument("--quick", action="store_true",
                    help="fixed work only, up to 100,000 rows; batch scoring on a 6 s model")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("fixed", "automl"), help=argparse.SUPPRESS)
    ap.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child_main(args)
    if args.data is None or not Path(args.data).is_file():
        print("benchmarks.scale: pass --data CSV or set BANKML_REAL_DATA to bankmarketing_train.csv", file=sys.stderr)
        return 2
    data = Path(args.data).resolve()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(QUICK_SIZES if args.quick else SIZES)
    real = read_real(data)
    sizes = [len(real) if s == REAL_ROWS else s for s in sizes]
    result: dict[str, Any] = {"data": data.name, "quick": args.quick, "budget_s": None if args.quick else args.budget,
                              "sizes": [], "lgbm_fixed": LGBM_FIXED, "xgb_fixed": XGB_FIXED}
    print(f"scale: sizes {sizes}; fixed-config fits{'' if args.quick else f' and AutoML {args.budget:g} s'} per size",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bankml-bench-scale-") as tmp:
        work = Path(tmp)
        batch_csv = None
        model_dir = None
        for rows in sizes:
            t0 = time.perf_counter()
            csv, how = dataset(real, data, rows, work)
            entry: dict[str, Any] = {"rows": rows, "source": how, "generate_s": time.perf_counter() - t0,
                                     "bytes": csv.stat().st_size}
            entry["fixed"] = run_child(["--mode", "fixed", "--csv", str(csv)])
            f = entry["fixed"]
            print(f"  {rows:>8,} rows ({how}): read+encode {f['read_encode_s']:.2f} s, LightGBM {f['lgbm_s']:.2f} s, "
                  f"XGBoost {f['xgboost_s']:.2f} s, peak RSS {f['peak_rss_mb']:.0f} MB", flush=True)
            if not args.quick:
                md = work / f"model_{rows}"
                entry["automl"] = a = run_child(["--mode", "automl", "--csv", str(csv), "--budget", str(args.budget),
                                                 "--model-dir", str(md)])
                print(f"           AutoML {args.budget:g} s: {a['train_s']:.1f} s, {a['configs']} configs, "
                      f"{a['learner']}, peak RSS {a['peak_rss_mb']:.0f} MB", flush=True)
                if rows == len(real):
                    model_dir = md
            if rows == BATCH_ROWS or (batch_csv is None and rows > BATCH_ROWS):
                batch_csv = csv
            result["sizes"].append(entry)
        if model_dir is None:
            model_dir = work / "model_batch"
            a = run_child(["--mode", "automl", "--csv", str(data), "--budget", str(QUICK_BATCH_BUDGET_S),
                           "--model-dir", str(model_dir)])
            result["batch_model_budget_s"] = QUICK_BATCH_BUDGET_S
        else:
            result["batch_model_budget_s"] = args.budget
        if batch_csv is None:
            batch_csv = work / "batch.csv"
            resample(real, BATCH_ROWS, seed=BATCH_ROWS).to_csv(batch_csv, index=False)
        result["batch"] = b = batch_scoring(model_dir, batch_csv)
        print(f"  batch scoring {b['rows']:,} rows ({b['model']}): direct {b['direct_rows_per_s']:,.0f} rows/s "
              f"(predict alone {b['predict_only_rows_per_s']:,.0f}), model server {b['server_rows_per_s']:,.0f} rows/s",
              flush=True)

    xs = [e["rows"] for e in result["sizes"]]
    result["exponents"] = {
        "fixed_total_s": fit_exponent(xs, [e["fixed"]["total_s"] for e in result["sizes"]]),
        "lgbm_s": fit_exponent(xs, [e["fixed"]["lgbm_s"] for e in result["sizes"]]),
        "xgboost_s": fit_exponent(xs, [e["fixed"]["xgboost_s"] for e in result["sizes"]]),
        "fixed_peak_rss_mb": fit_exponent(xs, [e["fixed"]["peak_rss_mb"] for e in result["sizes"]]),
    }
    if not args.quick:
        result["exponents"]["automl_configs"] = fit_exponent(xs, [e["automl"]["configs"] for e in result["sizes"]])
        result["exponents"]["automl_peak_rss_mb"] = fit_exponent(xs, [e["automl"]["peak_rss_mb"] for e in result["sizes"]])
    print("  exponents (cost ~ rows^b): " + ", ".join(f"{k} {v:.2f}" for k, v in result["exponents"].items() if v is not None))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _b(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown(result: dict[str, Any]) -> str:
    """The scale section of docs/benchmarks.md."""
    sizes, ex = result["sizes"], result["exponents"]
    first = sizes[0]
    out = [
        "Data per size from the real file: a stratified sample below its 32,950 rows, the file itself, and above it "
        "rows resampled with replacement with noise (numeric columns jittered, 2 % of each categorical column's cells "
        "swapped; `benchmarks/scale.py: resample`). **Fixed work** per size, each in a fresh process: read and encode "
        "the CSV as training does, then fit the two usual ensemble members with fixed configs and one thread each "
        "(LightGBM 300 trees, 15 leaves; XGBoost 300 trees, depth 5): the same trees at every size, so the time is the "
        "cost of rows. Peak RSS = the process and its children, sampled every 0.1 s.",
        "",
        "| rows | data | CSV MB | read + encode s | LightGBM s | XGBoost s | total s | x of the smallest | "
        "b from the size before | peak RSS MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    prev = None
    for e in sizes:
        f = e["fixed"]
        step = fit_exponent([prev["rows"], e["rows"]], [prev["fixed"]["total_s"], f["total_s"]]) if prev else None
        out.append(f"| {e['rows']:,} | {e['source']} | {e['bytes'] / 1e6:.1f} | {f['read_encode_s']:.2f} | "
                   f"{f['lgbm_s']:.2f} | {f['xgboost_s']:.2f} | {f['total_s']:.2f} | "
                   f"{f['total_s'] / first['fixed']['total_s']:.1f}x | {_b(step)} | {f['peak_rss_mb']:.0f} |")
        prev = e
    out += [
        "",
        f"How cost grows (least-squares fit of cost ~ rows^b over these sizes): fixed-work time b = "
        f"{_b(ex['fixed_total_s'])} (LightGBM {_b(ex['lgbm_s'])}, XGBoost {_b(ex['xgboost_s'])}), peak RSS b = "
        f"{_b(ex['fixed_peak_rss_mb'])} (the interpreter and libraries are a fixed floor). b = 1 is linear in rows; below 1 a "
        "per-tree cost that does not depend on rows (histogram set-up, 300 trees either way) still weighs, so the "
        "step from the size before shows the trend at the large end.",
    ]
    if any("automl" in e for e in sizes):
        out += [
            "",
            f"**AutoML with a fixed budget** ({result['budget_s']:g} s, `training.train` as the worker calls it): its "
            "time is the budget by design. FLAML tries configs on a sample of the fit rows first (10,000) and grows "
            "the sample only for promising ones, so the number of configs tried hardly falls with rows; the cost of "
            "rows shows in the largest sample reached within the budget, in whether the members could be refitted on "
            "all rows in time, and in the overrun past the budget.",
            "",
            "| rows | wall s | wall / budget | configs tried | largest sample (configs on it) | members refitted | model | "
            "held-out AUC_weighted | peak RSS MB |",
            "|---:|---:|---:|---:|---:|---|---|---:|---:|",
        ]
        for e in sizes:
            a = e["automl"]
            largest = f"{a['largest_sample']:,} ({a['configs_on_largest_sample']})" if "largest_sample" in a else "-"
            refit = ", ".join("yes" if r else "no" for r in a["refit"]) if "refit" in a else "-"
            out.append(f"| {e['rows']:,} | {a['train_s']:.1f} | {a['train_s'] / result['budget_s']:.2f} | {a['configs']} "
                       f"| {largest} | {refit} | {a['learner']} ({', '.join(a['members'])}) | {a['AUC_weighted']:.4f} | "
                       f"{a['peak_rss_mb']:.0f} |")
        out += ["", f"Configs tried ~ rows^{_b(ex.get('automl_configs'))} (flat: sampling, see above); AutoML peak RSS ~ "
                    f"rows^{_b(ex.get('automl_peak_rss_mb'))}. Held-out AUC above the real file's size is on resampled "
                    "rows (duplicates can fall on both sides of the split), so it is not a quality figure."]
    b = result.get("batch")
    if b:
        out += [
            "",
            f"**Batch scoring**, {b['rows']:,} rows (the resampled set) with the AutoML model of the real file "
            f"({b['model']}, {result.get('batch_model_budget_s', 0):g} s budget, serving {b['serving']}):",
            "",
            "| path | rows/s | time |",
            "|---|---:|---:|",
            f"| direct: `encode_frame` + `predict_matrix` | {b['direct_rows_per_s']:,.0f} | "
            f"{b['encode_s'] + b['predict_s']:.2f} s |",
            f"| of which the model's predict alone | {b['predict_only_rows_per_s']:,.0f} | {b['predict_s']:.2f} s |",
            f"| model server, {b['requests']} requests of {b['request_rows']:,} rows, one at a time | "
            f"{b['server_rows_per_s']:,.0f} | {b['server_s']:.2f} s |",
            "",
            f"Model server / direct: {b['server_rows_per_s'] / b['direct_rows_per_s']:.2f}x (JSON in and out, HTTP, "
            "per-request parsing and checks).",
        ]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
