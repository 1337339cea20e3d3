"""Start training: a published pipeline's REST endpoint, or a batch endpoint hosting the pipeline
component (the SDK v2 replacement). Both answer with the run id the RunCompleted event will carry.

Published pipeline (v1 how-to-deploy-pipelines): POST the endpoint with an Entra bearer token and
``{"ExperimentName", "ParameterAssignments", "DataPathAssignments" | "DataSetDefinitionValueAssignments",
"Tags", "RunSource"}``; the answer's ``Id`` is the run id.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import requests

from shared.errors import WorkspaceError
from shared.workspace.azure.auth import ARM_SCOPE, TokenCredential, bearer

log = logging.getLogger(__name__)

# azureml://subscriptions/<s>/resourcegroups/<rg>/workspaces/<ws>/datastores/<name>/paths/<path>
# (and the short form azureml://datastores/<name>/paths/<path>)
_DATASTORE_URI = re.compile(r"^azureml://(?:.*/)?datastores/(?P<store>[^/]+)/paths/(?P<path>.+)$", re.IGNORECASE)


@dataclass(frozen=True)
class DataPath:
    datastore: str
    relative_path: str


def datastore_path(uri: str) -> DataPath:
    """The datastore and relative path of an ``azureml://.../datastores/<name>/paths/<path>`` URI."""
    m = _DATASTORE_URI.match(uri or "")
    if not m:
        raise WorkspaceError(f"data asset path {uri!r} is not a datastore path (azureml://.../datastores/<name>/paths/...)", value=uri)
    return DataPath(m.group("store"), m.group("path"))


def pipeline_body(
    *,
    experiment: str,
    parameters: dict[str, Any] | None = None,
    input_name: str,
    data_path: DataPath | None = None,
    dataset_id: str | None = None,
    tags: dict[str, str] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """The documented request body of a published pipeline run."""
    if (data_path is None) == (dataset_id is None):
        raise ValueError("give exactly one of data_path and dataset_id")
    body: dict[str, Any] = {
        "ExperimentName": experiment,
        "ParameterAssignments": {k: v for k, v in (parameters or {}).items()},
        "RunSource": "SDK",
    }
    if data_path is not None:
        body["DataPathAssignments"] = {
            input_name: {"DataStoreName": data_path.datastore, "RelativePath": data_path.relative_path}
        }
    else:
        body["DataSetDefinitionValueAssignments"] = {input_name: {"SavedDataSetReference": {"Id": dataset_id}}}
    if tags:
        body["Tags"] = dict(tags)
    if description:
        body["Description"] = description
    return body


class PublishedPipeline:
    """POSTs runs to one published pipeline (or pipeline endpoint) REST URL."""

    def __init__(
        self, url: str, credential: TokenCredential, *, session: requests.Session | None = None, timeout_s: float = 60.0
    ) -> None:
        self.url = url
        self.credential = credential
        self.session = session or requests.Session()
        self.timeout_s = timeout_s

    def submit(self, body: dict[str, Any]) -> str:
        headers = {"Authorization": bearer(self.credential, ARM_SCOPE), "Content-Type": "application/json"}
        try:
            r = self.session.post(self.url, json=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as err:
            raise WorkspaceError(f"the published pipeline did not answer: {type(err).__name__}", url=self.url) from err
        try:
            answer = r.json()
        except ValueError:
            answer = None
        if r.status_code >= 400:
            raise WorkspaceError(
                f"the published pipeline refused the run: HTTP {r.status_code}: {_service_message(answer, r.text)}",
                url=self.url,
                status=r.status_code,
            )
        run_id = answer.get("Id") if isinstance(answer, dict) else None
        if not isinstance(run_id, str) or not run_id:
            raise WorkspaceError(f"the published pipeline answered {r.status_code} without a run Id", url=self.url)
        log.info("published pipeline started run %s (experiment %s)", run_id, body.get("ExperimentName"))
        return run_id


def _service_message(answer: Any, text: str) -> str:
    """Azure ML error bodies: {"error": {"code", "message"}} (or {"Message"} on older services)."""
    if isinstance(answer, dict):
        err = answer.get("error") or answer.get("Error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("Message")
            code = err.get("code") or err.get("Code")
            if msg:
                return f"{code}: {msg}" if code else str(msg)
        if answer.get("Message"):
            return str(answer["Message"])
    return (text or "")[:300]


def invoke_batch_endpoint(ml_client: Any, endpoint: str, *, input_name: str, data_asset: str, experiment: str) -> str:
    """Run the batch endpoint's default deployment (a pipeline component) on a registered data asset
    (``azureml:<name>:<version>``, an MLTable); the job name is the run id."""
    from azure.ai.ml import Input
    from azure.ai.ml.constants import AssetTypes

    job = ml_client.batch_endpoints.invoke(
        endpoint_name=endpoint,
        inputs={input_name: Input(type=AssetTypes.MLTABLE, path=data_asset)},
        experiment_name=experiment,
    )
    name = getattr(job, "name", None)
    if not name:
        raise WorkspaceError(f"batch endpoint {endpoint} started a job without a name", endpoint=endpoint)
    log.info("batch endpoint %s started job %s (experiment %s)", endpoint, name, experiment)
    return str(name)
