"""Event Grid / CloudEvents 1.0 webhook bodies: envelopes, the validation handshake, binding objects."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import azure.functions as func

logger = logging.getLogger(__name__)

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
HEADER_EVENT_TYPE = "aeg-event-type"
SUBSCRIPTION_VALIDATION = "SubscriptionValidation"
SUBSCRIPTION_DELETION = "SubscriptionDeletion"
NOTIFICATION = "Notification"


class EventBodyError(ValueError):
    """The webhook body is not an Event Grid or CloudEvents payload."""


_DELIVERY_KINDS = {
    SUBSCRIPTION_VALIDATION.lower(): SUBSCRIPTION_VALIDATION,
    NOTIFICATION.lower(): NOTIFICATION,
    SUBSCRIPTION_DELETION.lower(): SUBSCRIPTION_DELETION,
    "unsubscribe": SUBSCRIPTION_DELETION,  # the older name the Functions extension also answers
}


def delivery_kind(header: str | None) -> str:
    """What a POST to an Event Grid webhook is, from its ``aeg-event-type`` header, decided as the
    Functions Event Grid extension decides it: ``SubscriptionValidation``, ``Notification`` or
    ``SubscriptionDeletion``. Event Grid sets the header on every delivery (CloudEvents too); a
    request without it, or with another value, is not from Event Grid and the extension answers
    400, so this raises ``EventBodyError`` (a 400) instead of treating it as a notification."""
    value = (header or "").strip()
    kind = _DELIVERY_KINDS.get(value.lower())
    if kind is None:
        what = f"header {HEADER_EVENT_TYPE}: {value[:40]!r}" if value else f"no {HEADER_EVENT_TYPE} header"
        raise EventBodyError(
            f"{what}; an Event Grid delivery says {SUBSCRIPTION_VALIDATION}, {NOTIFICATION} or {SUBSCRIPTION_DELETION}"
        )
    return kind


@dataclass(frozen=True)
class Envelope:
    """One event, both schemas reduced to the same fields; top-level keys read case-insensitively."""

    id: str
    topic: str
    subject: str
    event_type: str
    event_time: str | None
    data: Any
    data_version: str
    cloud_event: bool
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, obj: Any) -> Envelope:
        if not isinstance(obj, Mapping):
            raise EventBodyError("each event must be a JSON object")
        low = {str(k).lower(): v for k, v in obj.items()}
        cloud = "specversion" in low

        def text(*keys: str) -> str:
            for key in keys:
                value = low.get(key)
                if value is not None:
                    return str(value)
            return ""

        if cloud:
            return cls(
                id=text("id"),
                topic=text("source"),
                subject=text("subject"),
                event_type=text("type"),
                event_time=low.get("time"),
                data=low.get("data", low.get("data_base64")),
                data_version=text("dataversion"),
                cloud_event=True,
                raw=obj,
            )
        return cls(
            id=text("id"),
            topic=text("topic"),
            subject=text("subject"),
            event_type=text("eventtype"),
            event_time=low.get("eventtime"),
            data=low.get("data"),
            data_version=text("dataversion"),
            cloud_event=False,
            raw=obj,
        )

    @property
    def is_validation(self) -> bool:
        return self.event_type.lower() == VALIDATION_EVENT.lower()

    @property
    def validation_code(self) -> str | None:
        if isinstance(self.data, Mapping):
            for key, value in self.data.items():
                if str(key).lower() == "validationcode":
                    return str(value)
        return None

    def data_field(self, name: str) -> Any:
        """A field of ``data``, name matched case-insensitively."""
        if isinstance(self.data, Mapping):
            for key, value in self.data.items():
                if str(key).lower() == name.lower():
                    return value
        return None


def parse_body(body: bytes) -> list[Envelope]:
    """An Event Grid array (or single object) or CloudEvents 1.0 (object or batch array)."""
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # RecursionError: absurdly nested
        raise EventBodyError("body is not JSON") from err
    items = doc if isinstance(doc, list) else [doc]
    return [Envelope.from_json(item) for item in items]


def parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        logger.warning("event time %r is not ISO 8601; passing None", value)
        return None


def to_event_grid_event(env: Envelope) -> func.EventGridEvent:
    """The binding object for one event; CloudEvents map source->topic, type->event_type, time->event_time."""
    return func.EventGridEvent(
        id=env.id,
        data=env.data,
        topic=env.topic,
        subject=env.subject,
        event_type=env.event_type,
        event_time=parse_time(env.event_time),
        data_version=env.data_version,
    )


def to_cloud_event(env: Envelope) -> func.CloudEvent:
    low = {str(k).lower(): v for k, v in env.raw.items()}
    known = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "data"}
    return func.CloudEvent(
        id=env.id,
        source=env.topic,
        type=env.event_type,
        specversion=str(low.get("specversion")),
        data=env.data,
        time=parse_time(env.event_time),
        subject=env.subject or None,
        datacontenttype=low.get("datacontenttype"),
        dataschema=low.get("dataschema"),
        **{k: v for k, v in low.items() if k not in known},
    )


@dataclass(frozen=True)
class BlobRef:
    container: str
    candidates: tuple[str, ...]  # blob names to try, most likely first


def blob_ref_from_event(env: Envelope) -> BlobRef | None:
    """Container and blob name of a BlobCreated event.

    The subject is ``/blobServices/default/containers/<c>/blobs/<path>`` (the leading slash is
    optional). The name is tried percent-decoded first, then as written, then as decoded from
    ``data.url`` (which is always percent-encoded), so names with spaces, unicode or ``%`` resolve.
    """
    subject = env.subject.lstrip("/")
    marker = "/blobs/"
    prefix = "blobservices/default/containers/"
    if not subject.lower().startswith(prefix) or marker not in subject:
        return None
    rest = subject[len(prefix) :]
    container, _, blob = rest.partition(marker)
    if not container or not blob:
        return None
    container = unquote(container)
    candidates = [unquote(blob), blob]
    url = env.data_field("url")
    if isinstance(url, str) and url:
        # https://acct.blob.core.windows.net/<c>/<blob> or path-style http://host/<acct>/<c>/<blob>
        parts = urlsplit(url).path.lstrip("/").split("/")
        for i in range(min(2, len(parts) - 1)):
            if unquote(parts[i]) == container:
                candidates.append(unquote("/".join(parts[i + 1 :])))
                break
    unique = tuple(dict.fromkeys(c for c in candidates if c))
    return BlobRef(container=container, candidates=unique)
