"""Blob storage access (Azurite locally, a storage account in Azure)."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings, ExponentialRetry

from shared.config import Settings

# Retries of a storage call inside a function: about 2, 3, 5, 9 and 17 s apart (the SDK's
# default waits 15 s, 18 s and 24 s), and a connection that cannot be opened fails after 5 s. An
# outage longer than that fails the invocation, and the trigger delivers the blob again.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=5, random_jitter_range=1),
    "connection_timeout": 5,
    "read_timeout": 60,
}


@lru_cache(maxsize=8)
def _service(connection: str) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(connection, **CLIENT_OPTIONS)


@lru_cache(maxsize=8)
def _identity_service(account: str) -> BlobServiceClient:
    from azure.identity import DefaultAzureCredential

    # The Functions host's own identity-based connection (AzureWebJobsStorage__accountName).
    return BlobServiceClient(
        f"https://{account}.blob.core.windows.net", credential=DefaultAzureCredential(), **CLIENT_OPTIONS
    )


def has_storage(settings: Settings) -> bool:
    return bool(settings.storage_connection or settings.storage_account_name)


def blob_service(settings: Settings) -> BlobServiceClient:
    """A connection string when there is one (Azurite, tests); otherwise the managed identity."""
    if settings.storage_connection:
        return _service(settings.storage_connection)
    if settings.storage_account_name:
        return _identity_service(settings.storage_account_name)
    return _service(settings.require_storage())  # raises ConfigError naming the settings


def container(settings: Settings, name: str) -> ContainerClient:
    client = blob_service(settings).get_container_client(name)
    try:
        client.create_container()
    except ResourceExistsError:
        pass
    return client


def safe_blob_name(name: str) -> str | None:
    """The blob name inside its container, or None when it tries to leave it."""
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith("/") or any(p in ("..", ".") for p in parts) or "\x00" in name:
        return None
    return name


def put_json(client: ContainerClient, name: str, value: Any) -> dict[str, Any]:
    """Write ``value`` as a JSON blob; returns the upload's properties (``etag``, ...)."""
    return client.get_blob_client(name).upload_blob(
        json.dumps(value, indent=2, default=str).encode(),
        overwrite=True,
        content_settings=ContentSettings(content_type="application/json"),
    )
