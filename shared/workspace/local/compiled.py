"""Large batches through compiled trees: each LightGBM member of a model compiled to machine code
with lleaves (LLVM), the other members through their native boosters, the members side by side.

Why: the ONNX graph that serves small requests (about 40-80 µs for the 2-row tutorial request)
scores the loop's usual ensemble (about 850 LightGBM trees + 140 XGBoost trees) at about 17 µs a
row, so a 10,000-row request spent 150-190 ms in the model alone. The same LightGBM trees compiled
by lleaves take 2-3 µs a row (the whole ensemble, both members side by side, about 7 µs), with the
same probabilities (checked at training time to within
``ONNX_TOLERANCE`` on held-out and probe rows, missing values included). So the model server keeps
ONNX (or native) for requests below ``COMPILED_MIN_ROWS`` and uses this from there on.

Training writes, per LightGBM member ``i``, ``compiled-<i>.lgbm.txt`` (the booster as text, which
lleaves reads for the feature layout) and ``compiled-<i>.lleaves.o`` (the object code); both are
model files like ``model.pkl``: checksummed when the run completes and verified before a server
starts. The object code is for the CPU it was compiled on: ``model.json`` records that CPU, and a
model dir moved to another CPU serves through ONNX instead (never a compile at load time, which
would write into the store). Anything missing or failing leaves the compiled path off, never the
model: the ONNX graph or the native model serves every request then.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PREFIX = "compiled-"
# From this many rows a request goes through the compiled trees; below, ONNX's smaller per-call cost
# wins. Medians on the loop's ensemble (856 LightGBM + 136 XGBoost trees), ONNX / compiled: 2 rows
# 0.04 / 0.34 ms, 64 rows 1.1 / 0.87 ms, 512 rows 8.5 / 4.5 ms, 10,000 rows 169 / 71 ms.
COMPILED_MIN_ROWS = 64
# lleaves' inlining roughly doubles compile time (6.8 s against 3.4 s for 856 trees) for about a
# third less predict time; compiling happens while the run's other artifacts are written.
COMPILE_OPTIONS: dict[str, Any] = {"finline": False}

Predictor = Callable[[np.ndarray], np.ndarray]
__all__ = ["COMPILED_MIN_ROWS", "CompiledModel", "artifact_names", "compile_model", "cpu_id", "load", "remove_stale"]


def cpu_id() -> str:
    """What compiled code depends on: the architecture, the CPU model and its feature flags."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key == "model name" and not model:
                model = line.split(":", 1)[1].strip()
            elif key == "flags" and not flags:
                flags = line.split(":", 1)[1].strip()
    except OSError:
        pass
    digest = hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:16]
    return f"{os.uname().machine}/{model or 'unknown'}/{digest}"


def _members(estimator: Any) -> list[tuple[float, Any]]:
    members = getattr(estimator, "estimators_", None)
    if type(estimator).__name__ == "VotingClassifier" and members:
        weights = estimator.weights if estimator.weights is not None else [1.0] * len(members)
        return [(float(w), m) for w, m in zip(weights, members, strict=True)]
    return [(1.0, estimator)]


def _is_lgbm(estimator: Any) -> bool:
    return type(estimator).__name__ == "LGBMClassifier" and getattr(estimator, "booster_", None) is not None


def _files(i: int) -> tuple[str, str]:
    return f"{PREFIX}{i}.lgbm.txt", f"{PREFIX}{i}.lleaves.o"


class CompiledModel:
    """p(yes) of a model (one estimator or a soft vote) with its LightGBM members compiled."""

    def __init__(self, members: list[tuple[float, Predictor]]) -> None:
        self.members = members
        self.total_weight = float(sum(w for w, _ in members))
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _parallel(self) -> ThreadPoolExecutor | None:
        # lleaves (ctypes) and xgboost release the GIL: two members use the two cores.
        if len(self.members) < 2 or (os.cpu_count() or 1) < 2:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=min(len(self.members), 4), thread_name_prefix="compiled")
            return self._pool

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        pool = self._parallel()
        if pool is None:
            parts = [w * f(X) for w, f in self.members]
        else:
            parts = list(pool.map(lambda member: member[0] * member[1](X), self.members))
        return np.asarray(sum(parts) / self.total_weight, dtype=np.float64)


