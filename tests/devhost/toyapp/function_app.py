"""Toy v2 app for the devhost tests: each function records what it saw under $TOY_RECORD_DIR."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import azure.functions as func

_write_lock = threading.Lock()


def record(kind: str, **fields: object) -> None:
    line = json.dumps({"kind": kind, "at": time.time(), **fields}, ensure_ascii=False)
    path = Path(os.environ["TOY_RECORD_DIR"]) / f"{kind}.jsonl"
    with _write_lock, path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")


bp = func.Blueprint()


@bp.route(route="hello/{name}", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    payload = {"name": req.route_params.get("name"), "q": req.params.get("q"), "method": req.method}
    return func.HttpResponse(json.dumps(payload), status_code=200, mimetype="application/json")


@bp.route(route="items/{id:int}/{*rest}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(dict(req.route_params)), mimetype="application/json", headers={"X-Toy": "item"}, status_code=203
    )


@bp.route(route="echo", methods=["POST", "PUT"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), mimetype="text/plain", charset="utf-8")


@bp.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret internal detail")


@bp.route(route="adminonly", auth_level=func.AuthLevel.ADMIN)
def adminonly(req: func.HttpRequest) -> str:
    return "admin ok"


@bp.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    record(
        "eventgrid",
        id=event.id,
        subject=event.subject,
        topic=event.topic,
        event_type=event.event_type,
        event_time=event.event_time.isoformat() if isinstance(event.event_time, datetime) else None,
        data=event.get_json(),
        cls=type(event).__name__,
    )
    if isinstance(event.get_json(), dict) and event.get_json().get("fail"):
        raise ValueError("asked to fail")


@bp.blob_trigger(arg_name="myblob", path="%TOY_CONTAINER%/{name}", connection="AzureWebJobsStorage")
def on_blob(myblob: func.InputStream) -> None:
    data = myblob.read()
    record(
        "blob",
        name=myblob.name,
        length=myblob.length,
        sha=hashlib.sha256(data).hexdigest(),
        uri=myblob.uri,
        etag=(myblob.blob_properties or {}).get("ETag"),
        metadata=myblob.metadata,
    )
    if "poison" in (myblob.name or ""):
        raise RuntimeError("cannot process this blob")
    # A failure with a cause that goes away: fails while $TOY_RECORD_DIR/<basename>.fail exists.
    cause = Path(os.environ["TOY_RECORD_DIR"]) / f"{(myblob.name or '').rsplit('/', 1)[-1]}.fail"
    if "flaky" in (myblob.name or "") and cause.exists():
        raise RuntimeError(f"flaky cause present: {cause.read_text(encoding='utf-8')}")


@bp.timer_trigger(arg_name="timer", schedule="%TOY_SCHEDULE%")
def tick(timer: func.TimerRequest) -> None:
    started = time.time()
    time.sleep(float(os.environ.get("TOY_TIMER_SLEEP", "0")))
    record("timer", start=started, end=time.time(), past_due=timer.past_due, utc=datetime.now(UTC).isoformat())


app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)


@app.route(route="whoami", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def whoami(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("toy")
