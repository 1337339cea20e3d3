"""Ingest: validate a dropped CSV, register it as a dataset version, submit its training run.

Every blob version that arrives in ``incoming/`` ends in exactly one of two states, and nothing is
lost or done twice (the decisions below are each proved by tests/test_ingest_service.py):

* **Accepted**: registered as a dataset version (the same content, in any export format, gives
  the same version) with exactly one training run (trigger ``ingest``) per version. The blob
  stays in ``incoming/``.
* **Rejected**: the original moved to ``rejected/<name>`` with ``rejected/<name>.error.json``
  beside it naming column, line, value and what was expected. No dataset version, no run, and
  the function returns normally: a data error is an outcome, not an exception the host retries.

Decisions:

1. *Zero-length blobs.* A writer that creates the blob empty and commits the content later
   (PutBlob of 0 bytes, then PutBlockList) produces two versions. On a zero-length version,
   ingest re-reads the blob's properties for up to ``EMPTY_SETTLE_S``: if the ETag changes (or
   the blob goes), this version is superseded and left alone, because the new ETag fires its own
   trigger and is processed once for the committed content. If it is still the same empty
   version after the delay, it is rejected ("file is empty") unless it holds uncommitted blocks:
   a staged upload in progress is left alone (deleting the blob would discard its blocks and
   break the upload; its commit fires the trigger). An upload abandoned for good stays as an
   empty blob in ``incoming/`` (Azure discards uncommitted blocks after 7 days).
2. *Redelivery.* The host keeps receipts per (name, ETag); ingest itself is idempotent too: the
   same content maps to the same version (content hash) and ``submit_run`` returns the
   version's existing ingest run, so a second delivery is a logged no-op (status
   ``duplicate``), whichever name or ETag brings the content again. A rejected version is
   rejected again with the same result (its ``rejected/`` copy and reason are overwritten).
3. *Crash between "registered" and "pipeline submitted".* The run is looked up or created per
   dataset version, so the retry after such a crash (or any later delivery of the same content)
   submits the missing run, once. If the blob is gone by then, the local stack's start-up sweep
   (``LocalWorkspace.submit_missing_runs``) submits the run of any version that has none.
4. *Blob names.* Spaces, unicode and percent signs are just characters of the name (the host
   passes the decoded name; every storage call quotes it). A name that tries to leave its
   container (``..`` or ``.`` segments with ``/`` or ``\\``, a leading ``/`` or ``\\``, a
   drive letter, control characters) is rejected without ever being used in a storage URL
   (an HTTP client would resolve ``incoming/../reports/x`` to another container): the reason
   goes to ``rejected/unsafe-name-<sha256 of the name>.error.json`` and the body, when it was
   handed over within the size limit, beside it. The blob itself is not touched.
5. *Rejected names.* A rejected file ``x`` writes ``rejected/x`` and ``rejected/x.error.json``,
   so a rejected file whose own name ends in ``.error.json`` is kept as
   ``rejected/reserved-name-<sha256 of the name>`` (reason beside it, naming the original): the two
   never overwrite each other. A version replaced by a newer upload while it was being rejected
   is not moved, and what its rejection wrote to rejected/ is withdrawn (the newer version has
   its own trigger and its own outcome).
6. *Size.* The blob's length (from its properties) is checked before its body is read; a file
   over ``BANKML_MAX_UPLOAD_MB`` is moved to ``rejected/`` by a server-side copy, so its body is
   never read by the app. Accepted files are validated in blocks (shared/ingest.py) so memory
   stays flat: 1,000,000 rows peak well under 1 GB (benchmarks/ingest.py).
7. *Label column.* Named by ``BANKML_LABEL_COLUMN`` (default ``y``), renamed to ``y`` on
   registration.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from shared.config import Settings
from shared.errors import DataError
from shared.ingest import parse_csv
from shared.pipeline import submit_pipeline_run
from shared.storage import container, put_json
from shared.workspace.local.registry import utcnow

log = logging.getLogger(__name__)

# How long a zero-length version may wait for the content that usually follows within
# milliseconds (PutBlob of 0 bytes, then PutBlockList), and how often it looks.
EMPTY_SETTLE_S = 5.0
_SETTLE_POLL_S = 0.25
_COPY_POLL_S = 0.2
_COPY_TIMEOUT_S = 600.0
_DRIVE = re.compile(r"^[A-Za-z]:")
ERROR_SUFFIX = ".error.json"


@dataclass
class IngestOutcome:
    status: str  # registered | duplicate | rejected | ignored
    blob: str
    reason: dict[str, Any] | None = None
    dataset_version: int | None = None
    run_id: str | None = None


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` cannot be used as a blob name inside its container, or None when it can."""
    if not name:
        return "the blob name is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "the blob name contains a control character"
    if name[0] in "/\\":
        return "the blob name is an absolute path"
    if _DRIVE.match(name):
        return "the blob name starts with a drive letter"
    if any(part in (".", "..") for part in re.split(r"[/\\]", name)):
        return "the blob name has a '.' or '..' path segment that leaves its container"
    return None


# Azure's longest blob name; Azurite does not enforce it.
MAX_BLOB_NAME = 1024


