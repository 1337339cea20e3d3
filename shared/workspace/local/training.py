"""AutoML training of the local backend (FLAML + LightGBM), and loading of the trained model.

This module is the one adapter that owns FLAML: FLAML's logger does not propagate and attaches its
own stdout handler on ``fit()``, so while it runs we put our own handler on it and forward its
messages to this module's logger at DEBUG.

Data flow and why:

* a stratified 20% **held-out** split (fixed seed, independent of the search seed so that every run
  on the same file is judged on the same rows) is set aside first; the search never sees it, and
  the reported metrics come from it only;
* the rest is split 80/20 into **fit** and **validation** rows; FLAML searches on fit rows and
  scores each trial on the validation rows (``roc_auc``, reported as ``AUC_weighted``, which equals
  ROC AUC for a binary task);
* because the validation rows are given explicitly, FLAML does not retrain the winner on them, so
  the decision threshold tuned on the winner's validation predictions is honest;
* the saved model is the underlying estimator (LightGBM's ``LGBMClassifier`` or a scikit-learn
  forest) fed by the shared.features matrix: serving needs neither FLAML nor pandas.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from shared.contract import BY_NAME, FEATURE_NAMES, LABEL_VALUES
from shared.errors import TrainingError
from shared.features import FeatureSpec

logger = logging.getLogger(__name__)

MODEL_FORMAT = "bankml-model/1"
MODEL_FILE = "model.pkl"
META_FILE = "model.json"
PRIMARY_METRIC = "AUC_weighted"
HOLDOUT_FRACTION = 0.2
VALIDATION_FRACTION = 0.2
HOLDOUT_SEED = 20240  # fixed: the held-out rows of a file do not depend on the search seed
MIN_ROWS = 100
MIN_ROWS_PER_CLASS = 10
# Below this budget the forests only take time away from LightGBM, which wins on this data.
FORESTS_MIN_BUDGET_S = 20.0
_FLAML_LOGGERS = ("flaml.automl.logger", "flaml")
SMALL_BATCH_ROWS = 1000
PARALLEL_MIN_ROWS = 10_000

TrialCallback = Callable[[dict[str, Any]], None]


def _jsonable(value: Any) -> Any:
    """numpy scalars and containers -> plain JSON types (FLAML configs hold np.float64)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _TrialTail:
    """Reads FLAML's training log (one JSON record per trial) as it grows, reporting new trials."""

    def __init__(self, path: Path, on_trial: TrialCallback | None) -> None:
        self.path = path
        self.on_trial = on_trial
        self.trials: list[dict[str, Any]] = []
        self._offset = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        # Only complete lines: FLAML may be between writing a record and its newline.
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for line in chunk[: end + 1].splitlines():
            if line.strip():
                self._record(json.loads(line))

    def _record(self, rec: dict[str, Any]) -> None:
        if "learner" not in rec:
            return  # the final checkpoint record only points at the best record
        loss = rec.get("validation_loss")
        ok = loss is not None and math.isfinite(float(loss))
        trial = {
            "iteration": int(rec["record_id"]),
            "learner": rec["learner"],
            "config": _jsonable(rec.get("config") or {}),
            # FLAML minimises 1 - roc_auc for metric="roc_auc".
            "metric": 1.0 - float(loss) if ok else None,
            "metric_name": PRIMARY_METRIC,
            "train_time_s": float(rec.get("trial_time") or 0.0),
            "wall_clock_s": float(rec.get("wall_clock_time") or 0.0),
            "sample_size": int(rec.get("sample_size") or 0),
            "status": "Completed" if ok else "Failed",
        }
        self.trials.append(trial)
        if self.on_trial is not None:
            try:
                self.on_trial(trial)
            except Exception:
                # A failing progress callback (e.g. a registry write) must not kill the search.
                logger.warning("on_trial callback failed for trial %d", trial["iteration"], exc_info=True)


class _FlamlForwarder(logging.Handler):
    """Takes FLAML's log records off stdout; each record is also the cue that a trial may be logged."""

    def __init__(self, tail: _TrialTail) -> None:
        super().__init__()
        self.tail = tail

    def emit(self, record: logging.LogRecord) -> None:
        level = logging.WARNING if record.levelno >= logging.ERROR else logging.DEBUG
        if logger.isEnabledFor(level):
            logger.log(level, "flaml: %s", record.getMessage())
        # FLAML appends the trial record, then logs " at 1.2s, estimator ..." in the same thread.
        self.tail.poll()


