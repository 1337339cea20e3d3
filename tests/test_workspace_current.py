"""shared.workspace.current(): cached on the environment, never stale after a change."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import workspace
from shared.errors import ConfigError


def test_current_follows_the_environment_and_caches_while_it_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANKML_BACKEND", "local")
    monkeypatch.setenv("BANKML_HOME", str(tmp_path / "a"))
    first_settings, first_ws = workspace.current()
    again_settings, again_ws = workspace.current()
    assert first_settings.home == tmp_path / "a"
    assert again_settings is first_settings and again_ws is first_ws

    monkeypatch.setenv("BANKML_HOME", str(tmp_path / "b"))
    changed_settings, changed_ws = workspace.current()
    assert changed_settings.home == tmp_path / "b" and changed_ws is not first_ws

    monkeypatch.setenv("BANKML_TIME_BUDGET_S", "-1")
    with pytest.raises(ConfigError, match="BANKML_TIME_BUDGET_S"):
        workspace.current()  # a bad value is refused on every call, never cached
    with pytest.raises(ConfigError, match="BANKML_TIME_BUDGET_S"):
        workspace.current()
