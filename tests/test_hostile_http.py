"""Hostile requests against the scoring relay and the model server, on a real stack (Azurite,
the function host running function_app.py, a model server with a real model).

* Property-based (schemathesis, hypothesis): requests generated from the relay's own OpenAPI
  document (``GET /api/swagger.json``, Swagger 2.0), valid and invalid, with the function key:
  never a 5xx, never a hang (each call has a timeout), and every 4xx carries the JSON error body
  the document describes. The same against the model server's own document.
* Explicit hostile bodies through the relay and straight at the model server: deeply nested JSON,
  huge numbers, NaN/Infinity tokens, nulls in each column, 1 MB strings, unicode (emoji, RTL, NUL,
  lone surrogates), duplicate keys, a wrong content type, an empty body, trailing garbage: each a
  4xx whose body names the field (and the row and value where there is one).

Example counts stay moderate (two shared cores); CI (``CI`` set) runs a derandomized profile.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from shared.contract import FEATURE_NAMES, FEATURES, MAX_INTEGER, TUTORIAL_CUSTOMERS  # noqa: E402
from shared.workspace.base import Deployment  # noqa: E402
from shared.workspace.local.servers import free_port  # noqa: E402

if TYPE_CHECKING:
    from conftest import TrainedModel

pytestmark = pytest.mark.timeout(900)

CALL_TIMEOUT_S = 30  # no single call may take longer: a hang fails the test
_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
}
settings.register_profile("bankml-http-ci", derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("bankml-http-dev", **_COMMON)
PROFILE = "bankml-http-ci" if os.environ.get("CI") else "bankml-http-dev"
EXAMPLES = int(os.environ.get("BANKML_HOSTILE_EXAMPLES", "30"))


@dataclass
class Stack:
    url: str
    key: str
    live: Deployment
    local: Any

    def relay(self, data: bytes, *, content_type: str | None = "application/json", **kw: Any) -> requests.Response:
        headers = {"x-functions-key": self.key, **kw.pop("headers", {})}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return requests.post(f"{self.url}/api/score", data=data, headers=headers, timeout=CALL_TIMEOUT_S, **kw)

    def server(self, data: bytes, *, content_type: str | None = "application/json", **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.live.key}", **kw.pop("headers", {})}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return requests.post(self.live.scoring_uri, data=data, headers=headers, timeout=CALL_TIMEOUT_S, **kw)


@pytest.fixture(scope="module")
def stack(trained_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from benchmarks.scoring import deploy, stop_model_servers
    from shared.workspace.local.stack import PROJECT_ROOT, LocalStack

    if not (PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob").exists() or shutil.which("node") is None:
        pytest.skip("Azurite is not installed (make install)")
    home = tmp_path_factory.mktemp("hostile-http") / "home"
    local = LocalStack(
        home,
        port=free_port(),
        azurite_port=free_port(),
        environ={"BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *", "BANKML_MAX_BODY_MB": "2"},
    )
    try:
        deploy(home, trained_model.model_dir)
        local.start()
        assert local.host is not None and local.workspace is not None
        live = local.workspace.live_deployment()
        assert live is not None
        yield Stack(local.url, local.host.keys.function_key, live, local)
    finally:
        local.stop()
        stop_model_servers(home)


Target = Callable[..., requests.Response]


def _targets(stack: Stack) -> dict[str, Target]:
    return {"relay": stack.relay, "model server": stack.server}


def strict_json(raw: bytes) -> Any:
    """JSON as JSON.parse reads it: a bare NaN/Infinity/-Infinity token is an error, not a number."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"error body holds a bare {token}: not JSON")

    return json.loads(raw, parse_constant=refuse)


