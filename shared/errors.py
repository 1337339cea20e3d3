"""One error hierarchy for the whole app.

Every error carries a stable ``code``, an HTTP ``status`` and ``details`` (field, line, value,
expected ...) that a person can act on. ``to_dict`` is the one JSON shape used by HTTP answers,
rejection records and CLI output.
"""

from __future__ import annotations

import math
from typing import Any

SHOWN_CHARS = 100  # how much of a sent string an error quotes
SHOWN_DIGITS = 30  # a number written with more characters is quoted cut


def shown(value: str, limit: int = SHOWN_CHARS) -> str:
    """``value`` as an error names it: cut to ``limit`` characters (a hostile 100 kB cell or
    string must not become a 100 kB message, log line, answer or rejection record)."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value):,} characters)"


def shown_number(value: int | float) -> int | float | str:
    """A sent number as an error quotes it: as it is, or cut when it has hundreds of digits."""
    text = repr(value)
    return value if len(text) <= SHOWN_DIGITS else f"{text[:24]}... ({len(text)} digits)"


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value ("null", "boolean", "number", "string", "array", "object")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float written as a string ("NaN", "Infinity", "-Infinity"),
    so an error body is strict JSON (``JSON.parse`` and ``allow_nan=False`` read it) whatever the
    offending value was."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class BankmlError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        # Details may quote what was sent (NaN, 1e400 read as inf): never a bare NaN/Infinity token.
        return {"error": {"code": self.code, "message": self.message, **json_safe(self.details)}}


class ConfigError(BankmlError):
    """A setting is missing or malformed (names the setting, never its secret value)."""

    code = "config_error"


class DataError(BankmlError):
    """A dataset file breaks the contract; the file is rejected, not retried."""

    code = "invalid_data"
    status = 400


class RequestError(BankmlError):
    """A scoring or API request is malformed."""

    code = "bad_request"
    status = 400


class UnsupportedMediaType(RequestError):
    code = "unsupported_media_type"
    status = 415


class PayloadTooLarge(RequestError):
    code = "payload_too_large"
    status = 413


class AuthError(BankmlError):
    code = "unauthorized"
    status = 401


class NotFound(BankmlError):
    code = "not_found"
    status = 404


class Conflict(BankmlError):
    code = "conflict"
    status = 409


class NoLiveDeployment(BankmlError):
    code = "no_live_deployment"
    status = 503


class UpstreamError(BankmlError):
    """The model server answered with an error status."""

    code = "upstream_error"
    status = 502


class UpstreamUnavailable(BankmlError):
    code = "upstream_unavailable"
    status = 503


class UpstreamTimeout(BankmlError):
    code = "upstream_timeout"
    status = 504


class WorkspaceError(BankmlError):
    """The workspace (registry, training, deployments) failed."""

    code = "workspace_error"


class TrainingError(WorkspaceError):
    code = "training_failed"


class DeploymentError(WorkspaceError):
    code = "deployment_failed"


class BenchError(BankmlError):
    """The load generator could not run or did not answer in time (not: the target failed)."""

    code = "bench_failed"
