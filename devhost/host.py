"""``FunctionHost``: load a v2 ``function_app.py`` and drive its triggers like the Functions host.

HTTP at ``/<routePrefix>/<route>`` (``api`` unless host.json says otherwise), Event Grid at
``/runtime/webhooks/eventgrid``, the Event Grid blob trigger at ``/runtime/webhooks/blobs``,
blob triggers by container scan, timers by NCRONTAB, ``POST /admin/functions/<name>`` to run a
non-HTTP function now, ``GET /admin/host/status`` for readiness. One process, loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import socket
import sys
import threading
import typing
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import azure.functions as func
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devhost.blobs import POISON_BACKOFF_S, BlobResult, BlobTriggers
from devhost.catalog import (
    BLOB,
    EVENT_GRID,
    HTTP,
    MODULE_NAME,
    TIMER,
    FunctionSpec,
    HostError,
    apply_settings,
    load_functions,
)
from devhost.events import (
    HEADER_EVENT_TYPE,
    SUBSCRIPTION_DELETION,
    SUBSCRIPTION_VALIDATION,
    Envelope,
    EventBodyError,
    delivery_kind,
    parse_body,
    to_cloud_event,
    to_event_grid_event,
)
from devhost.invoker import Invoker, Outcome
from devhost.keys import BLOBS_SYSTEM_KEY, EVENTGRID_SYSTEM_KEY, HostKeys
from devhost.routing import RouteTemplate
from devhost.store import HostStore
from devhost.timers import TimerRunner

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's request limit
KEY_HEADER = "x-functions-key"
BLOB_FUNCTION_PREFIX = "Host.Functions."


# The host's own refusals use the app's error envelope (shared.errors.BankmlError.to_dict):
# {"error": {"code", "message", "field"?, "value"?, "expected"?, ...}}, so a client reads every
# error the same way whether the host or a function answered it.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    500: "internal_error",
}


def _error(status: int, message: str, **details: Any) -> JSONResponse:
    body = {"error": {"code": _CODES.get(status, "error"), "message": message, **details}}
    return JSONResponse(body, status_code=status)


def _too_large(length: int | None) -> JSONResponse:
    """413, worded like the relay's own (shared.scoring.check_body_size)."""
    size = f"body is {length} bytes" if length is not None else f"body is more than {MAX_BODY_BYTES} bytes"
    return _error(
        413,
        f"{size}, the limit is {MAX_BODY_BYTES}",
        field="body",
        **({"value": length} if length is not None else {}),
        expected=f"at most {MAX_BODY_BYTES} bytes",
    )


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY_BYTES (a chunked body declares no length)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _unauthorized(what: str) -> JSONResponse:
    # Same shape as the app's own refusals, so a client reads every 4xx the same way.
    return _error(401, f"{what} is required: header {KEY_HEADER} or query parameter code")


def _request_key(request: Request) -> str | None:
    return request.headers.get(KEY_HEADER) or request.query_params.get("code")


def _wants_cloud_event(spec: FunctionSpec) -> bool:
    """A function whose trigger parameter is annotated ``func.CloudEvent`` gets CloudEvent objects."""
    try:
        ann: Any = typing.get_type_hints(spec.user_function).get(spec.arg_name)
    except Exception:
        ann = inspect.signature(spec.user_function).parameters[spec.arg_name].annotation
    if isinstance(ann, str):
        return ann.rsplit(".", 1)[-1] == "CloudEvent"
    return isinstance(ann, type) and issubclass(ann, func.CloudEvent)


def _route_prefix(app_dir: Path) -> str:
    host_json = app_dir / "host.json"
    if host_json.exists():
        try:
            doc = json.loads(host_json.read_text(encoding="utf-8-sig"))
            prefix = doc.get("extensions", {}).get("http", {}).get("routePrefix")
            if isinstance(prefix, str):
                return prefix.strip("/")
        except (ValueError, AttributeError):
            logger.warning("%s is not valid JSON; using routePrefix 'api'", host_json)
    return "api"


