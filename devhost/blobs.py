"""Blob triggers: a container scanner and the Event Grid blob webhook, sharing one set of receipts.

A blob version (function, ``<container>/<name>``, ETag) is invoked until it succeeds once; the
receipt is written only after success, so a restart does not fire again. Failures are retried on
later scans (or redeliveries) up to ``max_attempts``, then the version is poisoned: recorded in
host.sqlite with its last error and attempt count (``bankml status`` lists it) and retried later
with back-off (``poison_backoff_s``: 1 min, 5 min, 15 min, then every hour), never dropped; a
new ETag is a new blob version. One invocation at a time per blob name, since deliveries come at
least once and concurrently.
"""

from __future__ import annotations

import base64
import enum
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient, ExponentialRetry

from devhost.catalog import FunctionSpec, HostError
from devhost.events import BLOB_CREATED, Envelope, blob_ref_from_event
from devhost.invoker import Invoker
from devhost.store import HostStore, normalize_etag

logger = logging.getLogger(__name__)

DEFAULT_CONNECTION = "AzureWebJobsStorage"
SOURCE_EVENT_GRID = "eventgrid"
_TOKEN = re.compile(r"\{([^{}]+)\}")
# The scanner polls again every few seconds anyway: while storage is down, a scan fails fast
# instead of sleeping in the SDK's default back-off (15 s, 18 s, 24 s), so the blobs waiting in
# the container are picked up within a poll or two of storage coming back.
SCAN_CLIENT_OPTIONS: dict[str, Any] = {
    "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=1, random_jitter_range=1),
    "connection_timeout": 5,
    "read_timeout": 30,
}
# Seconds until the next retry of a poisoned blob version, after its 1st, 2nd, ... failure since
# it was poisoned; the last delay repeats.
POISON_BACKOFF_S: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0)


