"""Security of the local stack, against the real thing: Azurite, the function host running
function_app.py, and a model server with a real model, all on loopback (one stack per module).

* Keys: every HTTP function (the list comes from the app's own trigger metadata, so a new
  function is covered without touching this file) and every admin route of the host answer 401
  to no key, a wrong key and a key of the wrong kind, with the JSON error body of the API.
* Sockets: the function host, Azurite and the model server listen on 127.0.0.1 only.
* Blob names: hostile names (``..``, ``%2e%2e``, absolute paths, backslashes, very long names,
  control characters, look-alike dots) never make anything appear outside ``incoming/`` and
  ``rejected/``, in Azurite or on disk.
* Artifacts: the model server loads its model from its ``--model-dir`` only; no request field,
  header or query string makes it load a path or URL, and a deploy of a model outside the
  workspace's store is refused.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psutil
import pytest
import requests
from azure.storage.blob import BlobServiceClient

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from devhost.blobs import leaves_container  # noqa: E402
from devhost.catalog import BLOB, EVENT_GRID, HTTP  # noqa: E402
from devhost.keys import BLOBS_SYSTEM_KEY, EVENTGRID_SYSTEM_KEY  # noqa: E402
from devhost.routing import RouteTemplate, example_segments  # noqa: E402
from shared.contract import TUTORIAL_CUSTOMERS  # noqa: E402
from shared.ingest_service import rejected_name, unsafe_name_reason  # noqa: E402
from shared.workspace.base import Deployment  # noqa: E402
from shared.workspace.local.servers import free_port  # noqa: E402

if TYPE_CHECKING:
    from conftest import TrainedModel

pytestmark = pytest.mark.timeout(600)

# Anonymous HTTP functions, by decision (README "HTTP endpoints"): the relay's liveness, and the
# Swagger document and UI (public, as the swagger.json of an Azure ML endpoint is). Any other
# function without a key fails test_no_http_function_is_anonymous_by_accident.
ANONYMOUS = {"health", "swagger", "docs"}
BLOB_CREATED = {
    "topic": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct",
    "eventType": "Microsoft.Storage.BlobCreated",
    "eventTime": "2026-12-01T10:00:00Z",
    "data": {"api": "PutBlob", "blobType": "BlockBlob", "contentLength": 10},
    "dataVersion": "",
    "metadataVersion": "1",
}


@dataclass
class Stack:
    url: str
    local: Any
    live: Deployment
    service: BlobServiceClient
    home: Path

    @property
    def host(self) -> Any:
        return self.local.host

    @property
    def keys(self) -> Any:
        return self.local.host.keys


@pytest.fixture(scope="module")
def stack(trained_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from benchmarks.scoring import deploy, stop_model_servers
    from shared.workspace.local.stack import PROJECT_ROOT, LocalStack

    if not (PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob").exists() or shutil.which("node") is None:
        pytest.skip("Azurite is not installed (make install)")
    base = tmp_path_factory.mktemp("security")
    home = base / "home"
    (base / "canary").mkdir()  # a neighbour of the data dir: nothing may ever be written here
    local = LocalStack(
        home,
        port=free_port(),
        azurite_port=free_port(),
        environ={"BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *", "BANKML_TIME_BUDGET_S": "3"},
        blob_poll_s=0.5,
    )
    try:
        deploy(home, trained_model.model_dir)
        local.start()
        assert local.workspace is not None and local.azurite is not None
        live = local.workspace.live_deployment()
        assert live is not None
        service = BlobServiceClient.from_connection_string(local.azurite.connection_string)
        yield Stack(local.url, local, live, service, home)
    finally:
        local.stop()
        stop_model_servers(home)


def _is_401_with_error_body(r: requests.Response, *secrets: str) -> bool:
    if r.status_code != 401:
        return False
    body = r.json()
    ok = isinstance(body.get("error"), dict) and body["error"].get("code") == "unauthorized"
    return ok and not any(s in r.text for s in secrets)


def _wrong_keys(stack: Stack, *, kind: str) -> dict[str, dict[str, Any]]:
    """Ways to call a route without its key: none, a wrong one, and every key of another kind."""
    keys = stack.keys
    variants: dict[str, dict[str, Any]] = {
        "no key": {},
        "wrong key": {"headers": {"x-functions-key": "wrong-" + uuid.uuid4().hex}},
        "wrong code": {"params": {"code": "wrong"}},
        "empty key": {"headers": {"x-functions-key": ""}},
        "model server bearer key": {"headers": {"Authorization": f"Bearer {stack.live.key}"}},
        "model server key as function key": {"headers": {"x-functions-key": stack.live.key}},
        "eventgrid system key": {"params": {"code": keys.system_key(EVENTGRID_SYSTEM_KEY)}},
        "blobs system key": {"params": {"code": keys.system_key(BLOBS_SYSTEM_KEY)}},
        "function key": {"headers": {"x-functions-key": keys.function_key}},
        "a key for another stack": {"headers": {"x-functions-key": hashlib.sha256(b"other").hexdigest()}},
    }
    if kind == "function":  # these grant FUNCTION level
        variants.pop("function key")
    elif kind == EVENTGRID_SYSTEM_KEY:
        variants.pop("eventgrid system key")
    elif kind == BLOBS_SYSTEM_KEY:
        variants.pop("blobs system key")
    return variants


def _http_functions(stack: Stack) -> list[tuple[str, str, str, str]]:
    """(function, method, path, auth level) of every enabled HTTP function, from its trigger."""
    out = []
    for name, spec in sorted(stack.host.functions.items()):
        if spec.trigger_type != HTTP or spec.disabled:
            continue
        template = RouteTemplate(str(spec.trigger.get("route") or name))
        path = "/".join([stack.host.route_prefix, *example_segments(template)])
        level = str(spec.trigger.get("authLevel") or "function").lower()
        for method in spec.trigger.get("methods") or ["GET", "POST"]:
            out.append((name, str(method).upper(), f"/{path}", level))
    return out


def test_every_http_function_needs_its_key(stack: Stack) -> None:
    functions = _http_functions(stack)
    assert {f for f, *_ in functions} >= {"score", "pipeline_submit", "pipeline_run", "benchmarks_latest"}
    checked = 0
    for name, method, path, level in functions:
        if level == "anonymous":
            continue
        kind = "admin" if level == "admin" else "function"
        for what, how in _wrong_keys(stack, kind=kind).items():
            r = requests.request(method, stack.url + path, json={"data": []}, timeout=30, **how)
            assert _is_401_with_error_body(r, stack.keys.master_key, stack.keys.function_key, stack.live.key), (
                name,
                method,
                path,
                what,
                r.status_code,
                r.text[:300],
            )
            checked += 1
        # the right key gets past the host: the route is real, the 401s above were about the key
        good = stack.keys.master_key if kind == "admin" else stack.keys.function_key
        r = requests.request(method, stack.url + path, headers={"x-functions-key": good}, json={}, timeout=60)
        host_404 = r.status_code == 404 and r.json()["error"].get("message") == "no function matches this route"
        assert r.status_code not in (401, 405) and not host_404, (name, method, path, r.status_code, r.text[:300])
    assert checked >= 4 * 9


def test_no_http_function_is_anonymous_by_accident(stack: Stack) -> None:
    anonymous = {f for f, _m, _p, level in _http_functions(stack) if level == "anonymous"}
    assert anonymous == ANONYMOUS
    assert requests.get(f"{stack.url}/api/", timeout=10).status_code == 200  # the health check


def test_admin_routes_need_the_master_key(stack: Stack) -> None:
    non_http = [n for n, s in stack.host.functions.items() if s.trigger_type != HTTP]
    assert {"ingest", "deploy_best_model", "enable_insights", "benchmark"} <= set(non_http)
    for name in [*non_http, "no-such-function"]:
        url = f"{stack.url}/admin/functions/{quote(name)}"
        for what, how in _wrong_keys(stack, kind="admin").items():
            r = requests.post(url, json={"input": ""}, timeout=30, **how)
            assert _is_401_with_error_body(r, stack.keys.master_key), (name, what, r.status_code, r.text[:300])
    # the master key gets past the check (a function that does not exist: nothing runs)
    r = requests.post(
        f"{stack.url}/admin/functions/no-such-function", headers={"x-functions-key": stack.keys.master_key}, timeout=30
    )
    assert r.status_code == 404


def test_host_status_needs_the_master_key(stack: Stack) -> None:
    url = f"{stack.url}/admin/host/status"
    for what, how in _wrong_keys(stack, kind="admin").items():
        r = requests.get(url, timeout=30, **how)
        assert _is_401_with_error_body(r, stack.keys.master_key), (what, r.status_code, r.text[:300])
    assert (
        requests.get(url, headers={"x-functions-key": stack.keys.master_key}, timeout=30).json()["state"] == "Running"
    )


def test_webhooks_need_their_system_key(stack: Stack) -> None:
    hooks = [
        (f"/runtime/webhooks/eventgrid?functionName={quote(n)}", EVENTGRID_SYSTEM_KEY)
        for n, s in stack.host.functions.items()
        if s.trigger_type == EVENT_GRID
    ] + [
        (f"/runtime/webhooks/blobs?functionName=Host.Functions.{quote(n)}", BLOBS_SYSTEM_KEY)
        for n, s in stack.host.functions.items()
        if s.trigger_type == BLOB
    ]
    assert len(hooks) >= 3
    event = [dict(BLOB_CREATED, id=uuid.uuid4().hex, subject="/blobServices/default/containers/incoming/blobs/n.csv")]
    for path, kind in hooks:
        for method in ("POST", "OPTIONS"):
            for what, how in _wrong_keys(stack, kind=kind).items():
                headers = {"aeg-event-type": "Notification", "WebHook-Request-Origin": "eventgrid.azure.net"}
                headers |= how.get("headers", {})
                r = requests.request(
                    method,
                    stack.url + path,
                    data=json.dumps(event),
                    headers=headers,
                    params=how.get("params"),
                    timeout=30,
                )
                assert _is_401_with_error_body(r, stack.keys.system_key(kind)), (path, method, what, r.status_code)
        # the system key gets past the check (OPTIONS: the abuse-protection handshake, nothing runs)
        r = requests.options(
            stack.url + path,
            params={"code": stack.keys.system_key(kind)},
            headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
            timeout=30,
        )
        assert r.status_code == 200


def test_the_model_server_needs_its_bearer_key(stack: Stack) -> None:
    body = {"data": list(TUTORIAL_CUSTOMERS)}
    uri = stack.live.scoring_uri
    for auth in (
        None,
        "Bearer",
        "Bearer wrong",
        f"Bearer {stack.keys.function_key}",
        f"Bearer {stack.keys.master_key}",
        stack.live.key,
        f"Basic {stack.live.key}",
        f"Bearer {stack.live.key}x",
        f"Bearer  {stack.live.key[:-1]}",
    ):
        headers = {"Authorization": auth} if auth is not None else {}
        r = requests.post(uri, json=body, headers=headers, timeout=30)
        assert r.status_code == 401, (auth and auth[:12], r.status_code)
        assert stack.live.key not in r.text
    r = requests.post(uri, json=body, headers={"x-functions-key": stack.live.key}, timeout=30)
    assert r.status_code == 401
    assert (
        requests.post(uri, json=body, headers={"Authorization": f"Bearer {stack.live.key}"}, timeout=30).status_code
        == 200
    )


# --------------------------------------------------------------------------------------------
# sockets


def _listening(pid: int) -> list[tuple[str, int]]:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    out = []
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out += [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def test_every_stack_process_listens_on_loopback_only(stack: Stack) -> None:
    live = stack.local.workspace.registry.live_deployment()
    pids = {
        "function host (this process)": os.getpid(),
        "azurite": stack.local.azurite.pid,
        "model server": live["pid"],
    }
    for what, pid in pids.items():
        sockets = _listening(pid)
        assert sockets, what
        assert all(ip == "127.0.0.1" for ip, _ in sockets), (what, sockets)
    assert (("127.0.0.1", stack.host.port)) in _listening(os.getpid())
    assert (("127.0.0.1", stack.local.azurite.port)) in _listening(stack.local.azurite.pid)
    assert (("127.0.0.1", live["port"])) in _listening(live["pid"])


# --------------------------------------------------------------------------------------------
# blob names


HOSTILE_NAMES = [
    "../reports/escape.csv",
    "..\\reports\\escape.csv",
    "a/../../reports/escape.csv",
    "./escape.csv",
    "/reports/escape.csv",
    "\\reports\\escape.csv",
    "C:\\escape.csv",
    "%2e%2e/reports/escape.csv",
    "%2E%2E%2Freports%2Fescape.csv",
    "..%2freports%2fescape.csv",
    "\uff0e\uff0e/reports/escape.csv",  # fullwidth full stops: NFKC makes them ".."
    "\u2025/reports/escape.csv",  # two dot leader
    "\u2024\u2024/reports/escape.csv",  # one dot leaders
    "ctrl\x01name.csv",
    "tab\tname.csv",
    "nul\x00name.csv",
    "del\x7fname.csv",
    "rtl\u202ecsv.exe",
    "x" * 1020 + ".csv",
    "y" * 2000 + ".csv",
    "deep/" * 300 + "z.csv",
]


def _all_blobs(service: BlobServiceClient) -> dict[str, set[str]]:
    return {
        c.name: {b.name for b in service.get_container_client(c.name).list_blobs()} for c in service.list_containers()
    }


def _rejected(service: BlobServiceClient) -> set[str]:
    return _all_blobs(service).get("rejected", set())


def _bad_csv() -> bytes:
    return b"age,job\n1,2\n"


def test_hostile_blob_names_never_leave_their_container(stack: Stack) -> None:
    svc = stack.service
    incoming = svc.get_container_client("incoming")
    if not incoming.exists():
        incoming.create_container()
    reports = svc.get_container_client("reports")
    if not reports.exists():
        reports.create_container()
    canary = "escape.csv"
    before = _all_blobs(svc)
    disk_before = {p for p in stack.home.parent.rglob("*") if stack.home not in p.parents and p != stack.home}

    # 1. as Event Grid blob events (the subject carries the name as written and percent-encoded)
    for name in HOSTILE_NAMES:
        for subject_name in {name, quote(name, safe="/")}:
            event = dict(
                BLOB_CREATED,
                id=uuid.uuid4().hex,
                subject=f"/blobServices/default/containers/incoming/blobs/{subject_name}",
                data=dict(BLOB_CREATED["data"], url=f"http://127.0.0.1/acct/incoming/{quote(name)}", eTag="0x1"),
            )
            r = requests.post(
                stack.host.blob_webhook_url("ingest"),
                data=json.dumps([event]),
                headers={"aeg-event-type": "Notification", "Content-Type": "application/json"},
                timeout=60,
            )
            assert r.status_code in (200, 400), (name[:40], r.status_code, r.text[:300])

    # 2. as real blobs, where storage takes the name (the scanner hands them to ingest). Not the
    # names with C0 control characters other than tab: Azurite stores them but then fails every
    # listing of the container with a 500 (Azure lists them XML-encoded), which would stop the
    # local scanner for every later file; `bankml drop` refuses such names (test_cli_drop_...).
    uploaded = []
    for name in (n for n in HOSTILE_NAMES if not any(ord(c) < 32 and c != "\t" for c in n)):
        try:
            incoming.upload_blob(name, _bad_csv(), overwrite=True)
        except Exception:  # noqa: BLE001 - storage refusing a name is fine; what it stored is checked below
            continue
        uploaded.append(name)
    stored = _all_blobs(svc)["incoming"]
    assert uploaded
    # wait until every stored hostile blob has been handled (a rejection record or gone)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        blobs = _all_blobs(svc)
        pending = [
            n
            for n in stored - before.get("incoming", set())
            if n in blobs.get("incoming", set())
            and not any(r.endswith(".error.json") for r in blobs.get("rejected", set()))
        ]
        if not pending:
            break
        time.sleep(1)
    time.sleep(3)  # one more scan round
    after = _all_blobs(svc)

    assert set(after) <= {"incoming", "rejected", "reports", *before}, set(after)
    assert after.get("reports", set()) == before.get("reports", set()), "a blob appeared in reports/"
    assert canary not in after.get("incoming", set()) | after.get("rejected", set())
    # what the app wrote (rejected/) has names that stay inside their container
    for container, names in after.items():
        if container == "incoming":
            continue  # what the test itself uploaded, as storage stored it
        for n in names - before.get(container, set()):
            assert leaves_container(n) is False and unsafe_name_reason(n) is None, (container, n[:80])
    # every hostile name that storage kept was rejected with its reason beside it, or (a name that
    # leaves its container) never read nor handed to the function
    rejected = after.get("rejected", set())
    unsafe_records = [r for r in rejected if r.startswith("unsafe-name-") and r.endswith(".error.json")]
    for name in stored - before.get("incoming", set()):
        if leaves_container(name):
            assert name not in {str(d["source_blob"]) for d in stack.local.workspace.registry.list_datasets()}
            continue
        assert f"{rejected_name(name)}.error.json" in rejected or any(
            name in json.loads(svc.get_container_client("rejected").download_blob(r).readall())["error"]["value"]
            for r in unsafe_records
        ), name[:80]
    assert all(d["source_blob"] not in HOSTILE_NAMES for d in stack.local.workspace.registry.list_datasets())
    # nothing written on disk outside the data dir (a neighbour dir stays as it was)
    disk_after = {p for p in stack.home.parent.rglob("*") if stack.home not in p.parents and p != stack.home}
    assert disk_after == disk_before
    assert not list((stack.home.parent / "canary").iterdir())


def test_a_very_long_name_is_rejected_within_the_name_limit(stack: Stack) -> None:
    """1,024 characters is the longest blob name: ``rejected/<name>.error.json`` cannot be
    written beside such a file; the rejection must still be recorded, under a legal name."""
    incoming = stack.service.get_container_client("incoming")
    name = "L" * 1020 + ".csv"
    etag = str(incoming.upload_blob(name, _bad_csv(), overwrite=True).get_blob_properties().etag)

    def record() -> list[str]:
        rejected = _rejected(stack.service)
        return [
            r
            for r in rejected
            if r.endswith(".error.json")
            and len(r) <= 1024
            and r.startswith("long-name-")
            and "L" * 20
            in json.dumps(json.loads(stack.service.get_container_client("rejected").download_blob(r).readall()))
        ]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not record():
        failure = stack.host.store.failure("ingest", name, etag)
        assert failure is None or not failure[1], f"poisoned after {failure[0]} attempts: {failure[2][:300]}"
        time.sleep(1)
    assert record(), (
        f"no rejection record for the 1,024-character name; failures: {stack.host.store.failure('ingest', name, etag)}"
    )


# --------------------------------------------------------------------------------------------
# the model server loads its own model only


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []  # noqa: RUF012 - shared by the test server

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


def test_no_request_makes_the_model_server_load_another_model(
    stack: Stack, trained_model: TrainedModel, tmp_path: Path
) -> None:
    from deploy_fixtures import dummy_model

    other = dummy_model(trained_model.model_dir, tmp_path / "other-model", trained_model.csv)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.hits = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model.pkl"
        refs = [str(other), str(other / "model.pkl"), f"file://{other}/model.pkl", url, "../../" + str(other)]
        auth = {"Authorization": f"Bearer {stack.live.key}"}
        rows = list(TUTORIAL_CUSTOMERS)
        proba = {"Inputs": {"data": rows}, "GlobalParameters": {"method": "predict_proba"}}
        baseline = requests.post(stack.live.scoring_uri, json=proba, headers=auth, timeout=30)
        assert baseline.status_code == 200
        for ref in refs:
            attempts = [
                ({**proba, "model_dir": ref, "model_path": ref, "model": ref}, {}, {}),
                (
                    {
                        "Inputs": {"data": rows, "model_dir": ref},
                        "GlobalParameters": {"method": "predict_proba", "model": ref},
                    },
                    {},
                    {},
                ),
                (proba, {"x-bankml-model-dir": ref, "azureml-model-deployment": ref, "x-ms-model": ref}, {}),
                (proba, {}, {"model_dir": ref, "model": ref, "path": ref, "url": ref}),
            ]
            for body, headers, params in attempts:
                for target in (stack.live.scoring_uri, f"{stack.url}/api/score"):
                    h = {
                        **headers,
                        **(auth if target == stack.live.scoring_uri else {"x-functions-key": stack.keys.function_key}),
                    }
                    r = requests.post(target, json=body, headers=h, params=params, timeout=30)
                    if r.status_code == 200:
                        # the same model answered, with the same probabilities
                        assert r.json() == baseline.json(), (ref, target)
                        assert r.headers["x-bankml-model-version"] == str(stack.live.model_version)
                    else:
                        assert 400 <= r.status_code < 500, (ref, target, r.status_code, r.text[:200])
        assert _Recorder.hits == []  # no URL taken from a request was ever fetched
    finally:
        server.shutdown()
        server.server_close()


def test_a_deploy_of_a_model_outside_the_store_is_refused(trained_model: TrainedModel, tmp_path: Path) -> None:
    from deploy_fixtures import completed_run, register_csv

    from shared.config import Settings
    from shared.workspace.local.workspace import LocalWorkspace

    ws = LocalWorkspace(Settings.from_env({"BANKML_HOME": str(tmp_path / "home"), "BANKML_MIN_PRIMARY_METRIC": "0"}))
    version = register_csv(ws, trained_model.csv)
    outside = tmp_path / "elsewhere" / "model"
    shutil.copytree(trained_model.model_dir, outside)
    run_id = completed_run(ws, version, outside, recorded_auc=0.9)
    ws.registry.update_run(run_id, model_dir=str(outside))  # the registry names a dir outside the store
    try:
        decision = ws.deploy_run(run_id)
        assert not decision.deployed
        assert "outside the workspace's model store" in decision.reason
        assert ws.registry.list_deployments() == []  # no server was started
        # a symlink from inside the store to outside it is refused as well
        link = ws.run_dir(run_id) / "model-link"
        link.symlink_to(outside)
        second = completed_run(ws, version, outside, recorded_auc=0.9)
        ws.registry.update_run(second, model_dir=str(link))
        refused = ws.deploy_run(second)
        assert not refused.deployed and "outside the workspace's model store" in refused.reason
    finally:
        ws.stop_servers()


def test_storing_a_folder_that_holds_the_store_is_refused_not_recursed(tmp_path: Path) -> None:
    """A model dir that contains the workspace's home (say, the home itself) cannot be copied into
    its own subtree: a clear refusal instead of a RecursionError deep in copytree."""
    from shared.config import Settings
    from shared.errors import DeploymentError
    from shared.workspace.local.workspace import LocalWorkspace

    ws = LocalWorkspace(Settings.from_env({"BANKML_HOME": str(tmp_path / "home")}))
    for holder in (tmp_path / "home", tmp_path):
        with pytest.raises(DeploymentError, match="holds the workspace's model store"):
            ws.store_model("run-x", holder)
    assert not (ws.run_dir("run-x") / "model").exists()
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")
    assert (ws.store_model("run-x", model) / "model.json").read_text() == "{}"


# the names ingest would reject (or storage could not hold with its .error.json beside it)
CLI_REFUSED = [n for n in HOSTILE_NAMES if unsafe_name_reason(n) is not None or len(n) > 1013]


@pytest.mark.parametrize("name", CLI_REFUSED, ids=range(len(CLI_REFUSED)))
def test_cli_drop_refuses_a_hostile_name_before_uploading(name: str, tmp_path: Path, capsys: Any) -> None:
    """``bankml drop --name`` checks the name as ingest does, before it even looks for a stack."""
    import cli

    csv = tmp_path / "f.csv"
    csv.write_bytes(_bad_csv())
    home = tmp_path / "no-stack-here"
    with pytest.raises(SystemExit) as info:
        cli.main(["drop", str(csv), "--name", name, "--home", str(home)])
    message = str(info.value.code)
    assert "blob name" in message and "no stack is running" not in message, message[:200]
    assert not home.exists()
