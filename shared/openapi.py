"""The OpenAPI 2.0 (Swagger) document of a scoring endpoint, shaped like the one Azure ML serves.

One builder for the model server (``base_path="/"``, ``Authorization: Bearer <key>``) and the
relay (``base_path="/api"``, the function key as ``x-functions-key`` or ``?code=``). Columns and
types come from shared.contract; the category values listed are the ones the live model saw in
training (from its ``model.json``). Swagger 2.0 has no ``oneOf``, so the v2 envelope is the body
schema (as in Azure's generated document) and the legacy envelope is described next to it. The
examples are real: the request holds the two customers of the Azure ML tutorial and the error
example is what shared.scoring answers for a bad value.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from shared.contract import FEATURES, MAX_INTEGER, TUTORIAL_CUSTOMERS
from shared.errors import RequestError

logger = logging.getLogger(__name__)

UNSEEN_CATEGORIES = (
    "A category the model did not see in training is not an error: it is scored as a missing value "
    "(the answer is the model's prediction without that column), and the answer header "
    "x-bankml-unseen-categories names such columns."
)

# (securityDefinitions, the security requirement of POST /score): alternatives, any one suffices.
BEARER_SECURITY: dict[str, Any] = {
    "Bearer": {
        "type": "apiKey",
        "name": "Authorization",
        "in": "header",
        "description": "For example: Bearer abc123",
    }
}
FUNCTION_KEY_SECURITY: dict[str, Any] = {
    "functionKey": {
        "type": "apiKey",
        "name": "x-functions-key",
        "in": "header",
        "description": "The function key (`bankml keys` locally, the function app's keys in Azure).",
    },
    "functionCode": {
        "type": "apiKey",
        "name": "code",
        "in": "query",
        "description": "The function key as the query parameter ?code=",
    },
}

_TYPES: dict[str, dict[str, Any]] = {
    # The range ingest and scoring enforce (shared.contract.MAX_INTEGER); integral floats pass too.
    "integer": {"type": "integer", "format": "int64", "minimum": -MAX_INTEGER, "maximum": MAX_INTEGER},
    "number": {"type": "number", "format": "double"},
    "string": {"type": "string"},
}


def _row_schema(categories: dict[str, list[str]]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for col in FEATURES:
        prop: dict[str, Any] = dict(_TYPES[col.kind])
        description = col.description
        seen = categories.get(col.name)
        if seen:
            # Not an enum: other strings are accepted and scored as an unknown (missing) category.
            prop["x-categories"] = list(seen)
            description += f". Seen in training: {', '.join(seen)}; another value is scored as missing"
        prop["description"] = description
        props[col.name] = prop
    return {
        "type": "object",
        "required": [c.name for c in FEATURES],
        "properties": props,
        "additionalProperties": False,
    }


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "stable error code, e.g. bad_request"},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "the offending field or column"},
                    "row": {"type": "integer", "description": "0-based index of the offending row"},
                    "value": {"description": "the offending value"},
                    "got": {"type": "string", "description": "the JSON type that was sent"},
                    "expected": {"description": "what was expected instead"},
                    "missing": {"type": "array", "items": {"type": "string"}, "description": "missing columns"},
                    "upstream": {"description": "what the deployment behind the relay answered (502)"},
                },
            }
        },
        "example": _error_example(),
    }


def _error_example() -> dict[str, Any]:
    """The refusal shared.scoring gives for ``"campaign": "three"`` in row 1 (not hand-written)."""
    from shared.scoring import parse_request

    rows = [dict(c) for c in TUTORIAL_CUSTOMERS]
    rows[1]["campaign"] = "three"
    try:
        parse_request(json.dumps({"data": rows}).encode(), None, max_rows=10, max_body_bytes=1 << 20)
    except RequestError as err:
        return err.to_dict()
    raise AssertionError("the example refusal was accepted")  # pragma: no cover


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "schema": {"$ref": "#/definitions/ErrorResponse"}}
    if retry_after:
        out["headers"] = {"Retry-After": {"type": "integer", "description": "seconds to wait before retrying"}}
    return out


_ANSWER_HEADERS: dict[str, Any] = {
    "x-ms-request-id": {"type": "string", "description": "id of this request"},
    "x-bankml-model-version": {"type": "string", "description": "version of the model that answered"},
    "x-bankml-unseen-categories": {"type": "string", "description": "columns with categories scored as missing"},
}


def build_swagger(
    model_meta: dict[str, Any],
    *,
    title: str,
    base_path: str = "/",
    version: str | int | None = None,
    schemes: list[str] | None = None,
    security: dict[str, Any] | None = None,
    deployment: str | None = None,
) -> dict[str, Any]:
    """OpenAPI 2.0 document for a deployment of the model described by ``model_meta`` (model.json).

    ``security``: the securityDefinitions, any one of which authorises POST /score
    (``BEARER_SECURITY`` by default, ``FUNCTION_KEY_SECURITY`` for the relay). ``deployment``
    names the deployment behind a relay. An empty ``model_meta`` (nothing live) still gives a
    valid document, without category values.
    """
    security = security or BEARER_SECURITY
    relay = "Bearer" not in security
    categories = (model_meta.get("features") or {}).get("categories") or {}
    example_rows = [copy.deepcopy(dict(c)) for c in TUTORIAL_CUSTOMERS]
    learner = model_meta.get("learner", "model")
    auc = (model_meta.get("metrics") or {}).get("AUC_weighted")
    description = f"Bank Marketing term-deposit scoring ({learner}"
    description += f", held-out AUC_weighted {auc:.3f})." if isinstance(auc, int | float) else ")."
    if not model_meta:
        description = "Bank Marketing term-deposit scoring (no model is live yet: POST /score answers 503)."
    description += (
        ' POST /score accepts the v2 envelope {"Inputs": {"data": [...]}, "GlobalParameters": {"method": ...}}'
        ' (answer {"Results": [...]}) or the legacy envelope {"data": [...]} (answer {"result": [...]}).'
        " Answers are JSON encoded once. " + UNSEEN_CATEGORIES
    )
    if relay:
        description += (
            " This relay checks the request, then forwards it to the live deployment"
            + (f" ({deployment})" if deployment else "")
            + "; authorise with the function key."
        )
    labels = list(model_meta.get("labels") or ["no", "yes"])
    method = {"type": "string", "enum": ["predict", "predict_proba"], "default": "predict"}
    # The rows, the same in both request shapes.
    records = {"type": "array", "items": {"$ref": "#/definitions/Row"}, "format": "pandas.DataFrame:records"}
    return {
        "swagger": "2.0",
        "info": {"title": title, "description": description, "version": str(version if version is not None else "1.0")},
        "schemes": schemes or ["http"],
        "basePath": base_path,
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": copy.deepcopy(security),
        "paths": {
            "/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Simple health check endpoint to ensure the service is up at any given point.",
                    "produces": ["text/plain"],
                    "responses": {
                        "200": {
                            "description": "If service is up and running, this response will be returned with the content 'Healthy'",
                            "schema": {"type": "string"},
                            "examples": {"application/json": "Healthy"},
                        },
                        "default": {
                            "description": "The service failed to execute due to an error.",
                            "schema": {"$ref": "#/definitions/ErrorResponse"},
                        },
                    },
                }
            },
            "/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run web service's model and get the prediction output",
                    "security": [{name: []} for name in security],
                    "parameters": [
                        {
                            "name": "serviceInputPayload",
                            "in": "body",
                            "required": True,
                            "description": "The input payload for executing the real-time machine learning service "
                            "(v2 envelope; the legacy envelope LegacyServiceInput is accepted as well).",
                            "schema": {"$ref": "#/definitions/ServiceInput"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The service processed the input correctly and provided a result "
                            "prediction: {\"Results\": [...]} for the v2 envelope, {\"result\": [...]} for the "
                            "legacy one. " + UNSEEN_CATEGORIES,
                            "schema": {"$ref": "#/definitions/ServiceOutput"},
                            "headers": copy.deepcopy(_ANSWER_HEADERS),
                        },
                        "400": _error(
                            "Not JSON, not one of the two envelopes, a missing column, a wrong type, an empty data "
                            "list: the error names the field, the row and the value."
                        ),
                        "401": {"description": "Missing or wrong key" + (" (no body, from the function host)." if relay else ".")}
                        if relay
                        else _error("Missing or wrong Bearer key."),
                        "413": _error("More rows than the limit (BANKML_MAX_ROWS) or a larger body (BANKML_MAX_BODY_MB)."),
                        "415": _error("Content type is not application/json."),
                        **(
                            {
                                "502": _error("The deployment answered with an error; its message is in error.upstream."),
                                "503": _error("No model is live or the deployment is not reachable.", retry_after=True),
                                "504": _error("The deployment did not answer within BANKML_RELAY_TIMEOUT_S."),
                            }
                            if relay
                            else {}
                        ),
                        "default": _error("The service failed to execute due to an error."),
                    },
                }
            },
            "/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {"name": "version", "in": "query", "required": False, "type": "integer", "enum": [2, 3]}
                    ],
                    "responses": {
                        "200": {"description": "The Swagger specification.", "schema": {"type": "string"}},
                        "default": {
                            "description": "The service failed to execute due to an error.",
                            "schema": {"$ref": "#/definitions/ErrorResponse"},
                        },
                    },
                }
            },
        },
        "definitions": {
            "Row": _row_schema(categories),
            "ServiceInput": {
                "type": "object",
                "required": ["Inputs"],
                "properties": {
                    "Inputs": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "data": records,
                        },
                    },
                    "GlobalParameters": {"type": "object", "properties": {"method": method}},
                },
                "example": {"Inputs": {"data": example_rows}, "GlobalParameters": {"method": "predict"}},
            },
            "LegacyServiceInput": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": records,
                    "method": method,
                },
                "example": {"data": example_rows},
            },
            "ServiceOutput": {
                "type": "object",
                "description": f"predict: one label per row ({' or '.join(labels)}); "
                "predict_proba: one [p_" + labels[0] + ", p_" + labels[1] + "] pair per row",
                "properties": {"Results": {"type": "array", "items": {}, "format": "numpy.ndarray"}},
                "example": {"Results": labels[::-1]},
            },
            "LegacyServiceOutput": {
                "type": "object",
                "properties": {"result": {"type": "array", "items": {}, "format": "numpy.ndarray"}},
                "example": {"result": labels[::-1]},
            },
            "ErrorResponse": _error_schema(),
        },
    }
