"""The scoring relay: validate a request against the contract, forward it to the live deployment,
answer once-encoded JSON. Every refusal is a 4xx naming the field; upstream trouble is 502/503/504."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests

from shared.config import Settings
from shared.errors import BankmlError, NoLiveDeployment, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from shared.scoring import parse_request

log = logging.getLogger(__name__)

LIVE_CACHE_S = 0.5  # how long a live-deployment lookup is reused; a switch is seen within this


@dataclass
class RelayAnswer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def unwrap(payload: Any) -> Any:
    """Azure ML's v1 scoring scripts return a JSON string that the server encodes again."""
    for _ in range(2):
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                break
    return payload


class Relay:
    def __init__(self, settings: Settings, workspace: Any) -> None:
        self.settings = settings
        self.workspace = workspace
        self.session = requests.Session()
        self._lock = threading.Lock()
        self._live: Any = None
        self._live_at = 0.0

    def live(self, *, refresh: bool = False) -> Any:
        with self._lock:
            if refresh or time.monotonic() - self._live_at > LIVE_CACHE_S:
                self._live = self.workspace.live_deployment()
                self._live_at = time.monotonic()
            return self._live

    def score(self, body: bytes, content_type: str | None) -> RelayAnswer:
        request_id = str(uuid.uuid4())
        headers = {"x-ms-request-id": request_id}
        try:
            parse_request(body, content_type, max_rows=self.settings.max_rows, max_body_bytes=self.settings.max_body_bytes)
            dep = self.live()
            if dep is None:
                raise NoLiveDeployment("no model is deployed yet: drop a CSV into incoming/ to train one")
            try:
                upstream = self._forward(dep, body, request_id)
            except UpstreamUnavailable:
                # The live deployment may have just been replaced: look again once.
                fresh = self.live(refresh=True)
                if fresh is None or fresh.name == dep.name:
                    raise
                dep = fresh
                upstream = self._forward(dep, body, request_id)
            headers["x-bankml-model-version"] = str(dep.model_version)
            headers["x-bankml-deployment"] = dep.name
            return RelayAnswer(200, upstream, headers)
        except BankmlError as err:
            if isinstance(err, UpstreamUnavailable | NoLiveDeployment):
                headers["Retry-After"] = "5"
            return RelayAnswer(err.status, err.to_dict(), headers)

    def _forward(self, dep: Any, body: bytes, request_id: str) -> Any:
        try:
            r = self.session.post(
                dep.scoring_uri,
                data=body,
                headers={
                    "Authorization": f"Bearer {dep.key}",
                    "Content-Type": "application/json",
                    "x-ms-client-request-id": request_id,
                },
                timeout=self.settings.relay_timeout_s,
            )
        except requests.Timeout as err:
            raise UpstreamTimeout(f"the model server did not answer within {self.settings.relay_timeout_s:g} s") from err
        except requests.ConnectionError as err:
            raise UpstreamUnavailable(f"the model server {dep.name} is not reachable") from err
        try:
            payload = unwrap(r.json())
        except ValueError:
            payload = r.text
        if r.status_code >= 500 or r.status_code in (401, 403):
            message = payload.get("error", payload) if isinstance(payload, dict) else payload
            raise UpstreamError(f"the model server answered {r.status_code}", upstream=message)
        if r.status_code >= 400:
            err = BankmlError("the model server refused the request", upstream=payload)
            err.status = r.status_code
            err.code = "upstream_refused"
            raise err
        return payload
