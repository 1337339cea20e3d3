"""Fakes at the Azure cloud boundary, for the azure backend's tests (Azure cannot be reached here).

- ``FakeCredential``: the azure-core TokenCredential protocol (DefaultAzureCredential cannot work here).
- ``AzureMLServer``: one real HTTP server on 127.0.0.1 answering like the three REST services the
  adapter calls itself: a managed online endpoint (``POST /score``, Bearer key, the
  ``azureml-model-deployment`` header, double-encoded v1 answers, 401 after a key rotation), the
  workspace's MLflow tracking (``GET .../api/2.0/mlflow/runs/get``) and a published pipeline
  (``POST /pipelines/<id>`` -> ``{"Id": ...}``).
- ``FakeMLClient``: the azure-ai-ml operation groups the adapter uses; it records the SDK entities
  it is handed (Data, Model, ManagedOnlineEndpoint, ManagedOnlineDeployment) and answers like the
  service (versions, LRO pollers, ResourceNotFoundError, keys).

Everything else is real: Azurite for the app's records, the adapter, the function handlers.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceNotFoundError

from devhost.azurite import PROJECT_ROOT, Azurite
from shared.config import Settings

WS_PATH = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MachineLearningServices/workspaces/ws-1"


class FakeCredential:
    def __init__(self, token: str = "entra-token-1") -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


# -- the REST side ---------------------------------------------------------------------------
@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class AzureMLServer:
    """Answers like Azure ML's REST services; everything it was asked is in ``requests``."""

    key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    token: str = "entra-token-1"
    requests: list[Recorded] = field(default_factory=list)
    mlflow_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipeline_ids: deque[str] = field(default_factory=deque)
    pipeline_status: int = 200
    deployments: set[str] = field(default_factory=set)  # deployments that exist on the endpoint
    traffic: dict[str, int] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)  # deployments that answer 500

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def scoring_uri(self) -> str:
        return self.url + "/score"

    @property
    def tracking_uri(self) -> str:
        return self.url + "/mlflow/v1.0" + WS_PATH

    def pipeline_url(self, pipeline_id: str = "5d9c1f7b-0000-4000-8000-000000000001") -> str:
        return f"{self.url}/pipelines/{pipeline_id}"

    def rotate_key(self) -> str:
        self.key = secrets.token_urlsafe(24)
        return self.key

    def calls(self, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith(prefix)]

    # -- lifecycle
    def start(self) -> AzureMLServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _answer(self, status: int, payload: Any, *, raw: bytes | None = None) -> None:
                body = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _record(self) -> Recorded:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                owner.requests.append(rec)
                return rec

            def do_GET(self) -> None:  # noqa: N802
                rec = self._record()
                url = urlparse(self.path)
                if url.path == "/":
                    return self._answer(200, "Healthy")
                if url.path.endswith("/api/2.0/mlflow/runs/get"):
                    if rec.headers.get("authorization") != f"Bearer {owner.token}":
                        return self._answer(401, {"error_code": "UNAUTHENTICATED"})
                    run_id = parse_qs(url.query).get("run_id", [""])[0]
                    run = owner.mlflow_runs.get(run_id)
                    if run is None:
                        return self._answer(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Run '{run_id}' not found"})
                    return self._answer(200, {"run": run})
                return self._answer(404, {"error": {"code": "NotFound"}})

            def do_POST(self) -> None:  # noqa: N802
                rec = self._record()
                url = urlparse(self.path)
                if url.path.startswith("/pipelines/"):
                    if rec.headers.get("authorization") != f"Bearer {owner.token}":
                        return self._answer(401, {"error": {"code": "UserError", "message": "Unauthorized"}})
                    if owner.pipeline_status != 200:
                        return self._answer(
                            owner.pipeline_status,
                            {"error": {"code": "UserError", "message": "Pipeline parameter 'nope' not found"}},
                        )
                    run_id = owner.pipeline_ids.popleft()
                    return self._answer(200, {"Id": run_id, "Status": "NotStarted", "ExperimentName": rec.body["ExperimentName"]})
                if url.path == "/score":
                    if rec.headers.get("authorization") != f"Bearer {owner.key}":
                        # what a managed endpoint says to a missing or rotated key
                        return self._answer(401, {"message": "Key based authentication failed"})
                    target = rec.headers.get("azureml-model-deployment")
                    if target is None:
                        live = {k: v for k, v in owner.traffic.items() if v}
                        target = max(live, key=lambda k: live[k]) if live else None
                    if target is None or target not in owner.deployments:
                        return self._answer(404, {"message": "No valid deployments to route to"})
                    if target in owner.failing:
                        return self._answer(500, {"message": "An unexpected error occurred in scoring script."})
                    rows = (rec.body or {}).get("data") or []
                    result = ["yes" if int(r.get("duration", 0)) > 600 else "no" for r in rows]
                    # run() of scoring_file_v_1_0_0.py returns json.dumps(...); the server encodes it again
                    return self._answer(200, None, raw=json.dumps(json.dumps({"result": result})).encode())
                return self._answer(404, {"error": {"code": "NotFound"}})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- training results, as MLflow shows them
    def add_mlflow_run(self, run_id: str, *, tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None) -> None:
        self.mlflow_runs[run_id] = {
            "info": {"run_id": run_id, "status": "FINISHED"},
            "data": {
                "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
                "metrics": [{"key": k, "value": v, "timestamp": 1, "step": 0} for k, v in (metrics or {}).items()],
            },
        }


# -- the SDK side ----------------------------------------------------------------------------
class Poller:
    """An LROPoller that is already done."""

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def result(self, timeout: float | None = None) -> Any:
        return self.value

    def done(self) -> bool:
        return True


def _not_found(what: str) -> ResourceNotFoundError:
    return ResourceNotFoundError(f"{what} could not be found.")


class _Data:
    def __init__(self, fake: FakeMLClient) -> None:
        self.fake = fake
        self.assets: list[SimpleNamespace] = []

    def create_or_update(self, data: Any) -> SimpleNamespace:
        folder = Path(data.path)  # the SDK uploads this folder to the workspace datastore
        files = {p.name: p.read_bytes() for p in folder.iterdir()}
        self.fake.entities.append(("Data", data))
        version = str(sum(1 for d in self.assets if d.name == data.name) + 1)
        asset = SimpleNamespace(
            name=data.name,
            version=version,
            type=data.type,
            tags=dict(data.tags or {}),
            files=files,
            path=f"azureml://subscriptions/sub-1/resourcegroups/rg-1/workspaces/ws-1/datastores/workspaceblobstore/paths/LocalUpload/{secrets.token_hex(8)}/{folder.name}/",
            id=f"azureml:{WS_PATH}/data/{data.name}/versions/{version}",
        )
        self.assets.append(asset)
        return asset

    def list(self, name: str | None = None, **kwargs: Any) -> list[SimpleNamespace]:
        found = [a for a in self.assets if name is None or a.name == name]
        if name and not found:
            raise _not_found(f"Data container {name}")
        return found


class _Models:
    def __init__(self, fake: FakeMLClient) -> None:
        self.fake = fake
        self.registered: list[SimpleNamespace] = []

    def create_or_update(self, model: Any) -> SimpleNamespace:
        self.fake.entities.append(("Model", model))
        version = str(sum(1 for m in self.registered if m.name == model.name) + 1)
        out = SimpleNamespace(name=model.name, version=version, path=model.path, tags=dict(model.tags or {}))
        self.registered.append(out)
        return out


class _OnlineEndpoints:
    def __init__(self, fake: FakeMLClient) -> None:
        self.fake = fake
        self.endpoints: dict[str, Any] = {}
        self.get_keys_calls = 0

    def get(self, name: str) -> Any:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        self.fake.calls.append(("online_endpoints.get", name))
        stored = self.endpoints.get(name)
        if stored is None:
            raise _not_found(f"Online endpoint {name}")
        return ManagedOnlineEndpoint(
            name=name,
            auth_mode=stored.auth_mode,
            traffic=dict(self.fake.server.traffic),
            scoring_uri=self.fake.server.scoring_uri,
            provisioning_state="Succeeded",
        )

    def begin_create_or_update(self, endpoint: Any) -> Poller:
        self.fake.entities.append(("ManagedOnlineEndpoint", copy.deepcopy(endpoint)))
        unknown = set(endpoint.traffic or {}) - self.fake.server.deployments
        if unknown:
            raise ValueError(f"traffic names deployments that do not exist: {sorted(unknown)}")
        self.endpoints[endpoint.name] = endpoint
        self.fake.server.traffic = dict(endpoint.traffic or {})
        return Poller(endpoint)

    def get_keys(self, name: str) -> Any:
        from azure.ai.ml.entities import EndpointAuthKeys

        self.get_keys_calls += 1
        if name not in self.endpoints:
            raise _not_found(f"Online endpoint {name}")
        return EndpointAuthKeys(primary_key=self.fake.server.key, secondary_key="secondary-" + self.fake.server.key)

    def begin_regenerate_keys(self, name: str, *, key_type: str = "primary") -> Poller:
        self.fake.server.rotate_key()
        return Poller()


class _OnlineDeployments:
    def __init__(self, fake: FakeMLClient) -> None:
        self.fake = fake
        self.deployments: dict[str, Any] = {}
        self.deleted: list[str] = []

    def begin_create_or_update(self, deployment: Any) -> Poller:
        self.fake.entities.append(("ManagedOnlineDeployment", deployment))
        code = str(deployment.code_configuration.code)
        if not code.startswith("azureml:"):
            # the SDK uploads the code folder and the conda file while it builds the request
            self.fake.uploaded[deployment.name] = sorted(p.name for p in Path(code).iterdir())
        self.deployments[deployment.name] = deployment
        self.fake.server.deployments.add(deployment.name)
        return Poller(deployment)

    def get(self, name: str, endpoint_name: str, **kwargs: Any) -> Any:
        if name not in self.deployments:
            raise _not_found(f"Online deployment {name}")
        # what the service gives back: the uploaded code as an asset id, not the local folder
        got = copy.copy(self.deployments[name])
        got.code_configuration = copy.copy(got.code_configuration)
        got.code_configuration.code = f"azureml:{WS_PATH}/codes/{name}-code/versions/1"
        return got

    def begin_delete(self, name: str, endpoint_name: str, **kwargs: Any) -> Poller:
        if self.fake.server.traffic.get(name):
            raise ValueError(f"deployment {name} still takes traffic")
        self.deleted.append(name)
        self.deployments.pop(name, None)
        self.fake.server.deployments.discard(name)
        return Poller()


class _Jobs:
    def __init__(self, fake: FakeMLClient) -> None:
        self.fake = fake
        self.jobs: dict[str, SimpleNamespace] = {}
        self.downloads: list[str] = []

    def get(self, name: str) -> SimpleNamespace:
        self.fake.calls.append(("jobs.get", name))
        if name not in self.jobs:
            raise _not_found(f"Job {name}")
        return self.jobs[name]

    def list(self, *, parent_job_name: str | None = None, **kwargs: Any) -> list[SimpleNamespace]:
        return [j for j in self.jobs.values() if j.parent == parent_job_name]

    def download(self, name: str, *, download_path: str = ".", output_name: str | None = None, all: bool = False) -> None:  # noqa: A002
        self.downloads.append(name)
        outputs = Path(download_path) / "artifacts" / "outputs"
        outputs.mkdir(parents=True, exist_ok=True)
        for file in ("scoring_file_v_1_0_0.py", "scoring_file_v_2_0_0.py", "conda_env_v_1_0_0.yml", "model.pkl"):
            (outputs / file).write_text(f"# {file} of {name}\n")


class _BatchEndpoints:
    def __init__(self, fake: FakeMLClient) -> None:
        self.fake = fake
        self.invocations: list[dict[str, Any]] = []
        self.next_names: deque[str] = deque()

    def invoke(self, endpoint_name: str, *, deployment_name: str | None = None, inputs: dict | None = None, **kwargs: Any) -> SimpleNamespace:
        self.invocations.append({"endpoint_name": endpoint_name, "inputs": inputs, **kwargs})
        name = self.next_names.popleft() if self.next_names else f"batchjob_{secrets.token_hex(4)}"
        return SimpleNamespace(name=name, status="Preparing")


class FakeMLClient:
    """The parts of azure.ai.ml.MLClient the adapter calls; ``entities`` is what it was handed."""

    def __init__(self, server: AzureMLServer) -> None:
        self.server = server
        self.entities: list[tuple[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self.uploaded: dict[str, list[str]] = {}
        self.data = _Data(self)
        self.models = _Models(self)
        self.online_endpoints = _OnlineEndpoints(self)
        self.online_deployments = _OnlineDeployments(self)
        self.jobs = _Jobs(self)
        self.batch_endpoints = _BatchEndpoints(self)
        self.workspaces = SimpleNamespace(get=lambda name: SimpleNamespace(name=name, mlflow_tracking_uri=server.tracking_uri))

    def of(self, kind: str) -> list[Any]:
        return [e for k, e in self.entities if k == kind]

    # -- the service running a pipeline
    def finish_pipeline(self, run_id: str, *, auc: float | None, status: str = "Completed", experiment: str = "bankmarketing-automl") -> str:
        """A finished pipeline run: one AutoML step, whose best child has ``auc``; returns the child."""
        step = f"{run_id}_automl_step"
        best = f"AutoML_{secrets.token_hex(4)}_3"
        self.jobs.jobs[run_id] = SimpleNamespace(name=run_id, status=status, parent=None, experiment_name=experiment, tags={})
        self.jobs.jobs[step] = SimpleNamespace(name=step, status=status, parent=run_id, experiment_name=experiment, tags={})
        self.server.add_mlflow_run(run_id, tags={"azureml.pipeline": run_id})
        if status == "Completed":
            self.server.add_mlflow_run(step, tags={"automl_best_child_run_id": best, "model_explain_run": "best_run"})
            metrics = {"accuracy": 0.91, "AUC_macro": 0.93}
            if auc is not None:
                metrics["AUC_weighted"] = auc
            self.server.add_mlflow_run(best, tags={"run_algorithm": "LightGBM", "runTemplate": "automl_child"}, metrics=metrics)
        else:
            self.server.add_mlflow_run(step)
        return best


# -- fixtures' building blocks ---------------------------------------------------------------
_azurite: list[Azurite] = []


def shared_azurite() -> Azurite:
    """One Azurite for all the azure backend's test modules (each test uses its own container),
    stopped by its PID when the test process exits."""
    import atexit
    import shutil
    import tempfile

    if not (PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob").exists() or shutil.which("node") is None:
        pytest.skip("Azurite is not installed (node_modules/.bin/azurite-blob, node): run `make install`")
    if not _azurite:
        base = Path(tempfile.mkdtemp(prefix="bankml-azure-tests-"))
        atexit.register(shutil.rmtree, base, True)  # atexit runs last-in first: after stop()
        az = Azurite(base, port=0)
        az.start()
        atexit.register(az.stop)
        _azurite.append(az)
    return _azurite[0]


def azure_env(connection: str, server: AzureMLServer, **extra: str) -> dict[str, str]:
    env = {
        "BANKML_BACKEND": "azure",
        "AzureWebJobsStorage": connection,
        "AZURE_SUBSCRIPTION_ID": "sub-1",
        "AZURE_RESOURCE_GROUP": "rg-1",
        "AZURE_ML_WORKSPACE": "ws-1",
        "BANKML_AZURE_TRIGGER": "pipeline",
        "BANKML_AZURE_PIPELINE_URL": server.pipeline_url(),
        "BANKML_AZURE_BATCH_ENDPOINT": "bankml-train",
        "BANKML_AZURE_ONLINE_ENDPOINT": "bankml-score-test",
        "BANKML_AZURE_STATE_CONTAINER": "state" + secrets.token_hex(4),
    }
    env.update(extra)
    return env


def make_workspace(env: dict[str, str], server: AzureMLServer) -> tuple[Any, FakeMLClient, FakeCredential]:
    from shared.workspace.azure.workspace import AzureWorkspace

    ml = FakeMLClient(server)
    credential = FakeCredential(server.token)
    ws = AzureWorkspace(Settings.from_env(env), ml_client=ml, credential=credential)
    ws.smoke_retry_delay_s = 0.0
    return ws, ml, credential