class _HttpRoute:
    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self.template = RouteTemplate(str(spec.trigger.get("route") or spec.name))
        methods = spec.trigger.get("methods")
        self.methods = {str(m).upper() for m in methods} if methods else None
        self.auth_level = str(spec.trigger.get("authLevel") or "function").lower()

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods or (method == "HEAD" and "GET" in self.methods)


class FunctionHost:
    """The local function host. ``start()`` serves in a background thread; ``serve_forever()`` blocks."""

    def __init__(
        self,
        app_dir: Path,
        *,
        home: Path,
        port: int = 7071,
        environ: Mapping[str, str] | None = None,
        poll_interval: float = 2.0,
        max_blob_attempts: int = 5,
        scan_eventgrid_blob_triggers: bool = True,
        workers: int = 8,
        poison_backoff_s: Sequence[float] = POISON_BACKOFF_S,
    ) -> None:
        """``app_dir`` holds function_app.py (and optionally local.settings.json, host.json); ``home``
        keeps host-keys.json and host.sqlite (receipts, poison, timer status); ``port`` 0 picks a free
        one (read ``.port``/``.url`` after start). ``environ`` overrides local.settings.json "Values",
        which do not override variables already in the process environment (like Core Tools).
        ``poll_interval``: seconds between blob container scans. ``max_blob_attempts``: failures
        before a blob version is poisoned. ``poison_backoff_s``: seconds until the next retry of a
        poisoned version after each further failure (the last repeats): a poisoned version is
        never dropped. ``scan_eventgrid_blob_triggers``: also scan containers of
        ``source=EventGrid`` blob triggers (Azurite emits no Event Grid events; set False to rely on
        the ``/runtime/webhooks/blobs`` endpoint only, as in Azure). ``workers``: pool for non-HTTP
        invocations (HTTP functions run in the server's thread pool).
        """
        self.app_dir = Path(app_dir).resolve()
        self.home = Path(home).resolve()
        self.requested_port = port
        self.environ = dict(environ or {})
        self.poll_interval = poll_interval
        self.max_blob_attempts = max_blob_attempts
        self.poison_backoff_s = tuple(poison_backoff_s)
        self.scan_eventgrid_blob_triggers = scan_eventgrid_blob_triggers
        self.workers = workers
        self.home.mkdir(parents=True, exist_ok=True)
        self.keys = HostKeys.load_or_create(self.home)
        self.functions: dict[str, FunctionSpec] = {}
        self.route_prefix = _route_prefix(self.app_dir)
        self._loaded = False
        self._env_previous: dict[str, str | None] = {}
        self._added_sys_path = False
        self._store: HostStore | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._invoker = Invoker(str(self.app_dir))
        self.blobs: BlobTriggers | None = None
        self.timers: dict[str, TimerRunner] = {}
        self._routes: list[_HttpRoute] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    # -- public API ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise HostError("the host is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def store(self) -> HostStore:
        """Receipts, blob failures/poison and timer status (after load/start)."""
        if self._store is None:
            raise HostError("the host is not loaded")
        return self._store

    def function_names(self, trigger: str | None = None) -> list[str]:
        """All function names (disabled ones too), or those of one trigger type (e.g. "eventGridTrigger")."""
        self.load()
        return sorted(n for n, s in self.functions.items() if trigger is None or s.trigger_type == trigger)

    def eventgrid_functions(self) -> list[str]:
        """Enabled Event Grid triggered functions (the ones a local publisher should deliver to)."""
        self.load()
        return sorted(n for n, s in self.functions.items() if s.trigger_type == EVENT_GRID and not s.disabled)

    def eventgrid_webhook_url(self, name: str) -> str:
        """The Event Grid trigger webhook of function ``name``, with its system key."""
        self.load()
        spec = self._spec(name)
        if spec is None or spec.trigger_type != EVENT_GRID:
            raise HostError(f"{name!r} is not an Event Grid triggered function")
        code = quote(self.keys.system_key(EVENTGRID_SYSTEM_KEY), safe="")
        return f"{self.url}/runtime/webhooks/eventgrid?functionName={quote(spec.name, safe='')}&code={code}"

    def blob_webhook_url(self, name: str) -> str:
        """The Event Grid blob trigger webhook of function ``name``, with its system key."""
        self.load()
        spec = self._spec(name)
        if spec is None or spec.trigger_type != BLOB:
            raise HostError(f"{name!r} is not a blob triggered function")
        code = quote(self.keys.system_key(BLOBS_SYSTEM_KEY), safe="")
        fn = quote(BLOB_FUNCTION_PREFIX + spec.name, safe="")
        return f"{self.url}/runtime/webhooks/blobs?functionName={fn}&code={code}"

    # -- loading ------------------------------------------------------------------------------
    def load(self) -> None:
        """Apply settings, import function_app.py and index its functions (once)."""
        with self._lock:
            if self._loaded:
                return
            self._env_previous = apply_settings(self.app_dir, self.environ, os.environ)
            self._added_sys_path = str(self.app_dir) not in sys.path
            try:
                self.functions = load_functions(self.app_dir, os.environ)
                self._store = HostStore(self.home)
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="devhost-invoke")
                enabled = [s for s in self.functions.values() if not s.disabled]
                blob_specs = [s for s in enabled if s.trigger_type == BLOB]
                self.blobs = BlobTriggers(
                    blob_specs,
                    store=self._store,
                    invoker=self._invoker,
                    pool=self._pool,
                    environ=os.environ,
                    poll_interval=self.poll_interval,
                    max_attempts=self.max_blob_attempts,
                    poison_backoff_s=self.poison_backoff_s,
                    scan_eventgrid_sources=self.scan_eventgrid_blob_triggers,
                )
                self.timers = {
                    s.name: TimerRunner(s, store=self._store, invoker=self._invoker)
                    for s in enabled
                    if s.trigger_type == TIMER
                }
                routes = [_HttpRoute(s) for s in enabled if s.trigger_type == HTTP]
                self._routes = sorted(routes, key=lambda r: r.template.precedence)
            except BaseException:
                self._unload()
                raise
            self._loaded = True
            for spec in self.functions.values():
                state = "disabled" if spec.disabled else "loaded"
                detail = spec.trigger.get("route") or spec.trigger.get("path") or spec.trigger.get("schedule") or ""
                logger.info(
                    "function %s (%s%s) %s", spec.name, spec.trigger_type, f" {detail}" if detail else "", state
                )

    def _unload(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._store is not None:
            self._store.close()
            self._store = None
        for key, value in self._env_previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env_previous = {}
        sys.modules.pop(MODULE_NAME, None)
        if self._added_sys_path:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(self.app_dir))
        self._loaded = False

    def _spec(self, name: str) -> FunctionSpec | None:
        spec = self.functions.get(name)
        if spec is None:  # function names are case-insensitive in the host
            spec = next((s for n, s in self.functions.items() if n.lower() == name.lower()), None)
        return spec

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FunctionHost:
        """Load the app, serve HTTP in a background thread, start scanners and timers."""
        if self._thread is not None:
            return self
        self.load()
        noisy = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
        if noisy.level == logging.NOTSET:
            noisy.setLevel(logging.WARNING)
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # is TCP, and without it every keep-alive answer waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, self.requested_port))
        except OSError as err:
            sock.close()
            self._unload()
            raise HostError(f"cannot listen on {HOST}:{self.requested_port}: {err.strerror}") from err
        sock.listen(128)
        sock.set_inheritable(True)
        self._port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._asgi_app(),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="devhost-http", daemon=True
        )
        self._stopped.clear()
        self._thread.start()
        for _ in range(200):
            if self._server.started or not self._thread.is_alive():
                break
            self._stopped.wait(0.05)
        if not self._server.started:
            self.stop()
            raise HostError("the HTTP server did not start")
        assert self.blobs is not None
        self.blobs.start()
        for timer in self.timers.values():
            timer.start()
        logger.info("function host running at %s (%d functions)", self.url, len(self.functions))
        return self

    def stop(self) -> None:
        """Stop scanners, timers and the HTTP server; wait for running invocations; restore os.environ."""
        if self.blobs is not None:
            self.blobs.stop()
        for timer in self.timers.values():
            timer.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        self._server, self._thread = None, None
        if self._loaded:
            self._unload()
        self._stopped.set()
        logger.info("function host stopped")

    def serve_forever(self) -> None:
        """Start, block until SIGINT/SIGTERM (or ``stop()`` from another thread), then stop."""
        self.start()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: self._stopped.set())
        try:
            while not self._stopped.wait(0.5):
                if self._thread is None or not self._thread.is_alive():
                    logger.error("the HTTP server thread ended unexpectedly")
                    break
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.stop()

    def __enter__(self) -> FunctionHost:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- ASGI app -----------------------------------------------------------------------------
    def _asgi_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self._info, methods=["GET"]),
                Route("/admin/host/status", self._status, methods=["GET"]),
                Route("/admin/functions/{name}", self._admin_run, methods=["POST"]),
                Route("/runtime/webhooks/eventgrid", self._eventgrid_webhook, methods=["POST", "OPTIONS"]),
                Route("/runtime/webhooks/blobs", self._blob_webhook, methods=["POST", "OPTIONS"]),
                Route("/{rest:path}", self._http_trigger, methods=ALL_METHODS),
            ]
        )

    async def _run(self, fn: typing.Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run blocking trigger work in the invocation pool."""
        assert self._pool is not None
        return await asyncio.wrap_future(self._pool.submit(fn, *args, **kwargs))

    async def _info(self, request: Request) -> Response:
        return JSONResponse(
            {
                "name": "bankml devhost (local Azure Functions host)",
                "state": "Running",
                "routePrefix": self.route_prefix,
                "functions": len(self.functions),
                "status": "/admin/host/status",
            }
        )

    async def _status(self, request: Request) -> Response:
        # Azure answers /admin/host/status only with the master key (it lists the functions).
        if not self.keys.is_master(_request_key(request)):
            return _unauthorized("the master key")
        return JSONResponse(
            {
                "state": "Running",
                "functions": sorted(n for n, s in self.functions.items() if not s.disabled),
                "disabled": sorted(n for n, s in self.functions.items() if s.disabled),
            }
        )

    # -- HTTP triggers ------------------------------------------------------------------------
    def _segments(self, request: Request) -> list[str] | None:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        parts = [unquote(p) for p in raw.decode("latin-1").split("/")[1:]]
        if parts and parts[-1] == "":
            parts.pop()
        prefix = [p for p in self.route_prefix.split("/") if p]
        if [p.lower() for p in parts[: len(prefix)]] != [p.lower() for p in prefix]:
            return None
        return parts[len(prefix) :]

    async def _http_trigger(self, request: Request) -> Response:
        segments = self._segments(request)
        if segments is None:
            return _error(404, "not found")
        method = request.method.upper()
        matched: list[tuple[_HttpRoute, dict[str, str]]] = []
        for route in self._routes:
            values = route.template.match(segments)
            if values is not None:
                matched.append((route, values))
        if not matched:
            return _error(404, "no function matches this route")
        chosen = next(((r, v) for r, v in matched if r.allows(method)), None)
        if chosen is None:
            allowed = sorted({m for r, _ in matched for m in (r.methods or ALL_METHODS)})
            response = _error(
                405, f"method {method} is not allowed here", field="method", value=method, expected=allowed
            )
            response.headers["Allow"] = ", ".join(allowed)
            return response
        route, values = chosen
        key = _request_key(request)
        if route.auth_level == "admin":
            authorized = self.keys.is_master(key)
        elif route.auth_level == "anonymous":
            authorized = True
        else:
            authorized = self.keys.allows_function(key)
        if not authorized:
            return _unauthorized("the master key" if route.auth_level == "admin" else "a valid function key")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _too_large(int(length))
        body = await _read_body(request)
        if body is None:
            return _too_large(None)
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        req = func.HttpRequest(
            method,
            str(request.url),
            headers=headers,
            params=dict(request.query_params),
            route_params=values,
            body=body,
        )
        outcome: Outcome = await run_in_threadpool(
            self._invoker.invoke, route.spec, req, reason=f"This function was programmatically called via HTTP {method}"
        )
        if not outcome.ok:
            return _error(
                500,
                f"Exception while executing function: Functions.{route.spec.name}",
                invocationId=outcome.invocation_id,
            )
        return self._to_response(route.spec, outcome)

    @staticmethod
    def _to_response(spec: FunctionSpec, outcome: Outcome) -> Response:
        value = outcome.value
        if value is None:
            return Response(status_code=204)
        if isinstance(value, str):
            return Response(value.encode("utf-8"), media_type="text/plain; charset=utf-8")
        if isinstance(value, bytes | bytearray):
            return Response(bytes(value), media_type="application/octet-stream")
        if not isinstance(value, func.HttpResponse):
            logger.error("function %s returned %s, not an HttpResponse", spec.name, type(value).__name__)
            return _error(
                500, f"Exception while executing function: Functions.{spec.name}", invocationId=outcome.invocation_id
            )
        response = Response(value.get_body(), status_code=int(value.status_code))
        has_type = False
        for name, header in value.headers.items():
            if name.lower() in ("content-length", "transfer-encoding"):
                continue
            has_type = has_type or name.lower() == "content-type"
            response.headers.append(name, str(header))
        if not has_type:
            mimetype = value.mimetype or "text/plain"
            ctype = f"{mimetype}; charset={value.charset}" if mimetype.startswith("text/") else mimetype
            response.headers.append("content-type", ctype)
        return response

    # -- Event Grid webhooks ------------------------------------------------------------------
    @staticmethod
    def _abuse_protection(request: Request) -> Response:
        origin = request.headers.get("webhook-request-origin", "*")
        return Response(
            status_code=200,
            headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST, OPTIONS"},
        )

    async def _read_events(self, request: Request) -> list[Envelope] | Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _too_large(int(length))
        try:
            # Like the Functions Event Grid extension: no or an unknown aeg-event-type is a 400.
            kind = delivery_kind(request.headers.get(HEADER_EVENT_TYPE))
        except EventBodyError as err:
            return _error(400, str(err), field=HEADER_EVENT_TYPE)
        raw = await _read_body(request)
        if raw is None:
            return _too_large(None)
        try:
            events = parse_body(raw)
        except EventBodyError as err:
            return _error(400, str(err), field="body")
        validation = next((e for e in events if e.is_validation), None)
        if kind == SUBSCRIPTION_VALIDATION or validation is not None:
            code = validation.validation_code if validation else None
            if not code:
                return _error(400, "subscription validation event without data.validationCode", field="data.validationCode")
            logger.info("answered Event Grid subscription validation for %s", request.url.path)
            return JSONResponse({"validationResponse": code})
        if kind == SUBSCRIPTION_DELETION:
            return Response(status_code=200)
        return events

    async def _eventgrid_webhook(self, request: Request) -> Response:
        if not self.keys.allows_system(EVENTGRID_SYSTEM_KEY, _request_key(request)):
            return _unauthorized(f"the {EVENTGRID_SYSTEM_KEY} system key")
        name = request.query_params.get("functionName", "")
        spec = self._spec(name)
        if spec is None or spec.trigger_type != EVENT_GRID:
            return _error(404, f"no Event Grid function named {name!r}")
        events = await self._webhook_events(request, spec)
        if isinstance(events, Response):
            return events
        cloud = _wants_cloud_event(spec)
        outcomes: list[Outcome] = await self._run(self._invoke_events, spec, events, cloud)
        failed = [o.invocation_id for o in outcomes if not o.ok]
        if failed:
            return _error(500, f"Exception while executing function: Functions.{spec.name}", invocationIds=failed)
        return JSONResponse({"invocations": len(outcomes)})

    async def _webhook_events(self, request: Request, spec: FunctionSpec) -> list[Envelope] | Response:
        """What both webhooks do once the target function is known: disabled, OPTIONS, the body."""
        if spec.disabled:
            return _error(404, f"function {spec.name} is disabled")
        if request.method == "OPTIONS":
            return self._abuse_protection(request)
        return await self._read_events(request)

    def _invoke_events(self, spec: FunctionSpec, events: list[Envelope], cloud: bool) -> list[Outcome]:
        """One invocation per event, in order (like the host), all attempted even if one fails."""
        outcomes = []
        for env in events:
            arg = to_cloud_event(env) if (cloud and env.cloud_event) else to_event_grid_event(env)
            reason = f"EventGrid trigger fired for event {env.id} ({env.event_type})"
            outcomes.append(self._invoker.invoke(spec, arg, reason=reason))
        return outcomes

    async def _blob_webhook(self, request: Request) -> Response:
        if not self.keys.allows_system(BLOBS_SYSTEM_KEY, _request_key(request)):
            return _unauthorized(f"the {BLOBS_SYSTEM_KEY} system key")
        name = request.query_params.get("functionName", "")
        if name.startswith(BLOB_FUNCTION_PREFIX):
            name = name[len(BLOB_FUNCTION_PREFIX) :]
        spec = self._spec(name)
        if spec is None or spec.trigger_type != BLOB or self.blobs is None:
            return _error(404, f"no blob triggered function named {name!r}")
        events = await self._webhook_events(request, spec)
        if isinstance(events, Response):
            return events
        results: list[BlobResult] = await self._run(
            lambda: [self.blobs.handle_event(spec.name, e) for e in events]  # type: ignore[union-attr]
        )
        body = {"results": [{"id": e.id, "result": r.value} for e, r in zip(events, results, strict=True)]}
        status = 500 if any(r.retry_wanted for r in results) else 200
        return JSONResponse(body, status_code=status)

    # -- admin --------------------------------------------------------------------------------
    async def _admin_run(self, request: Request) -> Response:
        if not self.keys.is_master(_request_key(request)):
            return _unauthorized("the master key")
        spec = self._spec(request.path_params["name"])
        if spec is None:
            return _error(404, "no such function")
        if spec.disabled:
            return _error(404, f"function {spec.name} is disabled")
        if spec.trigger_type == HTTP:
            return _error(400, "HTTP functions are called at their route, not through /admin/functions")
        raw = await request.body()
        value: str = ""
        if raw.strip():
            try:
                doc = json.loads(raw)
            except (ValueError, RecursionError):
                return _error(400, 'body must be JSON: {"input": "..."}', field="body", expected='{"input": "..."}')
            value = str(doc.get("input") or "") if isinstance(doc, dict) else ""
        try:
            job = self._manual_job(spec, value)
        except (EventBodyError, ValueError) as err:
            return _error(400, str(err), field="input")
        assert self._pool is not None
        self._pool.submit(job)
        return Response(status_code=202)

    def _manual_job(self, spec: FunctionSpec, value: str) -> typing.Callable[[], object]:
        if spec.trigger_type == TIMER:
            timer = self.timers[spec.name]
            return lambda: timer.run_now(reason="Manual (admin API)")
        if spec.trigger_type == EVENT_GRID:
            events = parse_body(value.encode()) if value.strip() else []
            if not events:
                raise ValueError("input must hold an Event Grid event (JSON)")
            cloud = _wants_cloud_event(spec)
            return lambda: self._invoke_events(spec, events, cloud)
        if spec.trigger_type == BLOB:
            blobs = self.blobs
            assert blobs is not None
            target = blobs.targets[spec.name]
            blob = value.strip().lstrip("/")
            if blob.startswith(f"{target.container}/"):
                blob = blob[len(target.container) + 1 :]
            if not blob:
                raise ValueError("input must name a blob: <container>/<name>")
            return lambda: blobs.process(spec.name, blob, None, source="manual", force=True)
        raise ValueError(f"cannot run a {spec.trigger_type} function by hand")
