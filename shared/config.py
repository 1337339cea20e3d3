"""One typed settings object, read from an injectable environment; fails fast naming the key.

Every setting the app reads is declared here and documented in ``local.settings.json.example``
(a test checks the two agree). Secrets are never part of ``repr`` or ``public_dict``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shared.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    env: str
    default: str | None
    help: str
    secret: bool = False


# name -> (environment variable, default, help). Order is the documentation order.
SETTINGS: dict[str, Setting] = {
    "backend": Setting("BANKML_BACKEND", "local", "workspace backend: local or azure"),
    "home": Setting("BANKML_HOME", ".bankml", "data dir of the local workspace (registry, artifacts, keys, logs)"),
    "storage_connection": Setting(
        "AzureWebJobsStorage", None, "storage connection string (Azurite locally; set by `bankml up`)", secret=True
    ),
    "function_host_url": Setting(
        "BANKML_FUNCTION_HOST_URL", "http://127.0.0.1:7071", "base URL of the function host (Event Grid webhooks)"
    ),
    "rejected_container": Setting("BANKML_REJECTED_CONTAINER", "rejected", "container for rejected files and reasons"),
    "reports_container": Setting("BANKML_REPORTS_CONTAINER", "reports", "container for benchmark reports"),
    "label_column": Setting("BANKML_LABEL_COLUMN", "y", "name of the label column in dropped CSV files"),
    "max_upload_mb": Setting("BANKML_MAX_UPLOAD_MB", "500", "largest CSV accepted, in MiB (checked before reading)"),
    "experiment_name": Setting("BANKML_EXPERIMENT_NAME", "bankmarketing-automl", "experiment name of training runs"),
    "time_budget_s": Setting("BANKML_TIME_BUDGET_S", "60", "AutoML search time budget per run, seconds"),
    "primary_metric": Setting("BANKML_PRIMARY_METRIC", "AUC_weighted", "metric that picks and gates models"),
    "min_primary_metric": Setting(
        "BANKML_MIN_PRIMARY_METRIC", "0.70", "a first model deploys only at or above this held-out metric"
    ),
    "deploy_margin": Setting(
        "BANKML_DEPLOY_MARGIN", "0.0", "a new model must beat the live one by more than this on the metric"
    ),
    "relay_timeout_s": Setting("BANKML_RELAY_TIMEOUT_S", "30", "relay -> model server timeout, seconds"),
    "liveness_interval_s": Setting(
        "BANKML_LIVENESS_INTERVAL_S",
        "1",
        "local backend: seconds between two health checks of the live model server by the supervisor of `bankml up`",
    ),
    "liveness_timeout_s": Setting(
        "BANKML_LIVENESS_TIMEOUT_S",
        "2",
        "local backend: a health check (GET / of the live model server) not answered 200 within this many seconds fails",
    ),
    "liveness_failures": Setting(
        "BANKML_LIVENESS_FAILURES",
        "3",
        "local backend: the live model server is killed and restarted after this many failed health checks in a row",
    ),
    "warm_standby": Setting(
        "BANKML_WARM_STANDBY",
        "1",
        "local backend: 1 keeps a warm standby server of the live model (a second process, its own port) that takes "
        "over at once when the live server dies or hangs; 0: the server is restarted instead (seconds)",
    ),
    "worker_grace_s": Setting(
        "BANKML_WORKER_GRACE_S",
        "",
        "local backend: a training worker still running after its run's time budget plus this many seconds is "
        "killed (SIGKILL) and the run fails; empty: max(120, the run's time budget)",
    ),
    "max_rows": Setting("BANKML_MAX_ROWS", "10000", "most rows accepted in one scoring request"),
    "max_body_mb": Setting("BANKML_MAX_BODY_MB", "16", "largest scoring request body, MiB"),
    "benchmark_schedule": Setting(
        "BANKML_BENCHMARK_SCHEDULE", "0 */30 * * * *", "NCRONTAB (six fields) of the benchmark timer"
    ),
    "retrain_schedule": Setting(
        "BANKML_RETRAIN_SCHEDULE",
        "",
        "NCRONTAB (six fields) of scheduled retraining on the latest dataset version; empty: off (no timer function)",
    ),
    "bench_requests": Setting("BANKML_BENCH_REQUESTS", "200", "requests per benchmark target (upper bound)"),
    "bench_duration_s": Setting("BANKML_BENCH_DURATION_S", "20", "seconds per benchmark target (upper bound)"),
    "bench_concurrency": Setting("BANKML_BENCH_CONCURRENCY", "4", "concurrent clients of the load generator"),
    "bench_payload_file": Setting(
        "BANKML_BENCH_PAYLOAD_FILE",
        "",
        "JSON scoring request the benchmark sends (relative paths from the app root); empty: the two tutorial customers",
    ),
    "bench_payload_rows": Setting(
        "BANKML_BENCH_PAYLOAD_ROWS",
        "0",
        "when above 0, the benchmark sends this many generated rows per request instead (not with a payload file)",
    ),
    "relay_key": Setting(
        "BANKML_RELAY_KEY", "", "function key the benchmark uses to call the relay (set by `bankml up`)", secret=True
    ),
    "appinsights_connection": Setting(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "",
        "when set, model-server telemetry also goes to Application Insights",
        secret=True,
    ),
    # -- azure backend (BANKML_BACKEND=azure); identities, never keys -------------------------
    "storage_account_name": Setting(
        "AzureWebJobsStorage__accountName",
        "",
        "identity-based storage connection in Azure: the account name (the app's managed identity signs in)",
    ),
    "azure_subscription_id": Setting("AZURE_SUBSCRIPTION_ID", "", "azure backend: subscription of the Azure ML workspace"),
    "azure_resource_group": Setting("AZURE_RESOURCE_GROUP", "", "azure backend: resource group of the Azure ML workspace"),
    "azure_ml_workspace": Setting("AZURE_ML_WORKSPACE", "", "azure backend: name of the Azure ML workspace"),
    "azure_trigger": Setting(
        "BANKML_AZURE_TRIGGER",
        "batch",
        "azure backend: how training starts: 'batch' (batch endpoint hosting the AutoML pipeline component) "
        "or 'pipeline' (POST to a published pipeline's REST endpoint)",
    ),
    "azure_batch_endpoint": Setting(
        "BANKML_AZURE_BATCH_ENDPOINT", "", "azure backend, trigger 'batch': batch endpoint name (scripts/publish_pipeline.py)"
    ),
    "azure_pipeline_url": Setting(
        "BANKML_AZURE_PIPELINE_URL", "", "azure backend, trigger 'pipeline': REST endpoint of the published pipeline"
    ),
    "azure_pipeline_input": Setting(
        "BANKML_AZURE_PIPELINE_INPUT", "training_data", "azure backend: the pipeline's data input (batch input or DataPath parameter)"
    ),
    "azure_online_endpoint": Setting(
        "BANKML_AZURE_ONLINE_ENDPOINT", "", "azure backend: managed online endpoint serving the live model (unique in its region)"
    ),
    "azure_instance_type": Setting("BANKML_AZURE_INSTANCE_TYPE", "Standard_DS3_v2", "azure backend: VM size of each online deployment"),
    "azure_instance_count": Setting("BANKML_AZURE_INSTANCE_COUNT", "1", "azure backend: instances per online deployment"),
    "azure_scoring_script": Setting(
        "BANKML_AZURE_SCORING_SCRIPT",
        "scoring_file_v_1_0_0.py",
        "azure backend: AutoML scoring script deployed with the model (v_1_0_0: {\"data\"} in, double-encoded "
        "{\"result\"} out; v_2_0_0: Inputs/GlobalParameters in, {\"Results\"} out)",
    ),
    "azure_state_container": Setting(
        "BANKML_AZURE_STATE_CONTAINER", "bankml-state", "azure backend: blob container of the app's records (runs, decisions, deployments)"
    ),
}


def _as_int(key: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"setting {key} must be a whole number, got {raw!r}", setting=key) from None


def _as_float(key: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"setting {key} must be a number, got {raw!r}", setting=key) from None


def _azure_settings(raw: Any) -> dict[str, Any]:
    """The azure backend's settings, checked for form here and for presence by the adapter."""
    trigger = raw("azure_trigger").lower()
    if trigger not in ("batch", "pipeline"):
        raise ConfigError(f"setting BANKML_AZURE_TRIGGER must be 'batch' or 'pipeline', got {trigger!r}", setting="BANKML_AZURE_TRIGGER")
    count = _as_int("BANKML_AZURE_INSTANCE_COUNT", raw("azure_instance_count"))
    if count < 1:
        raise ConfigError("setting BANKML_AZURE_INSTANCE_COUNT must be at least 1", setting="BANKML_AZURE_INSTANCE_COUNT")
    names = (
        "storage_account_name", "azure_subscription_id", "azure_resource_group", "azure_ml_workspace",
        "azure_batch_endpoint", "azure_pipeline_url", "azure_pipeline_input", "azure_online_endpoint",
        "azure_instance_type", "azure_scoring_script", "azure_state_container",
    )
    return {**{n: raw(n) for n in names}, "azure_trigger": trigger, "azure_instance_count": count}


