from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import SETTINGS, Settings
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_apply_when_unset(tmp_path: Path) -> None:
    s = Settings.from_env({"BANKML_HOME": str(tmp_path)})
    assert s.backend == "local"
    assert s.home == tmp_path.resolve()
    assert s.time_budget_s == 60
    assert s.label_column == "y"
    assert s.max_rows == 10000
    assert s.worker_grace_s is None  # the agent gives max(120 s, the run's budget)
    assert Settings.from_env({"BANKML_WORKER_GRACE_S": "2.5"}).worker_grace_s == 2.5


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BANKML_MAX_ROWS", "many"),
        ("BANKML_TIME_BUDGET_S", "soon"),
        ("BANKML_TIME_BUDGET_S", "0"),
        ("BANKML_BACKEND", "gcp"),
        ("BANKML_WORKER_GRACE_S", "later"),
        ("BANKML_WORKER_GRACE_S", "-1"),
    ],
)
def test_bad_values_fail_fast_naming_the_setting(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({key: value})
    assert info.value.details["setting"] == key
    assert key in info.value.message


def test_secrets_stay_out_of_repr_and_public_dict() -> None:
    secret = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=c2VjcmV0;"
    s = Settings.from_env({"AzureWebJobsStorage": secret, "BANKML_RELAY_KEY": "relaykey123", "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=ik"})
    text = repr(s) + json.dumps(s.public_dict())
    for value in ("c2VjcmV0", "relaykey123", "InstrumentationKey=ik"):
        assert value not in text
    assert s.require_storage() == secret


def test_missing_storage_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="AzureWebJobsStorage"):
        Settings.from_env({}).require_storage()


def test_settings_example_lists_and_explains_every_setting() -> None:
    doc = json.loads((ROOT / "local.settings.json.example").read_text())
    envs = {s.env for s in SETTINGS.values()}
    assert envs <= set(doc["Values"])
    assert envs <= set(doc["_explained"])
    assert all(isinstance(v, str) for v in doc["Values"].values())
    # Secrets have no value in the example.
    for s in SETTINGS.values():
        if s.secret:
            assert doc["Values"][s.env] == ""
