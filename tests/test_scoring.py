from __future__ import annotations

import json
from typing import Any

import pytest

from shared.contract import FEATURE_NAMES, MAX_INTEGER, TUTORIAL_CUSTOMERS
from shared.errors import PayloadTooLarge, RequestError, UnsupportedMediaType
from shared.scoring import ScoringRequest, encode_json, format_response, parse_request

JSON = "application/json"
LIMITS = {"max_rows": 5, "max_body_bytes": 64 * 1024}


def rows(n: int = 2) -> list[dict[str, Any]]:
    return [dict(TUTORIAL_CUSTOMERS[i % 2]) for i in range(n)]


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def parse(doc: Any, content_type: str | None = JSON, **limits: int) -> ScoringRequest:
    raw = doc if isinstance(doc, bytes) else body(doc)
    return parse_request(raw, content_type, **{**LIMITS, **limits})


def refused(
    doc: Any, kind: type[Exception] = RequestError, content_type: str | None = JSON, **limits: int
) -> dict[str, Any]:
    with pytest.raises(kind) as info:
        parse(doc, content_type, **limits)
    assert type(info.value) is kind
    payload = info.value.to_dict()
    json.dumps(payload)  # the detail must be JSON-able as is
    return payload["error"]


# --- the two contracts -------------------------------------------------------------------------


def test_legacy_envelope() -> None:
    req = parse({"data": rows()})
    assert (req.contract, req.method, req.rows) == ("legacy", "predict", 2)
    assert req.records[0] == TUTORIAL_CUSTOMERS[0]
    assert parse({"data": rows(), "method": "predict_proba"}).method == "predict_proba"


def test_v2_envelope_with_and_without_global_parameters() -> None:
    req = parse({"Inputs": {"data": rows()}, "GlobalParameters": {"method": "predict_proba"}})
    assert (req.contract, req.method, req.rows) == ("v2", "predict_proba", 2)
    assert parse({"Inputs": {"data": rows(1)}}).method == "predict"
    assert parse({"Inputs": {"data": rows(1)}, "GlobalParameters": {}}).method == "predict"


def test_records_keep_contract_types() -> None:
    row = dict(TUTORIAL_CUSTOMERS[0], campaign=3.0, **{"nr.employed": 5099})
    rec = parse({"data": [row]}).records[0]
    assert rec["campaign"] == 3 and type(rec["campaign"]) is int
    assert rec["nr.employed"] == 5099.0 and type(rec["nr.employed"]) is float
    assert list(rec) == list(FEATURE_NAMES)


def test_content_type_with_charset_and_absent_is_accepted() -> None:
    assert parse({"data": rows()}, "application/json; charset=utf-8").rows == 2
    assert parse({"data": rows()}, None).rows == 2


def test_unseen_category_is_accepted() -> None:
    assert parse({"data": [dict(TUTORIAL_CUSTOMERS[0], job="astronaut")]}).records[0]["job"] == "astronaut"


def test_format_response_per_contract_and_method() -> None:
    labels, probas = ["yes", "no"], [[0.3, 0.7], [0.9, 0.1]]
    legacy = parse({"data": rows()})
    assert format_response(legacy, labels, probas) == {"result": ["yes", "no"]}
    legacy_p = parse({"data": rows(), "method": "predict_proba"})
    assert format_response(legacy_p, labels, probas) == {"result": probas}
    v2 = parse({"Inputs": {"data": rows()}})
    assert format_response(v2, labels, probas) == {"Results": ["yes", "no"]}
    v2p = parse({"Inputs": {"data": rows()}, "GlobalParameters": {"method": "predict_proba"}})
    assert format_response(v2p, labels, probas) == {"Results": probas}


def test_response_is_encoded_once() -> None:
    raw = encode_json(format_response(parse({"data": rows()}), ["yes", "no"], [[0.1, 0.9], [0.8, 0.2]]))
    decoded = json.loads(raw)
    assert decoded == {"result": ["yes", "no"]}  # a dict after one decode, not a JSON string
    assert raw == b'{"result":["yes","no"]}'
    with pytest.raises(ValueError):
        encode_json({"Results": [float("nan")]})


# --- refusals of the whole body --------------------------------------------------------------


def test_body_not_json() -> None:
    err = refused(b"{not json")
    assert err["code"] == "bad_request" and err["message"].startswith("body is not JSON") and err["field"] == "body"
    assert refused(b"\xff\xfe")["message"].startswith("body is not JSON")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens(token: str) -> None:
    raw = json.dumps({"data": rows(1)}).replace("971", token).encode()
    err = refused(raw)
    assert err["value"] == token and token in err["message"]


