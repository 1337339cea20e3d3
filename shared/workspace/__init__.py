"""Backend registry: the workspace port's adapters, chosen by name (BANKML_BACKEND)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from shared.config import SETTINGS, Settings
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


@lru_cache(maxsize=8)
def _settings_for(snapshot: tuple[tuple[str, str | None], ...]) -> Settings:
    return Settings.from_env({name: value for name, value in snapshot if value is not None})


def current() -> tuple[Settings, Any]:
    """Settings from the process environment and the workspace they name.

    Both are cached on a snapshot of the settings' environment variables: a changed variable gives
    new settings at once, and an unchanged environment costs a few dict lookups per request instead
    of parsing every setting again (about a tenth of the function host's CPU per relay request).
    """
    snapshot = tuple((s.env, os.environ.get(s.env)) for s in SETTINGS.values())
    settings = _settings_for(snapshot)
    return settings, _cached(settings)
