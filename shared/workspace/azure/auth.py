"""Tokens for Azure: one credential per process, scopes named once.

In Azure the credential is the function app's managed identity (through DefaultAzureCredential);
tests pass any object with ``get_token(*scopes)``, the azure-core TokenCredential protocol.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

# Azure Resource Manager audience: published pipelines (azureml-core sends an ARM token) and the
# workspace's MLflow REST API (azureml-examples using_mlflow_rest_api: resource management.azure.com).
ARM_SCOPE = "https://management.azure.com/.default"
# Azure ML data plane audience: batch endpoint invocation (azure-ai-ml batch_endpoints.invoke).
ML_SCOPE = "https://ml.azure.com/.default"


class TokenCredential(Protocol):
    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


@lru_cache(maxsize=1)
def default_credential() -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    # The managed identity in Azure; `az login` (AzureCliCredential) on a workstation.
    return DefaultAzureCredential()


def bearer(credential: TokenCredential, scope: str) -> str:
    """The Authorization header value for ``scope`` (azure-identity caches and renews the token)."""
    return f"Bearer {credential.get_token(scope).token}"
