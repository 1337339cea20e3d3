"""HTTP triggers through the real host: keys, routes, methods, response mapping, errors, admin API."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

import devhost.host as devhost_host
from devhost.host import MAX_BODY_BYTES, FunctionHost


def test_function_key_is_enforced(host: FunctionHost) -> None:
    url = f"{host.url}/api/hello/bob"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, params={"code": "wrong"}, timeout=5).status_code == 401
    assert requests.get(url, headers={"x-functions-key": "wrong"}, timeout=5).status_code == 401
    # a system key is not a function key
    assert requests.get(url, params={"code": host.keys.system_key("eventgrid_extension")}, timeout=5).status_code == 401
    assert requests.get(url, headers={"x-functions-key": host.keys.function_key}, timeout=5).status_code == 200
    assert requests.get(url, params={"code": host.keys.function_key}, timeout=5).status_code == 200
    assert requests.get(url, params={"code": host.keys.master_key}, timeout=5).status_code == 200


def test_route_params_query_and_json_response(host: FunctionHost) -> None:
    r = requests.get(
        f"{host.url}/api/HELLO/Bob%20Smith%2F2", params={"q": "x y", "code": host.keys.function_key}, timeout=5
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"name": "Bob Smith/2", "q": "x y", "method": "GET"}


def test_typed_param_and_catch_all(host: FunctionHost) -> None:
    r = requests.get(f"{host.url}/api/items/12/a/b%20c", timeout=5)
    assert r.status_code == 203
    assert r.headers["x-toy"] == "item"
    assert r.json() == {"id": "12", "rest": "a/b c"}
    assert requests.get(f"{host.url}/api/items/12", timeout=5).json() == {"id": "12"}
    assert requests.get(f"{host.url}/api/items/abc/x", timeout=5).status_code == 404
    assert requests.get(f"{host.url}/api/items/99999999999/x", timeout=5).status_code == 404  # not an int32


def test_methods_are_enforced(host: FunctionHost) -> None:
    r = requests.post(f"{host.url}/api/hello/bob", params={"code": host.keys.function_key}, timeout=5)
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]
    assert requests.delete(f"{host.url}/api/echo", timeout=5).status_code == 405
    r = requests.put(f"{host.url}/api/echo", data="héllo".encode(), timeout=5)
    assert r.status_code == 200
    assert r.content == "héllo".encode()
    assert r.headers["content-type"] == "text/plain; charset=utf-8"


def test_unknown_route_is_404(host: FunctionHost) -> None:
    assert requests.get(f"{host.url}/api/nope", timeout=5).status_code == 404
    assert requests.get(f"{host.url}/elsewhere/whoami", timeout=5).status_code == 404
    assert requests.get(f"{host.url}/api/whoami", timeout=5).text == "toy"


def test_exception_gives_500_without_traceback(host: FunctionHost) -> None:
    r = requests.get(f"{host.url}/api/boom", timeout=5)
    assert r.status_code == 500
    body = r.json()
    assert body["error"]["code"] == "internal_error"
    assert body["error"]["message"] == "Exception while executing function: Functions.boom"
    assert body["error"]["invocationId"]
    assert "secret internal detail" not in r.text
    assert "Traceback" not in r.text


def test_admin_level_needs_master_key(host: FunctionHost) -> None:
    url = f"{host.url}/api/adminonly"
    assert requests.get(url, params={"code": host.keys.function_key}, timeout=5).status_code == 401
    r = requests.get(url, headers={"x-functions-key": host.keys.master_key}, timeout=5)
    assert r.status_code == 200
    assert r.text == "admin ok"


def test_status_needs_the_master_key_and_info_none(host: FunctionHost) -> None:
    url = f"{host.url}/admin/host/status"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"x-functions-key": host.keys.function_key}, timeout=5).status_code == 401
    status = requests.get(url, headers={"x-functions-key": host.keys.master_key}, timeout=5).json()
    assert status["state"] == "Running"
    assert {"hello", "item", "echo", "boom", "adminonly", "whoami", "on_event", "on_blob", "tick"} <= set(
        status["functions"]
    )
    assert requests.get(f"{host.url}/", timeout=5).json()["routePrefix"] == "api"
    assert host.function_names() == sorted(status["functions"] + status["disabled"])
    assert host.eventgrid_functions() == ["on_event"] == host.function_names("eventGridTrigger")


def test_admin_run_needs_master_key_and_rejects_http(host: FunctionHost) -> None:
    url = f"{host.url}/admin/functions/tick"
    assert requests.post(url, timeout=5).status_code == 401
    assert requests.post(url, params={"code": host.keys.function_key}, timeout=5).status_code == 401
    r = requests.post(f"{host.url}/admin/functions/hello", params={"code": host.keys.master_key}, json={}, timeout=5)
    assert r.status_code == 400
    r = requests.post(f"{host.url}/admin/functions/nothere", params={"code": host.keys.master_key}, json={}, timeout=5)
    assert r.status_code == 404


def _strict(raw: bytes) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def _declared_length_post(host: FunctionHost, path: str, length: str, body: bytes = b"{}") -> tuple[int, bytes]:
    """A POST whose Content-Length header says ``length`` while only ``body`` is sent."""
    conn = http.client.HTTPConnection(urlsplit(host.url).hostname, urlsplit(host.url).port, timeout=10)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", length)
        conn.endheaders()
        conn.send(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_a_declared_body_over_the_limit_is_a_413_in_the_error_envelope(host: FunctionHost) -> None:
    status, raw = _declared_length_post(host, "/api/echo", "99999999999")
    assert status == 413
    err = _strict(raw)["error"]
    assert err["code"] == "payload_too_large" and err["field"] == "body" and err["value"] == 99999999999
    assert err["expected"] == f"at most {MAX_BODY_BYTES} bytes" and "99999999999" in err["message"]


def test_a_chunked_body_over_the_limit_is_a_413_too(host: FunctionHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devhost_host, "MAX_BODY_BYTES", 1000)

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 100

    r = requests.put(f"{host.url}/api/echo", data=chunks(), timeout=10)  # no Content-Length: chunked
    assert r.status_code == 413
    err = _strict(r.content)["error"]
    assert (err["code"], err["field"], err["expected"]) == ("payload_too_large", "body", "at most 1000 bytes")
    assert requests.put(f"{host.url}/api/echo", data=iter([b"ok"]), timeout=10).content == b"ok"


def test_every_refusal_of_the_host_is_the_error_envelope(host: FunctionHost) -> None:
    """404, 405, 401, 400, 500: {"error": {"code", "message", ...}}, strict JSON, as the app's own."""
    key = {"x-functions-key": host.keys.master_key}
    answers = {
        "no route": requests.get(f"{host.url}/api/nope", timeout=5),
        "no prefix": requests.get(f"{host.url}/elsewhere/whoami", timeout=5),
        "method": requests.delete(f"{host.url}/api/echo", timeout=5),
        "key": requests.get(f"{host.url}/api/hello/bob", timeout=5),
        "boom": requests.get(f"{host.url}/api/boom", timeout=5),
        "admin no such": requests.post(f"{host.url}/admin/functions/nope", headers=key, timeout=5),
        "admin http": requests.post(f"{host.url}/admin/functions/hello", headers=key, timeout=5),
        "eventgrid no such": requests.post(
            f"{host.url}/runtime/webhooks/eventgrid",
            params={"functionName": "nope", "code": host.keys.system_key("eventgrid_extension")},
            timeout=5,
        ),
    }
    for what, r in answers.items():
        assert r.status_code >= 400, what
        assert r.headers["content-type"].startswith("application/json"), what
        err = _strict(r.content)["error"]
        assert isinstance(err, dict) and err["code"] and err["message"], (what, err)
    assert answers["method"].status_code == 405 and answers["method"].headers["allow"]
    assert answers["method"].json()["error"] == {
        "code": "method_not_allowed",
        "message": "method DELETE is not allowed here",
        "field": "method",
        "value": "DELETE",
        "expected": answers["method"].headers["allow"].split(", "),
    }