def rejected_name(name: str) -> str:
    """The name of a rejected file in rejected/: its own name, except that a name ending in
    ``.error.json`` would collide with the reason of the file named without that suffix (a
    rejected ``x`` writes ``x.error.json``), so such a file is kept as
    ``reserved-name-<sha256 of the name>`` and its reason, which names the original, beside it.
    A name too long to carry the ``.error.json`` suffix within the blob name limit (1,024
    characters) is kept as ``long-name-<sha256 of the name>`` the same way."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    if len(name) + len(ERROR_SUFFIX) > MAX_BLOB_NAME:
        return f"long-name-{digest}"
    if not name.endswith(ERROR_SUFFIX):
        return name
    return f"reserved-name-{digest}"


def _etag(value: Any) -> str:
    return str(value or "").strip().strip('"')


def _quoted(etag: str) -> str:
    return f'"{etag}"'


def ingest_blob(
    settings: Settings,
    workspace: Any,
    *,
    name: str,
    etag: str,
    data: bytes | Callable[[], bytes],
    size: int | None = None,
    settle_s: float = EMPTY_SETTLE_S,
) -> IngestOutcome:
    """Process one blob version of ``incoming/<name>``. ``data`` is the body or a callable that
    reads it (called only when the body is needed); ``size`` is the blob's length when known."""
    etag = _etag(etag)
    reason = unsafe_name_reason(name)
    if reason is not None:
        return _reject_unsafe_name(settings, name, etag, data, size, reason)
    if size is not None and size > settings.max_upload_bytes:
        return _reject_unread(settings, name, etag, size)
    if size == 0:
        return _zero_length(settings, name, etag, settle_s)
    body = data() if callable(data) else data
    if not body:
        return _zero_length(settings, name, etag, settle_s)
    try:
        parsed = parse_csv(body, label=settings.label_column, max_bytes=settings.max_upload_bytes, size=len(body))
    except DataError as err:
        log.warning("rejected incoming/%s: %s", name, err.message)
        if not reject(settings, name, body, err, etag):
            return IngestOutcome("ignored", name, {"message": "superseded while it was being rejected"})
        return IngestOutcome("rejected", name, err.to_dict())
    del body
    dataset = workspace.register_dataset(parsed, source_blob=f"{settings.incoming_container}/{name}", etag=etag)
    # Submitting is idempotent per dataset version: a retry after a crash finishes the job once.
    run = submit_pipeline_run(settings, workspace, trigger="ingest", dataset_version=dataset.version)
    status = "registered" if dataset.created or run.created else "duplicate"
    if status == "duplicate":
        log.info(
            "incoming/%s (ETag %s) is dataset v%d again, run %s: nothing to do", name, etag, dataset.version, run.run_id
        )
    elif not dataset.created:
        log.info("incoming/%s: dataset v%d had no ingest run yet; submitted %s", name, dataset.version, run.run_id)
    return IngestOutcome(status, name, dataset_version=dataset.version, run_id=run.run_id)


# --------------------------------------------------------------------------------------------
# rejections


def _record(settings: Settings, name: str, etag: str, err: DataError, **extra: Any) -> dict[str, Any]:
    return {
        "blob": f"{settings.incoming_container}/{name}",
        "etag": etag,
        "rejected_at": utcnow(),
        **extra,
        **err.to_dict(),
    }


def _delete_from_incoming(incoming: ContainerClient, name: str, etag: str) -> bool:
    """Delete this version of ``incoming/<name>``; False when a newer upload replaced it meanwhile.

    Moved, not copied: incoming/ holds only files that were accepted or are still to come. Only
    this version: a newer upload under the same name stays for its own trigger."""
    try:
        incoming.delete_blob(name, etag=_quoted(etag), match_condition=MatchConditions.IfNotModified)
    except ResourceModifiedError:
        log.info("kept incoming/%s: it changed since this version (%s) was read", name, etag)
        return False
    except ResourceNotFoundError:
        log.info("incoming/%s is already gone", name)
    return True


