"""Backend registry: the workspace port's adapters, chosen by name (BANKML_BACKEND)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from shared.config import Settings
from shared.errors import ConfigError


def _local(settings: Settings) -> Any:
    from shared.workspace.local.workspace import LocalWorkspace

    return LocalWorkspace(settings)


def _azure(settings: Settings) -> Any:
    # azure-ai-ml is imported inside the adapter, when it first talks to the workspace.
    from shared.workspace.azure.workspace import AzureWorkspace

    return AzureWorkspace(settings)


BACKENDS: dict[str, Callable[[Settings], Any]] = {"local": _local, "azure": _azure}


def get_workspace(settings: Settings) -> Any:
    try:
        factory = BACKENDS[settings.backend]
    except KeyError:
        raise ConfigError(
            f"backend {settings.backend!r} is not available; valid names: {', '.join(sorted(BACKENDS))}",
            setting="BANKML_BACKEND",
        ) from None
    return factory(settings)


@lru_cache(maxsize=4)
def _cached(settings: Settings) -> Any:
    return get_workspace(settings)


def current() -> tuple[Settings, Any]:
    """Settings from the process environment and the workspace they name (cached per settings)."""
    settings = Settings.from_env()
    return settings, _cached(settings)
