"""The host's parts on their own: route templates, keys, settings, event envelopes, Azurite, disabled functions."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests

from devhost.azurite import ACCOUNT_FILE, Azurite, AzuriteError
from devhost.catalog import apply_settings
from devhost.events import Envelope, blob_ref_from_event, parse_body
from devhost.host import FunctionHost
from devhost.keys import KEYS_FILE, HostKeys
from devhost.routing import RouteTemplate


@pytest.mark.parametrize(
    ("template", "segments", "expected"),
    [
        ("hello/{name}", ["HELLO", "bob"], {"name": "bob"}),
        ("hello/{name}", ["hello"], None),
        ("hello/{name}", ["hello", "a", "b"], None),
        ("items/{id:int}", ["items", "42"], {"id": "42"}),
        ("items/{id:int}", ["items", "4x"], None),
        ("items/{id:int:min(10)}", ["items", "9"], None),
        ("opt/{name?}", ["opt"], {}),
        ("opt/{name?}", ["opt", "x"], {"name": "x"}),
        ("page/{n=1}", ["page"], {"n": "1"}),
        ("files/{*path}", ["files", "a", "b c"], {"path": "a/b c"}),
        ("files/{*path}", ["files"], {}),
        ("f/{stem}.{ext}", ["f", "data.v2.csv"], {"stem": "data.v2", "ext": "csv"}),
        ("g/{id:guid}", ["g", str(uuid.UUID(int=1))], {"id": str(uuid.UUID(int=1))}),
        ("b/{flag:bool}", ["b", "maybe"], None),
    ],
)
def test_route_templates(template: str, segments: list[str], expected: dict[str, str] | None) -> None:
    assert RouteTemplate(template).match(segments) == expected


def test_route_precedence_prefers_literals() -> None:
    ordered = sorted(
        ["items/{*rest}", "items/{id}", "items/{id:int}", "items/new"], key=lambda t: RouteTemplate(t).precedence
    )
    assert ordered == ["items/new", "items/{id:int}", "items/{id}", "items/{*rest}"]


def test_host_keys_are_created_once_private_and_hidden(tmp_path: Path) -> None:
    keys = HostKeys.load_or_create(tmp_path)
    path = tmp_path / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = {
        keys.master_key,
        keys.function_key,
        keys.system_key("eventgrid_extension"),
        keys.system_key("blobs_extension"),
    }
    assert len(values) == 4 and all(len(v) >= 40 for v in values)
    assert not any(v in repr(keys) for v in values)
    again = HostKeys.load_or_create(tmp_path)
    assert (again.master_key, again.function_key) == (keys.master_key, keys.function_key)
    assert keys.allows_function(keys.master_key) and keys.allows_function(keys.function_key)
    assert not keys.allows_function(keys.system_key("blobs_extension")) and not keys.allows_function(None)
    assert keys.allows_system("blobs_extension", keys.master_key)
    assert not keys.allows_system("blobs_extension", keys.system_key("eventgrid_extension"))


def test_local_settings_then_environ(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": {"FROM_FILE": "file", "ALREADY": "file", "OVERRIDDEN": "file"}})
    )
    target = {"ALREADY": "process"}
    previous = apply_settings(tmp_path, {"OVERRIDDEN": "arg", "NEW": "arg"}, target)
    # like Core Tools, the file does not override the process environment; the explicit environ wins
    assert target == {"ALREADY": "process", "FROM_FILE": "file", "OVERRIDDEN": "arg", "NEW": "arg"}
    assert previous == {"FROM_FILE": None, "OVERRIDDEN": None, "NEW": None}


def test_envelopes_and_blob_subjects() -> None:
    (ev,) = parse_body(
        b'{"ID": "1", "EVENTTYPE": "t", "Subject": "s", "DATA": {"a": 1}, "eventTime": "2026-01-01T00:00:00Z"}'
    )
    assert (ev.id, ev.event_type, ev.subject, ev.data, ev.cloud_event) == ("1", "t", "s", {"a": 1}, False)
    (ce,) = parse_body(b'[{"specversion": "1.0", "id": "2", "source": "src", "type": "ty", "data": null}]')
    assert (ce.topic, ce.event_type, ce.cloud_event) == ("src", "ty", True)

    def ref(subject: str, url: str | None = None) -> tuple[str, tuple[str, ...]] | None:
        data = {"url": url} if url else {}
        env = Envelope.from_json(
            {"id": "x", "eventType": "Microsoft.Storage.BlobCreated", "subject": subject, "data": data}
        )
        r = blob_ref_from_event(env)
        return (r.container, r.candidates) if r else None

    assert ref("/blobServices/default/containers/in/blobs/a b.csv") == ("in", ("a b.csv",))
    assert ref("blobServices/default/containers/in/blobs/d/x%25.csv") == ("in", ("d/x%.csv", "d/x%25.csv"))
    assert ref("/blobServices/default/containers/in/blobs/q.csv", "http://127.0.0.1:1/acct/in/q%20r.csv") == (
        "in",
        ("q.csv", "q r.csv"),
    )
    assert ref("experiments/1/runs/2") is None


def test_azurite_account_is_random_private_and_stable(azurite: Azurite) -> None:
    path = azurite.data_dir / ACCOUNT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    account = json.loads(path.read_text())
    assert account["accountName"] == azurite.account_name != "devstoreaccount1"
    conn = azurite.connection_string
    assert f"BlobEndpoint=http://127.0.0.1:{azurite.port}/{azurite.account_name};" in conn
    assert "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq" not in conn  # the well-known key
    assert account["accountKey"] not in repr(azurite)


def test_azurite_stops_by_pid_and_keeps_its_account(tmp_path: Path, azurite: Azurite) -> None:
    az = Azurite(tmp_path, port=0)
    with az:
        pid, port, name = az.pid, az.port, az.account_name
        assert pid is not None and psutil.pid_exists(pid)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert Azurite(tmp_path).account_name == name  # same data dir, same account


def test_azurite_missing_package_says_run_make_install(tmp_path: Path) -> None:
    with pytest.raises(AzuriteError, match="make install"):
        Azurite(tmp_path / "data", project_root=tmp_path).start()


def test_disabled_function_is_not_run(make_host: Callable[..., FunctionHost]) -> None:
    h = make_host(container=f"disabled-{uuid.uuid4().hex[:10]}", env={"AzureWebJobs.whoami.Disabled": "true"}).start()
    try:
        status = requests.get(
            f"{h.url}/admin/host/status", headers={"x-functions-key": h.keys.master_key}, timeout=5
        ).json()
        assert {"whoami", "tick"} <= set(status["disabled"]) and "whoami" not in status["functions"]
        assert requests.get(f"{h.url}/api/whoami", timeout=5).status_code == 404
        assert (
            requests.post(
                f"{h.url}/admin/functions/tick", headers={"x-functions-key": h.keys.master_key}, timeout=5
            ).status_code
            == 404
        )
    finally:
        h.stop()
    assert "AzureWebJobs.whoami.Disabled" not in os.environ  # restored on stop


def test_no_key_or_connection_string_is_logged(
    make_host: Callable[..., FunctionHost], azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    container = f"logs-{uuid.uuid4().hex[:10]}"
    with caplog.at_level(logging.DEBUG):
        h = make_host(container=container).start()
        try:
            requests.get(f"{h.url}/api/hello/x", params={"code": h.keys.function_key}, timeout=5)
            requests.get(f"{h.url}/api/boom", headers={"x-functions-key": h.keys.master_key}, timeout=5)
            notify = {"aeg-event-type": "Notification"}
            requests.post(
                h.eventgrid_webhook_url("on_event"),
                json=[{"id": "l1", "eventType": "t", "data": {}}],
                headers=notify,
                timeout=5,
            )
            requests.post(
                h.blob_webhook_url("on_blob"), json=[{"id": "l2", "eventType": "t", "data": {}}], headers=notify, timeout=5
            )
            secrets = [h.keys.master_key, h.keys.function_key, *h.keys.system_keys.values()]
        finally:
            h.stop()
    account_key = json.loads((azurite.data_dir / ACCOUNT_FILE).read_text())["accountKey"]
    fmt = logging.Formatter("%(name)s %(message)s")
    # everything but this test's own HTTP client (urllib3 logs the URLs it calls, codes included)
    text = "\n".join(fmt.format(r) for r in caplog.records if not r.name.startswith("urllib3"))
    assert "Executed 'Functions.hello'" in text  # invocation log lines are there
    assert "Traceback" in text  # the failing function's traceback is logged (not returned)
    for secret in [*secrets, account_key, azurite.connection_string]:
        assert secret not in text