def _native_member(estimator: Any) -> Predictor:
    if type(estimator).__name__ == "XGBClassifier":
        booster = estimator.get_booster().copy()
        booster.set_param({"nthread": 1})  # the members already run side by side
        return lambda X: np.asarray(booster.inplace_predict(X), dtype=np.float64)
    from shared.workspace.local.training import _member_proba

    return lambda X: _member_proba(estimator, X)


def _lleaves_member(model_file: Path, object_file: Path) -> Predictor:
    import lleaves

    if not object_file.is_file():
        # lleaves would compile and write the object file: never at load time, never into the store.
        raise FileNotFoundError(object_file.name)
    compiled = lleaves.Model(model_file=str(model_file))
    compiled.compile(cache=str(object_file), **COMPILE_OPTIONS)
    return lambda X: np.asarray(compiled.predict(X, n_jobs=1), dtype=np.float64)


def load(model_dir: Path, meta: dict[str, Any], estimator: Any) -> CompiledModel | None:
    """The compiled path of a model written by ``compile_model``, or None (then ONNX/native serve)."""
    info = meta.get("compiled")
    if not info:
        return None
    if info.get("cpu") != cpu_id():
        logger.warning("compiled trees of %s were built for another CPU; large batches use the other path", model_dir)
        return None
    try:
        members: list[tuple[float, Predictor]] = []
        by_index = info.get("members") or {}
        for i, (weight, est) in enumerate(_members(estimator)):
            files = by_index.get(str(i))
            if files:
                members.append((weight, _lleaves_member(model_dir / files["model"], model_dir / files["object"])))
            else:
                members.append((weight, _native_member(est)))
        if len(members) != len(_members(estimator)) or not by_index:
            return None
        return CompiledModel(members)
    except Exception as err:  # noqa: BLE001 - the compiled path is optional; the model still serves
        logger.warning("compiled trees of %s not loaded (%s: %s)", model_dir, type(err).__name__, err)
        return None


def compile_model(estimator: Any, X_check: np.ndarray, expected: np.ndarray, out_dir: Path,
                  tolerance: float) -> dict[str, Any]:
    """Compile the LightGBM members into ``out_dir`` and check the result against ``expected``
    (the native model's p(yes) of ``X_check``): the ``model.json`` entries to record."""
    members = _members(estimator)
    if not any(_is_lgbm(m) for _, m in members):
        return {}
    try:
        import lleaves  # noqa: F401 - optional: without it large batches use ONNX
    except ImportError:
        return {"compiled_error": "lleaves is not installed"}
    started = time.monotonic()
    written: list[Path] = []
    try:
        files: dict[str, dict[str, str]] = {}
        for i, (_, est) in enumerate(members):
            if not _is_lgbm(est):
                continue
            model_name, object_name = _files(i)
            est.booster_.save_model(str(out_dir / model_name))
            written.append(out_dir / model_name)
            import lleaves

            compiled = lleaves.Model(model_file=str(out_dir / model_name))
            compiled.compile(cache=str(out_dir / object_name), **COMPILE_OPTIONS)
            written.append(out_dir / object_name)
            files[str(i)] = {"model": model_name, "object": object_name}
        info = {"members": files, "cpu": cpu_id(), "min_rows": COMPILED_MIN_ROWS}
        model = load(out_dir, {"compiled": info}, estimator)
        if model is None:
            raise RuntimeError("the compiled trees did not load")
        diff = float(np.max(np.abs(model.predict(X_check) - expected)))
        if not diff <= tolerance:
            raise ValueError(f"compiled predictions differ from the native ones by up to {diff:.2g}")
    except Exception as err:  # noqa: BLE001 - any failure leaves the other paths serving
        for path in written:
            path.unlink(missing_ok=True)
        error = f"{type(err).__name__}: {str(err)[:300]}"
        logger.warning("LightGBM members not compiled, large batches use the other path: %s", error)
        return {"compiled_error": error}
    info["compile_s"] = round(time.monotonic() - started, 2)
    info["max_abs_diff"] = diff
    return {"compiled": info}


def artifact_names(meta_compiled: dict[str, Any] | None) -> list[str]:
    files = (meta_compiled or {}).get("members") or {}
    return [name for f in files.values() for name in (f["model"], f["object"])]


def remove_stale(out_dir: Path) -> None:
    """A model dir written before must not keep another model's compiled trees."""
    for path in out_dir.glob(f"{PREFIX}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
