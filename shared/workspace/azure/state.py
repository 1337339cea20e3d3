"""The app's own records in Azure: small JSON blobs in one container of the app's storage account.

Function instances come and go, so what the local registry keeps in SQLite lives here: submitted
runs, the one decision per run, deployments, dataset index. ``create`` is a conditional write
(If-None-Match: *), which makes "first delivery wins" hold across instances.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from shared.config import Settings
from shared.errors import ConfigError

log = logging.getLogger(__name__)

_JSON = ContentSettings(content_type="application/json")


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def blob_service(settings: Settings, credential: Any) -> BlobServiceClient:
    """A connection string when there is one (Azurite, tests); otherwise the identity-based
    connection the Functions host uses too (``AzureWebJobsStorage__accountName`` + managed identity)."""
    if settings.storage_connection:
        return BlobServiceClient.from_connection_string(settings.storage_connection)
    if settings.storage_account_name:
        return BlobServiceClient(f"https://{settings.storage_account_name}.blob.core.windows.net", credential=credential)
    raise ConfigError(
        "no storage connection: set AzureWebJobsStorage__accountName (identity-based, in Azure) or AzureWebJobsStorage",
        setting="AzureWebJobsStorage__accountName",
    )


class BlobState:
    """JSON documents by key (``runs/<id>.json`` ...) with conditional writes."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container
        self._ready = False

    def _client(self) -> ContainerClient:
        if not self._ready:
            try:
                self.container.create_container()
            except ResourceExistsError:
                pass
            self._ready = True
        return self.container

    def get(self, key: str) -> tuple[dict[str, Any], str] | None:
        """(document, etag) or None."""
        try:
            downloader = self._client().download_blob(key)
        except ResourceNotFoundError:
            return None
        return json.loads(downloader.readall()), str(downloader.properties.etag)

    def doc(self, key: str) -> dict[str, Any] | None:
        found = self.get(key)
        return found[0] if found else None

    def create(self, key: str, doc: dict[str, Any]) -> bool:
        """Write only if absent; False when another writer was first."""
        try:
            self._client().upload_blob(key, _dump(doc), overwrite=False, content_settings=_JSON)
        except ResourceExistsError:
            return False
        return True

    def put(self, key: str, doc: dict[str, Any], *, etag: str | None = None) -> bool:
        """Write; with ``etag`` only if unchanged since it was read (False when it changed)."""
        kwargs: dict[str, Any] = {}
        if etag:
            kwargs = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            self._client().upload_blob(key, _dump(doc), overwrite=True, content_settings=_JSON, **kwargs)
        except (ResourceModifiedError, ResourceExistsError):
            return False
        return True

    def delete(self, key: str) -> None:
        try:
            self._client().delete_blob(key)
        except ResourceNotFoundError:
            pass

    def update(self, key: str, **changes: Any) -> dict[str, Any]:
        """Read-modify-write with optimistic concurrency (retried when another writer interleaves)."""
        for _ in range(8):
            found = self.get(key)
            if found is None:
                doc: dict[str, Any] = dict(changes)
                if self.create(key, doc):
                    return doc
                continue
            doc, etag = found
            doc.update(changes)
            if self.put(key, doc, etag=etag):
                return doc
        raise RuntimeError(f"record {key} kept changing while it was updated")

    def list(self, prefix: str) -> list[dict[str, Any]]:
        out = []
        for item in self._client().list_blobs(name_starts_with=prefix):
            found = self.get(item.name)
            if found:
                out.append(found[0])
        return out


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, default=str, sort_keys=True).encode()
