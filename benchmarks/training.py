"""Training benchmark: our AutoML against a default LightGBM on the same held-out splits.

    .venv/bin/python -m benchmarks.training [--quick] [--data CSV] [--seeds 0,1,2] [--budget 60]
                                           [--learners lgbm,xgboost] [--loop] [--json FILE]

For each split seed (the seed of the stratified 20 % held-out split; the search never sees those
rows), in a fresh process each:

1. ``shared.workspace.local.training.train`` with the time budget (default 60 s, the app's
   default), exactly as the training worker calls it, timed, with the process's peak RSS;
2. a default ``LGBMClassifier()`` (LightGBM's defaults, native categoricals, the same feature
   encoding) fitted on the same 80 % training rows, labels at 0.5;
3. both scored on the held-out rows: AUC_weighted and accuracy (ours at its served threshold, and
   at 0.5 for reference);
4. the model server's prediction latency for the two tutorial customers with the native model
   and with the ONNX graph (``LoadedModel.predict``: encoding + prediction).

``--loop`` also measures drop-to-live on the local stack (throw-away data dir, free ports): the CSV
lands in ``incoming/``; the clock stops when ``POST /api/score`` through the function host answers
200 from the new deployment.

The data: ``--data`` or the ``BANKML_REAL_DATA`` environment variable (the real
bankmarketing_train.csv); ``--quick`` uses the fixed split (seed 0) and a 20 s budget; the full run the fixed split then seeds 1 and 2. The
section rendered by ``markdown()`` compares on the fixed split and quotes Azure AutoML's published figures. Figures go to stdout (and
``--json``); the issue's targets are printed beside them, nothing fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_AUC = 0.950
TARGET_ACCURACY = 0.918
FIXED_SPLIT_SEED = 0  # the fixed stratified 20 % split every comparison is stated on
# Azure AutoML's figures for this data, quoted (not measured here): the best model (VotingEnsemble)
# of Azure AutoML on bankmarketing_train.csv as published for the Udacity "Operationalizing Machine
# Learning" project, as quoted in this project's issue 9. /work/shared/docs holds no primary source.
AZURE_AUTOML = {"AUC_weighted": 0.948, "accuracy": 0.918}
AZURE_SOURCE = (
    "Azure AutoML's VotingEnsemble on bankmarketing_train.csv as published for the Udacity \"Operationalizing "
    "Machine Learning\" project, quoted in issue 9 (\"AUC_weighted about 0.948, held-out accuracy about 0.918\"); "
    "quoted constants, not measured here, and on Azure's own split, not ours"
)
TARGET_LIVE_S = 90.0
TARGET_RSS_MB = 2048.0


def _latency_us(model: Any, records: list[dict[str, Any]], seconds: float = 1.0) -> float:
    import numpy as np

    for _ in range(20):
        model.predict(records)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        model.predict(records)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


def child(data: Path, seed: int, budget: float, learners: list[str] | None) -> dict[str, Any]:
    """One split seed, in this process: ours, then the default LightGBM."""
    import numpy as np
    from lightgbm import LGBMClassifier
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    from shared.contract import TUTORIAL_CUSTOMERS
    from shared.features import FeatureSpec
    from shared.workspace.local import training

    out: dict[str, Any] = {"seed": seed, "budget_s": budget}
    with tempfile.TemporaryDirectory(prefix="bankml-bench-train-") as tmp:
        model_dir = Path(tmp) / "model"
        t0 = time.monotonic()
        result = training.train(data, model_dir, time_budget_s=budget, holdout_seed=seed, learners=learners)
        out["ours_s"] = round(time.monotonic() - t0, 2)
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        meta = json.loads((model_dir / training.META_FILE).read_text())
        m = result["metrics"]
        out["ours"] = {
            "AUC_weighted": m["AUC_weighted"],
            "accuracy": m["accuracy"],
            "accuracy_at_0.5": meta["metrics_at"]["0.5"]["accuracy"],
            "threshold": result["threshold"],
            "learner": result["learner"],
            "members": [f"{x['learner']}{'' if x['refit'] else ' (not refitted)'}" for x in result["members"]],
            "trials": len(result["child_runs"]),
            "validation_AUC": result["validation_metric"],
            "timings_s": result["timings_s"],
            "serving": result["serving"],
            "training_latency_us": meta.get("latency_us"),
        }
        records = [dict(c) for c in TUTORIAL_CUSTOMERS]
        lat = {"native": _latency_us(training.load_model(model_dir, prefer="native"), records)}
        if meta.get("onnx"):
            lat["onnx"] = _latency_us(training.load_model(model_dir, prefer="onnx"), records)
        out["predict_2rows_us"] = {k: round(v, 1) for k, v in lat.items()}

    frame, y = training._read_dataset(data, "y")
    train_idx, heldout_idx = train_test_split(
        np.arange(len(y)), test_size=training.HOLDOUT_FRACTION, stratify=y, random_state=seed
    )
    spec = FeatureSpec.fit(frame.iloc[train_idx])
    X = spec.encode_frame(frame)
    t0 = time.monotonic()
    base = LGBMClassifier(verbose=-1).fit(X[train_idx], y[train_idx], categorical_feature=spec.categorical_indices)
    p = base.predict_proba(X[heldout_idx])[:, 1]
    out["default_lgbm"] = {
        "AUC_weighted": float(roc_auc_score(y[heldout_idx], p)),
        "accuracy": float(accuracy_score(y[heldout_idx], p >= 0.5)),
        "fit_s": round(time.monotonic() - t0, 2),
    }
    return out


def _run_child(data: Path, seed: int, budget: float, learners: str | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.training", "--child", "--data", str(data), "--seeds", str(seed), "--budget", str(budget)]
    if learners:
        cmd += ["--learners", learners]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child for seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loop(data: Path, budget: float) -> dict[str, Any]:
    """Drop-to-live on the local stack in a throw-away data dir."""
    import requests
    from azure.storage.blob import BlobServiceClient

    from devhost.keys import HostKeys
    from shared.contract import TUTORIAL_CUSTOMERS
    from shared.workspace.local.servers import free_port
    from shared.workspace.local.stack import LocalStack

    marks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bankml-bench-loop-") as tmp:
        home = Path(tmp) / "home"
        env = {"BANKML_TIME_BUDGET_S": str(budget), "BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *"}
        with LocalStack(home, port=free_port(), azurite_port=free_port(), environ=env) as stack:
            ws = stack.workspace
            assert ws is not None and stack.azurite is not None
            key = HostKeys.load_or_create(home).function_key
            incoming = BlobServiceClient.from_connection_string(stack.azurite.connection_string).get_container_client("incoming")
            if not incoming.exists():
                incoming.create_container()
            body = json.dumps({"data": list(TUTORIAL_CUSTOMERS)})
            with data.open("rb") as fh:
                incoming.upload_blob(data.name, fh, overwrite=True)
            t0 = time.monotonic()
            deadline = t0 + budget + 240
            answer = None
            while time.monotonic() < deadline:
                now = time.monotonic() - t0
                if "registered" not in marks and ws.registry.list_datasets():
                    marks["registered"] = now
                runs = ws.registry.list_runs()
                if runs and "training_started" not in marks and runs[0]["started_at"]:
                    marks["training_started"] = now
                if runs and "training_ended" not in marks and runs[0]["status"] in ("Completed", "Failed"):
                    marks["training_ended"] = now
                    marks["run_status"] = runs[0]["status"]  # type: ignore[assignment]
                    if runs[0]["status"] == "Failed":
                        break
                if ws.registry.live_deployment() is not None:
                    if "deployed" not in marks:
                        marks["deployed"] = now
                    r = requests.post(f"{stack.url}/api/score", data=body, timeout=10,
                                      headers={"Content-Type": "application/json", "x-functions-key": key})
                    if r.status_code == 200:
                        marks["live"] = time.monotonic() - t0
                        answer = r.json()
                        break
                time.sleep(0.2)
            run = ws.registry.list_runs()[0] if ws.registry.list_runs() else {}
            marks["worker_peak_rss_mb"] = (run.get("best") or {}).get("peak_rss_mb")  # type: ignore[assignment]
    return {"marks_s": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in marks.items()}, "answer": answer}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=os.environ.get("BANKML_REAL_DATA") or None)
    ap.add_argument("--seeds", default=None, help="split seeds, comma-separated (default 0,1,2; --quick: 0)")
    ap.add_argument("--budget", type=float, default=None, help="AutoML time budget, s (default 60; --quick: 20)")
    ap.add_argument("--learners", default=None, help="override the learner list, e.g. lgbm,xgboost,extra_tree")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--loop", action="store_true", help="also measure drop-to-live on the local stack")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.data is None or not Path(args.data).is_file():
        print("benchmarks.training: pass --data CSV or set BANKML_REAL_DATA to bankmarketing_train.csv", file=sys.stderr)
        return 2
    data = Path(args.data).resolve()
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    budget = args.budget or (20.0 if args.quick else 60.0)
    learners = args.learners.split(",") if args.learners else None
    if args.child:
        import logging

        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(child(data, seeds[0], budget, learners)))
        return 0

    print(f"training benchmark: {data.name}, split seeds {seeds}, budget {budget:g} s, learners {args.learners or 'default'}")
    print(f"{'seed':>4s} {'ours AUC':>9s} {'ours acc':>9s} {'acc@0.5':>8s} {'thr':>6s} {'default AUC':>11s} {'default acc':>11s} "
          f"{'train s':>8s} {'RSS MB':>7s} {'trials':>6s}  model / serving / 2-row predict µs")
    rows = []
    for seed in seeds:
        r = _run_child(data, seed, budget, args.learners)
        rows.append(r)
        o, d = r["ours"], r["default_lgbm"]
        print(
            f"{seed:>4d} {o['AUC_weighted']:>9.4f} {o['accuracy']:>9.4f} {o['accuracy_at_0.5']:>8.4f} {o['threshold']:>6.3f} "
            f"{d['AUC_weighted']:>11.4f} {d['accuracy']:>11.4f} {r['ours_s']:>8.1f} {r['peak_rss_mb']:>7.0f} {o['trials']:>6d}  "
            f"{o['learner']} [{', '.join(o['members'])}] / {o['serving']} / "
            + ", ".join(f"{k} {v:.0f}" for k, v in r["predict_2rows_us"].items()),
            flush=True,
        )
    summary = {
        "ours_AUC_weighted": _mean([r["ours"]["AUC_weighted"] for r in rows]),
        "ours_accuracy": _mean([r["ours"]["accuracy"] for r in rows]),
        "ours_accuracy_at_0.5": _mean([r["ours"]["accuracy_at_0.5"] for r in rows]),
        "default_AUC_weighted": _mean([r["default_lgbm"]["AUC_weighted"] for r in rows]),
        "default_accuracy": _mean([r["default_lgbm"]["accuracy"] for r in rows]),
        "train_s_mean": _mean([r["ours_s"] for r in rows]),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rows),
    }
    s = summary
    print(
        f"mean {s['ours_AUC_weighted']:>9.4f} {s['ours_accuracy']:>9.4f} {s['ours_accuracy_at_0.5']:>8.4f} {'':>6s} "
        f"{s['default_AUC_weighted']:>11.4f} {s['default_accuracy']:>11.4f} {s['train_s_mean']:>8.1f} {s['peak_rss_mb_max']:>7.0f}"
    )
    print(
        f"targets: AUC_weighted >= {TARGET_AUC} ({'met' if s['ours_AUC_weighted'] >= TARGET_AUC else 'NOT met'}), "
        f"accuracy >= {TARGET_ACCURACY} ({'met' if s['ours_accuracy'] >= TARGET_ACCURACY else 'NOT met'}), "
        f"above the default LightGBM (AUC {'yes' if s['ours_AUC_weighted'] > s['default_AUC_weighted'] else 'no'}, "
        f"accuracy {'yes' if s['ours_accuracy'] > s['default_accuracy'] else 'no'}), "
        f"peak RSS < {TARGET_RSS_MB:.0f} MB ({'met' if s['peak_rss_mb_max'] < TARGET_RSS_MB else 'NOT met'})"
    )
    report: dict[str, Any] = {"data": data.name, "seeds": seeds, "budget_s": budget, "rows": rows, "summary": summary,
                              "azure_automl": AZURE_AUTOML, "azure_source": AZURE_SOURCE, "quick": args.quick}
    if args.loop:
        print("drop-to-live on the local stack ...", flush=True)
        report["loop"] = lp = loop(data, budget)
        marks = lp["marks_s"]
        print("  " + ", ".join(f"{k} {v}" for k, v in marks.items()))
        if "live" in marks:
            print(f"  drop-to-live {marks['live']:.1f} s (target < {TARGET_LIVE_S:.0f} s: {'met' if marks['live'] < TARGET_LIVE_S else 'NOT met'});"
                  f" answer {json.dumps(lp['answer'])}")
        else:
            print("  the deployment did not go live")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.4f}" if a is not None and b else "-"


def markdown(result: dict[str, Any]) -> str:
    """The quality section of docs/benchmarks.md: the fixed split first, then the other seeds."""
    rows = result.get("rows") or []
    fixed = next((r for r in rows if r["seed"] == FIXED_SPLIT_SEED), rows[0] if rows else None)
    if fixed is None:
        return "No split was measured."
    azure = result.get("azure_automl", AZURE_AUTOML)
    o, d = fixed["ours"], fixed["default_lgbm"]
    out = [
        f"Held-out rows: the stratified 20 % split of `{result.get('data')}` with seed {fixed['seed']} (fixed: the "
        "same rows every run); nothing is fitted, selected or tuned on them. Ours: `training.train` exactly as the "
        f"training worker calls it, {result.get('budget_s', 0):g} s budget"
        f"{' (quick mode; the app default is 60 s)' if result.get('quick') else ' (the app default)'}, in a fresh "
        "process. Default LightGBM: `LGBMClassifier()` with its defaults (native categoricals, the same encoding) "
        "fitted on the same 80 % in the same run, labels at 0.5.",
        "",
        "| on the fixed split | AUC_weighted | accuracy |",
        "|---|---:|---:|",
        f"| **ours** ({o['learner']}: {', '.join(o['members'])}; threshold {o['threshold']:.2f}) | "
        f"**{o['AUC_weighted']:.4f}** | **{o['accuracy']:.4f}** (at 0.5: {o['accuracy_at_0.5']:.4f}) |",
        f"| default LightGBM, same run | {d['AUC_weighted']:.4f} | {d['accuracy']:.4f} |",
        f"| Azure AutoML, published (quoted) | {azure['AUC_weighted']:.3f} | {azure['accuracy']:.3f} |",
        f"| ratio ours / default LightGBM | {_ratio(o['AUC_weighted'], d['AUC_weighted'])} | "
        f"{_ratio(o['accuracy'], d['accuracy'])} |",
        f"| ratio ours / Azure AutoML | {_ratio(o['AUC_weighted'], azure['AUC_weighted'])} | "
        f"{_ratio(o['accuracy'], azure['accuracy'])} |",
        "",
        f"Ours trained in {fixed['ours_s']:.1f} s (peak RSS {fixed['peak_rss_mb']:.0f} MB, {o['trials']} trials, "
        f"serving {o['serving']}; 2-row predict "
        + ", ".join(f"{k} {v:.0f} µs" for k, v in fixed.get("predict_2rows_us", {}).items())
        + f"); the default LightGBM fitted in {d['fit_s']:.1f} s.",
        "",
        f"Azure AutoML's figures: {result.get('azure_source', AZURE_SOURCE)}. A held-out accuracy on 6,590 rows has "
        "a standard error of about 0.0034, so differences below about 0.007 are within noise; accuracy near 0.918 "
        "is at the ceiling of this data (the best threshold an oracle could pick on the held-out rows reaches "
        "0.917-0.919 for every model tried in session 1).",
    ]
    if len(rows) > 1:
        s = result["summary"]
        out += [
            "",
            "Other split seeds (each a fresh process, same budget):",
            "",
            "| split seed | ours AUC_weighted | ours accuracy | default LightGBM AUC / accuracy | ours / default AUC | "
            "train s | peak RSS MB | trials |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            ro, rd = r["ours"], r["default_lgbm"]
            out.append(
                f"| {r['seed']}{' (fixed)' if r is fixed else ''} | {ro['AUC_weighted']:.4f} | {ro['accuracy']:.4f} | "
                f"{rd['AUC_weighted']:.4f} / {rd['accuracy']:.4f} | {_ratio(ro['AUC_weighted'], rd['AUC_weighted'])} | "
                f"{r['ours_s']:.1f} | {r['peak_rss_mb']:.0f} | {ro['trials']} |"
            )
        out.append(
            f"| **mean** | {s['ours_AUC_weighted']:.4f} | {s['ours_accuracy']:.4f} | {s['default_AUC_weighted']:.4f} / "
            f"{s['default_accuracy']:.4f} | {_ratio(s['ours_AUC_weighted'], s['default_AUC_weighted'])} | "
            f"{s['train_s_mean']:.1f} | {s['peak_rss_mb_max']:.0f} (max) | |"
        )
    lp = result.get("loop")
    if lp:
        out += ["", "Drop-to-live (`--loop`): " + ", ".join(f"{k} {v}" for k, v in lp["marks_s"].items()) + " s."]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
