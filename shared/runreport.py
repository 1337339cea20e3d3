"""What `bankml runs`, `bankml runs show RUN` and `bankml runs watch` print: training runs as a data
scientist reads them (Azure ML's run list, run details and child-run table), from the registry."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.errors import NotFound
from shared.workspace.base import COMPLETED, FAILED

FINAL = (COMPLETED, FAILED)
_HEADLINE = ("AUC_weighted", "accuracy", "AUC_macro", "f1_score_weighted", "f1_score_macro", "precision_score_weighted",
             "precision_score_macro", "recall_score_weighted", "recall_score_macro", "log_loss")


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start:
        return None
    a = datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = datetime.fromisoformat(end.replace("Z", "+00:00")) if end else datetime.now(a.tzinfo)
    return (b - a).total_seconds()


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "—"


def resolve_run(registry: Any, ref: str | None) -> dict[str, Any]:
    """A run by id, unique id prefix, or "latest" / None (the last submitted)."""
    runs = registry.list_runs()
    if not runs:
        raise NotFound("no runs yet", field="run_id")
    if ref in (None, "", "latest"):
        return runs[-1]
    exact = [r for r in runs if r["run_id"] == ref]
    matches = exact or [r for r in runs if r["run_id"].startswith(str(ref)) or r["run_id"].startswith(f"AutoML_{ref}")]
    if len(matches) != 1:
        why = "no run" if not matches else f"{len(matches)} runs"
        raise NotFound(f"{why} matching {ref!r}; see `bankml runs`", field="run_id", value=ref)
    return matches[0]


def runs_table(registry: Any) -> str:
    runs = registry.list_runs()
    if not runs:
        return "no runs yet (drop a CSV into incoming/, or POST /api/pipeline/runs)\n"
    lines = [f"{'run':42s} {'dataset':>7s} {'trigger':8s} {'status':9s} {'trials':>6s} {'time s':>7s} {'AUC_weighted':>12s} {'accuracy':>8s}  best model"]
    for r in runs:
        children = registry.child_runs(r["run_id"])
        best = r["best"] or {}
        metrics = best.get("metrics") or {}
        secs = _seconds(r["started_at"], r["ended_at"])
        model = best.get("learner") or ""
        if best.get("members") and len(best["members"]) > 1:
            model += " (" + " + ".join(m["learner"] for m in best["members"]) + ")"
        if r["status"] == FAILED:
            model = f"error: {(r['error'] or '')[:80]}"
        lines.append(
            f"{r['run_id']:42s} {'v' + str(r['dataset_version']):>7s} {r['trigger']:8s} {r['status']:9s} {len(children):>6d} "
            f"{_num(secs, 1):>7s} {_num(metrics.get('AUC_weighted')):>12s} {_num(metrics.get('accuracy')):>8s}  {model}"
        )
    return "\n".join(lines) + "\n"


def child_table(children: list[dict[str, Any]], best_iteration: int | None = None, limit: int | None = None) -> str:
    """Azure's child-run table: best first."""
    ranked = sorted(children, key=lambda c: -(c["metric"] if c["metric"] is not None else -1.0))
    if limit:
        ranked = ranked[:limit]
    lines = [f"  {'iter':>4s}  {'algorithm':12s} {'AUC_weighted':>12s} {'duration s':>10s}  {'status':9s}  hyper-parameters"]
    for c in ranked:
        mark = " *" if c["iteration"] == best_iteration else ""
        lines.append(
            f"  {c['iteration']:>4d}  {c['learner'] + mark:12s} {_num(c['metric']):>12s} {_num(c['train_time_s'], 2):>10s}  "
            f"{c['status']:9s}  {json.dumps(c['config'], sort_keys=True)[:110]}"
        )
    return "\n".join(lines)


