"""Helpers of the deployment tests: registered datasets, completed runs, and model directories.

Models are real: the session's trained model (tests/conftest.py), a deliberately useless one (a
scikit-learn DummyClassifier behind the same feature spec: AUC 0.5 on any rows) and a corrupt copy
(a truncated model.pkl).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import joblib

from shared.ingest import parse_csv
from shared.workspace.base import COMPLETED
from shared.workspace.local.registry import utcnow
from shared.workspace.local.workspace import LocalWorkspace


def register_csv(ws: LocalWorkspace, csv: Path, name: str = "incoming/train.csv") -> int:
    parsed = parse_csv(csv.read_bytes(), max_bytes=10**9)
    return ws.register_dataset(parsed, source_blob=name, etag=name).version


def _in_store(ws: LocalWorkspace, run_id: str, model_dir: Path | str) -> Path:
    """The model copied into the store; a model dir that does not exist (a test of files gone
    missing) stays missing there too."""
    if Path(model_dir).exists():
        return ws.store_model(run_id, model_dir)
    return ws.run_dir(run_id) / "model"


def completed_run(ws: LocalWorkspace, dataset_version: int, model_dir: Path | str, recorded_auc: float) -> str:
    """A run as the training worker leaves it, with ``recorded_auc`` as its recorded held-out metric.

    The model is copied into the workspace's store (``<home>/runs/<run>/model``), as the worker
    writes it: the workspace serves models from its own store only."""
    run = ws.submit_run(dataset_version, trigger="api")
    model_dir = _in_store(ws, run.run_id, model_dir)
    ws.registry.update_run(
        run.run_id,
        status=COMPLETED,
        best={"learner": "test", "metrics": {"AUC_weighted": recorded_auc}},
        model_dir=str(model_dir),
        started_at=utcnow(),
        ended_at=utcnow(),
        event_published=1,  # no agent runs here; keep it that way if one is started
    )
    return run.run_id


def dummy_model(real_model_dir: Path, out: Path, csv: Path) -> Path:
    """A loadable, servable model that predicts the class prior for every row (AUC 0.5)."""
    from sklearn.dummy import DummyClassifier

    from shared.workspace.local.training import _read_dataset, load_model

    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = json.loads((real_model_dir / "model.json").read_text())
    spec = load_model(real_model_dir).spec
    frame, y = _read_dataset(csv, "y")
    joblib.dump(DummyClassifier(strategy="prior").fit(spec.encode_frame(frame), y), out / "model.pkl")
    meta["learner"] = "dummy"
    (out / "model.json").write_text(json.dumps(meta))
    return out


def corrupt_model(real_model_dir: Path, out: Path) -> Path:
    """A copy whose model.pkl is cut in half: it neither loads nor serves."""
    shutil.copytree(real_model_dir, out)
    data = (real_model_dir / "model.pkl").read_bytes()
    (out / "model.pkl").write_bytes(data[: len(data) // 2])
    return out


def fake_live(ws: LocalWorkspace, run_id: str, model_dir: Path | str, name: str = "bankml-v1") -> None:
    """A live deployment row without a server: the gate only reads the registry and model files."""
    model_dir = _in_store(ws, run_id, model_dir)
    with ws.registry.transaction() as db:
        db.execute(
            "INSERT INTO deployments (name, run_id, model_version, status, port, key, model_dir, metrics, created_at, live_at)"
            " VALUES (?, ?, 1, 'live', 1, 'k', ?, '{}', ?, ?)",
            (name, run_id, str(model_dir), utcnow(), utcnow()),
        )
