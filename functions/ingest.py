"""Blob trigger on incoming/{name}: validate, register, submit training (shared/ingest_service.py)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.events import ci_get
from shared.ingest_service import ingest_blob
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)


def blob_name(full: str, container: str) -> str:
    """The name inside the container: the binding's ``name`` is ``<container>/<blob name>``."""
    prefix = container + "/"
    return full[len(prefix) :] if full.startswith(prefix) else full


@bp.function_name("ingest")
@bp.blob_trigger(
    arg_name="blob", path="incoming/{name}", connection="AzureWebJobsStorage", source=func.BlobSource.EVENT_GRID
)
def ingest(blob: func.InputStream) -> None:
    settings, workspace = current()
    name = blob_name(blob.name or "", settings.incoming_container)
    props = blob.blob_properties or {}
    etag = str(ci_get(props, "ETag") or "")
    length = blob.length if blob.length is not None else ci_get(props, "Length", ci_get(props, "ContentLength"))
    size = int(length) if length is not None else None
    # blob.read is passed uncalled: the size is checked first, and the body is read only if needed.
    outcome = ingest_blob(settings, workspace, name=name, etag=etag, size=size, data=blob.read)
    log.info("ingest %s: %s (dataset v%s, run %s)", name, outcome.status, outcome.dataset_version, outcome.run_id)
