"""The one mapper from errors to HTTP answers of the function app."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from shared.errors import BankmlError

log = logging.getLogger(__name__)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, headers=headers, mimetype="application/json")


def error_response(err: BankmlError, headers: dict[str, str] | None = None) -> func.HttpResponse:
    if err.status >= 500:
        log.error("%s: %s", err.code, err.message)
    return json_response(err.to_dict(), err.status, headers)