def _liveness_settings(raw: Any) -> dict[str, Any]:
    """The supervisor's health checks of the live model server (local backend)."""
    interval = _as_float("BANKML_LIVENESS_INTERVAL_S", raw("liveness_interval_s"))
    timeout = _as_float("BANKML_LIVENESS_TIMEOUT_S", raw("liveness_timeout_s"))
    failures = _as_int("BANKML_LIVENESS_FAILURES", raw("liveness_failures"))
    for key, value in (("BANKML_LIVENESS_INTERVAL_S", interval), ("BANKML_LIVENESS_TIMEOUT_S", timeout)):
        if not 0 < value <= 3600:
            raise ConfigError(f"setting {key} must be above 0 and at most 3600 seconds, got {value:g}", setting=key)
    if failures < 1:
        raise ConfigError(f"setting BANKML_LIVENESS_FAILURES must be at least 1, got {failures}", setting="BANKML_LIVENESS_FAILURES")
    standby = raw("warm_standby").lower()
    if standby not in ("0", "1", "true", "false"):
        raise ConfigError(f"setting BANKML_WARM_STANDBY must be 1 or 0, got {standby!r}", setting="BANKML_WARM_STANDBY")
    return {
        "liveness_interval_s": interval,
        "liveness_timeout_s": timeout,
        "liveness_failures": failures,
        "warm_standby": standby in ("1", "true"),
    }


