"""AutoML training of the local backend (FLAML over LightGBM and XGBoost), and loading of the model.

This module is the one adapter that owns FLAML: FLAML's logger does not propagate and attaches its
own stdout handler on ``fit()``, so while it runs we put our own handler on it and forward its
messages to this module's logger at DEBUG.

Data flow and why (every choice below was measured with ``benchmarks/training.py``):

* a stratified 20% **held-out** split (fixed seed, independent of the search seed so that every run
  on the same file is judged on the same rows) is set aside first; nothing is fitted, selected or
  tuned on it, and the reported metrics come from it only;
* the rest is split 80/20 into **fit** and **validation** rows; FLAML searches on fit rows and
  scores each trial on the validation rows (``roc_auc``, reported as ``AUC_weighted``, which equals
  ROC AUC for a binary task). LightGBM starts from its library defaults and from a regularised
  config, so the search never ends below a default LightGBM;
* the best config of each learner whose validation AUC is within ``ENSEMBLE_TOLERANCE`` of the best
  joins a soft-voting ensemble with equal weights (what Azure AutoML's VotingEnsemble is); averaging
  a LightGBM and an XGBoost model is steadier on unseen rows than the single validation winner;
* the decision thresholds are tuned on the validation predictions of the searched (not yet
  refitted) models, so they are honest: one maximises accuracy (the one that serves: the label a
  scoring request gets) and one maximises the F1 of "yes" (recorded for campaigns that want recall);
* then each member is **refitted on fit + validation rows** (25% more data; measured +0.001 AUC)
  within what is left of the time budget (``SEARCH_SHARE`` of it goes to the search);
* the saved model is the plain estimator (``LGBMClassifier``/``XGBClassifier``, or a scikit-learn
  ``VotingClassifier`` of them) fed by the shared.features matrix, plus the same model as ONNX; the
  model server uses whichever answered a 2-row request faster when it was measured at training time.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from shared.contract import BY_NAME, FEATURE_NAMES, LABEL_VALUES
from shared.errors import TrainingError
from shared.features import FeatureSpec
from shared.workspace.local import compiled

logger = logging.getLogger(__name__)

MODEL_FORMAT = "bankml-model/1"
MODEL_FILE = "model.pkl"
META_FILE = "model.json"
ONNX_FILE = "model.onnx"
CONFUSION_PNG = "confusion_matrix.png"
ROC_PNG = "roc.png"
CHILD_RUNS_CSV = "child_runs.csv"
CHILD_RUNS_MD = "child_runs.md"
MODEL_CARD = "model_card.md"
PRIMARY_METRIC = "AUC_weighted"
ENSEMBLE_NAME = "VotingEnsemble"
HOLDOUT_FRACTION = 0.2
VALIDATION_FRACTION = 0.2
HOLDOUT_SEED = 20240  # fixed: the held-out rows of a file do not depend on the search seed
MIN_ROWS = 100
MIN_ROWS_PER_CLASS = 10
# Below this budget a second learner only takes time away from LightGBM.
ENSEMBLE_MIN_BUDGET_S = 20.0
DEFAULT_LEARNERS = ("lgbm", "xgboost")
# Share of the time budget for the search; the rest refits the chosen models on fit + validation rows.
SEARCH_SHARE = 0.75
# A learner's best config joins the ensemble when its validation AUC is at most this far below the
# best: validation AUC on ~5,000 rows moves by about 0.003 between splits, so a smaller gap is noise,
# and averaging LightGBM with XGBoost measured no worse than the better one on held-out rows.
ENSEMBLE_TOLERANCE = 0.01
# Refitting costs about the trial's time scaled by the rows; this margin covers a busy machine.
REFIT_SAFETY = 1.3
# Kept out of the search and refit for the artifacts (ONNX conversion, plots) once the budget allows it.
ARTIFACT_RESERVE_S = 5.0
# The ONNX graph runs in float32; predictions further apart than this from the native ones are refused.
ONNX_TOLERANCE = 1e-4
LATENCY_ROWS = 2  # the tutorial request: what the serving latency is measured on
_FLAML_LOGGERS = ("flaml.automl.logger", "flaml")
SMALL_BATCH_ROWS = 1000

# LightGBM's own defaults (what "a default LightGBM" is), in FLAML's search-space terms, and a
# regularised config that does well on this kind of data; FLAML starts its search from both.
LGBM_STARTING_POINTS: list[dict[str, Any]] = [
    {
        "n_estimators": 100,
        "num_leaves": 31,
        "min_child_samples": 20,
        "learning_rate": 0.1,
        "log_max_bin": 8,
        "colsample_bytree": 1.0,
        "reg_alpha": 1 / 1024,
        "reg_lambda": 1 / 1024,
    },
    {
        "n_estimators": 300,
        "num_leaves": 15,
        "min_child_samples": 40,
        "learning_rate": 0.05,
        "log_max_bin": 8,
        "colsample_bytree": 0.7,
        "reg_alpha": 1 / 1024,
        "reg_lambda": 1.0,
    },
]

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


def _accuracy_threshold(y_val: np.ndarray, p_val: np.ndarray) -> float:
    """Threshold on p(yes) maximising accuracy on validation rows, moved from 0.5 only on evidence.

    A calibrated model's accuracy-optimal threshold is 0.5. Moving it to t flips the labels of the
    k validation rows between 0.5 and t; if the model is calibrated there, the number of them that
    become right minus those that become wrong is noise of about sqrt(k). So a threshold t in
    [0.3, 0.7] is a candidate only when it wins at least ``max(2, 2 * sqrt(k))`` rows over 0.5; the
    candidate with the largest gain serves (the one nearest 0.5 on a tie), else 0.5.
    """
    if len(y_val) == 0:
        return 0.5
    grid = np.round(np.arange(0.30, 0.7001, 0.005), 3)
    at_half = int(((p_val >= 0.5).astype(np.int64) == y_val).sum())
    best_t, best_gain = 0.5, 0
    for t in sorted(grid, key=lambda v: (abs(v - 0.5), v)):
        gain = int(((p_val >= t).astype(np.int64) == y_val).sum()) - at_half
        flipped = int(((p_val >= min(t, 0.5)) & (p_val < max(t, 0.5))).sum())
        if gain >= max(2.0, 2.0 * math.sqrt(flipped)) and gain > best_gain:
            best_t, best_gain = float(t), gain
    return best_t


def _heldout_metrics(y: np.ndarray, p_yes: np.ndarray, threshold: float) -> dict[str, Any]:
    """Azure AutoML's classification metrics on held-out rows (labels at ``threshold``)."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        matthews_corrcoef,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    pred = (p_yes >= threshold).astype(np.int64)
    proba = np.column_stack([1.0 - p_yes, p_yes])
    auc = float(roc_auc_score(y, p_yes))
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y, pred)),
        # Binary task: the one-vs-rest AUC of each class equals the plain ROC AUC, so the weighted
        # and the macro average are that value too (Azure reports the same number for both).
        PRIMARY_METRIC: auc,
        "AUC_macro": auc,
        "average_precision_score_weighted": float(
            np.average([average_precision_score(y == c, proba[:, c]) for c in (0, 1)], weights=np.bincount(y, minlength=2))
        ),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "matthews_correlation": float(matthews_corrcoef(y, pred)),
        "log_loss": float(log_loss(y, proba, labels=[0, 1])),
    }
    for avg in ("weighted", "macro"):
        out[f"precision_score_{avg}"] = float(precision_score(y, pred, average=avg, zero_division=0))
        out[f"recall_score_{avg}"] = float(recall_score(y, pred, average=avg, zero_division=0))
        out[f"f1_score_{avg}"] = float(f1_score(y, pred, average=avg, zero_division=0))
    out["confusion_matrix"] = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    out["confusion_matrix_labels"] = list(LABEL_VALUES)
    return out