def check_error_body(r: requests.Response, *, field: str | None = None, row: int | None = None) -> dict[str, Any]:
    """A 4xx with the error document of the API: {"error": {"code", "message", "field", ...}}."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    ctype = r.headers.get("content-type") or r.headers.get("Content-Type") or ""
    ctype = ctype[0] if isinstance(ctype, list) else ctype  # schemathesis' responses hold header lists
    assert ctype.startswith("application/json"), ctype
    assert len(r.content) < 20_000, f"an error body of {len(r.content)} bytes echoes the input"
    err = strict_json(r.content)["error"]
    assert isinstance(err, dict) and err["code"] and err["message"], err
    if field is not None:
        assert err.get("field") == field, err
    if row is not None:
        assert err.get("row") == row, err
    return err


# --------------------------------------------------------------------------------------------
# property-based, from the OpenAPI documents


def _operations(schema_url: str, headers: dict[str, str]) -> list[Any]:
    import schemathesis

    schema = schemathesis.openapi.from_url(schema_url, headers=headers, timeout=CALL_TIMEOUT_S)
    return [r.ok() for r in schema.get_all_operations()]


def _run_operation(
    op: Any, base_url: str, headers: dict[str, str], mode: Any, *, conformance: bool = False
) -> list[tuple[int, str]]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

    seen: list[tuple[int, str]] = []

    @settings(settings.get_profile(PROFILE), max_examples=EXAMPLES)
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        r = case.call(base_url=base_url, headers=headers, timeout=CALL_TIMEOUT_S)
        seen.append((r.status_code, case.method))
        assert r.status_code < 500, (r.status_code, r.text[:500], case.as_curl_command(base_url=base_url))
        if r.status_code >= 400:
            check_error_body(r)
        checks = (
            [not_a_server_error, status_code_conformance, content_type_conformance]
            if conformance
            else [not_a_server_error]
        )
        case.validate_response(r, checks=checks)

    try:
        run()
    except Unsatisfiable:
        # nothing to generate: an operation without parameters has no invalid form (GET /)
        assert mode.value == "negative" and not op.body and not list(op.iter_parameters()), op.path
    return seen


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_relay_against_its_openapi_document(stack: Stack, mode: str) -> None:
    from schemathesis.generation.modes import GenerationMode

    headers = {"x-functions-key": stack.key}
    ops = _operations(f"{stack.url}/api/swagger.json", headers)
    assert any(op.path == "/score" and op.method.upper() == "POST" for op in ops)
    statuses: list[tuple[int, str]] = []
    for op in ops:
        statuses += _run_operation(op, f"{stack.url}/api", headers, GenerationMode(mode))
    codes = {s for s, _ in statuses}
    assert codes, "no request was made"
    if mode == "negative":
        assert any(400 <= s < 500 for s in codes), codes  # invalid requests were refused, not scored


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_model_server_against_its_openapi_document(stack: Stack, mode: str) -> None:
    from schemathesis.generation.modes import GenerationMode

    base = stack.live.scoring_uri.rsplit("/score", 1)[0]
    headers = {"Authorization": f"Bearer {stack.live.key}"}
    ops = _operations(f"{base}/swagger.json", headers)
    statuses: list[tuple[int, str]] = []
    for op in ops:
        statuses += _run_operation(op, base, headers, GenerationMode(mode))
    assert statuses


@pytest.mark.parametrize("target", ["relay", "model server"])
def test_answers_conform_to_the_document(stack: Stack, target: str) -> None:
    from schemathesis.generation.modes import GenerationMode

    if target == "relay":
        base, headers = f"{stack.url}/api", {"x-functions-key": stack.key}
    else:
        base, headers = stack.live.scoring_uri.rsplit("/score", 1)[0], {"Authorization": f"Bearer {stack.live.key}"}
    for op in _operations(f"{base}/swagger.json", headers):
        _run_operation(op, base, headers, GenerationMode.POSITIVE, conformance=True)


# a row whose every value is a plausible JSON value of any type
_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=EXAMPLES)
@given(
    rows=st.lists(
        st.fixed_dictionaries({}, optional={n: _ANY_JSON for n in FEATURE_NAMES}).map(
            lambda r: {**TUTORIAL_CUSTOMERS[0], **r}
        ),
        min_size=1,
        max_size=4,
    ),
    envelope=st.sampled_from(["legacy", "v2"]),
)
def test_any_json_values_in_rows_give_an_answer_or_a_4xx_naming_the_field(
    stack: Stack, rows: list[dict[str, Any]], envelope: str
) -> None:
    body = (
        {"data": rows}
        if envelope == "legacy"
        else {"Inputs": {"data": rows}, "GlobalParameters": {"method": "predict"}}
    )
    r = stack.relay(json.dumps(body).encode())
    assert r.status_code < 500, r.text[:500]
    if r.status_code != 200:
        err = check_error_body(r)
        assert err.get("field") in (*FEATURE_NAMES, "data"), err
        assert isinstance(err.get("row"), int) and 0 <= err["row"] < len(rows), err


# --------------------------------------------------------------------------------------------
# explicit hostile bodies, through the relay and straight at the model server


def _row(**overrides: Any) -> dict[str, Any]:
    return {**TUTORIAL_CUSTOMERS[0], **overrides}


def _raw_row(column: str, token: str) -> bytes:
    """A legacy body whose ``column`` holds the raw JSON ``token`` (not valid JSON, some of them)."""
    row = _row()
    placeholder = "__TOKEN__"
    row[column] = placeholder
    return json.dumps({"data": [TUTORIAL_CUSTOMERS[1], row]}).replace(f'"{placeholder}"', token).encode()


NUMERIC = [c.name for c in FEATURES if c.is_numeric]
CATEGORICAL = [c.name for c in FEATURES if not c.is_numeric]


@pytest.mark.parametrize("target", ["relay", "model server"])
def test_deeply_nested_json_is_a_400(stack: Stack, target: str) -> None:
    send = _targets(stack)[target]
    for depth in (1_000, 100_000):
        for body in (
            "[" * depth + "]" * depth,
            '{"data": ' + "[" * depth + "]" * depth + "}",
            '{"data": [' + '{"a":' * depth + "1" + "}" * depth + "]}",
        ):
            r = send(body.encode())
            check_error_body(r)


NUMBER_TOKENS = {
    "1e400": "1e400",
    "-1e400": "-1e400",
    "1e-400": "1e-400",
    "30-digits": "123456789012345678901234567890",
    "400-digits": "9" * 400,
    "4300-digits": "1" * 4300,
    "1e20": "100000000000000000000",
    "1e308": "1e308",
    "-1e300": "-1e300",
    "2**53+1": "9007199254740993",
    "2**53": "9007199254740992",
}
NOT_JSON_TOKENS = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}
HUGE_INTEGERS = {"5000-digits": "1" + "0" * 5000, "-5000-digits": "-" + "9" * 5000}


@pytest.mark.parametrize("target", ["relay", "model server"])
@pytest.mark.parametrize("token", list(NUMBER_TOKENS.values()), ids=list(NUMBER_TOKENS))
@pytest.mark.parametrize("column", ["age", "emp.var.rate"])
def test_huge_numbers_are_a_400_naming_field_row_and_value(stack: Stack, target: str, token: str, column: str) -> None:
    r = _targets(stack)[target](_raw_row(column, token))
    value = float(token)
    # An integer column holds whole numbers within +-2**53 (MAX_INTEGER), as ingest requires of a
    # CSV (9007199254740993 is out, though its float64 is 2**53); a number column any finite float64.
    exact = int(token) if token.lstrip("-").isdigit() else value
    fits = math.isfinite(value) and (column == "emp.var.rate" or (value.is_integer() and abs(exact) <= MAX_INTEGER))
    if fits:
        assert r.status_code == 200, r.text[:300]  # a finite float64 (1e-400 is 0.0): a legal value of the column
        return
    err = check_error_body(r, field=column, row=1)
    assert len(str(err.get("value", ""))) <= 200, err


@pytest.mark.parametrize("target", ["relay", "model server"])
@pytest.mark.parametrize(
    "token", list({**NOT_JSON_TOKENS, **HUGE_INTEGERS}.values()), ids=list({**NOT_JSON_TOKENS, **HUGE_INTEGERS})
)
def test_tokens_no_float_holds_are_a_400_naming_the_token(stack: Stack, target: str, token: str) -> None:
    """NaN/Infinity (not JSON) and integers of more than 4,300 digits (valid JSON that Python's
    int() refuses): refused, the message naming the token, not Python's own advice."""
    err = check_error_body(_targets(stack)[target](_raw_row("age", token)))
    assert token[:8] in json.dumps(err) or "digits" in err["message"], err