def run_details(registry: Any, ref: str | None) -> str:
    r = resolve_run(registry, ref)
    best = r["best"] or {}
    children = registry.child_runs(r["run_id"])
    out = [
        f"run {r['run_id']}  ({r['experiment']})",
        f"  status      {r['status']}" + (f": {r['error']}" if r["error"] else ""),
        f"  dataset     v{r['dataset_version']}   trigger {r['trigger']}   parameters {json.dumps(r['parameters'])}",
        f"  submitted   {r['submitted_at']}   started {r['started_at'] or '—'}   ended {r['ended_at'] or '—'}"
        f"   ({_num(_seconds(r['started_at'], r['ended_at']), 1)} s)",
    ]
    if best:
        members = best.get("members") or []
        out += ["", f"best model: {best.get('learner')}" + (f", serving {best['serving']}" if best.get("serving") else "")]
        for m in members:
            out.append(
                f"  member {m['learner']:10s} weight {m['weight']:g}  validation AUC {_num(m['validation_metric'])}  "
                f"{'refitted on fit+validation' if m['refit'] else 'not refitted'}  {json.dumps(m['config'], sort_keys=True)}"
            )
        thresholds = best.get("thresholds") or {}
        out.append(
            f"  threshold   {_num(best.get('threshold'), 3)} (serves; max accuracy on validation)"
            + (f"   F1 threshold {_num(thresholds.get('f1'), 3)}" if thresholds.get("f1") is not None else "")
        )
        metrics = best.get("metrics") or {}
        if metrics:
            out += ["", "held-out metrics:"]
            keys = [k for k in _HEADLINE if k in metrics] + sorted(
                k for k, v in metrics.items() if k not in _HEADLINE and isinstance(v, int | float)
            )
            out += [f"  {k:34s} {_num(metrics[k])}" for k in keys]
            cm = metrics.get("confusion_matrix")
            if cm:
                labels = metrics.get("confusion_matrix_labels") or ["no", "yes"]
                out += [
                    f"  confusion matrix   {'pred ' + labels[0]:>10s} {'pred ' + labels[1]:>10s}",
                    f"    actual {labels[0]:7s} {cm[0][0]:>10d} {cm[0][1]:>10d}",
                    f"    actual {labels[1]:7s} {cm[1][0]:>10d} {cm[1][1]:>10d}",
                ]
        fi = best.get("feature_importance") or {}
        if fi:
            out += ["", "feature importance (share of gain):"]
            out += [f"  {k:16s} {v:6.1%}" for k, v in list(fi.items())[:10]]
        versions = best.get("library_versions") or {}
        if versions:
            out += ["", "libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
        if best.get("peak_rss_mb") is not None:
            out.append(f"peak memory of the training worker: {best['peak_rss_mb']:.0f} MB")
    if r.get("model_dir"):
        model_dir = Path(r["model_dir"])
        files = [model_dir / a for a in best.get("artifacts") or []]
        out += ["", f"artifacts in {model_dir}:"] + [f"  {f.name}" for f in files if f.exists()]
    out += ["", f"child runs ({len(children)}, best first; * = the search's best):",
            child_table(children, best.get("best_iteration")) if children else "  none"]
    return "\n".join(out) + "\n"


def watch(
    registry: Any,
    ref: str | None,
    *,
    say: Callable[[str], None] = print,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Follow a run: one line per new trial with the best validation metric so far, until it ends."""
    r = resolve_run(registry, ref)
    run_id = r["run_id"]
    say(f"watching run {run_id} (dataset v{r['dataset_version']}, {r['status']})")
    seen: set[int] = set()
    best: float | None = None
    status = r["status"]
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        for c in registry.child_runs(run_id):
            if c["iteration"] in seen:
                continue
            seen.add(c["iteration"])
            if c["metric"] is not None and (best is None or c["metric"] > best):
                best = c["metric"]
            say(
                f"  trial {c['iteration']:>3d}  {c['learner']:10s} AUC {_num(c['metric'])}  {_num(c['train_time_s'], 2)} s"
                f"   | {len(seen)} trials, best {_num(best)}"
            )
        r = registry.get_run(run_id) or r
        if r["status"] != status:
            status = r["status"]
            say(f"  status {status}")
        if status in FINAL:
            break
        if deadline is not None and time.monotonic() > deadline:
            say("  (stopped watching; the run goes on)")
            return r
        time.sleep(poll_s)
    metrics = (r["best"] or {}).get("metrics") or {}
    if status == COMPLETED:
        say(
            f"run {run_id} completed: {(r['best'] or {}).get('learner')}, held-out AUC_weighted {_num(metrics.get('AUC_weighted'))}, "
            f"accuracy {_num(metrics.get('accuracy'))} ({len(seen)} trials)"
        )
    else:
        say(f"run {run_id} failed: {r['error']}")
    return r
