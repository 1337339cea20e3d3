"""The scoring relay: validate a request against the contract, forward it to the live deployment,
answer once-encoded JSON. Every refusal is a 4xx naming the field; upstream trouble is 502/503/504.

* The request is validated here first (shared.scoring), so a bad request never reaches the
  deployment and its refusal names the field, row and value whatever the upstream would say.
* The body is forwarded as received, with the deployment's key as ``Authorization: Bearer`` and the
  relay's request id as ``x-ms-client-request-id``. The answer is passed through untouched when it
  is a JSON document; an answer that is a JSON string holding JSON (Azure ML's v1 score.py) is
  decoded and encoded once.
* Answers carry ``x-ms-request-id`` (the relay's), ``x-bankml-model-version`` and
  ``x-bankml-deployment`` (who answered), and the client's ``x-ms-client-request-id`` echoed.
* Upstream not reachable or nothing live: 503 with Retry-After. No answer within the timeout
  (``BANKML_RELAY_TIMEOUT_S``, capped below the 230 s that Azure allows an HTTP function): 504.
  Upstream 5xx: 502 with the upstream's message. Upstream 401/403: the deployment is looked up
  again once (``live_deployment(refresh=True)`` when the workspace takes that keyword, so that an
  adapter can pick up a rotated key) and the request is sent once more; still refused: 502 (the
  client's own key was fine, the function host checked it).

Speed: requests cost about 3 ms per call here (it reads the proxy settings from the environment on
every request), so plain-http upstreams (the local model servers) are called with ``PlainHttp``
(kept-alive connections, one write per request) and https ones (Azure ML) with urllib3; the live
deployment is looked up at most every ``LIVE_CACHE_S``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError, ReadTimeoutError

from shared.config import Settings
from shared.errors import (
    BankmlError,
    NoLiveDeployment,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.scoring import check_body_size, check_media_type, encode_json, parse_request

log = logging.getLogger(__name__)

LIVE_CACHE_S = 0.5  # how long a live-deployment lookup is reused; a switch is seen within this
RETRY_AFTER_S = 5
# Azure's load balancer ends any HTTP function answer after 230 s, whatever functionTimeout says
# (docs azure-reference §2.4); the relay gives up earlier so that the client gets our 504.
HTTP_ANSWER_LIMIT_S = 230.0
TIMEOUT_HEADROOM_S = 10.0
CONNECT_TIMEOUT_S = 5.0
REQUEST_ID = "x-ms-request-id"
CLIENT_REQUEST_ID = "x-ms-client-request-id"
MODEL_VERSION = "x-bankml-model-version"
DEPLOYMENT = "x-bankml-deployment"
# Upstream answer headers passed on to the client.
PASSED_HEADERS = ("x-bankml-unseen-categories",)
# Rows a local model server scored (see Relay._vouched); not passed on.
ROWS_HEADER = "x-bankml-rows"
MAX_CLIENT_ID = 128
# From this body size a request is not decoded twice: a local model server's acceptance stands for
# the relay's validation (Relay._vouched), an https upstream starts on it while it is validated here.
# Below it validation costs under 5 ms and a bad request is refused before anything reaches the
# deployment.
OVERLAP_BYTES = 256 * 1024


class ThrottledLog:
    """At most ``limit`` warnings per ``window_s``; the rest are counted and summed up in one line
    when the next window opens (an outage under load gave thousands of lines a second)."""

    def __init__(self, logger: logging.Logger, *, limit: int = 5, window_s: float = 10.0) -> None:
        self.logger = logger
        self.limit = limit
        self.window_s = window_s
        self._lock = threading.Lock()
        self._window_start = -window_s
        self._count = 0
        self._suppressed = 0

    def warn(self, msg: str, *args: Any) -> bool:
        """Log the warning unless the window's limit is reached; True when it was logged."""
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= self.window_s:
                suppressed, self._suppressed = self._suppressed, 0
                self._window_start, self._count = now, 0
                if suppressed:
                    self.logger.warning("... %d more such warnings in the last %g s were not logged",
                                        suppressed, self.window_s)
            if self._count >= self.limit:
                self._suppressed += 1
                return False
            self._count += 1
        self.logger.warning(msg, *args)
        return True