@pytest.mark.parametrize("target", ["relay", "model server"])
def test_tokens_no_float_holds_name_the_column_and_row(stack: Stack, target: str) -> None:
    for token in [*NOT_JSON_TOKENS.values(), *HUGE_INTEGERS.values()]:
        err = check_error_body(_targets(stack)[target](_raw_row("age", token)))
        assert (err.get("field"), err.get("row")) == ("age", 1), (token[:10], err)
        assert "set_int_max_str_digits" not in err["message"], err  # Python's advice is no answer


@pytest.mark.parametrize("target", ["relay", "model server"])
@pytest.mark.parametrize("column", FEATURE_NAMES)
def test_null_in_each_column_is_a_400_naming_it(stack: Stack, target: str, column: str) -> None:
    r = _targets(stack)[target](json.dumps({"data": [_row(), _row(**{column: None})]}).encode())
    err = check_error_body(r, field=column, row=1)
    assert err["code"] == "bad_request"


@pytest.mark.parametrize("target", ["relay", "model server"])
def test_a_1mb_value_is_not_echoed_back(stack: Stack, target: str) -> None:
    long = "x" * (1 << 20)
    send = _targets(stack)[target]
    for column in ("age", "euribor3m"):
        r = send(json.dumps({"data": [_row(**{column: long})]}).encode())
        assert r.status_code == 400 and len(r.content) < 2_000, (column, r.status_code, len(r.content))
    r = send(json.dumps({"data": [{**_row(), long: 1}]}).encode())  # a 1 MB unknown column name
    assert r.status_code == 400 and len(r.content) < 2_000, ("key", r.status_code, len(r.content))