class BlobResult(enum.Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"  # a receipt exists for this name + ETag
    STALE = "stale"  # the ETag is not the blob's current one
    MISSING = "missing"
    POISONED = "poisoned"
    IGNORED = "ignored"  # not a BlobCreated event for this trigger's container/pattern
    FAILED = "failed"  # the function raised
    ERROR = "error"  # storage error before the function ran

    @property
    def retry_wanted(self) -> bool:
        return self in (BlobResult.FAILED, BlobResult.ERROR)


@dataclass
class BlobTarget:
    spec: FunctionSpec
    container: str
    prefix: str
    pattern: re.Pattern[str]
    client: ContainerClient
    scan: bool

    def matches(self, blob_name: str) -> bool:
        return self.pattern.fullmatch(blob_name) is not None


def parse_blob_path(path: str, *, where: str) -> tuple[str, str, re.Pattern[str]]:
    """``container/<name pattern>`` -> (container, literal listing prefix, full-match regex)."""
    container, _, name_pattern = path.strip().strip("/").partition("/")
    if not container or _TOKEN.search(container):
        raise HostError(f"{where}: blob path {path!r} must start with a literal container name")
    if not name_pattern:
        return container, "", re.compile(r".+", re.DOTALL)
    first = _TOKEN.search(name_pattern)
    prefix = name_pattern if first is None else name_pattern[: first.start()]
    regex, pos = "", 0
    for m in _TOKEN.finditer(name_pattern):
        regex += re.escape(name_pattern[pos : m.start()]) + "(.+)"
        pos = m.end()
    regex += re.escape(name_pattern[pos:])
    return container, prefix, re.compile(regex, re.DOTALL)


def leaves_container(name: str) -> bool:
    """True for a blob name that a URL would resolve outside its container: a ``.`` or ``..``
    segment (``\\`` counts as ``/``: Azurite stores it so), or a leading separator."""
    return name[:1] in ("/", "\\") or any(p in (".", "..") for p in re.split(r"[/\\]", name))


def connection_string(setting: str | None, environ: Mapping[str, str], *, where: str) -> str:
    name = setting or DEFAULT_CONNECTION
    for candidate in (name, f"AzureWebJobs{name}"):
        value = environ.get(candidate)
        if value:
            return value
    if any(k.startswith(f"{name}__") for k in environ):
        raise HostError(f"{where}: identity-based connection {name}__* is not supported by the local host")
    raise HostError(f"{where}: connection setting {name!r} is not set (it must hold a storage connection string)")


def _blob_properties(props: BlobProperties) -> dict[str, Any]:
    settings = props.content_settings
    md5 = settings.content_md5 if settings else None
    return {
        "BlobType": str(props.blob_type.value if hasattr(props.blob_type, "value") else props.blob_type),
        "Length": props.size,
        "ContentType": settings.content_type if settings else None,
        "ContentEncoding": settings.content_encoding if settings else None,
        "ContentLanguage": settings.content_language if settings else None,
        "ContentDisposition": settings.content_disposition if settings else None,
        "CacheControl": settings.cache_control if settings else None,
        "ContentMD5": base64.b64encode(bytes(md5)).decode("ascii") if md5 else None,
        "ETag": props.etag,
        "LastModified": props.last_modified.isoformat() if props.last_modified else None,
        "CreatedOn": props.creation_time.isoformat() if props.creation_time else None,
    }


class BlobTriggers:
    def __init__(
        self,
        specs: list[FunctionSpec],
        *,
        store: HostStore,
        invoker: Invoker,
        pool: ThreadPoolExecutor,
        environ: Mapping[str, str],
        poll_interval: float = 2.0,
        max_attempts: int = 5,
        scan_eventgrid_sources: bool = True,
        poison_backoff_s: Sequence[float] = POISON_BACKOFF_S,
    ) -> None:
        self.store = store
        self.invoker = invoker
        self.pool = pool
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        if not poison_backoff_s or any(d < 0 for d in poison_backoff_s):
            raise HostError(f"poison back-off must be one or more delays of 0 s or more, got {list(poison_backoff_s)}")
        self.poison_backoff_s = tuple(float(d) for d in poison_backoff_s)
        self.targets: dict[str, BlobTarget] = {}
        clients: dict[str, BlobServiceClient] = {}
        for spec in specs:
            where = f"function {spec.name}"
            container, prefix, pattern = parse_blob_path(str(spec.trigger.get("path", "")), where=where)
            conn = connection_string(spec.trigger.get("connection"), environ, where=where)
            if conn not in clients:
                clients[conn] = BlobServiceClient.from_connection_string(conn, **SCAN_CLIENT_OPTIONS)
            source = str(spec.trigger.get("source") or "").lower()
            self.targets[spec.name] = BlobTarget(
                spec=spec,
                container=container,
                prefix=prefix,
                pattern=pattern,
                client=clients[conn].get_container_client(container),
                scan=source != SOURCE_EVENT_GRID or scan_eventgrid_sources,
            )
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._inflight: set[tuple[str, str, str]] = set()
        self._done: set[tuple[str, str, str]] = set()  # receipts or poison known in memory
        self._inflight_guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scan_error: dict[str, str] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        for target in self.targets.values():
            self._ensure_container(target)
        if any(t.scan for t in self.targets.values()):
            self._thread = threading.Thread(target=self._scan_loop, name="devhost-blob-scanner", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _ensure_container(self, target: BlobTarget) -> None:
        try:
            target.client.create_container()
            logger.info("created container %s for function %s", target.container, target.spec.name)
        except ResourceExistsError:
            pass
        except AzureError as err:
            logger.warning("cannot create container %s: %s", target.container, err.__class__.__name__)

    # -- scanning -----------------------------------------------------------------------------
    def _scan_loop(self) -> None:
        while not self._stop.is_set():
            self.scan_once()
            self._stop.wait(self.poll_interval)

    def scan_once(self) -> list[Future[BlobResult]]:
        """List each scanned container once and submit unseen blob versions; returns the futures."""
        futures: list[Future[BlobResult]] = []
        for target in self.targets.values():
            if not target.scan or target.spec.disabled or self._stop.is_set():
                continue
            try:
                futures.extend(self._scan_target(target))
            except ResourceNotFoundError:
                self._ensure_container(target)
            except AzureError as err:
                msg = f"{err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                if self._scan_error.get(target.spec.name) != msg:
                    logger.warning("blob scan of %s failed: %s", target.container, msg)
                self._scan_error[target.spec.name] = msg
                continue
            self._scan_error.pop(target.spec.name, None)
        return futures

    def _scan_target(self, target: BlobTarget) -> list[Future[BlobResult]]:
        futures = []
        for item in target.client.list_blobs(name_starts_with=target.prefix or None):
            if not target.matches(item.name):
                continue
            etag = normalize_etag(item.etag)
            key = (target.spec.name, f"{target.container}/{item.name}", etag)
            with self._inflight_guard:
                if key in self._inflight or key in self._done:
                    continue
            if self.store.has_receipt(*key):
                with self._inflight_guard:
                    self._done.add(key)
                continue
            if self._poison_waits(key):
                continue
            with self._inflight_guard:
                self._inflight.add(key)
            fut = self.pool.submit(self.process, target.spec.name, item.name, etag, source="scan")
            fut.add_done_callback(lambda _f, k=key: self._release(k))
            futures.append(fut)
        return futures

    def _release(self, key: tuple[str, str, str]) -> None:
        with self._inflight_guard:
            self._inflight.discard(key)

    # -- processing ---------------------------------------------------------------------------
    def _poison_waits(self, key: tuple[str, str, str]) -> bool:
        """True for a poisoned version not due for a retry yet (remembered when never retried)."""
        poisoned, retry_at = self.store.poison_retry_at(*key)
        if not poisoned:
            return False
        if retry_at is None:
            self._remember(key)
            return True
        return datetime.now(UTC) < retry_at

    def _lock_for(self, function: str, blob: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((function, blob), threading.Lock())

    def process(
        self, function: str, blob_name: str, etag: str | None, *, source: str, force: bool = False
    ) -> BlobResult:
        """Invoke ``function`` for this blob version unless it already has a receipt (or ``force``)."""
        target = self.targets[function]
        full = f"{target.container}/{blob_name}"
        if leaves_container(blob_name):
            # Not retried on every scan: the name cannot be read safely, now or later.
            key = (function, full, normalize_etag(etag))
            if not self.store.is_poisoned(*key):
                logger.error("blob name %r leaves container %s: not read, not invoked", blob_name, target.container)
                self.store.record_failure(*key, "blob name leaves its container", max_attempts=1)
            self._remember(key)
            return BlobResult.POISONED
        client = target.client.get_blob_client(blob_name)
        with self._lock_for(function, full):
            try:
                if not etag:
                    etag = client.get_blob_properties().etag
                etag = normalize_etag(etag)
                key = (function, full, etag)
                if not force:
                    if self.store.has_receipt(*key):
                        self._remember(key)
                        return BlobResult.DUPLICATE
                    if self._poison_waits(key):
                        return BlobResult.POISONED
                downloader = client.download_blob(etag=f'"{etag}"', match_condition=MatchConditions.IfNotModified)
                data = downloader.readall()
            except ResourceModifiedError:
                logger.info("blob %s changed since it was seen (ETag %s); skipping this version", full, etag)
                return BlobResult.STALE
            except ResourceNotFoundError:
                logger.info("blob %s no longer exists; skipping", full)
                return BlobResult.MISSING
            except HttpResponseError as err:
                if err.status_code == 412:
                    return BlobResult.STALE
                logger.warning("downloading %s failed: %s (status %s)", full, err.__class__.__name__, err.status_code)
                return BlobResult.ERROR
            except AzureError as err:
                logger.warning("downloading %s failed: %s", full, err.__class__.__name__)
                return BlobResult.ERROR
            props = downloader.properties
            stream = func.blob.InputStream(
                data=data,
                name=full,
                uri=client.url,
                length=props.size,
                blob_properties=_blob_properties(props),
                metadata=dict(props.metadata or {}),
            )
            outcome = self.invoker.invoke(target.spec, stream, reason=f"New blob detected ({source}): {full}")
            if outcome.ok:
                self.store.add_receipt(function, full, etag, source=source, invocation_id=outcome.invocation_id)
                self._remember(key)
                return BlobResult.PROCESSED
            error = f"{outcome.error.__class__.__name__}: {outcome.error}"
            attempts, poisoned = self.store.record_failure(
                function, full, etag, error, max_attempts=self.max_attempts, backoff_s=self.poison_backoff_s
            )
            if poisoned:
                _, retry_at = self.store.poison_retry_at(*key)
                logger.error(
                    "poison blob: %s (ETag %s) failed %d times in %s; next retry at %s. Last error: %s",
                    full,
                    etag,
                    attempts,
                    function,
                    retry_at.isoformat(timespec="seconds") if retry_at else "never",
                    error,
                )
            else:
                logger.warning(
                    "blob %s failed in %s (attempt %d of %d); will retry", full, function, attempts, self.max_attempts
                )
            return BlobResult.FAILED

    def _remember(self, key: tuple[str, str, str]) -> None:
        with self._inflight_guard:
            self._done.add(key)

    # -- Event Grid blob webhook --------------------------------------------------------------
    def handle_event(self, function: str, env: Envelope) -> BlobResult:
        target = self.targets[function]
        if env.event_type.lower() != BLOB_CREATED.lower():
            return BlobResult.IGNORED
        ref = blob_ref_from_event(env)
        if ref is None or ref.container != target.container:
            logger.info("event %s is not for container %s; ignored", env.id, target.container)
            return BlobResult.IGNORED
        etag = env.data_field("eTag")
        wanted = normalize_etag(str(etag)) if etag else None
        names = [n for n in ref.candidates if target.matches(n)]
        safe = [n for n in names if not leaves_container(n)]
        if names and not safe:
            # Never put such a name into a URL: the HTTP client resolves `..` to another container.
            logger.warning("event %s: blob name %r leaves container %s; ignored", env.id, names[0], target.container)
            return BlobResult.IGNORED
        # The candidates are readings of one name (decoded, as written, from the url); with an
        # ETag the version it names decides, so a literal "a%20b.csv" never resolves to "a b.csv".
        found: tuple[str, Any] | None = None
        for name in safe:
            try:
                current = target.client.get_blob_client(name).get_blob_properties()
            except ResourceNotFoundError:
                continue
            except AzureError as err:
                logger.warning("reading %s/%s failed: %s", target.container, name, err.__class__.__name__)
                return BlobResult.ERROR
            if wanted is None or normalize_etag(current.etag) == wanted:
                found = (name, current)
                break
            found = found or (name, current)
        if found is not None:
            name, current = found
            return self.process(function, name, str(etag) if etag else current.etag, source=SOURCE_EVENT_GRID)
        if not names:
            return BlobResult.IGNORED
        logger.info("event %s: blob %s not found in %s", env.id, ref.candidates[0], target.container)
        return BlobResult.MISSING
