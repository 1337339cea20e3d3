"""The workspace port: what the functions need from a backend (local or azure).

The function code is the same whatever the backend; only the adapter behind this port changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# Run statuses, spelled like Azure ML's.
QUEUED = "Queued"
RUNNING = "Running"
COMPLETED = "Completed"
FAILED = "Failed"


@dataclass
class DatasetVersion:
    name: str
    version: int
    content_hash: str
    source_blob: str
    etag: str
    rows: int
    created_at: str
    column_types: dict[str, str] = field(default_factory=dict)
    class_balance: dict[str, int] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    created: bool = True  # False when the same content was registered before


@dataclass
class Run:
    run_id: str
    experiment: str
    dataset_version: int
    status: str
    submitted_at: str
    trigger: str = "api"
    parameters: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    ended_at: str | None = None
    error: str | None = None
    best: dict[str, Any] = field(default_factory=dict)  # learner, config, metrics, threshold
    created: bool = True  # False when an existing run was returned (idempotent submit)


@dataclass
class Deployment:
    name: str
    run_id: str
    model_version: int
    status: str  # starting | live | draining | retired | failed
    scoring_uri: str
    created_at: str
    metrics: dict[str, Any] = field(default_factory=dict)
    insights: bool = False
    pid: int | None = None
    reason: str | None = None
    key: str = field(default="", repr=False)
    schema: dict[str, Any] = field(default_factory=dict)  # model.json "categories"/"features"


@dataclass
class DeployDecision:
    run_id: str
    deployed: bool
    reason: str
    deployment: Deployment | None = None
    duplicate: bool = False


class Workspace(Protocol):
    def register_dataset(self, parsed: Any, *, source_blob: str, etag: str) -> DatasetVersion: ...

    def submit_run(self, dataset_version: int, *, trigger: str, parameters: dict[str, Any] | None = None) -> Run: ...

    def get_run(self, run_id: str) -> Run: ...

    def is_own_run(self, run_id: str, experiment: str | None) -> bool: ...

    def deploy_run(self, run_id: str) -> DeployDecision: ...

    def enable_insights(self, run_id: str) -> str: ...

    def live_deployment(self) -> Deployment | None: ...

    def status(self) -> dict[str, Any]: ...