_UPSTREAM_WARNINGS = ThrottledLog(log)


@dataclass
class RelayAnswer:
    status: int
    raw: bytes  # the answer body: JSON, encoded once
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> Any:
        """The answer decoded (for callers and tests; the HTTP function sends ``raw``)."""
        return json.loads(self.raw)


def unwrap(payload: Any) -> Any:
    """Azure ML's v1 scoring scripts return a JSON string that the server encodes again."""
    for _ in range(2):
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                break
    return payload


def effective_timeout(setting_s: float) -> float:
    """The relay's upstream timeout: the setting, kept below the HTTP answer limit of Azure."""
    limit = HTTP_ANSWER_LIMIT_S - TIMEOUT_HEADROOM_S
    if setting_s <= 0:
        return limit
    if setting_s > limit:
        log.warning("BANKML_RELAY_TIMEOUT_S=%g is above %g s (Azure ends HTTP answers at %g s); using %g s",
                    setting_s, limit, HTTP_ANSWER_LIMIT_S, limit)
        return limit
    return setting_s


def _takes_refresh(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "refresh" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _upstream_message(data: bytes) -> Any:
    """What the upstream said, for a 502: its error object or message, else its text."""
    try:
        payload = unwrap(json.loads(data))
    except ValueError:
        return data[:500].decode("utf-8", "replace")
    if isinstance(payload, dict):
        return payload.get("error", payload.get("message", payload))
    return payload


def _text(detail: Any) -> str:
    if isinstance(detail, dict):
        detail = detail.get("message", detail)
    return str(detail)[:300]


@dataclass
class _Upstream:
    status: int
    data: bytes
    headers: dict[str, str]


class _Stale(Exception):
    """A kept-alive connection turned out to be closed before any answer: send again."""


class _Unreachable(Exception):
    """No connection could be opened (refused, no route, connect timeout)."""


@functools.lru_cache(maxsize=16)
def _split(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname or "", port, target


class _Connection:
    def __init__(self, host: str, port: int, connect_timeout: float) -> None:
        self.key = (host, port)
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()


class PlainHttp:
    """Keep-alive HTTP/1.1 POSTs to plain-http upstreams (the local model servers).

    Why not urllib3 here: http.client parses every answer's headers with the email package and
    sends the head and the body in two writes; together that was about a third of the relay's CPU
    per 2-row request. This client sends one buffer and reads the status line, the headers and a
    Content-Length or chunked body. Connections are per thread (no pool lock) and reused; a
    connection that the server closed while idle is detected on the next use and replaced once.
    https (Azure ML endpoints) goes through urllib3.
    """

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._local = threading.local()

    def post(
        self, host: str, port: int, target: str, body: bytes, headers: dict[str, str], sent: threading.Event | None = None
    ) -> _Upstream:
        """POST ``body``; ``sent`` is set once the request is written (or has failed)."""
        try:
            return self._post(host, port, target, body, headers, sent)
        finally:
            if sent is not None:
                sent.set()

    def _post(
        self, host: str, port: int, target: str, body: bytes, headers: dict[str, str], sent: threading.Event | None
    ) -> _Upstream:
        head = f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        message = head.encode("latin-1") + body
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.key != (host, port):
            conn.close()  # the live deployment changed: drop the old one's connection
            conn = None
        for _ in range(2):
            reused = conn is not None
            if conn is None:
                try:
                    conn = _Connection(host, port, self.connect_timeout)
                except OSError as err:
                    raise _Unreachable(f"{host}:{port}: {err}") from err
            self._local.conn = None
            try:
                conn.sock.settimeout(self.read_timeout)
                answer, keep = self._exchange(conn, message, reused, sent)
            except _Stale:
                conn.close()
                conn = None
                continue
            except BaseException:
                conn.close()
                raise
            if keep:
                self._local.conn = conn
            else:
                conn.close()
            return answer
        raise ConnectionResetError("the upstream closed two connections without answering")

    @staticmethod
    def _exchange(
        conn: _Connection, message: bytes, reused: bool, sent: threading.Event | None
    ) -> tuple[_Upstream, bool]:
        try:
            conn.sock.sendall(message)
            if sent is not None:
                sent.set()
            status_line = conn.reader.readline(65537)
        except (ConnectionResetError, BrokenPipeError) as err:
            if reused:
                raise _Stale from err
            raise
        if not status_line:
            if reused:
                raise _Stale
            raise ConnectionResetError("the upstream closed the connection without answering")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP status line: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        while True:
            line = conn.reader.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and parts[0] == b"HTTP/1.1"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(conn.reader.readline(1026).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while conn.reader.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(conn.reader.read(size))
                conn.reader.readline(3)
            data = b"".join(chunks)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            data = conn.reader.read(length)
            if len(data) != length:
                raise ConnectionResetError(f"the upstream sent {len(data)} of {length} bytes")
        else:
            data, keep = conn.reader.read(), False
        return _Upstream(int(parts[1]), data, headers), keep


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body without its ``Content-Encoding``: ``gzip`` is decompressed (at most ``limit`` bytes
    come out: a small body that inflates past the body limit is a 413, not a memory hog), no
    encoding or ``identity`` passes as is; anything else is a 415. A gzip stream that is damaged,
    cut short or followed by other bytes is a 400 naming the header. The upstream gets the plain body."""
    coding = (content_encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "x-gzip"):
        raise UnsupportedMediaType(
            f"content encoding {content_encoding!r} is not supported, send gzip or none",
            field="Content-Encoding", value=content_encoding, expected=["gzip", "identity"],
        )
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(body, limit + 1)
    except zlib.error as err:
        raise RequestError(
            f"body is not a valid gzip stream (Content-Encoding: gzip): {err}", field="Content-Encoding", value="gzip"
        ) from err
    if len(out) > limit or inflate.unconsumed_tail:
        raise PayloadTooLarge(
            f"body inflates past the limit of {limit} bytes (Content-Encoding: gzip)",
            field="body", expected=f"at most {limit} bytes after decompression",
        )
    if not inflate.eof or inflate.unused_data:
        raise RequestError(
            "body is not a valid gzip stream (Content-Encoding: gzip): "
            + ("it is cut short" if not inflate.eof else "other bytes follow it"),
            field="Content-Encoding", value="gzip",
        )
    return out


class Relay:
    def __init__(self, settings: Settings, workspace: Any) -> None:
        self.settings = settings
        self.workspace = workspace
        self.timeout_s = effective_timeout(settings.relay_timeout_s)
        self._timeout = urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, self.timeout_s), read=self.timeout_s)
        # https upstreams: thread-safe, up to 32 kept-alive connections per deployment.
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=32, block=False, retries=False)
        # http upstreams (the local model servers): see PlainHttp.
        self.plain = PlainHttp(min(CONNECT_TIMEOUT_S, self.timeout_s), self.timeout_s)
        self._lock = threading.Lock()
        self._live: Any = None
        self._live_at = -LIVE_CACHE_S
        self._refreshable = _takes_refresh(workspace.live_deployment)
        self._executor: ThreadPoolExecutor | None = None

    def live(self, *, fresh: bool = False, refresh_workspace: bool = False) -> Any:
        """The live deployment; ``fresh`` skips the relay's cache, ``refresh_workspace`` asks the
        workspace to skip its own (when it takes ``refresh``)."""
        with self._lock:
            if fresh or refresh_workspace or time.monotonic() - self._live_at > LIVE_CACHE_S:
                if refresh_workspace and self._refreshable:
                    self._live = self.workspace.live_deployment(refresh=True)
                else:
                    self._live = self.workspace.live_deployment()
                self._live_at = time.monotonic()
            return self._live

    def check_length(self, content_length: str | None) -> RelayAnswer | None:
        """A 413 when the declared body size is over the limit, before the body is read."""
        limit = self.settings.max_body_bytes
        if content_length is None or not content_length.strip().isdigit() or int(content_length) <= limit:
            return None
        err = PayloadTooLarge(
            f"body is {int(content_length)} bytes, the limit is {limit}",
            field="body",
            value=int(content_length),
            expected=f"at most {limit} bytes",
        )
        return RelayAnswer(err.status, encode_json(err.to_dict()), {REQUEST_ID: str(uuid.uuid4())})

    def score(
        self,
        body: bytes,
        content_type: str | None,
        *,
        client_request_id: str | None = None,
        content_encoding: str | None = None,
    ) -> RelayAnswer:
        request_id = str(uuid.uuid4())
        headers = {REQUEST_ID: request_id}
        if client_request_id and len(client_request_id) <= MAX_CLIENT_ID and client_request_id.isprintable():
            headers[CLIENT_REQUEST_ID] = client_request_id
        try:
            body = decode_content(body, content_encoding, self.settings.max_body_bytes)
            early: Future[_Upstream] | None = None
            validated = len(body) < OVERLAP_BYTES
            if validated:
                self._validate(body, content_type)  # refused before anything is sent upstream
                dep = self.live()
            else:
                dep = self.live()
                # A large body: the cheap checks first (media type, size), then see _vouched.
                check_media_type(content_type)
                check_body_size(body, self.settings.max_body_bytes)
                if dep is None:
                    self._validate(body, content_type)
                    validated = True
                elif _split(dep.scoring_uri)[0] != "http":
                    # An https upstream (Azure ML) starts on the body while it is validated here
                    # (on the other core); if it is refused, the upstream's answer is dropped.
                    sent = threading.Event()
                    early = self._overlap().submit(self._forward, dep, body, request_id, sent)
                    # Validation holds the GIL for tens of ms: let the body go out first, so the
                    # deployment is not kept waiting for the rest of it meanwhile.
                    sent.wait(self.timeout_s)
                    self._validate(body, content_type)
                    validated = True
            if dep is None:
                raise NoLiveDeployment("no model is deployed yet: drop a CSV into incoming/ to train one")
            try:
                dep, upstream = self._call(dep, early, body, request_id)
            except BankmlError:
                if not validated:
                    self._validate(body, content_type)  # bad input is a 4xx, whatever the upstream did
                raise
            if not validated and not self._vouched(dep, upstream):
                self._validate(body, content_type)
            headers[MODEL_VERSION] = str(dep.model_version)
            headers[DEPLOYMENT] = dep.name
            for name in PASSED_HEADERS:
                if name in upstream.headers:
                    headers[name] = upstream.headers[name]
            return RelayAnswer(200, self._answer(dep, upstream), headers)
        except BankmlError as err:
            if isinstance(err, UpstreamUnavailable | NoLiveDeployment):
                headers["Retry-After"] = str(RETRY_AFTER_S)
            if err.status >= 500:
                _UPSTREAM_WARNINGS.warn("scoring request %s: %s %s", request_id, err.status, err.message)
            return RelayAnswer(err.status, encode_json(err.to_dict()), headers)

    def _call(self, dep: Any, early: Future[_Upstream] | None, body: bytes, request_id: str) -> tuple[Any, _Upstream]:
        """The upstream's answer, with one more try on a replaced deployment or a rotated key."""
        try:
            upstream = early.result() if early is not None else self._forward(dep, body, request_id)
        except UpstreamUnavailable:
            # The live deployment may have just been replaced, or moved to its warm standby's port
            # (same name, new address): look again once.
            again = self.live(fresh=True)
            if again is None or (again.name == dep.name and again.scoring_uri == dep.scoring_uri):
                raise
            dep = again
            upstream = self._forward(dep, body, request_id)
        if upstream.status in (401, 403):
            # The deployment refused our key: it may have been rotated. Look it up again, once.
            log.warning("deployment %s refused the relay's key (%d); looking it up again", dep.name, upstream.status)
            again = self.live(refresh_workspace=True)
            if again is not None:
                dep = again
                upstream = self._forward(dep, body, request_id)
        return dep, upstream

    def _vouched(self, dep: Any, upstream: _Upstream) -> bool:
        """A local model server (plain http, shared.modelserver) validates every request with the
        same ``parse_request`` and names the rows it scored in ``x-bankml-rows``: an answer that
        accepted the body within the relay's row limit stands for the relay's own validation, which
        would decode the same megabytes a second time (10,000 rows: ~30 ms of CPU taken from the
        model server on this 2-core machine). Anything else (a refusal, no header, more rows than
        the relay's limit, an https upstream) is validated here, so a refusal always names the
        field, row and value in the relay's words."""
        if not 200 <= upstream.status < 300 or _split(dep.scoring_uri)[0] != "http":
            return False
        rows = upstream.headers.get(ROWS_HEADER, "")
        return rows.isdigit() and 0 < int(rows) <= self.settings.max_rows

    def _validate(self, body: bytes, content_type: str | None) -> None:
        parse_request(body, content_type, max_rows=self.settings.max_rows, max_body_bytes=self.settings.max_body_bytes)

    def _overlap(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="relay-forward")
            return self._executor

    def _forward(self, dep: Any, body: bytes, request_id: str, sent: threading.Event | None = None) -> _Upstream:
        try:
            return self._send(dep, body, request_id, sent)
        finally:
            if sent is not None:
                sent.set()

    def _send(self, dep: Any, body: bytes, request_id: str, sent: threading.Event | None) -> _Upstream:
        send = {
            "Authorization": f"Bearer {dep.key}",
            "Content-Type": "application/json",
            CLIENT_REQUEST_ID: request_id,
        }
        scheme, host, port, target = _split(dep.scoring_uri)
        if scheme == "http":
            try:
                return self.plain.post(host, port, target, body, send, sent)
            except _Unreachable as err:
                raise UpstreamUnavailable(f"the model server {dep.name} is not reachable") from err
            except TimeoutError as err:
                raise UpstreamTimeout(
                    f"the model server {dep.name} did not answer within {self.timeout_s:g} s",
                    expected=f"an answer within {self.timeout_s:g} s (BANKML_RELAY_TIMEOUT_S)",
                ) from err
            except OSError as err:
                raise UpstreamUnavailable(f"the model server {dep.name} dropped the connection") from err
            except ValueError as err:
                raise UpstreamError(f"the model server {dep.name} did not answer in HTTP: {err}") from err
        for attempt in (1, 2):
            try:
                r = self.pool.request(
                    "POST", dep.scoring_uri, body=body, headers=send, timeout=self._timeout, retries=False, redirect=False
                )
                return _Upstream(r.status, r.data, {k.lower(): v for k, v in r.headers.items()})
            except ReadTimeoutError as err:
                raise UpstreamTimeout(
                    f"the model server {dep.name} did not answer within {self.timeout_s:g} s",
                    expected=f"an answer within {self.timeout_s:g} s (BANKML_RELAY_TIMEOUT_S)",
                ) from err
            except (NewConnectionError, ConnectTimeoutError) as err:
                raise UpstreamUnavailable(f"the model server {dep.name} is not reachable") from err
            except ProtocolError as err:
                # A kept-alive connection the server had just closed: scoring is idempotent, so
                # send it once more on a new connection before calling the upstream down.
                if attempt == 2:
                    raise UpstreamUnavailable(f"the model server {dep.name} dropped the connection") from err
            except HTTPError as err:
                raise UpstreamUnavailable(f"the model server {dep.name} could not be called: {type(err).__name__}") from err
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, dep: Any, upstream: _Upstream) -> bytes:
        status, data = upstream.status, upstream.data
        if 200 <= status < 300:
            head = data.lstrip()[:1]
            try:
                payload = json.loads(data) if head not in (b"{", b"[") else None
            except ValueError as err:
                raise UpstreamError(
                    f"the model server {dep.name} answered {status} with a body that is not JSON",
                    upstream=data[:300].decode("utf-8", "replace"),
                ) from err
            # A JSON document passes untouched (no decode/encode of 10,000 answers); a JSON string
            # holding JSON is unwrapped and encoded once.
            return data if payload is None else encode_json(unwrap(payload))
        detail = _upstream_message(data)
        if status >= 500 or status in (401, 403):
            raise UpstreamError(f"the model server {dep.name} answered {status}: {_text(detail)}", upstream=detail)
        err = BankmlError(f"the model server {dep.name} refused the request ({status}): {_text(detail)}", upstream=detail)
        err.status = status
        err.code = "upstream_refused"
        raise err
