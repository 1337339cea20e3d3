"""The OpenAPI 2.0 (Swagger) document of a scoring endpoint, shaped like the one Azure ML serves.

One builder for the model server (``base_path="/"``) and the relay (``base_path="/api"``). Columns
and types come from shared.contract; the category values listed are the ones the model saw in
training (from its ``model.json``). Swagger 2.0 has no ``oneOf``, so the v2 envelope is the body
schema (as in Azure's generated document) and the legacy envelope is described next to it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from shared.contract import FEATURES, TUTORIAL_CUSTOMERS

logger = logging.getLogger(__name__)

_TYPES: dict[str, dict[str, str]] = {
    "integer": {"type": "integer", "format": "int64"},
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
            description += f". Seen in training: {', '.join(seen)}; other values score as unknown"
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
                    "expected": {"description": "what was expected instead"},
                },
            }
        },
    }


def build_swagger(
    model_meta: dict[str, Any],
    *,
    title: str,
    base_path: str = "/",
    version: str | int | None = None,
    schemes: list[str] | None = None,
) -> dict[str, Any]:
    """OpenAPI 2.0 document for a deployment of the model described by ``model_meta`` (model.json)."""
    categories = (model_meta.get("features") or {}).get("categories") or {}
    example_rows = [copy.deepcopy(dict(c)) for c in TUTORIAL_CUSTOMERS]
    learner = model_meta.get("learner", "model")
    auc = (model_meta.get("metrics") or {}).get("AUC_weighted")
    description = f"Bank Marketing term-deposit scoring ({learner}"
    description += f", held-out AUC_weighted {auc:.3f})." if isinstance(auc, int | float) else ")."
    description += (
        ' POST /score accepts the v2 envelope {"Inputs": {"data": [...]}, "GlobalParameters": {"method": ...}}'
        ' (answer {"Results": [...]}) or the legacy envelope {"data": [...]} (answer {"result": [...]}).'
        " Answers are JSON encoded once."
    )
    labels = list(model_meta.get("labels") or ["no", "yes"])
    method = {"type": "string", "enum": ["predict", "predict_proba"], "default": "predict"}
    return {
        "swagger": "2.0",
        "info": {"title": title, "description": description, "version": str(version if version is not None else "1.0")},
        "schemes": schemes or ["http"],
        "basePath": base_path,
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {
            "Bearer": {
                "type": "apiKey",
                "name": "Authorization",
                "in": "header",
                "description": "For example: Bearer abc123",
            }
        },
        "paths": {
            "/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Simple health check endpoint to ensure the service is up at any given point.",
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
                    "security": [{"Bearer": []}],
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
                            "description": "The service processed the input correctly and provided a result prediction, if applicable.",
                            "schema": {"$ref": "#/definitions/ServiceOutput"},
                        },
                        "400": {
                            "description": "The request is malformed; the error names the field, row and value.",
                            "schema": {"$ref": "#/definitions/ErrorResponse"},
                        },
                        "401": {
                            "description": "Missing or wrong Bearer key.",
                            "schema": {"$ref": "#/definitions/ErrorResponse"},
                        },
                        "413": {
                            "description": "Too many rows or too large a body.",
                            "schema": {"$ref": "#/definitions/ErrorResponse"},
                        },
                        "415": {
                            "description": "Content type is not application/json.",
                            "schema": {"$ref": "#/definitions/ErrorResponse"},
                        },
                        "default": {
                            "description": "The service failed to execute due to an error.",
                            "schema": {"$ref": "#/definitions/ErrorResponse"},
                        },
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
                            "data": {
                                "type": "array",
                                "items": {"$ref": "#/definitions/Row"},
                                "format": "pandas.DataFrame:records",
                            }
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
                    "data": {
                        "type": "array",
                        "items": {"$ref": "#/definitions/Row"},
                        "format": "pandas.DataFrame:records",
                    },
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