@pytest.mark.parametrize("target", ["relay", "model server"])
def test_very_long_strings(stack: Stack, target: str) -> None:
    send = _targets(stack)[target]
    long = "x" * (1 << 20)
    for column in ("age", "duration", "euribor3m"):
        r = send(json.dumps({"data": [_row(**{column: long})]}).encode())
        assert r.status_code == 400 and r.json()["error"]["field"] == column and r.json()["error"]["row"] == 0
    # a 1 MB category is a category the model never saw: scored as missing (README), not a 5xx
    r = send(json.dumps({"data": [_row(job=long)]}).encode())
    if r.status_code == 200:
        assert r.headers.get("x-bankml-unseen-categories") == "job"
    else:
        assert r.status_code == 400 and r.json()["error"]["field"] == "job"
    # a 1 MB key: an unknown column, refused
    r = send(json.dumps({"data": [{**_row(), long: 1}]}).encode())
    assert r.status_code == 400 and r.json()["error"]["row"] == 0


UNICODE = ["😀", "\u202eevil", "\u0000", "a\u0000b", "\ufeff", "\u200b", "Ｎａｍｅ", "١٢", "\U0010ffff"]


@pytest.mark.parametrize("target", ["relay", "model server"])
@pytest.mark.parametrize("text", UNICODE, ids=[t.encode("unicode_escape").decode() for t in UNICODE])
def test_unicode_in_numeric_columns_is_a_400_and_in_categories_is_unseen(stack: Stack, target: str, text: str) -> None:
    send = _targets(stack)[target]
    for column in ("age", "cons.conf.idx"):
        err = check_error_body(send(json.dumps({"data": [_row(**{column: text})]}).encode()), field=column, row=0)
        assert err.get("value") == text or err.get("value") is not None, err
    r = send(json.dumps({"data": [_row(job=text)]}, ensure_ascii=False).encode())
    if r.status_code == 200:
        assert r.headers.get("x-bankml-unseen-categories") == "job"
    else:
        check_error_body(r, field="job", row=0)


