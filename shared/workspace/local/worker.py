"""Training worker process: `python -m shared.workspace.local.worker --home H --run-id R`.

Runs one AutoML run outside the function host, records every trial as a child run while the
search goes on, then the best model (learner or ensemble members, held-out metrics, thresholds,
feature importance, dataset version, library versions, artifacts, peak memory); a failure (bad
data, a bad parameter, no model within the budget, a crash) is recorded as Failed with its reason.
The agent that started it publishes the run's event afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

from shared.errors import TrainingError
from shared.workspace.base import COMPLETED, FAILED
from shared.workspace.local.compiled import PREFIX as COMPILED_PREFIX
from shared.workspace.local.registry import Registry, utcnow

log = logging.getLogger("bankml.worker")

# What a completed run records as its best model (the run's "best" in the registry).
BEST_KEYS = (
    "learner",
    "config",
    "members",
    "metrics",
    "validation_metric",
    "threshold",
    "thresholds",
    "best_iteration",
    "feature_importance",
    "serving",
    "artifacts",
    "library_versions",
    "dataset_version",
    "timings_s",
)


DEFAULT_BUDGET_S = 60.0  # a run's time budget when its parameters name none


def run_budget_s(parameters: dict[str, Any]) -> float:
    """The run's AutoML time budget from its parameters; TrainingError naming a bad value."""
    raw = parameters.get("time_budget_s", DEFAULT_BUDGET_S)
    try:
        budget = float(raw)
    except (TypeError, ValueError):
        raise TrainingError(f"parameter time_budget_s must be a number of seconds, got {raw!r}", field="time_budget_s", value=raw) from None
    if not math.isfinite(budget) or budget <= 0:
        raise TrainingError(f"parameter time_budget_s must be above 0, got {raw!r}", field="time_budget_s", value=raw)
    return budget


# The files a model server loads; their SHA-256 is recorded with the run and checked before every
# start of a server on them (shared.workspace.local.workspace.verify_model_files).
SERVED_FILES = ("model.pkl", "model.json", "model.onnx")  # and the compiled trees (compiled-*)


def model_checksums(model_dir: Path) -> dict[str, str]:
    """SHA-256 of each served file present in ``model_dir``."""
    out = {}
    names = [*SERVED_FILES, *sorted(p.name for p in model_dir.glob(f"{COMPILED_PREFIX}*"))]
    for name in names:
        path = model_dir / name
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            out[name] = digest.hexdigest()
    return out


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(home: Path, run_id: str) -> int:
    registry = Registry(home / "registry.sqlite")
    row = registry.get_run(run_id)
    if row is None:
        log.error("run %s does not exist", run_id)
        return 2
    dataset = registry.get_dataset(row["dataset_version"])
    registry.update_run(run_id, worker_pid=os.getpid(), started_at=row["started_at"] or utcnow())
    try:
        if dataset is None:
            raise TrainingError(f"dataset version {row['dataset_version']} is missing", field="dataset_version", value=row["dataset_version"])
        from shared.workspace.local.training import train

        out_dir = home / "runs" / run_id / "model"
        result = train(
            Path(dataset["path"]),
            out_dir,
            time_budget_s=run_budget_s(row["parameters"]),
            on_trial=lambda child: registry.add_child_run(run_id, child),
            dataset_version=int(row["dataset_version"]),
            run_id=run_id,
        )
        for child in result.get("child_runs", []):
            registry.add_child_run(run_id, child)
        best = {k: result.get(k) for k in BEST_KEYS}
        best["peak_rss_mb"] = _peak_rss_mb()
        best["checksums"] = model_checksums(Path(result.get("model_dir", out_dir)))
        registry.update_run(
            run_id, status=COMPLETED, best=best, model_dir=str(result.get("model_dir", out_dir)), ended_at=utcnow()
        )
        log.info("run %s completed: %s", run_id, best.get("metrics"))
        return 0
    except Exception as err:  # noqa: BLE001 - every failure is recorded with its reason
        reason = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
        log.error("run %s failed: %s\n%s", run_id, reason, traceback.format_exc())
        registry.update_run(run_id, status=FAILED, error=str(reason)[:2000], ended_at=utcnow())
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args.home.resolve(), args.run_id)


if __name__ == "__main__":
    sys.exit(main())