@contextmanager
def _contained_flaml_logging(tail: _TrialTail) -> Iterator[None]:
    saved = []
    handler = _FlamlForwarder(tail)
    for name in _FLAML_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.handlers[:], lg.propagate))
        # FLAML only adds its stdout handler when its logger has none.
        lg.handlers = [handler]
        lg.propagate = False
    try:
        yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers = handlers
            lg.propagate = propagate


def _read_dataset(path: Path, label: str) -> tuple[pd.DataFrame, np.ndarray]:
    dtypes = {name: ("str" if BY_NAME[name].kind == "string" else "float64") for name in FEATURE_NAMES}
    dtypes[label] = "str"
    try:
        frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])
    except FileNotFoundError as err:
        raise TrainingError(f"dataset file {path} does not exist", path=str(path)) from err
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise TrainingError(f"dataset file {path} is not a readable CSV: {err}", path=str(path)) from err
    missing = [c for c in (*FEATURE_NAMES, label) if c not in frame.columns]
    if missing:
        raise TrainingError(f"dataset is missing column(s) {missing}", field=missing[0], missing=missing)
    values = frame[label].fillna("").str.strip().str.lower()
    bad = sorted(set(values.unique()) - set(LABEL_VALUES))
    if bad:
        raise TrainingError(
            f"label column {label!r} must hold only {list(LABEL_VALUES)}, found {bad[:5]}",
            field=label,
            value=bad[0],
            expected=list(LABEL_VALUES),
        )
    y = (values == LABEL_VALUES[1]).to_numpy(dtype=np.int64)
    counts = {LABEL_VALUES[0]: int((y == 0).sum()), LABEL_VALUES[1]: int((y == 1).sum())}
    if len(y) < MIN_ROWS:
        raise TrainingError(
            f"dataset has {len(y)} rows, at least {MIN_ROWS} are needed", rows=len(y), expected=MIN_ROWS
        )
    if min(counts.values()) < MIN_ROWS_PER_CLASS:
        which = "only one class" if min(counts.values()) == 0 else "too few rows of one class"
        raise TrainingError(
            f"dataset has {which} ({counts}); each label needs at least {MIN_ROWS_PER_CLASS} rows "
            "for a held-out split and a validation split",
            field=label,
            class_balance=counts,
        )
    return frame[list(FEATURE_NAMES)], y


def _tune_threshold(y_val: np.ndarray, p_val: np.ndarray) -> float:
    """Threshold on p(yes) maximising the F1 of "yes" on validation rows.

    "yes" is the rare class the campaign is after; 0.5 would trade most of them for accuracy.
    """
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y_val, p_val)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
    if len(thresholds) == 0 or not np.isfinite(f1).any():
        return 0.5
    best = float(thresholds[int(np.nanargmax(f1))])
    # Keep it strictly inside (0, 1) so that both labels stay reachable.
    return float(min(max(best, 0.01), 0.99))


def _heldout_metrics(y: np.ndarray, p_yes: np.ndarray, threshold: float) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    pred = (p_yes >= threshold).astype(np.int64)
    proba = np.column_stack([1.0 - p_yes, p_yes])
    return {
        "accuracy": float(accuracy_score(y, pred)),
        # Binary task: the support-weighted one-vs-rest AUC equals the plain ROC AUC.
        PRIMARY_METRIC: float(roc_auc_score(y, p_yes)),
        "precision_score_weighted": float(precision_score(y, pred, average="weighted", zero_division=0)),
        "recall_score_weighted": float(recall_score(y, pred, average="weighted", zero_division=0)),
        "f1_score_weighted": float(f1_score(y, pred, average="weighted", zero_division=0)),
        "log_loss": float(log_loss(y, proba, labels=[0, 1])),
        "confusion_matrix": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        "confusion_matrix_labels": list(LABEL_VALUES),
    }


