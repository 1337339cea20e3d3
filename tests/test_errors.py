"""The one error shape (shared.errors.BankmlError.to_dict) is strict JSON whatever was sent: a
non-finite number quoted in the details reads "NaN"/"Infinity"/"-Infinity", never a bare token that
JSON.parse (or json.loads with parse_constant raising) refuses, through every encoder of error bodies."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from shared.errors import BankmlError, PayloadTooLarge, RequestError, json_safe
from shared.http import error_response
from shared.scoring import encode_json


def strict(raw: bytes | str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"bare {token} is not JSON")

    return json.loads(raw, parse_constant=refuse)


NON_FINITE = [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")]


@pytest.mark.parametrize(("value", "text"), NON_FINITE, ids=[t for _, t in NON_FINITE])
@pytest.mark.parametrize("kind", [BankmlError, RequestError, PayloadTooLarge])
def test_non_finite_details_are_strings_in_every_error_body(kind: type[BankmlError], value: float, text: str) -> None:
    err = kind("bad value", field="x", value=value, expected=[1.5, value], nested={"a": (value, 2)})
    doc = err.to_dict()
    assert doc["error"]["value"] == text and doc["error"]["expected"] == [1.5, text]
    assert doc["error"]["nested"] == {"a": [text, 2]}
    # The encoders of error bodies: the function app's, and the relay's and model server's.
    assert strict(json.dumps(doc, allow_nan=False)) == doc
    assert strict(encode_json(doc)) == doc
    response = error_response(err)
    assert response.status_code == err.status and strict(response.get_body()) == doc
    assert err.details["value"] is value  # the error itself keeps what was sent


def test_finite_values_are_left_as_they_are() -> None:
    details = {"value": 1e308, "row": 3, "ok": True, "none": None, "text": "NaN", "big": 10**30}
    assert json_safe(details) == details
    assert RequestError("m", **details).to_dict()["error"]["value"] == 1e308
