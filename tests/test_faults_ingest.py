"""Ingest against real faults, at unit level with real processes and a real Azurite: the process
doing ingest SIGKILLed inside registration and between "registered" and "submitted" (the kill
is injected in a child process at the exact point), then the start-up sweep and redelivery; a
version replaced while it was being rejected; rejected names that would collide."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core import MatchConditions
from azure.storage.blob import BlobServiceClient, ContainerClient

from devhost.azurite import Azurite
from shared.config import Settings
from shared.datagen import generate_frame
from shared.ingest import canonical_csv
from shared.ingest_service import IngestOutcome, ingest_blob, rejected_name
from shared.workspace.local.workspace import LocalWorkspace

ROOT = Path(__file__).resolve().parents[1]

# The child: ingest one blob as the function does, with a SIGKILL injected at ``point``.
CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
from shared.config import Settings
import shared.ingest_service as service
import shared.workspace.local.workspace as workspace
from shared.workspace.local.workspace import LocalWorkspace

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[1]
if point == "after-register":
    service.submit_pipeline_run = die
elif point == "inside-register":
    workspace.os.replace = die  # the canonical CSV is written, the version row is not committed
settings = Settings.from_env()
blob = service.container(settings, "incoming").download_blob(sys.argv[2])
service.ingest_blob(settings, LocalWorkspace(settings), name=sys.argv[2], etag=blob.properties.etag,
                    size=blob.properties.size, data=blob.readall())
print("not killed")
"""


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    if not (ROOT / "node_modules" / ".bin" / "azurite-blob").exists():
        pytest.skip("Azurite is not installed: run `make install`")
    az = Azurite(tmp_path_factory.mktemp("azurite"), port=0).start()
    try:
        yield az
    finally:
        az.stop()


@pytest.fixture()
def settings(azurite: Azurite, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"AzureWebJobsStorage": azurite.connection_string, "BANKML_HOME": str(tmp_path / "home"), "BANKML_BACKEND": "local"}
    )


def client(settings: Settings, name: str) -> ContainerClient:
    c = BlobServiceClient.from_connection_string(settings.require_storage()).get_container_client(name)
    if not c.exists():
        c.create_container()
    return c


def drop(settings: Settings, name: str, data: bytes) -> str:
    return str(client(settings, "incoming").get_blob_client(name).upload_blob(data, overwrite=True)["etag"]).strip('"')


def ingest(settings: Settings, name: str, *, settle_s: float = 0.4) -> IngestOutcome:
    blob = client(settings, "incoming").download_blob(name)
    data = blob.readall()
    return ingest_blob(
        settings, LocalWorkspace(settings), name=name, etag=blob.properties.etag, size=blob.properties.size,
        data=data, settle_s=settle_s,
    )


def killed_child(settings: Settings, point: str, name: str) -> None:
    env = {
        **os.environ,
        "AzureWebJobsStorage": settings.require_storage(),
        "BANKML_HOME": str(settings.home),
        "BANKML_BACKEND": "local",
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD.format(root=str(ROOT))), point, name],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr[-2000:])


def csv(seed: int) -> bytes:
    return canonical_csv(generate_frame(300, seed))


def test_killed_inside_registration_the_redelivery_registers_once(settings: Settings) -> None:
    name = f"{uuid.uuid4().hex[:8]}-bank.csv"
    drop(settings, name, csv(1))
    killed_child(settings, "inside-register", name)
    ws = LocalWorkspace(settings)
    assert ws.registry.list_datasets() == [] and ws.registry.list_runs() == []  # nothing half-registered
    assert (settings.home / "datasets" / "v1" / "data.csv.tmp").exists()  # the dead process's leftover
    first = ingest(settings, name)  # the host delivers the blob again (no receipt was written)
    assert (first.status, first.dataset_version) == ("registered", 1)
    assert ingest(settings, name).status == "duplicate"
    assert len(ws.registry.list_datasets()) == 1 and len(ws.registry.list_runs()) == 1
    assert Path(ws.registry.get_dataset(1)["path"]).read_bytes() == csv(1)


def test_killed_between_registered_and_submitted_the_start_up_sweep_submits_the_run_once(settings: Settings) -> None:
    name = f"{uuid.uuid4().hex[:8]}-bank.csv"
    drop(settings, name, csv(2))
    killed_child(settings, "after-register", name)
    ws = LocalWorkspace(settings)
    (dataset,) = ws.registry.list_datasets()
    assert ws.registry.list_runs() == []
    ws.reconcile()  # what `bankml up` does at start
    (run,) = ws.registry.list_runs()
    assert (run["dataset_version"], run["trigger"], run["status"]) == (dataset["version"], "ingest", "Queued")
    assert ws.reconcile() is None and len(ws.registry.list_runs()) == 1  # a second start: nothing new
    # The blob is still in incoming/ without a receipt: its redelivery finds the run, adds nothing.
    again = ingest(settings, name)
    assert (again.status, again.run_id) == ("duplicate", run["run_id"])
    assert len(ws.registry.list_runs()) == 1


