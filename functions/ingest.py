"""Blob trigger on incoming/{name}: validate, register, submit training."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.events import ci_get
from shared.ingest_service import ingest_blob
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("ingest")
@bp.blob_trigger(arg_name="blob", path="incoming/{name}", connection="AzureWebJobsStorage")
def ingest(blob: func.InputStream) -> None:
    settings, workspace = current()
    full = blob.name or ""
    prefix = settings.incoming_container + "/"
    name = full[len(prefix):] if full.startswith(prefix) else full
    props = blob.blob_properties or {}
    etag = str(ci_get(props, "ETag") or ci_get(props, "etag") or "").strip('"')
    outcome = ingest_blob(settings, workspace, name=name, data=blob.read(), etag=etag)
    log.info("ingest %s: %s (dataset v%s, run %s)", name, outcome.status, outcome.dataset_version, outcome.run_id)
