"""Model server of one local deployment, speaking the Azure ML scoring contract.

    BANKML_MODEL_KEY=... python -m shared.modelserver --model-dir DIR --port PORT --name NAME --version N \
        [--telemetry-file FILE] [--insights-flag FILE]

Binds 127.0.0.1 only. ``GET /`` answers "Healthy" without a key (liveness), ``POST /score`` needs
``Authorization: Bearer <key>``, ``GET /swagger.json`` describes the deployment. The key comes from
the environment, never from argv (argv is visible to every local user in ``ps``), and is never
logged. The model is loaded once before the first request.

Telemetry (Application Insights, locally and in Azure): while the ``--insights-flag`` file exists
(checked at most once a second), every scoring request becomes an OpenTelemetry span and three
metric points (see shared.telemetry): exported in batches to ``--telemetry-file`` (one JSON request
record per span) and ``--metrics-file``, and to Application Insights when
APPLICATIONINSIGHTS_CONNECTION_STRING is set; what is pending is exported on shutdown. With a
telemetry file but no flag file, telemetry is always on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.config import Settings
from shared.contract import FEATURE_NAMES
from shared.errors import AuthError, BankmlError, ConfigError, PayloadTooLarge
from shared.features import FeatureSpec
from shared.openapi import build_swagger
from shared.scoring import ScoringRequest, encode_json, envelope, parse_request
from shared.workspace.local.training import LoadedModel, load_model

logger = logging.getLogger(__name__)

KEY_ENV = "BANKML_MODEL_KEY"
HOST = "127.0.0.1"
# Above this body size parsing and prediction run in a worker thread so that health checks stay
# prompt (about 20 ms of work; below it the thread hop would cost more than the work).
THREADPOOL_BYTES = 128 * 1024
# From this many rows features are encoded column by column (numpy over whole columns) instead of
# row by row with FeatureSpec.encode_records; both give the same matrix (tests/test_modelserver.py).
COLUMNAR_ROWS = 64
UNSEEN_HEADER = "x-bankml-unseen-categories"
ROWS_HEADER = "x-bankml-rows"
FLAG_CHECK_INTERVAL_S = 1.0
FLUSH_INTERVAL_S = 1.0


class Telemetry:
    """Request telemetry (OpenTelemetry, see shared.telemetry), active while the insights flag exists."""

    def __init__(
        self,
        path: Path | None,
        flag: Path | None,
        *,
        metrics_path: Path | None = None,
        name: str = "",
        version: int = 0,
        connection_string: str = "",
    ) -> None:
        self.path = path
        self.flag = flag
        self._checked_at = -FLAG_CHECK_INTERVAL_S
        self._enabled = False
        self.pipeline: Any = None
        if path is not None:
            # Built before the first request (imports, exporter threads): no request pays for it.
            from shared.telemetry import RequestTelemetry

            self.pipeline = RequestTelemetry(
                requests_file=path,
                metrics_file=metrics_path,
                deployment=name,
                model_version=version,
                connection_string=connection_string,
                storage_dir=path.parent / "appinsights-retry" if connection_string else None,
            )

    def enabled(self) -> bool:
        if self.pipeline is None:
            return False
        if self.flag is None:
            return True
        now = time.monotonic()
        # A stat per request would cost more than the prediction; the flag changes rarely.
        if now - self._checked_at >= FLAG_CHECK_INTERVAL_S:
            self._checked_at = now
            self._enabled = self.flag.exists()
        return self._enabled

    def record(
        self, *, started: float, status: int, rows: int, request_id: str, client_request_id: str | None = None
    ) -> None:
        """One request that began at ``started`` (time.perf_counter()) and ends now."""
        if not self.enabled():
            return
        end_ns = time.time_ns()
        start_ns = end_ns - int((time.perf_counter() - started) * 1e9)
        self.pipeline.record(
            start_ns=start_ns, end_ns=end_ns, status=status, rows=rows,
            request_id=request_id, client_request_id=client_request_id,
        )

    def flush(self) -> None:
        """Called every second: spans and metrics are exported by their own batch threads, so
        this only refreshes the flag off the request path."""
        self.enabled()

    def close(self) -> None:
        """Export what is pending and stop the exporters (on shutdown)."""
        if self.pipeline is not None:
            self.pipeline.shutdown()


class FeatureEncoder:
    """The model's FeatureSpec applied to a validated request, without pandas.

    Small requests go through ``FeatureSpec.encode_records`` itself. Large ones are encoded a
    column at a time from ``ScoringRequest.columns``: the category codes come from the same
    vocabularies (code = index in ``spec.categories[name]``, unseen = NaN), the numbers are the
    values as float64. About 5x faster than the row loop on 10,000 rows.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        position = {name: i for i, name in enumerate(FEATURE_NAMES)}
        # Numbers: (matrix column, request column); categories: (matrix column, request column, codes).
        self._numbers = [(j, position[name]) for j, name in enumerate(spec.columns) if name not in spec.categories]
        self._codes = [
            (j, position[name], {v: float(code) for code, v in enumerate(spec.categories[name])})
            for j, name in enumerate(spec.columns)
            if name in spec.categories
        ]
        self.categorical = [(j, name) for j, name in enumerate(spec.columns) if name in spec.categories]

    def matrix(self, request: ScoringRequest) -> np.ndarray:
        if request.rows < COLUMNAR_ROWS or not request.columns:
            return self.spec.encode_records(request.data)
        n = request.rows
        columns = request.columns
        out = np.empty((n, len(self.spec.columns)), dtype=np.float64)
        if self._numbers:
            # All numeric columns converted in one call (C loop over the values), then scattered.
            numbers = np.array([columns[source] for _, source in self._numbers], dtype=np.float64)
            out[:, [j for j, _ in self._numbers]] = numbers.T
        nan = math.nan
        for j, source, codes in self._codes:
            # An unseen category gets NaN (the missing-value branch), as in FeatureSpec.
            out[:, j] = np.fromiter(map(codes.get, columns[source], repeat(nan, n)), dtype=np.float64, count=n)
        return out

    def unseen(self, X: np.ndarray) -> list[str]:
        """Categorical columns holding a value the model never saw (encoded as missing)."""
        # Numbers are validated finite, so a NaN anywhere is an unseen category: one check per request.
        if not np.isnan(X).any():
            return []
        return [name for j, name in self.categorical if np.isnan(X[:, j]).any()]


