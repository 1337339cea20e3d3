"""Large batches through the compiled LightGBM members (shared.workspace.local.compiled): written
and checked at training time, checksummed with the model, the same probabilities as the native
model, and never a reason for a model not to serve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from shared.datagen import generate_frame
from shared.errors import DeploymentError
from shared.workspace.local import compiled
from shared.workspace.local.training import _positive_proba, load_model
from shared.workspace.local.worker import model_checksums
from shared.workspace.local.workspace import verify_model_files

if TYPE_CHECKING:
    from conftest import TrainedModel


def _copy(trained_model: TrainedModel, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(trained_model.model_dir, copy)
    return copy


def _batch(model, rows: int, seed: int = 3) -> np.ndarray:  # noqa: ANN001
    X = model.spec.encode_frame(generate_frame(rows, seed=seed))
    X[::7, 0] = np.nan  # missing values take the trees' default branches on both paths
    return X


def test_training_compiles_the_lightgbm_members_and_records_them(trained_model: TrainedModel) -> None:
    meta = json.loads((trained_model.model_dir / "model.json").read_text())
    info = meta["compiled"]
    lgbm = [str(i) for i, m in enumerate(meta["members"]) if m["learner"] == "lgbm"]
    assert sorted(info["members"]) == lgbm and lgbm
    assert info["cpu"] == compiled.cpu_id() and info["max_abs_diff"] < 1e-6
    names = compiled.artifact_names(info)
    assert names and set(names) <= set(meta["artifacts"])
    for name in names:
        assert (trained_model.model_dir / name).stat().st_size > 0
    # the compiled files are model files: checksummed with the run, verified before a server starts
    assert set(names) <= set(model_checksums(trained_model.model_dir))


def test_large_batches_go_through_the_compiled_trees_with_the_native_probabilities(trained_model: TrainedModel) -> None:
    model = load_model(trained_model.model_dir)
    assert model.compiled is not None and model.batch_serving == "compiled"
    X = _batch(model, 3 * compiled.COMPILED_MIN_ROWS)
    native = _positive_proba(model.estimator, X)
    assert np.max(np.abs(model.compiled.predict(X) - native)) < 1e-9
    assert np.max(np.abs(model.predict_matrix(X) - native)) < 1e-9
    # below the crossover the small-request path (ONNX here) answers, within its float32 tolerance
    small = X[: compiled.COMPILED_MIN_ROWS - 1]
    assert np.max(np.abs(model.predict_matrix(small) - native[: len(small)])) < 1e-4


@pytest.mark.parametrize("damage", ["object missing", "other cpu", "no lleaves entry"])
def test_without_usable_compiled_trees_the_model_still_serves(trained_model: TrainedModel, tmp_path: Path,
                                                              damage: str) -> None:
    copy = _copy(trained_model, tmp_path)
    meta = json.loads((copy / "model.json").read_text())
    before = sorted(p.name for p in copy.iterdir())
    if damage == "object missing":
        for name in compiled.artifact_names(meta["compiled"]):
            if name.endswith(".o"):
                (copy / name).unlink()
        before = sorted(p.name for p in copy.iterdir())
    elif damage == "other cpu":
        meta["compiled"]["cpu"] = "x86_64/another CPU/0000"
    else:
        meta.pop("compiled")
    (copy / "model.json").write_text(json.dumps(meta))
    model = load_model(copy)
    assert model.compiled is None and model.batch_serving == model.serving
    X = _batch(model, 200)
    assert np.max(np.abs(model.predict_matrix(X) - _positive_proba(model.estimator, X))) < 1e-4
    assert sorted(p.name for p in copy.iterdir()) == before  # nothing compiled (or written) at load time


def test_a_damaged_object_file_stops_the_deployment_before_it_loads(trained_model: TrainedModel, tmp_path: Path) -> None:
    copy = _copy(trained_model, tmp_path)
    recorded = model_checksums(copy)
    obj = next(n for n in compiled.artifact_names(json.loads((copy / "model.json").read_text())["compiled"])
               if n.endswith(".o"))
    data = bytearray((copy / obj).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / obj).write_bytes(bytes(data))
    with pytest.raises(DeploymentError, match=f"model file {obj} does not match"):
        verify_model_files(copy, recorded)


def test_compile_refuses_trees_that_disagree_and_leaves_no_files(trained_model: TrainedModel, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    model = load_model(trained_model.model_dir, prefer="native")
    X = _batch(model, 100)
    wrong = _positive_proba(model.estimator, X) + 0.01
    info = compiled.compile_model(model.estimator, X, wrong, out, 1e-4)
    assert "differ from the native ones" in info["compiled_error"] and "compiled" not in info
    assert list(out.iterdir()) == []