@pytest.mark.parametrize("target", ["relay", "model server"])
def test_lone_surrogates_are_a_400(stack: Stack, target: str) -> None:
    send = _targets(stack)[target]
    for column in ("job", "age"):
        body = json.dumps({"data": [_row(**{column: "__S__"})]}).replace('"__S__"', '"\\ud800"').encode()
        r = send(body)
        if r.status_code == 200:  # a category the model never saw, like any other
            assert column == "job" and r.headers.get("x-bankml-unseen-categories") == "job"
        else:
            check_error_body(r)
    # invalid UTF-8 bytes (a surrogate encoded raw) in the body
    r = send(json.dumps({"data": [_row(job="__S__")]}).replace("__S__", "\udcff", 1).encode("utf-8", "surrogateescape"))
    check_error_body(r)


def test_duplicate_keys_are_read_alike_by_the_relay_and_the_model_server(stack: Stack) -> None:
    """A duplicate key is read differently by different parsers (first or last wins). The relay
    validates what the model server then reads, so both must read it alike: the same answer
    from both, and a bad value under a repeated key is refused naming that key."""
    row = json.dumps(_row())[:-1]
    doc = json.dumps({"data": [_row()]})
    bodies = {
        "bad value last": ('{"data": [' + row + ', "age": "old"}]}').encode(),
        "bad value first": ('{"data": [' + row.replace('"age": 17', '"age": "old"') + ', "age": 17}]}').encode(),
        "data twice": (doc[:-1] + ', "data": [{"age": "x"}]}').encode(),
        "good twice": ('{"data": [' + row + ', "age": 18}]}').encode(),
    }
    for what, body in bodies.items():
        via_relay, direct = stack.relay(body), stack.server(body)
        assert (via_relay.status_code, via_relay.json()) == (direct.status_code, direct.json()), what
        if via_relay.status_code != 200:
            check_error_body(via_relay)
    err = check_error_body(stack.relay(bodies["bad value last"]), field="age", row=0)
    assert err["value"] == "old"


@pytest.mark.parametrize("target", ["relay", "model server"])
def test_documents_that_are_not_one_json_object(stack: Stack, target: str) -> None:
    send = _targets(stack)[target]
    good = json.dumps({"data": [_row()]}).encode()
    for body in (
        b"",
        b" ",
        b"\n",
        good + b"garbage",
        good + b"{}",
        good + b"\x00",
        b"\xef\xbb\xbf" + good + b"]",
        good[:-1],
        b"null",
        b"0",
        b'"data"',
        b"[]",
        b"{}",
        b'{"data": null}',
        b'{"data": {}}',
        b'{"data": "x"}',
        b'{"data": [1]}',
        b'{"data": [[]]}',
        b'{"data": [null]}',
    ):
        r = send(body)
        check_error_body(r)


@pytest.mark.parametrize("target", ["relay", "model server"])
def test_wrong_content_types_are_a_415(stack: Stack, target: str) -> None:
    send = _targets(stack)[target]
    good = json.dumps({"data": [_row()]}).encode()
    for ctype in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonx",
        "image/png",
    ):
        r = send(good, content_type=ctype)
        err = check_error_body(r)
        assert r.status_code == 415 and err["code"] == "unsupported_media_type", (ctype, r.status_code, err)
    for ctype in ("application/json; charset=utf-8", "APPLICATION/JSON"):
        assert send(good, content_type=ctype).status_code == 200, ctype


def test_the_relay_refuses_a_body_over_its_limit_before_reading_it(stack: Stack) -> None:
    big = b'{"data": [' + b" " * (3 << 20) + b"]}"
    err = check_error_body(stack.relay(big), field="body")
    assert err["code"] == "payload_too_large"