def _library_versions() -> dict[str, str]:
    import flaml
    import lightgbm
    import sklearn

    versions = {
        "python": platform.python_version(),
        "flaml": flaml.__version__,
        "lightgbm": lightgbm.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    for name in ("xgboost", "onnx", "onnxruntime", "skl2onnx", "onnxmltools"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            continue
    return versions


# --------------------------------------------------------------------------- prediction paths


def _threads(X: np.ndarray) -> int:
    # One thread for small batches: OpenMP threads waiting for a busy second core cost up to 8 ms at
    # p99. 0: the library's default (all cores).
    return 1 if X.shape[0] < SMALL_BATCH_ROWS else 0


def _member_proba(estimator: Any, X: np.ndarray) -> np.ndarray:
    """p(yes) of one fitted estimator, through the fastest native call it has."""
    booster = getattr(estimator, "booster_", None)
    if booster is not None:
        # LightGBM's booster answers p(yes) directly, about 40x faster than the sklearn wrapper on
        # a 2-row request (the wrapper re-validates its input on every call).
        return np.asarray(booster.predict(X, num_threads=_threads(X)), dtype=np.float64)
    if type(estimator).__name__ == "XGBClassifier":
        return np.asarray(estimator.get_booster().inplace_predict(X), dtype=np.float64)
    return np.asarray(estimator.predict_proba(X), dtype=np.float64)[:, 1]


def _positive_proba(estimator: Any, X: np.ndarray) -> np.ndarray:
    members = getattr(estimator, "estimators_", None)
    if type(estimator).__name__ == "VotingClassifier" and members:
        weights = np.asarray(estimator.weights if estimator.weights is not None else [1.0] * len(members), dtype=np.float64)
        total = sum(w * _member_proba(m, X) for w, m in zip(weights, members, strict=True))
        return np.asarray(total / weights.sum(), dtype=np.float64)
    return _member_proba(estimator, X)


def _voting(members: list[tuple[str, Any]], weights: list[float]) -> Any:
    """A scikit-learn soft-voting ensemble of already fitted members (no refit)."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import Bunch

    # An array, not a list: skl2onnx's converter sums the weights with numpy.
    vote = VotingClassifier(estimators=members, voting="soft", weights=np.asarray(weights, dtype=np.float64), flatten_transform=False)
    vote.estimators_ = [est for _, est in members]
    vote.named_estimators_ = Bunch(**dict(members))
    vote.le_ = LabelEncoder().fit([0, 1])
    vote.classes_ = vote.le_.classes_
    # n_features_in_ is a read-only property of VotingClassifier, read from its first member.
    return vote


_TREE_NODE_ATTRIBUTES = (
    "nodes_falsenodeids", "nodes_featureids", "nodes_missing_value_tracks_true", "nodes_modes", "nodes_nodeids",
    "nodes_treeids", "nodes_truenodeids", "nodes_values", "base_values",
)


def _margin_graph(data: bytes) -> bytes | None:
    """The converters' graph of a binary LightGBM/XGBoost model or a soft vote of them, rewritten so
    that each member is a ``TreeEnsembleRegressor`` of its raw score followed by ``Sigmoid``, or None
    when the graph is not of that shape (then the graph serves as converted).

    Same trees, same thresholds, same leaf values, same weights: a binary ``TreeEnsembleClassifier``
    with one class id and a LOGISTIC post-transform gives p(yes) = sigmoid(sum of the leaves), and
    so does this. onnxruntime scores a one-target regressor block by block (rows within a tree)
    instead of all trees per row of a two-class classifier: 10,000 rows through the loop's ensemble
    (992 trees) took 128 ms of CPU instead of 158 ms, same probabilities to 1.2e-7. Output:
    ``probabilities`` ([p_no, p_yes] per row), as before; the ``label`` output is dropped (the
    threshold is applied in Python).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    trees = [n for n in graph.node if n.op_type == "TreeEnsembleClassifier"]
    if not trees or [o.name for o in graph.output] != ["label", "probabilities"] or len(graph.input) != 1:
        return None
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    nodes: list[Any] = []
    weighted: list[str] = []
    weights: list[float] = []
    for k, tree in enumerate(trees):
        attrs = {a.name: helper.get_attribute_value(a) for a in tree.attribute}
        if (
            list(attrs.get("classlabels_int64s", [])) != [0, 1]
            or set(attrs.get("class_ids", [])) != {0}
            or attrs.get("post_transform") != b"LOGISTIC"
            or set(attrs) - {*_TREE_NODE_ATTRIBUTES, "nodes_hitrates", "classlabels_int64s", "class_ids",
                             "class_nodeids", "class_treeids", "class_weights", "post_transform"}
        ):
            return None
        proba = tree.output[1]
        users = consumers.get(proba, [])
        if len(trees) == 1 and not users and proba == "probabilities":
            weight = 1.0
        elif len(users) == 1 and users[0].op_type == "Mul" and len(users[0].input) == 2:
            other = [x for x in users[0].input if x != proba]
            w = consts.get(other[0]) if len(other) == 1 else None
            if w is None or w.size != 1:
                return None
            weight = float(w.reshape(-1)[0])
            summed = consumers.get(users[0].output[0], [])
            if len(summed) != 1 or summed[0].op_type != "Sum" or summed[0].output[0] != "probabilities":
                return None
        else:
            return None
        weights.append(weight)
        kw = {name: attrs[name] for name in _TREE_NODE_ATTRIBUTES if name in attrs}
        kw["nodes_modes"] = [m.decode() for m in kw["nodes_modes"]]
        kw.update(
            target_ids=[0] * len(attrs["class_ids"]), target_nodeids=list(attrs["class_nodeids"]),
            target_treeids=list(attrs["class_treeids"]), target_weights=list(attrs["class_weights"]),
            n_targets=1, post_transform="NONE", aggregate_function="SUM",
        )
        nodes.append(helper.make_node("TreeEnsembleRegressor", [graph.input[0].name], [f"margin{k}"], domain="ai.onnx.ml", **kw))
        nodes.append(helper.make_node("Sigmoid", [f"margin{k}"], [f"p{k}"]))
        nodes.append(helper.make_node("Mul", [f"p{k}", f"w{k}"], [f"wp{k}"]))
        weighted.append(f"wp{k}")
    if len(trees) > 1:
        # The vote: one Sum of exactly the weighted members, and nothing else in the graph that
        # the rewritten form would leave out besides the label's nodes.
        total = next(n for n in graph.node if n.op_type == "Sum" and n.output[0] == "probabilities")
        mul_outputs = {consumers[t.output[1]][0].output[0] for t in trees}
        if set(total.input) != mul_outputs or len(total.input) != len(trees):
            return None
    nodes.append(helper.make_node("Sum", weighted, ["p_yes"]))
    nodes.append(helper.make_node("Sub", ["one", "p_yes"], ["p_no"]))
    nodes.append(helper.make_node("Concat", ["p_no", "p_yes"], ["probabilities"], axis=1))
    init = [helper.make_tensor(f"w{k}", TensorProto.FLOAT, [], [w]) for k, w in enumerate(weights)]
    init.append(helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]))
    out = helper.make_graph(
        nodes, "bankml_margins", [graph.input[0]],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])], initializer=init,
    )
    rewritten = helper.make_model(
        out, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        producer_name="bankml", ir_version=model.ir_version,
    )
    onnx.checker.check_model(rewritten)
    return bytes(rewritten.SerializeToString())