def worker_grace_default(budget_s: float) -> float:
    """The grace a training worker gets past its time budget when BANKML_WORKER_GRACE_S is empty."""
    return max(120.0, budget_s)


def _worker_grace(raw: str) -> float | None:
    if not raw:
        return None
    grace = _as_float("BANKML_WORKER_GRACE_S", raw)
    if not 0 <= grace <= 86400:
        raise ConfigError(
            f"setting BANKML_WORKER_GRACE_S must be at least 0 and at most 86400 seconds, got {grace:g}",
            setting="BANKML_WORKER_GRACE_S",
        )
    return grace


def _schedule(key: str, raw: str) -> str:
    """An NCRONTAB expression (six fields, seconds first; five-field cron is accepted too), or ""."""
    if not raw:
        return ""
    fields_ = raw.split()
    if len(fields_) not in (5, 6):
        raise ConfigError(
            f"setting {key} must be NCRONTAB with six fields (second minute hour day month day-of-week), got {raw!r}",
            setting=key,
        )
    try:
        from croniter import croniter

        croniter(raw, second_at_beginning=len(fields_) == 6).get_next(float)
    except ImportError:  # pragma: no cover - croniter ships with the local backend
        pass
    except (ValueError, KeyError) as err:
        raise ConfigError(f"setting {key} is not a valid NCRONTAB expression ({raw!r}): {err}", setting=key) from None
    return raw


