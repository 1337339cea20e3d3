"""Ingest: validate a dropped CSV, register it as a dataset version, submit its training run.

A data error is an outcome, not an exception: the original is moved to `rejected/` with a reason
beside it and the function completes (no retry storm).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared.config import Settings
from shared.errors import DataError
from shared.ingest import parse_csv
from shared.storage import container, put_json, safe_blob_name
from shared.workspace.local.registry import utcnow

log = logging.getLogger(__name__)


@dataclass
class IngestOutcome:
    status: str  # registered | duplicate | rejected | ignored
    blob: str
    reason: dict[str, Any] | None = None
    dataset_version: int | None = None
    run_id: str | None = None


def reject(settings: Settings, name: str, data: bytes, err: DataError, etag: str) -> None:
    rejected = container(settings, settings.rejected_container)
    rejected.upload_blob(name, data, overwrite=True)
    put_json(
        rejected,
        f"{name}.error.json",
        {"blob": f"{settings.incoming_container}/{name}", "etag": etag, "rejected_at": utcnow(), **err.to_dict()},
    )
    # Moved, not copied: incoming/ holds only files that were accepted or are still to come.
    incoming = container(settings, settings.incoming_container)
    try:
        incoming.delete_blob(name, etag=etag, match_condition=_if_match())
    except Exception as e:  # noqa: BLE001 - a newer upload under the same name stays for its own run
        log.info("kept incoming/%s (changed since it was read: %s)", name, type(e).__name__)


def _if_match() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


def ingest_blob(settings: Settings, workspace: Any, *, name: str, data: bytes, etag: str) -> IngestOutcome:
    safe = safe_blob_name(name)
    if safe is None:
        log.warning("refused blob name %r: it leaves its container", name)
        return IngestOutcome("ignored", name, {"error": {"code": "bad_blob_name", "message": "blob name leaves its container"}})
    if len(data) == 0:
        # A zero-length first write is followed by the committed content (its own trigger).
        log.info("ignored incoming/%s: zero-length write", name)
        return IngestOutcome("ignored", name)
    try:
        parsed = parse_csv(data, label=settings.label_column, max_bytes=settings.max_upload_bytes, size=len(data))
    except DataError as err:
        log.warning("rejected incoming/%s: %s", name, err.message)
        reject(settings, name, data, err, etag)
        return IngestOutcome("rejected", name, err.to_dict())
    dataset = workspace.register_dataset(parsed, source_blob=f"{settings.incoming_container}/{name}", etag=etag)
    # Submitting is idempotent per dataset version: a retry after a crash finishes the job once.
    run = workspace.submit_run(dataset.version, trigger="ingest")
    status = "registered" if dataset.created or run.created else "duplicate"
    if status == "duplicate":
        log.info("incoming/%s is dataset v%d again (run %s): nothing to do", name, dataset.version, run.run_id)
    return IngestOutcome(status, name, dataset_version=dataset.version, run_id=run.run_id)