def test_overflowing_number_is_refused_naming_the_column() -> None:
    raw = json.dumps({"data": rows(1)}).replace("971", "1e999").encode()
    err = refused(raw)
    assert (err["field"], err["row"], err["value"]) == ("duration", 0, "inf")


def test_wrong_content_type() -> None:
    err = refused({"data": rows()}, UnsupportedMediaType, content_type="text/plain")
    assert err["code"] == "unsupported_media_type" and err["value"] == "text/plain" and err["expected"] == JSON


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (rows(), "body"),  # a bare list of rows
        ({"input_data": {"data": rows()}}, "input_data"),
        ({"data": rows(), "Inputs": {"data": rows()}}, "Inputs"),
        ({"Inputs": {"data": rows()}, "extra": 1}, "extra"),
        ({}, None),
    ],
)
def test_unknown_envelopes_name_the_expected_ones(doc: Any, field: str | None) -> None:
    err = refused(doc)
    assert '{"data": [...]}' in err["message"] and '"Inputs"' in err["message"]
    assert err.get("field") == field


def test_bad_v2_parts() -> None:
    assert refused({"Inputs": rows()})["field"] == "Inputs"
    assert refused({"Inputs": {"rows": rows()}})["field"] == "Inputs"
    assert refused({"Inputs": {"data": rows(), "x": 1}})["field"] == "Inputs.x"
    assert refused({"Inputs": {"data": rows()}, "GlobalParameters": "predict"})["field"] == "GlobalParameters"
    assert (
        refused({"Inputs": {"data": rows()}, "GlobalParameters": {"method": "predict", "k": 1}})["field"]
        == "GlobalParameters.k"
    )


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"Inputs": {"data": rows()}, "GlobalParameters": {"method": "predict_log_proba"}}, "GlobalParameters.method"),
        ({"data": rows(), "method": "transform"}, "method"),
    ],
)
def test_other_methods_are_refused(doc: Any, field: str) -> None:
    err = refused(doc)
    assert err["field"] == field and err["expected"] == ["predict", "predict_proba"]


def test_data_not_a_list_and_empty() -> None:
    err = refused({"data": {"age": 1}})
    assert err["field"] == "data" and err["value"] == "object"
    err = refused({"data": []})
    assert err["field"] == "data" and "empty" in err["message"]
    assert refused({"Inputs": {"data": []}})["field"] == "Inputs.data"


def test_too_many_rows() -> None:
    err = refused({"data": rows(6)}, PayloadTooLarge)
    assert err["code"] == "payload_too_large" and err["value"] == 6 and "5" in err["expected"]
    assert parse({"data": rows(5)}).rows == 5


def test_body_too_large() -> None:
    raw = body({"data": rows()})
    err = refused(raw, PayloadTooLarge, max_body_bytes=len(raw) - 1)
    assert err["field"] == "body" and err["value"] == len(raw)
    assert parse(raw, max_body_bytes=len(raw)).rows == 2


# --- refusals of one row ------------------------------------------------------------------------


def with_value(column: str, value: Any, row: int = 1) -> dict[str, Any]:
    data = rows(2)
    data[row][column] = value
    return {"data": data}


def test_row_not_an_object() -> None:
    err = refused({"data": [rows(1)[0], [1, 2, 3]]})
    assert (err["field"], err["row"], err["value"]) == ("data", 1, "array")


def test_missing_column_is_named() -> None:
    data = rows(2)
    del data[1]["age"]
    err = refused({"data": data})
    assert (err["field"], err["row"]) == ("age", 1) and "'age'" in err["message"] and err["missing"] == ["age"]


def test_unknown_extra_column_is_refused() -> None:
    data = rows(2)
    data[0]["y"] = "yes"
    err = refused({"data": data})
    assert (err["field"], err["row"]) == ("y", 0) and "unknown column" in err["message"]


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("campaign", "three", "three"),
        ("campaign", True, True),  # booleans are not numbers
        ("euribor3m", False, False),
        ("age", None, None),  # null is not a value
        ("campaign", 2.5, 2.5),  # integer column, fractional value
        ("emp.var.rate", "1.1", "1.1"),
        ("job", 3, 3),
        ("month", None, None),
        ("age", [17], "array"),
        ("job", {"x": 1}, "object"),
    ],
)
def test_wrong_types_name_field_row_and_value(column: str, value: Any, shown: Any) -> None:
    err = refused(with_value(column, value))
    assert (err["field"], err["row"]) == (column, 1)
    if value is None:
        assert "value" not in err and err["got"] == "null"
    else:
        assert err["value"] == shown and type(err["value"]) is type(shown)
    assert column in err["message"] and "row 1" in err["message"]


