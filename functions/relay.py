"""HTTP: the scoring relay (POST /api/score), its Swagger document and Swagger UI."""

from __future__ import annotations

import logging
import mimetypes
from functools import lru_cache
from pathlib import Path

import azure.functions as func

from shared.http import json_response
from shared.openapi import build_swagger
from shared.relay import Relay
from shared.workspace import current

bp = func.Blueprint()
log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _relay(settings: object, workspace: object) -> Relay:
    return Relay(settings, workspace)  # type: ignore[arg-type]


@bp.function_name("score")
@bp.route(route="score", methods=["POST"])
def score(req: func.HttpRequest) -> func.HttpResponse:
    settings, workspace = current()
    length = req.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.max_body_bytes:
        from shared.errors import PayloadTooLarge

        err = PayloadTooLarge(f"body is {int(length)} bytes; the limit is {settings.max_body_bytes}", field="body")
        return json_response(err.to_dict(), err.status)
    answer = _relay(settings, workspace).score(req.get_body(), req.headers.get("content-type"))
    return json_response(answer.body, answer.status, answer.headers)


def _model_meta() -> dict:
    _, workspace = current()
    live = workspace.live_deployment()
    return live.schema if live else {}


@bp.function_name("swagger")
@bp.route(route="swagger.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def swagger(req: func.HttpRequest) -> func.HttpResponse:
    doc = build_swagger(_model_meta(), title="bankml scoring relay", base_path="/api")
    return json_response(doc)


def _swagger_ui_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bankml scoring API</title>
<link rel="stylesheet" href="docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "swagger.json", dom_id: "#swagger-ui", deepLinking: true});
</script></body></html>
"""


@bp.function_name("docs")
@bp.route(route="docs/{file?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def docs(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("file") or ""
    if not name:
        return func.HttpResponse(_DOCS_PAGE, mimetype="text/html")
    allowed = {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png", "favicon-16x16.png"}
    if name not in allowed:
        return json_response({"error": {"code": "not_found", "message": f"no such file: {name}"}}, 404)
    path = _swagger_ui_dir() / name
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return func.HttpResponse(path.read_bytes(), mimetype=mime, headers={"Cache-Control": "max-age=3600"})

