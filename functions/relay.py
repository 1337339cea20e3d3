"""HTTP: the scoring relay (POST /api/score), its liveness (GET /api/), its Swagger document
(GET /api/swagger.json) and Swagger UI (GET /api/docs, assets from the installed swagger-ui-bundle
package, no CDN)."""

from __future__ import annotations

import logging
import mimetypes
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from shared.config import Settings
from shared.http import json_response
from shared.openapi import FUNCTION_KEY_SECURITY, build_swagger
from shared.relay import Relay
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)

JSON = "application/json"
SWAGGER_UI_FILES = frozenset(
    {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png", "favicon-16x16.png"}
)


@lru_cache(maxsize=4)
def _relay(settings: Settings, workspace: Any) -> Relay:
    # One relay (and its pool of keep-alive connections) per settings and workspace.
    return Relay(settings, workspace)


@bp.function_name("score")
@bp.route(route="score", methods=["POST"])
def score(req: func.HttpRequest) -> func.HttpResponse:
    settings, workspace = current()
    relay = _relay(settings, workspace)
    # A body declared too large is refused from its Content-Length, before it is read or parsed.
    # A gzip body (Content-Encoding: gzip) is inflated by the relay, within the same body limit.
    answer = relay.check_length(req.headers.get("content-length")) or relay.score(
        req.get_body(),
        req.headers.get("content-type"),
        client_request_id=req.headers.get("x-ms-client-request-id"),
        content_encoding=req.headers.get("content-encoding"),
    )
    return func.HttpResponse(answer.raw, status_code=answer.status, headers=answer.headers, mimetype=JSON)


@bp.function_name("health")
# Azure Functions has no empty route; an optional parameter of length 0 matches /api and /api/
# only (the documented workaround, Azure/Azure-Functions#2473).
@bp.route(route="{ignored:maxlength(0)?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness, like ``GET /`` of an Azure ML deployment."""
    return func.HttpResponse("Healthy", mimetype="text/plain")


def _base_path(req: func.HttpRequest, route: str) -> str:
    """The route prefix as the client used it (``/api``), from the path of this request."""
    path = urlsplit(req.url).path
    cut = path.lower().rfind("/" + route)
    return path[:cut] if cut >= 0 else "/api"


@bp.function_name("swagger")
@bp.route(route="swagger.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def swagger(req: func.HttpRequest) -> func.HttpResponse:
    _, workspace = current()
    live = workspace.live_deployment()
    doc = build_swagger(
        live.schema if live else {},
        title="bankml scoring relay",
        base_path=_base_path(req, "swagger.json"),
        version=live.model_version if live else None,
        schemes=[urlsplit(req.url).scheme or "http"],
        security=FUNCTION_KEY_SECURITY,
        deployment=live.name if live else None,
    )
    return json_response(doc)


def _swagger_ui_dir() -> Path:
    import swagger_ui_bundle

    return Path(str(swagger_ui_bundle.swagger_ui_path))


_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bankml scoring API</title>
<link rel="icon" type="image/png" href="{base}/docs/favicon-32x32.png" sizes="32x32">
<link rel="stylesheet" href="{base}/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{base}/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "{base}/swagger.json", dom_id: "#swagger-ui", deepLinking: true,
  tryItOutEnabled: true, displayRequestDuration: true}});
</script></body></html>
"""


@bp.function_name("docs")
@bp.route(route="docs/{file?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def docs(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("file") or ""
    if not name:
        # Absolute asset URLs: the page works at /api/docs and /api/docs/ alike.
        page = _DOCS_PAGE.format(base=_base_path(req, "docs"))
        return func.HttpResponse(page, mimetype="text/html")
    if name not in SWAGGER_UI_FILES:
        return json_response({"error": {"code": "not_found", "message": f"no such file: {name}", "field": "file"}}, 404)
    path = _swagger_ui_dir() / name
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return func.HttpResponse(path.read_bytes(), mimetype=mime, headers={"Cache-Control": "max-age=3600"})
