"""Corrupt model files, every way a file on disk goes bad, with real model servers and the real
relay (the truncated-pickle case through the gate is in tests/test_deploy_bluegreen.py):

* a damaged file that no longer loads (garbage, empty, missing, broken model.json) and, worse,
  one that still loads (a flipped byte in the pickle's data): the SHA-256 recorded when the run
  completed stops the deployment before a server starts on it, the failure is recorded on the
  deployment and as the run's decision, and the live model keeps the traffic;
* the live model's own file damaged while it serves, then its server dies: the supervisor does
  not start a server on the damaged file, records why, and keeps trying (with back-off).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from deploy_fixtures import completed_run, register_csv

from shared.config import Settings
from shared.contract import TUTORIAL_CUSTOMERS
from shared.errors import DeploymentError
from shared.relay import Relay
from shared.workspace.local import servers
from shared.workspace.local.worker import model_checksums
from shared.workspace.local.workspace import LocalWorkspace, verify_model_files

if TYPE_CHECKING:
    from conftest import TrainedModel

BODY = json.dumps({"data": [dict(c) for c in TUTORIAL_CUSTOMERS]}).encode()


def flip_a_byte(model_dir: Path) -> None:
    """One byte in the middle of the pickle changed: it usually still loads."""
    pkl = model_dir / "model.pkl"
    data = bytearray(pkl.read_bytes())
    data[len(data) // 2] ^= 0x01
    pkl.write_bytes(bytes(data))


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "garbage pickle": lambda d: (d / "model.pkl").write_bytes(os.urandom(4096)),
    "empty pickle": lambda d: (d / "model.pkl").write_bytes(b""),
    "missing pickle": lambda d: (d / "model.pkl").unlink(),
    "broken model.json": lambda d: (d / "model.json").write_text('{"format": '),
    "flipped byte": flip_a_byte,
}


class Loop:
    def __init__(self, ws: LocalWorkspace, version: int, trained: TrainedModel) -> None:
        self.ws, self.version, self.trained = ws, version, trained
        self.relay = Relay(ws.settings, ws)

    def run_with_checksums(self, model_dir: Path, auc: float) -> tuple[str, Path]:
        """A completed run as the worker records it: metrics and the files' SHA-256; returns the
        run and its model's place in the workspace's store."""
        run_id = completed_run(self.ws, self.version, model_dir, auc)
        row = self.ws.registry.get_run(run_id)
        assert row is not None
        stored = Path(row["model_dir"])
        self.ws.registry.update_run(run_id, best={**row["best"], "checksums": model_checksums(stored)})
        return run_id, stored


@pytest.fixture(scope="module")
def loop(trained_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    home = tmp_path_factory.mktemp("corrupt")
    # Margin -1: every candidate passes the gate, so each one reaches the deployment checks.
    ws = LocalWorkspace(Settings.from_env({"BANKML_HOME": str(home), "BANKML_DEPLOY_MARGIN": "-1"}))
    lp = Loop(ws, register_csv(ws, trained_model.csv), trained_model)
    model_dir = home / "models" / "live"
    shutil.copytree(trained_model.model_dir, model_dir)
    assert ws.deploy_run(lp.run_with_checksums(model_dir, 0.8)[0]).deployed
    try:
        yield lp
    finally:
        ws.stop_servers()


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_damaged_model_file_never_gets_a_server_and_the_live_model_keeps_serving(
    loop: Loop, kind: str, tmp_path: Path
) -> None:
    ws = loop.ws
    live = ws.registry.live_deployment()
    assert live is not None
    model_dir = tmp_path / "model"
    shutil.copytree(loop.trained.model_dir, model_dir)
    run_id, stored = loop.run_with_checksums(model_dir, 0.999)  # recorded when it completed, intact
    CORRUPTIONS[kind](stored)
    answers: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            answers.append(loop.relay.score(BODY, "application/json").status)

    clients = [threading.Thread(target=client) for _ in range(2)]
    for c in clients:
        c.start()
    try:
        with pytest.raises(DeploymentError, match="damaged|missing"):
            ws.deploy_run(run_id)
        time.sleep(0.3)
    finally:
        stop.set()
        for c in clients:
            c.join()
    failed = ws.registry.list_deployments()[-1]
    assert failed["run_id"] == run_id and failed["status"] == "failed" and failed["pid"] is None
    assert "SHA-256" in failed["reason"] or "missing" in failed["reason"]
    decision = next(d for d in ws.registry.decisions() if d["run_id"] == run_id)
    assert not decision["deployed"] and decision["reason"].startswith("deployment failed: model file")
    assert ws.registry.live_deployment()["name"] == live["name"]  # type: ignore[index]
    assert answers and set(answers) == {200}
    assert not ws.server_log(failed["name"]).exists()  # no server was started on it


def test_a_flipped_byte_is_caught_before_anything_loads_the_file(loop: Loop, tmp_path: Path) -> None:
    """Why the checksum: a flipped byte either still loads (and would serve other weights) or makes
    LightGBM's loader abort() the process that loads it (the function host, for the gate). Which
    one depends on where the byte falls; the child process shows which it is here."""
    model_dir = tmp_path / "model"
    shutil.copytree(loop.trained.model_dir, model_dir)
    sums = model_checksums(model_dir)
    flip_a_byte(model_dir)
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from shared.workspace.local.training import load_model; load_model(sys.argv[1])",
         str(model_dir)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
    )
    print(f"loading the damaged file in a child process: exit code {child.returncode}")
    with pytest.raises(DeploymentError, match="model.pkl does not match"):
        verify_model_files(model_dir, sums)
    verify_model_files(loop.trained.model_dir, model_checksums(loop.trained.model_dir))  # intact: passes


def test_the_live_models_file_damaged_then_its_server_dies_is_not_restarted_on_it(loop: Loop) -> None:
    ws = loop.ws
    live = ws.registry.live_deployment()
    assert live is not None
    pkl = Path(live["model_dir"]) / "model.pkl"
    good = pkl.read_bytes()
    pkl.write_bytes(good[: len(good) // 2])
    try:
        os.kill(live["pid"], signal.SIGKILL)
        while servers.is_model_server(live["pid"], live["name"]):
            time.sleep(0.02)
        assert ws.supervise() is None  # not restarted on a damaged file
        row = ws.registry.live_deployment()
        assert row is not None and row["pid"] is None
        assert "the restart failed" in row["reason"] and "does not match the SHA-256" in row["reason"]
        answer = loop.relay.score(BODY, "application/json")
        assert answer.status == 503 and answer.headers["Retry-After"]
        assert ws.status()["services"]["live_server"] == {"name": live["name"], "healthy": False, "detail": "not running"}
        assert ws.supervise() is None  # back-off: no new attempt at once
    finally:
        pkl.write_bytes(good)
    ws._restart_failures.clear()  # the back-off is over (as after its delay)
    assert ws.supervise() == live["name"]  # the file is intact again: restarted
    assert loop.relay.score(BODY, "application/json").status == 200
