"""The Swagger document of the model server and of the relay, built from a model's model.json."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from shared.contract import FEATURE_NAMES, MAX_INTEGER, TUTORIAL_CUSTOMERS
from shared.errors import RequestError
from shared.openapi import BEARER_SECURITY, FUNCTION_KEY_SECURITY, build_swagger
from shared.scoring import parse_request

META: dict[str, Any] = {
    "learner": "lgbm",
    "metrics": {"AUC_weighted": 0.912},
    "labels": ["no", "yes"],
    "features": {
        "format": "bankml-features/1",
        "columns": list(FEATURE_NAMES),
        "categories": {"job": ["admin.", "blue-collar", "student"], "marital": ["married", "single"]},
    },
}


def relay_doc(meta: dict[str, Any] = META) -> dict[str, Any]:
    return build_swagger(
        meta, title="relay", base_path="/api", version=4, security=FUNCTION_KEY_SECURITY, deployment="bankml-v4"
    )


@pytest.mark.parametrize(
    "doc",
    [
        build_swagger(META, title="dep", version=4),
        relay_doc(),
        relay_doc({}),  # nothing live yet: still a valid document
    ],
    ids=["model server", "relay", "relay, no model"],
)
def test_documents_are_valid_openapi_2(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["swagger"] == "2.0"
    assert set(doc["paths"]) == {"/", "/score", "/swagger.json"}
    assert doc["paths"]["/"]["get"]["responses"]["200"]["examples"] == {"application/json": "Healthy"}
    assert doc["paths"]["/score"]["post"]["operationId"] == "RunMLService"


def test_columns_types_and_categories_come_from_the_contract_and_the_model() -> None:
    row = relay_doc()["definitions"]["Row"]
    assert list(row["properties"]) == list(FEATURE_NAMES) and row["required"] == list(FEATURE_NAMES)
    assert row["additionalProperties"] is False
    kinds = {name: p["type"] for name, p in row["properties"].items()}
    assert kinds["age"] == "integer" and kinds["emp.var.rate"] == "number" and kinds["job"] == "string"
    # The range the scoring contract and ingest enforce is stated for every integer column.
    for name, p in row["properties"].items():
        if p["type"] == "integer":
            assert (p["minimum"], p["maximum"]) == (-MAX_INTEGER, MAX_INTEGER), name
    assert row["properties"]["job"]["x-categories"] == ["admin.", "blue-collar", "student"]
    assert "another value is scored as missing" in row["properties"]["job"]["description"]
    assert "x-categories" not in row["properties"]["education"]  # not in this model's model.json
    assert "x-categories" not in relay_doc({})["definitions"]["Row"]["properties"]["job"]


def test_security_model_server_bearer_relay_function_key() -> None:
    server = build_swagger(META, title="dep")
    assert server["securityDefinitions"] == BEARER_SECURITY
    assert server["paths"]["/score"]["post"]["security"] == [{"Bearer": []}]
    relay = relay_doc()
    assert relay["securityDefinitions"]["functionKey"] == {
        "type": "apiKey",
        "name": "x-functions-key",
        "in": "header",
        "description": relay["securityDefinitions"]["functionKey"]["description"],
    }
    assert relay["securityDefinitions"]["functionCode"]["in"] == "query"
    assert relay["paths"]["/score"]["post"]["security"] == [{"functionKey": []}, {"functionCode": []}]
    assert relay["basePath"] == "/api" and relay["info"]["version"] == "4" and "bankml-v4" in relay["info"]["description"]


def test_both_request_shapes_have_real_examples_the_parser_accepts() -> None:
    defs = relay_doc()["definitions"]
    v2 = defs["ServiceInput"]["example"]
    legacy = defs["LegacyServiceInput"]["example"]
    assert v2["Inputs"]["data"] == [dict(c) for c in TUTORIAL_CUSTOMERS] == legacy["data"]
    for example, contract in ((v2, "v2"), (legacy, "legacy")):
        parsed = parse_request(json.dumps(example).encode(), "application/json", max_rows=10, max_body_bytes=1 << 20)
        assert (parsed.contract, parsed.rows) == (contract, 2)
    assert defs["ServiceInput"]["properties"]["GlobalParameters"]["properties"]["method"]["enum"] == [
        "predict",
        "predict_proba",
    ]


def test_error_shape_and_its_example_is_a_real_refusal() -> None:
    doc = relay_doc()
    error = doc["definitions"]["ErrorResponse"]
    assert set(error["properties"]["error"]["properties"]) >= {"code", "message", "field", "row", "value", "expected"}
    example = error["example"]["error"]
    rows = [dict(c) for c in TUTORIAL_CUSTOMERS]
    rows[1]["campaign"] = "three"
    with pytest.raises(RequestError) as info:
        parse_request(json.dumps({"data": rows}).encode(), None, max_rows=10, max_body_bytes=1 << 20)
    assert example == info.value.to_dict()["error"]
    assert (example["field"], example["row"], example["value"]) == ("campaign", 1, "three")


def test_relay_documents_upstream_failures_and_the_unseen_category_rule() -> None:
    doc = relay_doc()
    responses = doc["paths"]["/score"]["post"]["responses"]
    assert {"400", "401", "413", "415", "502", "503", "504"} <= set(responses)
    assert "Retry-After" in responses["503"]["headers"]
    assert "x-bankml-model-version" in responses["200"]["headers"]
    for text in (doc["info"]["description"], responses["200"]["description"]):
        assert "scored as a missing value" in text
    server = build_swagger(META, title="dep")["paths"]["/score"]["post"]["responses"]
    assert "502" not in server and server["401"]["schema"] == {"$ref": "#/definitions/ErrorResponse"}
