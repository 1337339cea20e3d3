"""Event Grid / CloudEvents: event-type constants, case-insensitive reading, dedupe keys.

Both envelopes are accepted everywhere: the Event Grid schema (``eventType``/``topic``/``eventTime``)
and CloudEvents 1.0 (``type``/``source``/``time``/``specversion``). The Functions worker hands an
Event Grid trigger a ``func.EventGridEvent`` or, for a body with ``specversion``, a
``func.CloudEvent`` (azure-functions >= 1.25) whatever the annotation says; the local host maps
CloudEvents onto ``func.EventGridEvent``. ``read_event`` reduces all of them (and raw JSON) to one
shape, so handlers never look at which one they got.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
SUBSCRIPTION_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
_RUN_EVENT_TYPES = {RUN_COMPLETED.lower(): RUN_COMPLETED, RUN_STATUS_CHANGED.lower(): RUN_STATUS_CHANGED}

# Run types/templates of AutoML children: their events are not ours to act on.
CHILD_RUN_TEMPLATES = {"automl_child"}
# Azure ML names the children of AutoML_<guid> as AutoML_<guid>_<n>, _setup, _worker_<n>, _HD ...
_CHILD_RUN_ID = re.compile(r"^AutoML_[0-9a-fA-F-]{36}_[A-Za-z0-9_]+$")
_PARENT_KEYS = ("parentRunId", "azureml.parentRunId", "parent_run_id")


def ci_get(mapping: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    """Read a key case-insensitively: real payloads mix camelCase and PascalCase."""
    if not mapping or not isinstance(mapping, Mapping):
        return default
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    for k, v in mapping.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return default


@dataclass(frozen=True)
class EventInfo:
    """One event, whichever envelope it came in."""

    id: str
    type: str
    source: str | None  # Event Grid ``topic`` or CloudEvents ``source``
    subject: str | None
    data: Any
    cloud_event: bool


def read_event(event: Any) -> EventInfo:
    """A ``func.EventGridEvent``, a ``func.CloudEvent`` or a raw JSON object of either schema."""
    if isinstance(event, Mapping):
        cloud = ci_get(event, "specversion") is not None
        return EventInfo(
            id=str(ci_get(event, "id") or ""),
            type=str(ci_get(event, "type" if cloud else "eventType") or ""),
            source=ci_get(event, "source" if cloud else "topic"),
            subject=ci_get(event, "subject"),
            data=ci_get(event, "data"),
            cloud_event=cloud,
        )
    cloud = hasattr(event, "specversion") and not hasattr(event, "event_type")
    get_json = getattr(event, "get_json", None)
    data = get_json() if callable(get_json) else None
    if cloud:
        return EventInfo(
            id=str(event.id or ""), type=str(event.type or ""), source=event.source, subject=event.subject,
            data=data, cloud_event=True,
        )
    return EventInfo(
        id=str(event.id or ""), type=str(event.event_type or ""), source=event.topic, subject=event.subject,
        data=data, cloud_event=False,
    )


@dataclass(frozen=True)
class RunEvent:
    event_id: str
    event_type: str
    run_id: str
    experiment_name: str | None
    run_status: str | None
    is_child: bool
    topic: str | None


def _is_child(run_id: str, data: Mapping[str, Any], props: Mapping[str, Any]) -> bool:
    template = ci_get(props, "runTemplate")
    run_type = ci_get(data, "runType")
    if isinstance(template, str) and template.lower() in CHILD_RUN_TEMPLATES:
        return True
    if isinstance(run_type, str) and run_type.lower() in CHILD_RUN_TEMPLATES:
        return True
    for key in _PARENT_KEYS:
        parent = ci_get(props, key) or ci_get(data, key)
        if parent and str(parent) != run_id:
            return True
    return bool(_CHILD_RUN_ID.match(run_id))


def parse_run_event(*, event_id: str, event_type: str, data: Mapping[str, Any] | None, subject: str | None, topic: str | None) -> RunEvent | None:
    """A RunCompleted / RunStatusChanged event, or None when it is not a run event."""
    canonical = _RUN_EVENT_TYPES.get((event_type or "").lower())
    if canonical is None:
        return None
    data = data if isinstance(data, Mapping) else {}
    run_id = ci_get(data, "runId")
    if not run_id and subject and "/runs/" in subject:
        run_id = subject.rsplit("/runs/", 1)[1]
    if not run_id:
        return None
    run_id = str(run_id)
    props = ci_get(data, "runProperties")
    props = props if isinstance(props, Mapping) else {}
    return RunEvent(
        event_id=event_id,
        event_type=canonical,
        run_id=run_id,
        experiment_name=ci_get(data, "experimentName"),
        run_status=ci_get(data, "runStatus"),
        is_child=_is_child(run_id, data, props),
        topic=topic,
    )


def run_event_of(event: Any) -> tuple[EventInfo, RunEvent | None]:
    """The event in either schema, and its run event (None for anything else)."""
    info = read_event(event)
    return info, parse_run_event(
        event_id=info.id, event_type=info.type, data=info.data, subject=info.subject, topic=info.source
    )