@dataclass(frozen=True)
class Settings:
    backend: str
    home: Path
    storage_connection: str | None = field(repr=False)
    function_host_url: str
    rejected_container: str
    reports_container: str
    label_column: str
    max_upload_bytes: int
    experiment_name: str
    time_budget_s: float
    primary_metric: str
    min_primary_metric: float
    deploy_margin: float
    relay_timeout_s: float
    max_rows: int
    max_body_bytes: int
    benchmark_schedule: str
    bench_requests: int
    bench_duration_s: float
    bench_concurrency: int
    bench_payload_file: str = ""
    bench_payload_rows: int = 0
    relay_key: str = field(repr=False, default="")
    appinsights_connection: str = field(repr=False, default="")
    retrain_schedule: str = ""
    storage_account_name: str = ""
    azure_subscription_id: str = ""
    azure_resource_group: str = ""
    azure_ml_workspace: str = ""
    azure_trigger: str = "batch"
    azure_batch_endpoint: str = ""
    azure_pipeline_url: str = ""
    azure_pipeline_input: str = "training_data"
    azure_online_endpoint: str = ""
    azure_instance_type: str = "Standard_DS3_v2"
    azure_instance_count: int = 1
    azure_scoring_script: str = "scoring_file_v_1_0_0.py"
    azure_state_container: str = "bankml-state"
    liveness_interval_s: float = 1.0
    liveness_timeout_s: float = 2.0
    liveness_failures: int = 3
    warm_standby: bool = True
    worker_grace_s: float | None = None  # None: max(120, the run's time budget)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def raw(name: str) -> str:
            s = SETTINGS[name]
            value = env.get(s.env)
            if value is None or value == "":
                if s.default is None:
                    return ""
                return s.default
            return value.strip()

        backend = raw("backend").lower()
        if backend not in ("local", "azure"):
            raise ConfigError(f"setting BANKML_BACKEND must be 'local' or 'azure', got {backend!r}", setting="BANKML_BACKEND")
        budget = _as_float("BANKML_TIME_BUDGET_S", raw("time_budget_s"))
        if budget <= 0:
            raise ConfigError("setting BANKML_TIME_BUDGET_S must be above 0", setting="BANKML_TIME_BUDGET_S")
        return cls(
            backend=backend,
            home=Path(raw("home")).expanduser().resolve(),
            storage_connection=raw("storage_connection") or None,
            function_host_url=raw("function_host_url").rstrip("/"),
            rejected_container=raw("rejected_container"),
            reports_container=raw("reports_container"),
            label_column=raw("label_column"),
            max_upload_bytes=int(_as_float("BANKML_MAX_UPLOAD_MB", raw("max_upload_mb")) * 1024 * 1024),
            experiment_name=raw("experiment_name"),
            time_budget_s=budget,
            primary_metric=raw("primary_metric"),
            min_primary_metric=_as_float("BANKML_MIN_PRIMARY_METRIC", raw("min_primary_metric")),
            deploy_margin=_as_float("BANKML_DEPLOY_MARGIN", raw("deploy_margin")),
            relay_timeout_s=_as_float("BANKML_RELAY_TIMEOUT_S", raw("relay_timeout_s")),
            max_rows=_as_int("BANKML_MAX_ROWS", raw("max_rows")),
            max_body_bytes=int(_as_float("BANKML_MAX_BODY_MB", raw("max_body_mb")) * 1024 * 1024),
            benchmark_schedule=raw("benchmark_schedule"),
            bench_requests=_as_int("BANKML_BENCH_REQUESTS", raw("bench_requests")),
            bench_duration_s=_as_float("BANKML_BENCH_DURATION_S", raw("bench_duration_s")),
            bench_concurrency=_as_int("BANKML_BENCH_CONCURRENCY", raw("bench_concurrency")),
            bench_payload_file=raw("bench_payload_file"),
            bench_payload_rows=_as_int("BANKML_BENCH_PAYLOAD_ROWS", raw("bench_payload_rows")),
            relay_key=raw("relay_key"),
            appinsights_connection=raw("appinsights_connection"),
            retrain_schedule=_schedule("BANKML_RETRAIN_SCHEDULE", raw("retrain_schedule")),
            worker_grace_s=_worker_grace(raw("worker_grace_s")),
            **_liveness_settings(raw),
            **_azure_settings(raw),
        )

    # The blob trigger's path names this container (function bindings are static).
    incoming_container = "incoming"

    def require_storage(self) -> str:
        if not self.storage_connection:
            raise ConfigError("setting AzureWebJobsStorage is not set (run the app through `bankml up`)", setting="AzureWebJobsStorage")
        return self.storage_connection

    def public_dict(self) -> dict[str, Any]:
        """Settings without secrets, for reports and `bankml status`."""
        hidden = {name for name, s in SETTINGS.items() if s.secret}
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in hidden:
                continue
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out
