"""HTTP triggers through the real host: keys, routes, methods, response mapping, errors, admin API."""

from __future__ import annotations

import requests

from devhost.host import FunctionHost


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
    assert body["error"] == "Exception while executing function: Functions.boom"
    assert body["invocationId"]
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