def _onnx_session(data: bytes) -> Any:
    """A session of the graph as trained (training compares it with the native model)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the label output's declared shape draws a warning per call
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _probe(n_features: int, rows: int = 256) -> np.ndarray:
    """Rows to compare two graphs of one model on: small codes, numbers of every size, missing values."""
    rng = np.random.default_rng(0)
    X = np.where(rng.random((rows, n_features)) < 0.5, rng.integers(0, 12, (rows, n_features)),
                 rng.normal(0, 1, (rows, n_features)) * 10.0 ** rng.integers(-1, 4, (rows, n_features)))
    X[rng.random((rows, n_features)) < 0.05] = np.nan
    return X.astype(np.float64)


def _serving_session(data: bytes, n_features: int) -> Any:
    """The session that serves a model.onnx: its margin form (see _margin_graph) when the file is a
    converter graph written before that form existed and both forms agree on probe rows, else the
    graph as written."""
    session = _onnx_session(data)
    try:
        fast = _margin_graph(data)
        if fast is None:
            return session
        candidate = _onnx_session(fast)
        X = _probe(n_features)
        diff = float(np.max(np.abs(_onnx_proba(candidate, X) - _onnx_proba(session, X))))
    except Exception as err:  # noqa: BLE001 - the graph as written serves
        logger.warning("could not use the margin form of model.onnx: %s", type(err).__name__)
        return session
    if not diff <= ONNX_TOLERANCE:
        logger.warning("the margin form of model.onnx differs by up to %.2g; serving the graph as written", diff)
        return session
    return candidate


def _onnx_proba(session: Any, X: np.ndarray) -> np.ndarray:
    out = session.run(["probabilities"], {"input": np.ascontiguousarray(X, dtype=np.float32)})[0]
    return np.asarray(out[:, 1], dtype=np.float64)


# Large batches through the ONNX graph: the rows are cut into blocks that run in a small thread pool
# (onnxruntime releases the GIL in ``run``; every row is scored on its own, so the answer is the same
# as one call). The session itself keeps one intra-op thread: its own pool spins and was 1.8x slower
# than one thread when the other core was busy (10,000 rows: 274 ms against 149 ms at load 1.3),
# while blocks handed to whichever thread is free cost nothing extra then and use the second core
# when it is free. Blocks of this many rows at most, an even number of them.
PARALLEL_MIN_ROWS = 2048
PARALLEL_BLOCK_ROWS = 2048
_onnx_pool: Any = None
_onnx_pool_lock = threading.Lock()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _onnx_blocks_pool() -> Any:
    global _onnx_pool
    with _onnx_pool_lock:
        if _onnx_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _onnx_pool = ThreadPoolExecutor(max_workers=min(_cores(), 4), thread_name_prefix="onnx-block")
        return _onnx_pool


def _onnx_proba_parallel(session: Any, X: np.ndarray) -> np.ndarray:
    """``_onnx_proba`` of a large batch, block by block on the cores there are."""
    cores = _cores()
    if cores < 2 or X.shape[0] < PARALLEL_MIN_ROWS:
        return _onnx_proba(session, X)
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    pairs = -(-X32.shape[0] // (2 * PARALLEL_BLOCK_ROWS))
    blocks = np.array_split(X32, 2 * pairs)
    parts = list(_onnx_blocks_pool().map(lambda b: session.run(["probabilities"], {"input": b})[0][:, 1], blocks))
    return np.concatenate(parts).astype(np.float64)


def _to_onnx(estimator: Any, n_features: int, *, margin: bool = True) -> bytes:
    """The model (LightGBM, XGBoost or a soft vote of them) as one ONNX graph: input ``input``
    (float32, n x features), outputs ``label`` and ``probabilities``."""
    from lightgbm import LGBMClassifier
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import convert_sklearn, update_registered_converter
    from skl2onnx.common.data_types import FloatTensorType
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    update_registered_converter(
        LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes, convert_lightgbm, options=options
    )
    try:
        from xgboost import XGBClassifier

        update_registered_converter(
            XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes, convert_xgboost, options=options
        )
    except ImportError:
        pass
    onx = convert_sklearn(
        estimator,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(estimator): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    data = bytes(onx.SerializeToString())
    # The margin form when the graph is of the known shape; _portable then checks it against the
    # native model like any graph.
    return (_margin_graph(data) if margin else None) or data


def _latency_us(predict: Callable[[np.ndarray], Any], X: np.ndarray, budget_s: float = 0.3) -> float:
    """Median time of one call in microseconds (calls repeated for about ``budget_s``)."""
    for _ in range(5):
        predict(X)
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while time.perf_counter() < end or len(times) < 20:
        t0 = time.perf_counter()
        predict(X)
        times.append(time.perf_counter() - t0)
        if len(times) >= 2000:
            break
    return float(np.median(times) * 1e6)


def _portable(estimator: Any, X_check: np.ndarray, out_dir: Path) -> dict[str, Any]:
    """Write ``model.onnx`` when the model converts and predicts what the native model predicts,
    then measure both on a 2-row request and pick the faster one for serving."""
    info: dict[str, Any] = {"onnx": None, "serving": "native"}
    try:
        data = _to_onnx(estimator, X_check.shape[1])
        session = _onnx_session(data)
        diff = float(np.max(np.abs(_onnx_proba(session, X_check) - _positive_proba(estimator, X_check))))
    except Exception as err:  # noqa: BLE001 - any converter failure leaves the native model serving
        info["onnx_error"] = f"{type(err).__name__}: {str(err)[:300]}"
        logger.warning("ONNX conversion failed, the native model serves: %s", info["onnx_error"])
        return info
    info["onnx_max_abs_diff"] = diff
    if not diff <= ONNX_TOLERANCE:
        info["onnx_error"] = f"ONNX predictions differ from the native ones by up to {diff:.2g}"
        logger.warning("%s; not written", info["onnx_error"])
        return info
    (out_dir / ONNX_FILE).write_bytes(data)
    info["onnx"] = ONNX_FILE
    info["onnx_bytes"] = len(data)
    x = np.ascontiguousarray(X_check[:LATENCY_ROWS])
    native_us = _latency_us(lambda a: _positive_proba(estimator, a), x)
    onnx_us = _latency_us(lambda a: _onnx_proba(session, a), x)
    info["latency_us"] = {"native": round(native_us, 1), "onnx": round(onnx_us, 1), "rows": LATENCY_ROWS}
    info["serving"] = "onnx" if onnx_us < native_us else "native"
    return info


# --------------------------------------------------------------------------- reports


def _feature_importance(estimator: Any, columns: list[str]) -> dict[str, float]:
    """Share of the total gain per feature (an ensemble: its members' shares, weighted)."""

    def one(est: Any) -> np.ndarray:
        booster = getattr(est, "booster_", None)
        if booster is not None:
            gain = np.asarray(booster.feature_importance(importance_type="gain"), dtype=np.float64)
        elif type(est).__name__ == "XGBClassifier":
            score = est.get_booster().get_score(importance_type="total_gain")
            gain = np.array([float(score.get(f"f{i}", 0.0)) for i in range(len(columns))])
        else:
            gain = np.asarray(getattr(est, "feature_importances_", np.zeros(len(columns))), dtype=np.float64)
        total = gain.sum()
        return gain / total if total > 0 else gain

    if type(estimator).__name__ == "VotingClassifier":
        weights = [1.0] * len(estimator.estimators_) if estimator.weights is None else list(estimator.weights)
        share = sum(w * one(m) for w, m in zip(weights, estimator.estimators_, strict=True)) / float(sum(weights))
    else:
        share = one(estimator)
    order = np.argsort(-share)
    return {columns[i]: round(float(share[i]), 5) for i in order}


def _plots(y: np.ndarray, p_yes: np.ndarray, metrics: dict[str, Any], threshold: float, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    written = []
    cm = np.asarray(metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=110)
    ax.imshow(cm, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{cm[i, j]}\n{cm[i, j] / max(cm[i].sum(), 1):.1%}", ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks([0, 1], [f"predicted {v}" for v in LABEL_VALUES])
    ax.set_yticks([0, 1], [f"actual {v}" for v in LABEL_VALUES])
    ax.set_title(f"Held-out confusion matrix (threshold {threshold:.3f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / CONFUSION_PNG)
    plt.close(fig)
    written.append(CONFUSION_PNG)

    fpr, tpr, _ = roc_curve(y, p_yes)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=110)
    ax.plot(fpr, tpr, color="#2563eb", label=f"{PRIMARY_METRIC} {metrics[PRIMARY_METRIC]:.4f}")
    ax.plot([0, 1], [0, 1], color="#9ca3af", linestyle="--", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Held-out ROC curve", fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / ROC_PNG)
    plt.close(fig)
    written.append(ROC_PNG)
    return written


def _child_run_table(trials: list[dict[str, Any]], best_iteration: int | None, out_dir: Path) -> list[str]:
    """Every trial as Azure's child-run table shows it: iteration, algorithm, metric, duration, status."""
    with open(out_dir / CHILD_RUNS_CSV, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iteration", "algorithm", f"{PRIMARY_METRIC} (validation)", "duration_s", "sample_size", "status", "hyperparameters"])
        for t in trials:
            writer.writerow([
                t["iteration"], t["learner"], "" if t["metric"] is None else f"{t['metric']:.6f}",
                f"{t['train_time_s']:.3f}", t.get("sample_size", ""), t["status"], json.dumps(t["config"], sort_keys=True),
            ])
    ranked = sorted(trials, key=lambda t: -(t["metric"] if t["metric"] is not None else -1.0))
    lines = [
        f"| rank | iteration | algorithm | {PRIMARY_METRIC} (validation) | duration (s) | rows | status |",
        "|---:|---:|---|---:|---:|---:|---|",
    ]
    for rank, t in enumerate(ranked, 1):
        metric = "—" if t["metric"] is None else f"{t['metric']:.4f}"
        mark = " **best**" if t["iteration"] == best_iteration else ""
        lines.append(
            f"| {rank} | {t['iteration']} | {t['learner']}{mark} | {metric} | {t['train_time_s']:.2f} | "
            f"{t.get('sample_size') or ''} | {t['status']} |"
        )
    (out_dir / CHILD_RUNS_MD).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [CHILD_RUNS_CSV, CHILD_RUNS_MD]


def _model_card(meta: dict[str, Any]) -> str:
    m = meta["metrics"]
    members = meta["members"]
    rows = [
        f"# Model card: {meta['learner']}",
        "",
        f"Bank Marketing term-deposit classifier (label `y`: {' / '.join(meta['labels'])}), trained by the "
        f"local AutoML run{' ' + meta['run_id'] if meta.get('run_id') else ''} on {meta['created_at']}.",
        "",
        "## Model",
        "",
        f"* Kind: {meta['learner']}" + (f" of {len(members)} models, soft voting (weights {', '.join(str(x['weight']) for x in members)})" if len(members) > 1 else ""),
    ]
    for x in members:
        rows.append(
            f"* {x['learner']}: validation {PRIMARY_METRIC} {x['validation_metric']:.4f}, "
            f"{'refitted on fit + validation rows' if x['refit'] else 'as searched (no time left to refit)'}; "
            f"hyper-parameters `{json.dumps(x['config'], sort_keys=True)}`"
        )
    rows += [
        f"* Serving: {meta['serving']}" + (f" (2-row latency: native {meta['latency_us']['native']:.0f} µs, ONNX {meta['latency_us']['onnx']:.0f} µs)" if meta.get("latency_us") else ""),
        f"* Portable form: {meta['onnx'] or 'none (native model only: ' + str(meta.get('onnx_error')) + ')'}",
        "",
        "## Data",
        "",
        f"* Dataset version: {meta.get('dataset_version') if meta.get('dataset_version') is not None else 'not registered'}"
        f" ({meta['train_rows'] + meta['validation_rows'] + meta['heldout_rows']} rows)",
        f"* Split: {meta['train_rows']} fit, {meta['validation_rows']} validation, {meta['heldout_rows']} held out "
        "(stratified; the held-out rows are never used for fitting, selection or thresholds)",
        "",
        "## Held-out evaluation",
        "",
        f"Labels at the served threshold {meta['threshold']:.3f} ({meta['threshold_objective']}).",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    for k, v in m.items():
        if isinstance(v, int | float):
            rows.append(f"| {k} | {v:.4f} |")
    cm = m["confusion_matrix"]
    rows += [
        "",
        f"Confusion matrix (rows: actual no/yes; columns: predicted no/yes): {cm[0]} / {cm[1]}.",
        "",
        f"Other thresholds: F1 of \"yes\" is highest at {meta['thresholds']['f1']:.3f}"
        f" (held-out accuracy {meta['metrics_at']['f1']['accuracy']:.4f}, recall of \"yes\" {meta['metrics_at']['f1']['recall_yes']:.4f});"
        f" at 0.5: accuracy {meta['metrics_at']['0.5']['accuracy']:.4f}.",
        "",
        "## Most important features (share of gain)",
        "",
    ]
    for name, share in list(meta["feature_importance"].items())[:10]:
        rows.append(f"* `{name}`: {share:.1%}")
    rows += [
        "",
        "## Caveats",
        "",
        "* `duration` (length of the last call) is known only after the call ends: it dominates the",
        "  model and makes it fit for scoring finished calls, not for choosing whom to call.",
        "* Categories never seen in training are scored as missing values, not refused.",
        "",
        "## Library versions",
        "",
        ", ".join(f"{k} {v}" for k, v in meta["library_versions"].items()),
        "",
    ]
    return "\n".join(rows)


# --------------------------------------------------------------------------- training


@dataclass
class _Member:
    learner: str
    config: dict[str, Any]
    validation_metric: float
    flaml_estimator: Any  # FLAML's wrapper, fitted on fit rows during the search
    trial_time_s: float
    sample_size: int
    refit: bool = False
    refit_time_s: float = 0.0
    estimator: Any = field(default=None)

    def __post_init__(self) -> None:
        self.estimator = self.flaml_estimator.model


def _refit_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "FLAML_sample_size"}


def train(
    dataset_csv: Path,
    out_dir: Path,
    *,
    time_budget_s: float,
    label: str = "y",
    seed: int = 0,
    on_trial: TrialCallback | None = None,
    n_jobs: int | None = None,
    holdout_seed: int = HOLDOUT_SEED,
    learners: list[str] | tuple[str, ...] | None = None,
    dataset_version: int | None = None,
    run_id: str | None = None,
    ensemble_tolerance: float = ENSEMBLE_TOLERANCE,
) -> dict[str, Any]:
    """Search a model for ``dataset_csv`` within ``time_budget_s`` and write it into ``out_dir``.

    ``on_trial`` is called (in the calling thread) once per FLAML trial while the search runs.
    ``learners`` overrides the learner list (default: LightGBM alone below ``ENSEMBLE_MIN_BUDGET_S``,
    else ``DEFAULT_LEARNERS``). ``holdout_seed`` is for benchmarks that vary the held-out split;
    ``ensemble_tolerance`` how far below the best validation AUC a learner's best may be to join.
    Raises TrainingError when the data cannot be trained on or no model fits in the budget.
    """
    from flaml import AutoML
    from sklearn.model_selection import train_test_split

    started = time.monotonic()
    dataset_csv = Path(dataset_csv)
    out_dir = Path(out_dir)
    if not (isinstance(time_budget_s, int | float) and math.isfinite(time_budget_s) and time_budget_s > 0):
        raise TrainingError(
            f"time budget must be above 0 s, got {time_budget_s}", field="time_budget_s", value=time_budget_s
        )
    # The whole run fits in the budget: search, refit, then the artifacts.
    deadline = started + time_budget_s - (ARTIFACT_RESERVE_S if time_budget_s >= ENSEMBLE_MIN_BUDGET_S else 0.0)
    frame, y = _read_dataset(dataset_csv, label)

    idx = np.arange(len(y))
    train_idx, heldout_idx = train_test_split(idx, test_size=HOLDOUT_FRACTION, stratify=y, random_state=holdout_seed)
    fit_idx, val_idx = train_test_split(
        train_idx, test_size=VALIDATION_FRACTION, stratify=y[train_idx], random_state=seed
    )
    # Vocabularies come from training rows only: a category that appears only in held-out rows is
    # "unseen" there exactly as it would be for a live request.
    spec = FeatureSpec.fit(frame.iloc[train_idx])
    X = spec.encode_frame(frame)
    if n_jobs is None:
        # One thread per trial. OpenMP threads stall when the other core is busy (the function
        # host, a model server, another run): measured on the real data with the machine shared,
        # 2 threads made a 300-tree LightGBM trial 7x slower (9 s against 1.3 s) and left 5 trials
        # in a 45 s search against 36 with 1 thread.
        n_jobs = 1
    if learners is None:
        learners = ["lgbm"] if time_budget_s < ENSEMBLE_MIN_BUDGET_S else list(DEFAULT_LEARNERS)
    learners = list(learners)
    search_budget = time_budget_s * SEARCH_SHARE
    fit_kwargs = {"lgbm": {"categorical_feature": spec.categorical_indices}}

    out_dir.mkdir(parents=True, exist_ok=True)
    automl = AutoML()
    with tempfile.TemporaryDirectory(prefix="flaml-") as tmp:
        log_path = Path(tmp) / "trials.jsonl"
        tail = _TrialTail(log_path, on_trial)
        logger.info(
            "training on %d rows (%d fit, %d validation, %d held out), budget %.0fs (search %.0fs), learners %s",
            len(y), len(fit_idx), len(val_idx), len(heldout_idx), time_budget_s, search_budget, learners,
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
                    time_budget=search_budget,
                    estimator_list=learners,
                    # LightGBM splits categories natively; XGBoost sees the integer codes.
                    fit_kwargs_by_estimator={k: v for k, v in fit_kwargs.items() if k in learners},
                    starting_points={"lgbm": [dict(p) for p in LGBM_STARTING_POINTS]} if "lgbm" in learners else "static",
                    log_file_name=str(log_path),
                    log_type="all",
                    # Validation rows are given: FLAML keeps each learner's best model as fitted on
                    # fit rows (their validation predictions tune the thresholds); we refit below.
                    retrain_full=False,
                    # Keeps each learner's best model (not every trial's); without it FLAML drops
                    # all but the overall best, and the ensemble's members would need refitting.
                    model_history=True,
                    early_stop=True,
                    n_jobs=n_jobs,
                    seed=seed,
                    verbose=3,  # INFO: each trial logs a line, which is our cue to read the trial log
                )
        except TrainingError:
            raise
        except Exception as err:
            raise TrainingError(f"AutoML search failed: {type(err).__name__}: {err}") from err
        tail.poll()  # records written after the last log line (the checkpoint)
    search_s = time.monotonic() - started

    if automl.model is None or automl.best_estimator is None:
        raise TrainingError(
            f"AutoML found no model within {time_budget_s:g}s; raise the time budget",
            field="time_budget_s",
            value=time_budget_s,
        )
    trials = tail.trials
    completed = [t for t in trials if t["status"] == "Completed"]
    best_config = _jsonable(automl.best_config)
    best_iteration = next(
        (t["iteration"] for t in completed if t["learner"] == automl.best_estimator and t["config"] == best_config),
        max(completed, key=lambda t: t["metric"])["iteration"] if completed else None,
    )

    # Ensemble members: each learner's best config within ENSEMBLE_TOLERANCE of the best one.
    best_metric = 1.0 - float(automl.best_loss)
    members: list[_Member] = []
    for name, loss in sorted(automl.best_loss_per_estimator.items(), key=lambda kv: kv[1]):
        model = automl.best_model_for_estimator(name)
        if model is None or loss is None or not math.isfinite(loss):
            continue
        metric = 1.0 - float(loss)
        if metric < best_metric - ensemble_tolerance:
            continue
        config = _jsonable(automl.best_config_per_estimator[name] or {})
        trial = next((t for t in completed if t["learner"] == name and t["config"] == config), None)
        if getattr(model, "model", None) is None:
            # FLAML frees the previous overall best's model when another learner overtakes it:
            # fit that config on the fit rows again (its validation predictions tune the thresholds).
            estimate = (float(trial["train_time_s"]) if trial else 1.0) * REFIT_SAFETY
            if time.monotonic() + 2 * estimate > deadline:
                logger.info("leaving %s out of the ensemble: no time to fit it again (%.1fs)", name, estimate)
                continue
            try:
                model = type(model)(task="binary", n_jobs=n_jobs, **_refit_config(config))
                model.fit(X[fit_idx], y[fit_idx], **fit_kwargs.get(name, {}))
            except Exception as err:  # noqa: BLE001 - the ensemble does without it
                logger.warning("could not fit %s again: %s: %s", name, type(err).__name__, err)
                continue
        members.append(_Member(
            learner=name,
            config=config,
            validation_metric=metric,
            flaml_estimator=model,
            trial_time_s=float(trial["train_time_s"]) if trial else 1.0,
            sample_size=int(trial["sample_size"]) if trial and trial["sample_size"] else len(fit_idx),
        ))
    if not members:
        raise TrainingError("AutoML kept no fitted model; raise the time budget", field="time_budget_s", value=time_budget_s)
    for m in members:
        classes = list(getattr(m.estimator, "classes_", [0, 1]))
        if classes != [0, 1]:
            raise TrainingError(f"the trained {m.learner} model has unexpected classes {classes}")

    weights = [1.0] * len(members)

    def assemble() -> Any:
        if len(members) == 1:
            return members[0].estimator
        return _voting([(m.learner, m.estimator) for m in members], weights)

    searched = assemble()
    p_val = _positive_proba(searched, X[val_idx])
    from sklearn.metrics import roc_auc_score

    validation_metric = float(roc_auc_score(y[val_idx], p_val))
    thresholds = {"accuracy": _accuracy_threshold(y[val_idx], p_val), "f1": _tune_threshold(y[val_idx], p_val)}
    threshold = thresholds["accuracy"]

    # Refit on fit + validation rows, best member first, while the budget lasts.
    for m in members:
        estimate = m.trial_time_s * len(train_idx) / max(m.sample_size, 1) * REFIT_SAFETY
        if time.monotonic() + estimate > deadline:
            logger.info("not refitting %s: about %.1fs needed, %.1fs left", m.learner, estimate, deadline - time.monotonic())
            continue
        t0 = time.monotonic()
        try:
            fresh = type(m.flaml_estimator)(task="binary", n_jobs=n_jobs, **_refit_config(m.config))
            fresh.fit(X[train_idx], y[train_idx], **fit_kwargs.get(m.learner, {}))
        except Exception as err:  # noqa: BLE001 - the searched model is still a good model
            logger.warning("refit of %s failed, keeping the searched model: %s: %s", m.learner, type(err).__name__, err)
            continue
        m.estimator, m.refit, m.refit_time_s = fresh.model, True, time.monotonic() - t0
    estimator = assemble()
    fitted_s = time.monotonic() - started

    p_heldout = _positive_proba(estimator, X[heldout_idx])
    metrics = _heldout_metrics(y[heldout_idx], p_heldout, threshold)
    metrics_at: dict[str, dict[str, float]] = {}
    for key, t in (("f1", thresholds["f1"]), ("0.5", 0.5)):
        other = _heldout_metrics(y[heldout_idx], p_heldout, t)
        cm = other["confusion_matrix"]
        metrics_at[key] = {
            "threshold": t,
            "accuracy": other["accuracy"],
            "f1_score_weighted": other["f1_score_weighted"],
            "recall_yes": cm[1][1] / max(cm[1][0] + cm[1][1], 1),
            "precision_yes": cm[1][1] / max(cm[0][1] + cm[1][1], 1),
        }

    for stale in (ONNX_FILE, META_FILE):  # a model dir written before must not keep an old graph
        (out_dir / stale).unlink(missing_ok=True)
    compiled.remove_stale(out_dir)
    joblib.dump(estimator, out_dir / MODEL_FILE)
    # The LightGBM members compile (LLVM releases the GIL) while the ONNX graph and plots are made.
    X_check = np.vstack([X[heldout_idx], _probe(X.shape[1])])
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="compile") as pool:
        compiling = pool.submit(compiled.compile_model, estimator, X_check, _positive_proba(estimator, X_check),
                                out_dir, ONNX_TOLERANCE)
        portable = _portable(estimator, X[heldout_idx], out_dir)
        compiled_info = compiling.result()
    artifacts = [MODEL_FILE, META_FILE] + ([ONNX_FILE] if portable["onnx"] else [])
    artifacts += compiled.artifact_names(compiled_info.get("compiled"))
    artifacts += _plots(y[heldout_idx], p_heldout, metrics, threshold, out_dir)
    artifacts += _child_run_table(trials, best_iteration, out_dir)
    learner = members[0].learner if len(members) == 1 else ENSEMBLE_NAME
    member_info = [
        {
            "learner": m.learner,
            "config": m.config,
            "weight": w,
            "validation_metric": m.validation_metric,
            "refit": m.refit,
            "refit_time_s": round(m.refit_time_s, 3),
        }
        for m, w in zip(members, weights, strict=True)
    ]
    balance = {LABEL_VALUES[0]: int((y == 0).sum()), LABEL_VALUES[1]: int((y == 1).sum())}
    meta = {
        "format": MODEL_FORMAT,
        "learner": learner,
        "config": members[0].config if len(members) == 1 else {"voting": "soft", "weights": weights, "members": [m.learner for m in members]},
        "members": member_info,
        "features": spec.to_dict(),
        "labels": list(LABEL_VALUES),
        "threshold": threshold,
        "threshold_objective": "max accuracy on validation rows",
        "thresholds": thresholds,
        "primary_metric": PRIMARY_METRIC,
        "metrics": metrics,
        "metrics_at": metrics_at,
        "validation_metric": validation_metric,
        "search_best": {"learner": automl.best_estimator, "config": best_config, "validation_metric": best_metric},
        "best_iteration": best_iteration,
        "trials": len(trials),
        "feature_importance": _feature_importance(estimator, spec.columns),
        "serving": portable["serving"],
        "onnx": portable["onnx"],
        **{k: v for k, v in portable.items() if k not in ("serving", "onnx")},
        **compiled_info,
        "library_versions": _library_versions(),
        "dataset_version": dataset_version,
        "run_id": run_id,
        "class_balance": balance,
        "train_rows": int(len(fit_idx)),
        "validation_rows": int(len(val_idx)),
        "heldout_rows": int(len(heldout_idx)),
        "holdout_seed": holdout_seed,
        "time_budget_s": float(time_budget_s),
        "timings_s": {"search": round(search_s, 2), "search_and_refit": round(fitted_s, 2)},
        "seed": seed,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    card = _model_card(meta)
    (out_dir / MODEL_CARD).write_text(card, encoding="utf-8")
    artifacts.append(MODEL_CARD)
    meta["artifacts"] = artifacts
    meta["timings_s"]["total"] = round(time.monotonic() - started, 2)
    (out_dir / META_FILE).write_text(json.dumps(_jsonable(meta), indent=2) + "\n", encoding="utf-8")
    logger.info(
        "trained %s in %.1fs over %d trials: held-out %s %.4f, accuracy %.4f, threshold %.3f, serving %s",
        learner,
        time.monotonic() - started,
        len(trials),
        PRIMARY_METRIC,
        metrics[PRIMARY_METRIC],
        metrics["accuracy"],
        threshold,
        portable["serving"],
    )
    return {
        "learner": learner,
        "config": meta["config"],
        "members": member_info,
        "metrics": metrics,
        "validation_metric": validation_metric,
        "threshold": threshold,
        "thresholds": thresholds,
        "feature_importance": meta["feature_importance"],
        "serving": portable["serving"],
        "artifacts": artifacts,
        "library_versions": meta["library_versions"],
        "dataset_version": dataset_version,
        "child_runs": trials,
        "model_dir": str(out_dir),
        "best_iteration": best_iteration,
        "timings_s": meta["timings_s"],
    }


@dataclass
class LoadedModel:
    """A trained model ready to answer requests: encode records, predict, apply the threshold."""

    estimator: Any
    spec: FeatureSpec
    threshold: float
    labels: tuple[str, str]
    meta: dict[str, Any]
    session: Any = None  # an onnxruntime session when the ONNX graph serves
    compiled: Any = None  # shared.workspace.local.compiled.CompiledModel: large batches

    @property
    def serving(self) -> str:
        """What scores small requests: "onnx" or "native"."""
        return "onnx" if self.session is not None else "native"

    @property
    def batch_serving(self) -> str:
        """What scores requests of ``COMPILED_MIN_ROWS`` rows and more."""
        return "compiled" if self.compiled is not None else self.serving

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """p(yes) for an encoded matrix."""
        if self.compiled is not None and X.shape[0] >= compiled.COMPILED_MIN_ROWS:
            return self.compiled.predict(X)
        if self.session is not None:
            return _onnx_proba_parallel(self.session, X)
        return _positive_proba(self.estimator, X)

    def predict(self, records: list[dict[str, Any]]) -> tuple[list[str], list[list[float]]]:
        """Labels and ``[p_no, p_yes]`` rows for validated records (see shared.scoring)."""
        p_yes = self.predict_matrix(self.spec.encode_records(records)).tolist()
        negative, positive = self.labels
        threshold = self.threshold
        labels = [positive if p >= threshold else negative for p in p_yes]
        return labels, [[1.0 - p, p] for p in p_yes]


def load_model(model_dir: Path | str, *, prefer: str | None = None) -> LoadedModel:
    """Load ``model.pkl`` + ``model.json`` written by ``train`` (and ``model.onnx`` when it serves).

    The native model is always loaded (it is the reference, and a damaged model must not serve);
    the ONNX graph serves when training measured it faster. ``prefer`` ("native" or "onnx")
    overrides that choice, for benchmarks.
    """
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
    for est in [estimator, *(getattr(estimator, "estimators_", None) or [])]:
        if hasattr(est, "n_jobs") and not hasattr(est, "booster_"):
            # A forest predicting a few rows is far slower when it fans out to a thread pool.
            est.n_jobs = 1
    session = None
    want = prefer or meta.get("serving", "native")
    onnx_path = model_dir / str(meta.get("onnx") or ONNX_FILE)
    if want == "onnx" and onnx_path.is_file():
        try:
            session = _serving_session(onnx_path.read_bytes(), len(meta["features"]["columns"]))
        except Exception as err:  # noqa: BLE001 - the native model is there to serve
            logger.warning("could not load %s, the native model serves: %s", onnx_path, type(err).__name__)
    labels = tuple(meta.get("labels") or LABEL_VALUES)
    fast = compiled.load(model_dir, meta, estimator) if prefer is None else None
    return LoadedModel(
        estimator=estimator,
        spec=FeatureSpec.from_dict(meta["features"]),
        threshold=float(meta["threshold"]),
        labels=(str(labels[0]), str(labels[1])),
        meta=meta,
        session=session,
        compiled=fast,
    )