def test_integral_float_accepted_in_integer_column() -> None:
    req = parse(with_value("campaign", 3.0))
    assert req.records[1]["campaign"] == 3


# --- the quick column check and the detailed row walk agree ---------------------------------------


def test_valid_request_keeps_rows_as_sent_and_columns_in_contract_order() -> None:
    data = rows(3)
    req = parse({"data": data})
    assert req.data == data and req.rows == 3
    assert len(req.columns) == len(FEATURE_NAMES)
    assert req.columns[FEATURE_NAMES.index("age")] == (17, 87, 17)


@pytest.mark.parametrize(
    ("column", "value"),
    [("campaign", "three"), ("age", True), ("euribor3m", None), ("campaign", 2.5), ("job", 3), ("pdays", [1])],
)
def test_the_first_bad_row_is_named_in_a_large_request(column: str, value: Any) -> None:
    data = rows(800)
    data[377][column] = value
    data[612][column] = value
    err = refused({"data": data}, max_rows=1000, max_body_bytes=1 << 22)
    assert (err["field"], err["row"]) == (column, 377)


def test_a_missing_or_extra_column_in_a_large_request_is_named() -> None:
    data = rows(300)
    del data[250]["age"]
    data[250]["agee"] = 40  # still 20 keys
    err = refused({"data": data}, max_rows=1000, max_body_bytes=1 << 22)
    assert (err["field"], err["row"]) == ("age", 250)
    data = rows(300)
    data[299]["y"] = "yes"
    err = refused({"data": data}, max_rows=1000, max_body_bytes=1 << 22)
    assert (err["field"], err["row"]) == ("y", 299)


def test_an_integer_too_large_for_a_float_is_refused_not_a_crash() -> None:
    raw = json.dumps({"data": rows(1)}).replace("971", "9" * 400).encode()
    err = refused(raw)
    assert (err["field"], err["row"]) == ("duration", 0) and "finite" in err["message"]
    assert err["value"].startswith("9999") and "400 digits" in err["value"]


def test_what_the_stdlib_accepts_is_accepted_whatever_the_parser() -> None:
    # A lone surrogate is refused by orjson but is a JSON string for json: an unseen category.
    raw = json.dumps({"data": rows(1)}).replace('"blue-collar"', '"\\ud800"', 1).encode()
    assert parse(raw).data[0]["job"] == "\ud800"
    # A big integer literal is a whole number but beyond +-2**53: refused, as ingest refuses it.
    raw = json.dumps({"data": rows(1)}).replace('"pdays": 999', '"pdays": 123456789012345678901234567890').encode()
    assert refused(raw)["field"] == "pdays"
    raw = json.dumps({"data": rows(1)}).replace('"pdays": 999', f'"pdays": {MAX_INTEGER}').encode()
    assert parse(raw).records[0]["pdays"] == MAX_INTEGER


@pytest.mark.parametrize(
    "token",
    ["100000000000000000000", "1e308", "-1e300", "9007199254740993", "-9007199254740993", "9007199254740994.0", "1e300"],
)
@pytest.mark.parametrize("column", ["age", "duration", "campaign", "pdays", "previous"])
@pytest.mark.parametrize("n", [3, 400], ids=["small body", "typed decoder"])
def test_integers_beyond_the_ingest_range_are_refused_naming_column_row_and_value(token: str, column: str, n: int) -> None:
    """The bound ingest applies to a CSV cell (shared.contract.MAX_INTEGER) holds for scoring too,
    on the quick check, the row walk and the typed decoder alike."""
    data = rows(n)
    data[n - 1][column] = "__TOKEN__"
    raw = json.dumps({"data": data}).replace('"__TOKEN__"', token).encode()
    err = refused(raw, max_rows=1000, max_body_bytes=1 << 22)
    assert (err["code"], err["field"], err["row"]) == ("bad_request", column, n - 1)
    assert json.loads(json.dumps(err["value"])) == json.loads(token) and "out of range" in err["message"]
    assert err["expected"] == f"an integer between -{MAX_INTEGER} and {MAX_INTEGER}"
    # The same wording as ingest's refusal of the same value in a CSV.
    cell = ingest_error("age" if column == "age" else column, token)
    assert cell["expected"] == err["expected"] and "out of range" in cell["message"]


def ingest_error(column: str, cell: str) -> dict[str, Any]:
    from shared.datagen import generate_frame
    from shared.errors import DataError
    from shared.ingest import parse_csv

    frame = generate_frame(40, 1)
    frame[column] = frame[column].astype(object)
    frame.loc[3, column] = cell
    with pytest.raises(DataError) as info:
        parse_csv(frame.to_csv(index=False).encode(), max_bytes=10**8)
    return info.value.to_dict()["error"]


