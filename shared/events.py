"""Event Grid / CloudEvents: event-type constants, case-insensitive reading, dedupe keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
SUBSCRIPTION_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"

# Run types/templates of AutoML children: their events are not ours to act on.
CHILD_RUN_TEMPLATES = {"automl_child"}


def ci_get(mapping: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    """Read a key case-insensitively: real payloads mix camelCase and PascalCase."""
    if not mapping:
        return default
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    for k, v in mapping.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return default


@dataclass(frozen=True)
class RunEvent:
    event_id: str
    event_type: str
    run_id: str
    experiment_name: str | None
    run_status: str | None
    is_child: bool
    topic: str | None


def parse_run_event(*, event_id: str, event_type: str, data: Mapping[str, Any] | None, subject: str | None, topic: str | None) -> RunEvent | None:
    """A RunCompleted / RunStatusChanged event, or None when it is not a run event."""
    if event_type not in (RUN_COMPLETED, RUN_STATUS_CHANGED):
        return None
    data = data or {}
    run_id = ci_get(data, "runId")
    if not run_id and subject and "/runs/" in subject:
        run_id = subject.rsplit("/runs/", 1)[1]
    if not run_id:
        return None
    props = ci_get(data, "runProperties") or {}
    template = ci_get(props, "runTemplate")
    run_type = ci_get(data, "runType")
    is_child = (template in CHILD_RUN_TEMPLATES) or (isinstance(run_type, str) and run_type.lower() == "automl_child")
    return RunEvent(
        event_id=event_id,
        event_type=event_type,
        run_id=str(run_id),
        experiment_name=ci_get(data, "experimentName"),
        run_status=ci_get(data, "runStatus"),
        is_child=is_child,
        topic=topic,
    )
