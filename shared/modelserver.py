"""Model server of one local deployment, speaking the Azure ML scoring contract.

    BANKML_MODEL_KEY=... python -m shared.modelserver --model-dir DIR --port PORT --name NAME --version N \
        [--telemetry-file FILE] [--insights-flag FILE]

Binds 127.0.0.1 only. ``GET /`` answers "Healthy" without a key (liveness), ``POST /score`` needs
``Authorization: Bearer <key>``, ``GET /swagger.json`` describes the deployment. The key comes from
the environment, never from argv (argv is visible to every local user in ``ps``), and is never
logged. The model is loaded once before the first request.

Telemetry (the local stand-in for Application Insights): while the ``--insights-flag`` file exists
(checked at most once a second), one JSON line per scoring request is appended to
``--telemetry-file``; lines are buffered and flushed every second and on shutdown. With a telemetry
file but no flag file, telemetry is always on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.config import Settings
from shared.errors import AuthError, BankmlError, ConfigError, PayloadTooLarge
from shared.openapi import build_swagger
from shared.scoring import encode_json, format_response, parse_request
from shared.workspace.local.training import LoadedModel, load_model

logger = logging.getLogger(__name__)

KEY_ENV = "BANKML_MODEL_KEY"
HOST = "127.0.0.1"
# Above this many rows the prediction runs in a worker thread so that health checks stay prompt.
THREADPOOL_ROWS = 500
FLAG_CHECK_INTERVAL_S = 1.0
FLUSH_INTERVAL_S = 1.0


class Telemetry:
    """Buffered JSON-lines request log, active while the insights flag file exists."""

    def __init__(self, path: Path | None, flag: Path | None) -> None:
        self.path = path
        self.flag = flag
        self._buffer: list[str] = []
        self._checked_at = -FLAG_CHECK_INTERVAL_S
        self._enabled = False

    def enabled(self) -> bool:
        if self.path is None:
            return False
        if self.flag is None:
            return True
        now = time.monotonic()
        # A stat per request would cost more than the prediction; the flag changes rarely.
        if now - self._checked_at >= FLAG_CHECK_INTERVAL_S:
            self._checked_at = now
            self._enabled = self.flag.exists()
        return self._enabled

    def record(self, event: dict[str, Any]) -> None:
        if self.enabled():
            self._buffer.append(json.dumps(event, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if not self._buffer or self.path is None:
            return
        lines, self._buffer = self._buffer, []
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.writelines(lines)
        except OSError:
            # Losing a second of telemetry must not take the scoring service down.
            logger.warning("could not write telemetry to %s", self.path, exc_info=True)


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
        try:
            if not service.authorised(request.headers.get("authorization")):
                raise AuthError("missing or invalid key: send the header 'Authorization: Bearer <key>'")
            body = await _read_body(request, service.max_body_bytes)
            parsed = parse_request(
                body,
                request.headers.get("content-type"),
                max_rows=service.max_rows,
                max_body_bytes=service.max_body_bytes,
            )
            rows = parsed.rows
            if rows > THREADPOOL_ROWS:
                labels, probas = await run_in_threadpool(service.model.predict, parsed.records)
            else:
                labels, probas = service.model.predict(parsed.records)
            status, payload = 200, encode_json(format_response(parsed, labels, probas))
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
        if service.telemetry.enabled():
            service.telemetry.record(
                {
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "request_id": request_id,
                    "deployment": service.name,
                    "model_version": service.version,
                    "status": status,
                    "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
                    "rows": rows,
                }
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
            service.telemetry.flush()
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
            telemetry=Telemetry(args.telemetry_file, args.insights_flag),
        )
    except BankmlError as err:
        logger.error("cannot start model server %s: %s", args.name, err.message)
        return 2
    app = create_app(service)
    config = uvicorn.Config(
        app,
        host=HOST,
        port=args.port,
        loop="asyncio",
        http="h11",
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