def _withdraw(rejected: ContainerClient, written: dict[str, Any]) -> None:
    """Remove what a rejection wrote to rejected/, each blob only if it still is what was written
    (a rejection of a newer version under the same name may have replaced it meanwhile)."""
    for blob_name, blob_etag in written.items():
        try:
            rejected.delete_blob(blob_name, etag=blob_etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass


def reject(settings: Settings, name: str, data: bytes, err: DataError, etag: str) -> bool:
    """Move ``incoming/<name>`` (this version) to ``rejected/<name>`` with the reason beside it.

    Returns False when the version was replaced by a newer upload before it could be moved: what
    was written to rejected/ is withdrawn (it describes a version nobody will see again and would
    contradict the newer one's outcome), and the newer version has its own trigger."""
    rejected = container(settings, settings.rejected_container)
    stored = rejected_name(name)
    extra = {} if stored == name else {"original": f"{settings.rejected_container}/{stored}"}
    # Copy, reason, then delete: a crash in between leaves the original where a retry finds it.
    copy = rejected.get_blob_client(stored).upload_blob(data, overwrite=True)
    record = put_json(rejected, f"{stored}.error.json", _record(settings, name, etag, err, **extra))
    if _delete_from_incoming(container(settings, settings.incoming_container), name, etag):
        return True
    _withdraw(rejected, {stored: copy["etag"], f"{stored}.error.json": record["etag"]})
    log.info("incoming/%s version %s was replaced while it was being rejected; its rejection is withdrawn", name, etag)
    return False


def _reject_unread(settings: Settings, name: str, etag: str, size: int) -> IngestOutcome:
    """Over the size limit: moved by a server-side copy, the body is never read here."""
    err = DataError(
        f"file is too large: {size:,} bytes, the limit is {settings.max_upload_bytes:,} bytes"
        " (setting BANKML_MAX_UPLOAD_MB)",
        value=size,
        expected=f"at most {settings.max_upload_bytes} bytes",
    )
    log.warning("rejected incoming/%s: %s", name, err.message)
    incoming = container(settings, settings.incoming_container)
    rejected = container(settings, settings.rejected_container)
    stored = rejected_name(name)
    extra = {} if stored == name else {"original": f"{settings.rejected_container}/{stored}"}
    target = rejected.get_blob_client(stored)
    try:
        target.start_copy_from_url(
            incoming.get_blob_client(name).url,
            source_etag=_quoted(etag),
            source_match_condition=MatchConditions.IfNotModified,
        )
    except (ResourceModifiedError, ResourceNotFoundError) as e:
        log.info(
            "incoming/%s version %s is gone or replaced (%s); its successor has its own trigger",
            name,
            etag,
            type(e).__name__,
        )
        return IngestOutcome("ignored", name, {"message": "superseded before it could be moved"})
    _wait_for_copy(target)
    put_json(rejected, f"{stored}.error.json", _record(settings, name, etag, err, **extra))
    _delete_from_incoming(incoming, name, etag)
    return IngestOutcome("rejected", name, err.to_dict())


def _wait_for_copy(target: BlobClient) -> None:
    deadline = time.monotonic() + _COPY_TIMEOUT_S
    while True:
        copy = target.get_blob_properties().copy
        status = str(getattr(copy, "status", None) or "success")
        if status == "success":
            return
        if status != "pending" or time.monotonic() > deadline:
            # A storage failure, not a data error: raise so that the host retries this version.
            raise RuntimeError(f"copying {target.blob_name} to {target.container_name}/ ended as {status!r}")
        time.sleep(_COPY_POLL_S)


def _reject_unsafe_name(
    settings: Settings, name: str, etag: str, data: bytes | Callable[[], bytes], size: int | None, reason: str
) -> IngestOutcome:
    err = DataError(
        f"{reason}: {name!r}", value=name, expected="a blob name inside incoming/ (no '..', no leading '/')"
    )
    log.warning("rejected blob name %r: %s", name, reason)
    safe = f"unsafe-name-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
    rejected = container(settings, settings.rejected_container)
    kept = None
    if size is None or size <= settings.max_upload_bytes:
        body = data() if callable(data) else data
        if len(body) <= settings.max_upload_bytes:
            rejected.upload_blob(safe, body, overwrite=True)
            kept = f"{settings.rejected_container}/{safe}"
    put_json(rejected, f"{safe}.error.json", _record(settings, name, etag, err, original=kept))
    return IngestOutcome("rejected", name, err.to_dict())


# --------------------------------------------------------------------------------------------
# zero-length versions


def _zero_length(settings: Settings, name: str, etag: str, settle_s: float) -> IngestOutcome:
    blob = container(settings, settings.incoming_container).get_blob_client(name)
    deadline = time.monotonic() + settle_s
    while True:
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            log.info("incoming/%s: zero-length version %s is gone; nothing to do", name, etag)
            return IngestOutcome("ignored", name, {"message": "zero-length version deleted"})
        current = _etag(props.etag)
        if current != etag:
            log.info(
                "incoming/%s: zero-length version %s was replaced by %s (%s bytes), which has its own trigger",
                name,
                etag,
                current,
                props.size,
            )
            return IngestOutcome("ignored", name, {"message": "zero-length version superseded"})
        if time.monotonic() >= deadline:
            break
        time.sleep(min(_SETTLE_POLL_S, max(0.0, deadline - time.monotonic())))
    if _has_uncommitted_blocks(blob):
        log.info("incoming/%s: empty with uncommitted blocks, an upload in progress; its commit fires again", name)
        return IngestOutcome("ignored", name, {"message": "upload in progress (uncommitted blocks)"})
    err = DataError("file is empty", expected="a header line and data rows", value=0)
    log.warning("rejected incoming/%s: still empty after %.1f s", name, settle_s)
    if not reject(settings, name, b"", err, etag):
        return IngestOutcome("ignored", name, {"message": "zero-length version superseded while it was being rejected"})
    return IngestOutcome("rejected", name, err.to_dict())


def _has_uncommitted_blocks(blob: BlobClient) -> bool:
    try:
        _committed, uncommitted = blob.get_block_list("uncommitted")
    except ResourceNotFoundError:
        return False
    return bool(uncommitted)