def _library_versions() -> dict[str, str]:
    import flaml
    import lightgbm
    import sklearn

    return {
        "python": platform.python_version(),
        "flaml": flaml.__version__,
        "lightgbm": lightgbm.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def _positive_proba(estimator: Any, X: np.ndarray) -> np.ndarray:
    booster = getattr(estimator, "booster_", None)
    if booster is not None:
        # LightGBM's booster answers p(yes) directly, about 40x faster than the sklearn wrapper
        # on a 2-row request (the wrapper re-validates its input on every call). One thread for
        # small batches: OpenMP threads waiting for a busy second core cost up to 8 ms at p99.
        threads = 1 if X.shape[0] < SMALL_BATCH_ROWS else 0  # 0: LightGBM's default (all cores)
        return np.asarray(booster.predict(X, num_threads=threads), dtype=np.float64)
    return np.asarray(estimator.predict_proba(X), dtype=np.float64)[:, 1]


def train(
    dataset_csv: Path,
    out_dir: Path,
    *,
    time_budget_s: float,
    label: str = "y",
    seed: int = 0,
    on_trial: TrialCallback | None = None,
    n_jobs: int | None = None,
) -> dict[str, Any]:
    """Search a model for ``dataset_csv`` within ``time_budget_s`` and write it into ``out_dir``.

    ``on_trial`` is called (in the calling thread) once per FLAML trial while the search runs.
    Raises TrainingError when the data cannot be trained on.
    """
    from flaml import AutoML
    from sklearn.model_selection import train_test_split

    started = time.monotonic()
    dataset_csv = Path(dataset_csv)
    out_dir = Path(out_dir)
    if time_budget_s <= 0:
        raise TrainingError(
            f"time budget must be above 0 s, got {time_budget_s}", field="time_budget_s", value=time_budget_s
        )
    frame, y = _read_dataset(dataset_csv, label)

    idx = np.arange(len(y))
    train_idx, heldout_idx = train_test_split(idx, test_size=HOLDOUT_FRACTION, stratify=y, random_state=HOLDOUT_SEED)
    fit_idx, val_idx = train_test_split(
        train_idx, test_size=VALIDATION_FRACTION, stratify=y[train_idx], random_state=seed
    )
    # Vocabularies come from training rows only: a category that appears only in held-out rows is
    # "unseen" there exactly as it would be for a live request.
    spec = FeatureSpec.fit(frame.iloc[train_idx])
    X = spec.encode_frame(frame)
    if n_jobs is None:
        # Small trials are dominated by thread start-up, and OpenMP threads stall (up to a second
        # per trial, measured) when the other core is busy with the function host or a model
        # server; only larger data gains from two threads.
        n_jobs = 1 if len(fit_idx) < PARALLEL_MIN_ROWS else max(1, min(2, os.cpu_count() or 1))
    estimators = ["lgbm"] if time_budget_s < FORESTS_MIN_BUDGET_S else ["lgbm", "rf", "extra_tree"]

    out_dir.mkdir(parents=True, exist_ok=True)
    automl = AutoML()
    with tempfile.TemporaryDirectory(prefix="flaml-") as tmp:
        log_path = Path(tmp) / "trials.jsonl"
        tail = _TrialTail(log_path, on_trial)
        logger.info(
            "training on %d rows (%d fit, %d validation, %d held out), budget %.0fs, learners %s",
            len(y),
            len(fit_idx),
            len(val_idx),
            len(heldout_idx),
            time_budget_s,
            estimators,
        )
        try:
            with _contained_flaml_logging(tail):
                automl.fit(
                    X[fit_idx],
                    y[fit_idx],
                    X_val=X[val_idx],
                    y_val=y[val_idx],
                    task="classification",
                    metric="roc_auc",
                    eval_method="holdout",
                    time_budget=time_budget_s,
                    estimator_list=estimators,
                    # LightGBM splits categories natively; the forests see the integer codes.
                    fit_kwargs_by_estimator={"lgbm": {"categorical_feature": spec.categorical_indices}},
                    log_file_name=str(log_path),
                    log_type="all",
                    retrain_full=False,
                    model_history=False,
                    n_jobs=n_jobs,
                    seed=seed,
                    verbose=3,  # INFO: each trial logs a line, which is our cue to read the trial log
                )
        except TrainingError:
            raise
        except Exception as err:
            raise TrainingError(f"AutoML search failed: {type(err).__name__}: {err}") from err
        tail.poll()  # records written after the last log line (the checkpoint)

    if automl.model is None or automl.best_estimator is None:
        raise TrainingError(f"AutoML found no model within {time_budget_s:.0f}s; raise the time budget")
    estimator = automl.model.estimator
    classes = list(getattr(estimator, "classes_", [0, 1]))
    if classes != [0, 1]:
        raise TrainingError(f"the trained model has unexpected classes {classes}")

    p_val = _positive_proba(estimator, X[val_idx])
    threshold = _tune_threshold(y[val_idx], p_val)
    p_heldout = _positive_proba(estimator, X[heldout_idx])
    metrics = _heldout_metrics(y[heldout_idx], p_heldout, threshold)
    validation_metric = 1.0 - float(automl.best_loss)
    best_config = _jsonable(automl.best_config)
    completed = [t for t in tail.trials if t["status"] == "Completed"]
    best_iteration = next(
        (t["iteration"] for t in completed if t["learner"] == automl.best_estimator and t["config"] == best_config),
        max(completed, key=lambda t: t["metric"])["iteration"] if completed else None,
    )

    joblib.dump(estimator, out_dir / MODEL_FILE)
    meta = {
        "format": MODEL_FORMAT,
        "learner": automl.best_estimator,
        "config": best_config,
        "features": spec.to_dict(),
        "labels": list(LABEL_VALUES),
        "threshold": threshold,
        "threshold_objective": "max F1 of 'yes' on validation rows",
        "primary_metric": PRIMARY_METRIC,
        "metrics": metrics,
        "validation_metric": validation_metric,
        "best_iteration": best_iteration,
        "trials": len(tail.trials),
        "library_versions": _library_versions(),
        "train_rows": int(len(fit_idx)),
        "validation_rows": int(len(val_idx)),
        "heldout_rows": int(len(heldout_idx)),
        "time_budget_s": float(time_budget_s),
        "seed": seed,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "trained %s in %.1fs over %d trials: held-out %s %.4f, accuracy %.4f, threshold %.3f",
        automl.best_estimator,
        time.monotonic() - started,
        len(tail.trials),
        PRIMARY_METRIC,
        metrics[PRIMARY_METRIC],
        metrics["accuracy"],
        threshold,
    )
    return {
        "learner": automl.best_estimator,
        "config": best_config,
        "metrics": metrics,
        "validation_metric": validation_metric,
        "threshold": threshold,
        "child_runs": tail.trials,
        "model_dir": str(out_dir),
        "best_iteration": best_iteration,
    }


@dataclass
class LoadedModel:
    """A trained model ready to answer requests: encode records, predict, apply the threshold."""

    estimator: Any
    spec: FeatureSpec
    threshold: float
    labels: tuple[str, str]
    meta: dict[str, Any]

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """p(yes) for an encoded matrix."""
        return _positive_proba(self.estimator, X)

    def predict(self, records: list[dict[str, Any]]) -> tuple[list[str], list[list[float]]]:
        """Labels and ``[p_no, p_yes]`` rows for validated records (see shared.scoring)."""
        p_yes = self.predict_matrix(self.spec.encode_records(records)).tolist()
        negative, positive = self.labels
        threshold = self.threshold
        labels = [positive if p >= threshold else negative for p in p_yes]
        return labels, [[1.0 - p, p] for p in p_yes]


def load_model(model_dir: Path | str) -> LoadedModel:
    """Load ``model.pkl`` + ``model.json`` written by ``train``."""
    model_dir = Path(model_dir)
    try:
        meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise TrainingError(f"no {META_FILE} in {model_dir}", path=str(model_dir)) from err
    if meta.get("format") != MODEL_FORMAT:
        raise TrainingError(
            f"unsupported model format {meta.get('format')!r}, expected {MODEL_FORMAT!r}", path=str(model_dir)
        )
    estimator = joblib.load(model_dir / MODEL_FILE)
    if hasattr(estimator, "n_jobs") and not hasattr(estimator, "booster_"):
        # A forest predicting a few rows is far slower when it fans out to a thread pool.
        estimator.n_jobs = 1
    labels = tuple(meta.get("labels") or LABEL_VALUES)
    return LoadedModel(
        estimator=estimator,
        spec=FeatureSpec.from_dict(meta["features"]),
        threshold=float(meta["threshold"]),
        labels=(str(labels[0]), str(labels[1])),
        meta=meta,
    )