def test_the_sweep_and_a_redelivery_at_the_same_time_make_one_run(settings: Settings) -> None:
    name = f"{uuid.uuid4().hex[:8]}-bank.csv"
    drop(settings, name, csv(3))
    killed_child(settings, "after-register", name)
    outcomes: list[IngestOutcome] = []
    workers = [threading.Thread(target=lambda: outcomes.append(ingest(settings, name))) for _ in range(3)]
    for w in workers:
        w.start()
    swept = LocalWorkspace(settings).submit_missing_runs()
    for w in workers:
        w.join()
    runs = LocalWorkspace(settings).registry.list_runs()
    assert len(runs) == 1
    assert {o.run_id for o in outcomes} == {runs[0]["run_id"]} and swept in ([], [runs[0]["run_id"]])


def test_a_version_replaced_while_it_is_rejected_leaves_no_stale_rejection(settings: Settings) -> None:
    """An empty blob that stays empty past the settle delay is rejected, but the real content
    lands just before the move: the empty version is not moved, its rejection is withdrawn, and
    the new version is accepted on its own trigger."""
    name = f"{uuid.uuid4().hex[:8]}-late-commit.csv"
    empty_etag = drop(settings, name, b"")
    incoming = client(settings, "incoming")
    original_delete = ContainerClient.delete_blob

    def overwrite_first(self: ContainerClient, blob: str, *args: object, **kwargs: object) -> object:
        if self.container_name == "incoming" and blob == name:
            drop(settings, name, csv(4))  # the writer's commit arrives at this moment
        return original_delete(self, blob, *args, **kwargs)

    ContainerClient.delete_blob = overwrite_first  # type: ignore[method-assign]
    try:
        late = ingest_blob(settings, LocalWorkspace(settings), name=name, etag=empty_etag, size=0, data=b"", settle_s=0.3)
    finally:
        ContainerClient.delete_blob = original_delete  # type: ignore[method-assign]
    assert late.status == "ignored" and "superseded" in late.reason["message"]
    rejected = client(settings, "rejected")
    assert not rejected.get_blob_client(name).exists() and not rejected.get_blob_client(f"{name}.error.json").exists()
    assert incoming.get_blob_client(name).exists()
    assert ingest(settings, name).status == "registered"


def test_a_withdrawal_never_removes_a_newer_rejection_of_the_same_name(settings: Settings) -> None:
    from shared.ingest_service import _withdraw

    name = f"{uuid.uuid4().hex[:8]}-x.csv"
    rejected = client(settings, "rejected")
    old = rejected.get_blob_client(name).upload_blob(b"old", overwrite=True)
    rejected.get_blob_client(name).upload_blob(b"newer", overwrite=True)  # another rejection since
    _withdraw(rejected, {name: old["etag"]})
    assert rejected.download_blob(name, match_condition=MatchConditions.IfPresent).readall() == b"newer"


def test_rejected_names_never_overwrite_each_other(settings: Settings) -> None:
    base = f"{uuid.uuid4().hex[:8]}-x"
    bad_a, bad_b = b"age,job\n1,2\n", b"not,a,bank,file\n"
    drop(settings, f"{base}.error.json", bad_a)
    drop(settings, base, bad_b)
    assert ingest(settings, f"{base}.error.json").status == "rejected"
    assert ingest(settings, base).status == "rejected"
    rejected = client(settings, "rejected")
    kept = rejected_name(f"{base}.error.json")
    assert kept.startswith("reserved-name-")
    assert rejected.download_blob(kept).readall() == bad_a
    record_a = json.loads(rejected.download_blob(f"{kept}.error.json").readall())
    assert record_a["blob"] == f"incoming/{base}.error.json" and record_a["original"] == f"rejected/{kept}"
    assert rejected.download_blob(base).readall() == bad_b
    record_b = json.loads(rejected.download_blob(f"{base}.error.json").readall())
    assert record_b["blob"] == f"incoming/{base}"  # x's reason, not x.error.json's copy
    assert rejected_name("plain.csv") == "plain.csv"


def test_bankml_drop_with_storage_down_says_so_at_once_and_uploads_nothing(tmp_path: Path) -> None:
    """A stack whose Azurite does not answer (a port nothing listens on): `bankml drop` names the
    unreachable storage within its short wait instead of the storage client's minute of retries."""
    import socket

    home = tmp_path / "home"
    home.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    (home / "stack.json").write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:1", "azurite_port": dead_port}))
    csv = tmp_path / "d.csv"
    csv.write_bytes(canonical_csv(generate_frame(120, seed=1)))
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "drop", str(csv), "--home", str(home)], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode != 0
    assert "storage unreachable" in proc.stderr and f"127.0.0.1:{dead_port}" in proc.stderr
    assert "nothing was uploaded" in proc.stderr and "Traceback" not in proc.stderr
    assert "uploaded" not in proc.stdout