class ScoringService:
    """Everything a request needs, prepared once: the model, the key, limits and the Swagger doc."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        key: str,
        name: str,
        version: int,
        max_rows: int,
        max_body_bytes: int,
        telemetry: Telemetry,
    ) -> None:
        if not key:
            raise ConfigError(f"setting {KEY_ENV} is empty", setting=KEY_ENV)
        self.model = model
        self.name = name
        self.version = version
        self.max_rows = max_rows
        self.max_body_bytes = max_body_bytes
        self.telemetry = telemetry
        self._expected_auth = f"Bearer {key}".encode()
        self.swagger = build_swagger(model.meta, title=name, base_path="/", version=version)
        self._version_header = str(version)
        self.encoder = FeatureEncoder(model.spec)
        negative, positive = model.labels
        self._labels = np.array([negative, positive], dtype=object)

    def answer(self, body: bytes, content_type: str | None) -> tuple[bytes, int, list[str]]:
        """Parse, predict and encode one request: (JSON body, rows, unseen category columns).

        Same answer as ``LoadedModel.predict`` + ``format_response``, with the features encoded
        by ``FeatureEncoder`` and the labels and pairs built with numpy for large requests.
        """
        parsed = parse_request(body, content_type, max_rows=self.max_rows, max_body_bytes=self.max_body_bytes)
        X = self.encoder.matrix(parsed)
        p_yes = self.model.predict_matrix(X)
        if parsed.method == "predict":
            result: Any = self._labels[(p_yes >= self.model.threshold).astype(np.intp)].tolist()
        else:
            result = np.column_stack((1.0 - p_yes, p_yes)).tolist()
        finite = bool(np.isfinite(p_yes).all())
        return encode_json(envelope(parsed, result), finite=finite), parsed.rows, self.encoder.unseen(X)

    def headers(self, request_id: str) -> dict[str, str]:
        return {"x-ms-request-id": request_id, "x-bankml-model-version": self._version_header}

    def authorised(self, header: str | None) -> bool:
        # Compare as bytes in constant time (a str compare would leak the key's prefix length).
        return header is not None and hmac.compare_digest(header.encode(), self._expected_auth)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"body is {declared} bytes, the limit is {limit}",
            field="body",
            value=int(declared),
            expected=f"at most {limit} bytes",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"body exceeds the limit of {limit} bytes", field="body", expected=f"at most {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: ScoringService) -> Starlette:
    async def health(request: Request) -> Response:
        return Response("Healthy", media_type="text/plain", headers=service.headers(str(uuid.uuid4())))

    async def swagger(request: Request) -> Response:
        return JSONResponse(service.swagger, headers=service.headers(str(uuid.uuid4())))

    async def score(request: Request) -> Response:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        rows = 0
        unseen: list[str] = []
        try:
            if not service.authorised(request.headers.get("authorization")):
                raise AuthError("missing or invalid key: send the header 'Authorization: Bearer <key>'")
            body = await _read_body(request, service.max_body_bytes)
            content_type = request.headers.get("content-type")
            if len(body) > THREADPOOL_BYTES:
                payload, rows, unseen = await run_in_threadpool(service.answer, body, content_type)
            else:
                payload, rows, unseen = service.answer(body, content_type)
            status = 200
        except BankmlError as err:
            status, payload = err.status, encode_json(err.to_dict())
        except Exception:
            logger.exception("scoring failed (request %s)", request_id)
            status = 500
            payload = encode_json(
                {"error": {"code": "internal_error", "message": "scoring failed", "request_id": request_id}}
            )
        headers = service.headers(request_id)
        client_id = request.headers.get("x-ms-client-request-id")
        if client_id and len(client_id) <= 128:
            # Echoed like Azure ML does, so the relay can correlate its request with ours.
            headers["x-ms-client-request-id"] = client_id
        if status == 401:
            headers["www-authenticate"] = "Bearer"
        if unseen:
            # Unseen categories are scored as missing values (the documented behaviour); say which.
            headers[UNSEEN_HEADER] = ",".join(unseen)
        if status == 200:
            # The rows this server validated and scored: the relay takes it for its own validation
            # of a large body (shared.relay.Relay._vouched) instead of decoding it a second time.
            headers[ROWS_HEADER] = str(rows)
        service.telemetry.record(
            started=started, status=status, rows=rows, request_id=request_id,
            client_request_id=client_id if client_id and len(client_id) <= 128 else None,
        )
        return Response(payload, status_code=status, media_type="application/json", headers=headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        body = {"error": {"code": code, "message": f"{request.method} {request.url.path}: {exc.detail}"}}
        return JSONResponse(body, status_code=exc.status_code, headers=service.headers(str(uuid.uuid4())))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def flusher() -> None:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL_S)
                service.telemetry.flush()

        task = asyncio.create_task(flusher())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            service.telemetry.close()
            # Logged here, not after uvicorn returns: uvicorn re-raises SIGTERM once it has shut
            # down, so code after Server.run() does not run when the server is stopped by signal.
            logger.info("model server %s v%d stopped", service.name, service.version)

    return Starlette(
        routes=[
            Route("/", health, methods=["GET"]),
            Route("/score", score, methods=["POST"]),
            Route("/swagger.json", swagger, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.modelserver", description="Serve one deployment's model.")
    parser.add_argument("--model-dir", type=Path, required=True, help="directory holding model.pkl and model.json")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--name", required=True, help="deployment name")
    parser.add_argument("--version", type=int, required=True, help="model version")
    parser.add_argument("--telemetry-file", type=Path, help="JSON-lines file of per-request telemetry")
    parser.add_argument("--insights-flag", type=Path, help="telemetry is written while this file exists")
    parser.add_argument("--metrics-file", type=Path, help="JSON-lines file of request metrics (OpenTelemetry)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    key = os.environ.get(KEY_ENV, "")
    if not key:
        logger.error("%s is not set; refusing to serve without a key", KEY_ENV)
        return 2
    try:
        settings = Settings.from_env()
        model = load_model(args.model_dir)
        service = ScoringService(
            model,
            key=key,
            name=args.name,
            version=args.version,
            max_rows=settings.max_rows,
            max_body_bytes=settings.max_body_bytes,
            telemetry=Telemetry(
                args.telemetry_file,
                args.insights_flag,
                metrics_path=args.metrics_file,
                name=args.name,
                version=args.version,
                connection_string=settings.appinsights_connection,
            ),
        )
    except BankmlError as err:
        logger.error("cannot start model server %s: %s", args.name, err.message)
        return 2
    app = create_app(service)
    config = uvicorn.Config(
        app,
        host=HOST,
        port=args.port,
        # httptools and uvloop when installed (uvicorn's "auto"), else h11 and asyncio: the C HTTP
        # parser saves about 0.2 ms of CPU per request over h11 (measured in benchmarks/scoring.py).
        loop="auto",
        http="auto",
        workers=1,
        access_log=False,
        log_level="warning",  # uvicorn's own start/stop chatter; we log our own lines below
        lifespan="on",
    )
    logger.info(
        "model server %s v%d starting on http://%s:%d (pid %d, %s, threshold %.3f)",
        args.name,
        args.version,
        HOST,
        args.port,
        os.getpid(),
        model.meta.get("learner"),
        model.threshold,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