@pytest.mark.parametrize("value", [MAX_INTEGER, -MAX_INTEGER, float(MAX_INTEGER), 0])
def test_integers_at_the_bound_are_scored(value: Any) -> None:
    for n in (2, 400):
        data = rows(n)
        data[0]["age"] = value
        assert parse({"data": data}, max_rows=1000, max_body_bytes=1 << 22).records[0]["age"] == value


def test_number_columns_take_any_finite_float_as_ingest_does() -> None:
    data = rows(2)
    data[1]["euribor3m"] = 1e308
    assert parse({"data": data}).records[1]["euribor3m"] == 1e308


def test_integer_messages_read_well() -> None:
    assert "must be an integer" in refused(with_value("age", "old"))["message"]
    assert "must be a number" in refused(with_value("euribor3m", "x"))["message"]


# --- the typed decoder (large bodies) never changes an outcome ----------------------------------


def outcome(raw: bytes, *, max_rows: int = 1000) -> Any:
    try:
        req = parse_request(raw, JSON, max_rows=max_rows, max_body_bytes=1 << 24)
    except RequestError as err:
        return err.to_dict()
    # Compared as the model sees them (float64): orjson reads a 30-digit integer as a float.
    seen = [tuple(v if isinstance(v, str) else float(v) for v in col) for col in req.columns]
    return (req.contract, req.method, req.rows, seen)


def variants() -> list[tuple[str, bytes]]:
    base = rows(400)
    out: list[tuple[str, bytes]] = [
        ("legacy", body({"data": base})),
        ("legacy proba", body({"data": base, "method": "predict_proba"})),
        ("v2", body({"Inputs": {"data": base}})),
        ("v2 proba", body({"Inputs": {"data": base}, "GlobalParameters": {"method": "predict_proba"}})),
        ("v2 empty params", body({"Inputs": {"data": base}, "GlobalParameters": {}})),
        ("both envelopes", body({"data": base, "Inputs": {"data": base}})),
        ("bad method", body({"data": base, "method": "transform"})),
        ("extra key", body({"Inputs": {"data": base}, "x": 1})),
        ("too many rows", body({"data": rows(1001)})),
        ("bare list", body(base)),
        ("unseen category", body({"data": [dict(r, job="astronaut") for r in base]})),
    ]
    for column, value in [("campaign", 2.0), ("campaign", 2.5), ("age", True), ("euribor3m", 3), ("job", None),
                          ("month", 4), ("pdays", "999"), ("nr.employed", [1])]:
        data = rows(400)
        data[321][column] = value
        out.append((f"{column}={value!r}", body({"data": data})))
    data = rows(400)
    for row in data:
        row["campaign"] = float(row["campaign"])  # integral floats everywhere: the int | float decoder
    out.append(("integral floats", body({"data": data})))
    data = rows(400)
    data[7]["age"] = 10**30  # an int past int64 but a finite float64
    out.append(("int past int64", body({"data": data})))
    data = rows(400)
    data[8]["pdays"] = -(10**400)  # no float64 holds it, at the low end
    out.append(("int below any float", body({"data": data})))
    data = rows(400)
    del data[5]["age"]
    out.append(("missing column", body({"data": data})))
    data = rows(400)
    data[6]["agee"] = 1
    out.append(("extra column", body({"data": data})))
    text = body({"data": base}).decode()
    out.append(("1e999", text.replace("971", "1e999", 1).encode()))
    out.append(("400 digits", text.replace("971", "9" * 400, 1).encode()))
    out.append(("big int", text.replace("971", "123456789012345678901234567890", 1).encode()))
    out.append(("NaN", text.replace("971", "NaN", 1).encode()))
    out.append(("duplicate key", text.replace('"age": 17,', '"age": "x", "age": 17,', 1).encode()))
    out.append(("surrogate", text.replace('"blue-collar"', '"\\ud800"', 1).encode()))
    out.append(("trailing garbage", text.encode() + b" x"))
    return out


@pytest.mark.parametrize(("name", "raw"), variants(), ids=[n for n, _ in variants()])
def test_typed_decoder_and_reference_path_agree(name: str, raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import scoring

    pytest.importorskip("msgspec")
    assert len(raw) >= scoring.TYPED_DECODE_BYTES and scoring._FAST is not None
    fast = outcome(raw)
    monkeypatch.setattr(scoring, "_FAST", None)
    assert outcome(raw) == fast


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nested past any parser's depth
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_json_no_parser_can_hold_is_a_400_naming_the_body(body: bytes) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body, "application/json", max_rows=10_000, max_body_bytes=10**7)
    assert info.value.status == 400
    assert info.value.details["field"] == "body"
