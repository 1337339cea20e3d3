"""Secrets and sockets of the whole local stack, as a user runs it (`bankml up` in a subprocess).

The stack goes through the loop (a drop, training, a deploy, a benchmark run, a rejected file,
refused requests with wrong keys of every kind), then every file under the data dir, every blob
in Azurite, every CLI output (but `bankml keys`, the one command meant to print a key), every
HTTP answer and every process's argv are searched for every secret the stack holds: the host's
master, function and system keys, the model servers' Bearer keys, the Azurite account key and the
storage connection string (also percent-encoded). The secret stores themselves are left out:
host-keys.json and azurite-account.json (0600), and the registry columns that must hold a key
(a deployment's key, an Event Grid subscription's URL with its system key), checked by name.
Every process of the stack listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest
import requests
from azure.storage.blob import BlobServiceClient

from shared.contract import TUTORIAL_CUSTOMERS
from shared.datagen import write_csv
from tests.e2e.conftest import RunningStack, model_server_pids, stop_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

FAST = {
    "BANKML_TIME_BUDGET_S": "8",
    "BANKML_BENCH_REQUESTS": "40",
    "BANKML_BENCH_DURATION_S": "3",
    "BANKML_BENCH_CONCURRENCY": "2",
    "BANKML_BENCHMARK_SCHEDULE": "0 0 0 1 1 *",
}
SECRET_STORES = {"host-keys.json", "azurite-account.json"}
# (table, column) of the registry that hold a key by design: what the relay and the Event Grid
# publisher need to call a model server and a webhook.
KEY_COLUMNS = {("deployments", "key"), ("subscriptions", "endpoint")}


def _live(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((d for d in status["deployments"] if d["status"] == "live"), None)


def _secrets(stack: RunningStack) -> dict[str, str]:
    keys = json.loads((stack.home / "host-keys.json").read_text())
    account = json.loads((stack.home / "azurite" / "azurite-account.json").read_text())
    out = {"master key": keys["masterKey"]}
    out |= {f"function key {k}": v for k, v in keys["functionKeys"].items()}
    out |= {f"system key {k}": v for k, v in keys["systemKeys"].items()}
    db = sqlite3.connect(stack.home / "registry.sqlite")
    try:
        out |= {f"model server key {n}": k for n, k in db.execute("SELECT name, key FROM deployments")}
    finally:
        db.close()
    out["azurite account key"] = account["accountKey"]
    out["connection string"] = (
        f"DefaultEndpointsProtocol=http;AccountName={account['accountName']};AccountKey={account['accountKey']};"
    )
    # percent-encoded forms (a key in a URL, a log line of a URL)
    out |= {f"{k} (url-encoded)": quote(v, safe="") for k, v in list(out.items()) if quote(v, safe="") != v}
    return out


def _find(text: str | bytes, secrets: dict[str, str]) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [name for name, value in secrets.items() if value.encode() in data]


def _listening(pid: int) -> list[tuple[str, int]]:
    out = []
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            out += [
                (c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
            ]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_no_secret_leaks_and_every_process_listens_on_loopback(stack_factory: Any, tmp_path: Path) -> None:
    stack: RunningStack = stack_factory("secrets", **FAST)
    csv = write_csv(tmp_path / "bank.csv", 3000, 5)
    outputs: dict[str, str] = {}

    def cli(name: str, *args: str, check: bool = True) -> str:
        r = stack.cli(*args, check=check)
        outputs[name] = r.stdout + "\n" + r.stderr
        return r.stdout

    cli("drop", "drop", str(csv), "--name", "bank.csv")
    stack.wait_for("a live deployment", _live, timeout=600)
    key = stack.key()  # `bankml keys`: the one output meant to hold a key, not searched
    status = stack.status()
    live = _live(status)
    assert live is not None
    secrets = _secrets(stack)
    model_key = secrets[f"model server key {live['name']}"]
    system_key = secrets["system key eventgrid_extension"]

    # requests with and without keys of every kind: the answers never carry a key
    body = json.dumps({"data": list(TUTORIAL_CUSTOMERS)})
    score = f"{stack.url}/api/score"
    attempts = {
        "good": ("POST", score, {"x-functions-key": key}, None),
        "no key": ("POST", score, {}, None),
        "wrong key": ("POST", score, {"x-functions-key": "wrong"}, None),
        "model key on relay": ("POST", score, {"x-functions-key": model_key}, None),
        "bearer on relay": ("POST", score, {"Authorization": f"Bearer {model_key}"}, None),
        "system key on relay": ("POST", score, {}, {"code": system_key}),
        "function key as bearer": ("POST", live["scoring_uri"], {"Authorization": f"Bearer {key}"}, None),
        "wrong bearer": ("POST", live["scoring_uri"], {"Authorization": "Bearer wrong"}, None),
        "function key on admin": ("POST", f"{stack.url}/admin/functions/benchmark", {"x-functions-key": key}, None),
        "function key on webhook": (
            "POST",
            f"{stack.url}/runtime/webhooks/eventgrid?functionName=deploy_best_model",
            {"x-functions-key": key},
            None,
        ),
        "pipeline wrong key": ("GET", f"{stack.url}/api/pipeline/runs/x", {"x-functions-key": "wrong"}, None),
        "bad payload": ("POST", score, {"x-functions-key": key}, None),
    }
    for what, (method, url, headers, params) in attempts.items():
        data = body if what != "bad payload" else json.dumps({"data": [{"age": key}]})
        r = requests.request(
            method, url, headers={"Content-Type": "application/json", **headers}, params=params, data=data, timeout=60
        )
        outputs[f"http {what}"] = f"{r.status_code} {dict(r.headers)} {r.text}"
        if what == "good":
            assert r.status_code == 200, r.text
        elif what == "bad payload":
            assert r.status_code == 400
        else:
            assert r.status_code == 401, (what, r.status_code, r.text[:200])
    outputs.pop("http bad payload")  # it echoes the value sent, which here is the key itself: not a leak

    # a rejected file, a benchmark, and what a user reads
    bad = tmp_path / "bad.csv"
    bad.write_text("age,job\n1,2\n")
    cli("drop rejected", "drop", str(bad), "--name", "bad.csv", check=False)
    cli("bench", "bench")
    run_id = status["runs"][0]["run_id"]
    for name, args in {
        "status": ("status",),
        "status json": ("status", "--json"),
        "runs": ("runs",),
        "runs show": ("runs", "show", run_id),
        "logs": ("logs",),
        "logs 4xx": ("logs", "--status", "4xx"),
        "logs server": ("logs", "--server"),
        "bench history": ("bench", "--history"),
        "logs slowest": ("logs", "--slowest", "5"),
    }.items():
        cli(name, *args, check=False)

    # sockets and argv of every process of the stack, while it runs
    info = json.loads((stack.home / "stack.json").read_text())
    pids = {"bankml up (function host)": stack.proc.pid, "azurite": info["azurite_pid"]}
    pids |= {f"model server {p}": p for p in model_server_pids(stack.home) if psutil.pid_exists(p)}
    assert len(pids) >= 3
    for what, pid in pids.items():
        sockets = _listening(pid)
        assert sockets and all(ip == "127.0.0.1" for ip, _ in sockets), (what, sockets)
        argv = " ".join(psutil.Process(pid).cmdline())
        assert not _find(argv, secrets), (what, _find(argv, secrets))
    assert ("127.0.0.1", stack.port) in _listening(stack.proc.pid)

    # every blob the stack wrote (reports, rejection records, copies)
    account = json.loads((stack.home / "azurite" / "azurite-account.json").read_text())
    svc = BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={account['accountName']};AccountKey={account['accountKey']};"
        f"BlobEndpoint=http://127.0.0.1:{stack.azurite_port}/{account['accountName']};"
    )
    blobs = 0
    for container in svc.list_containers():
        client = svc.get_container_client(container.name)
        for blob in client.list_blobs():
            data = client.download_blob(blob.name).readall()
            assert not _find(data, secrets), (container.name, blob.name, _find(data, secrets))
            blobs += 1
    assert blobs >= 3

    stop_stack(stack)
    outputs["bankml up"] = stack.log.read_text(errors="replace")

    # every CLI output and HTTP answer
    leaks = {name: _find(text, secrets) for name, text in outputs.items()}
    assert not {k: v for k, v in leaks.items() if v}, leaks

    # every file under the data dir
    searched = 0
    for path in sorted(stack.home.rglob("*")):
        if not path.is_file():
            continue
        if path.name in SECRET_STORES:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            continue
        if path.name.startswith("registry.sqlite"):
            continue  # by table and column below
        found = _find(path.read_bytes(), secrets)
        assert not found, (str(path.relative_to(stack.home)), found)
        searched += 1
    assert searched >= 10
    assert stat.S_IMODE(stack.home.stat().st_mode) == 0o700

    db = sqlite3.connect(stack.home / "registry.sqlite")
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cur = db.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from sqlite_master
            columns = [d[0] for d in cur.description]
            for row in cur:
                for column, value in zip(columns, row, strict=True):
                    found = _find(str(value), secrets) if value is not None else []
                    assert not found or (table, column) in KEY_COLUMNS, (table, column, found)
    finally:
        db.close()
    # the registry file is the owner's only
    assert not stat.S_IMODE((stack.home / "registry.sqlite").stat().st_mode) & 0o077
