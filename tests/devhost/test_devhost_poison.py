"""Poisoned blobs are kept, listed and retried with back-off against a real Azurite: a blob whose
function fails every attempt is recorded as poisoned (last error, attempt count, next retry),
`bankml status` lists it, and a later retry processes it once the cause of the failure is gone."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azure.storage.blob import BlobServiceClient

import cli
from devhost.azurite import Azurite
from devhost.host import FunctionHost
from devhost.store import DB_FILE, HostStore
from shared.workspace.local.registry import Registry

if TYPE_CHECKING:
    from conftest import Records


def _status(home: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    assert cli.main(["status", "--home", str(home), "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert cli.main(["status", "--home", str(home)]) == 0
    return as_json, capsys.readouterr().out


def test_a_poisoned_blob_is_listed_and_processed_by_a_later_retry(
    make_host: Callable[..., FunctionHost],
    records: Records,
    azurite: Azurite,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    container = f"retrylater-{uuid.uuid4().hex[:12]}"  # no "poison" in it: the toy fails those for good
    home = tmp_path / "home"
    home.mkdir()
    Registry(home / "registry.sqlite")  # a bankml data dir, so that `bankml status` reads it
    host = make_host(container=container, home=home, max_blob_attempts=3, poison_backoff_s=(0.5, 1.0)).start()
    name = "flaky-d5.csv"
    cause = records.path / f"{name}.fail"
    cause.write_text("registry is locked", encoding="utf-8")
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    blob = service.get_container_client(container).get_blob_client(name)
    blob.upload_blob(b"age,y\n30,no\n")
    etag = blob.get_blob_properties().etag
    full = f"{container}/{name}"
    try:
        # Every attempt fails: poisoned, and retried (and failing) again after the back-off.
        records.wait_until(lambda: (host.store.failure("on_blob", full, etag) or (0,))[0] >= 4, timeout=30)
        attempts, poisoned, error = host.store.failure("on_blob", full, etag) or (0, False, "")
        assert poisoned and attempts >= 4 and "flaky cause present: registry is locked" in error
        assert not host.store.has_receipt("on_blob", full, etag)

        status, text = _status(home, capsys)
        (listed,) = [p for p in status["poisoned_blobs"] if p["blob"] == full]
        assert listed["function"] == "on_blob" and listed["etag"] == etag.strip('"')
        assert listed["attempts"] >= 4 and "flaky cause present: registry is locked" in listed["last_error"]
        assert datetime.fromisoformat(listed["retry_at"]) > datetime.fromisoformat(listed["last_failure_at"])
        assert "poisoned blobs" in text and full in text and "registry is locked" in text

        cause.unlink()  # the cause is gone: the next retry processes the blob
        records.wait_until(lambda: host.store.has_receipt("on_blob", full, etag), timeout=30)
    finally:
        cause.unlink(missing_ok=True)
    assert host.store.failure("on_blob", full, etag) is None
    assert host.store.poisoned() == []
    seen = records.blobs(full)
    assert len(seen) >= 5  # 3 attempts, 1+ retries after poisoning, then the one that succeeded
    status, text = _status(home, capsys)
    assert status["poisoned_blobs"] == [] and "poisoned blobs" not in text


def test_the_back_off_schedule_and_never_retried_names(tmp_path: Path) -> None:
    store = HostStore(tmp_path)
    backoff = (60.0, 300.0, 900.0, 3600.0)
    waits = []
    for _ in range(7):
        before = datetime.now().astimezone()
        store.record_failure("f", "c/b.csv", "0x1", "boom", max_attempts=2, backoff_s=backoff)
        poisoned, retry_at = store.poison_retry_at("f", "c/b.csv", "0x1")
        waits.append(None if retry_at is None else round((retry_at - before).total_seconds() / 60))
    assert poisoned
    # not poisoned after the first failure; then 1 min, 5 min, 15 min, then every hour
    assert waits == [None, 1, 5, 15, 60, 60, 60]
    # a name that leaves its container is poisoned with no back-off: never retried
    store.record_failure("f", "c/../x.csv", "0x2", "blob name leaves its container", max_attempts=1)
    assert store.poison_retry_at("f", "c/../x.csv", "0x2") == (True, None)
    assert [p["blob"] for p in store.poisoned()] == ["c/b.csv", "c/../x.csv"]
    store.close()


def test_versions_poisoned_by_an_older_host_are_retried(tmp_path: Path) -> None:
    """host.sqlite written before poisoned versions were retried: they become due, not lost."""
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.executescript(
        "CREATE TABLE blob_failures (function TEXT NOT NULL, blob_name TEXT NOT NULL, etag TEXT NOT NULL, "
        "attempts INTEGER NOT NULL, poisoned INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL, "
        "updated_at TEXT NOT NULL, PRIMARY KEY (function, blob_name, etag));"
        "INSERT INTO blob_failures VALUES ('ingest', 'incoming/d5.csv', '0x5', 5, 1, 'database is locked', '2026-01-01T00:00:00+00:00');"
    )
    db.commit()
    db.close()
    store = HostStore(tmp_path)
    poisoned, retry_at = store.poison_retry_at("ingest", "incoming/d5.csv", "0x5")
    assert poisoned and retry_at is not None and retry_at <= datetime.now().astimezone()
    (listed,) = store.poisoned()
    assert listed["attempts"] == 5 and listed["last_error"] == "database is locked"
    store.close()
