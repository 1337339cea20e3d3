"""Call a user function with its trigger input, time it and log the outcome like the host does."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from devhost.catalog import FunctionSpec

logger = logging.getLogger(__name__)


class _Context(func.Context):
    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._tls = threading.local()
        self._tls.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


@dataclass(frozen=True)
class Outcome:
    invocation_id: str
    ok: bool
    value: Any = None
    error: BaseException | None = None
    duration_ms: float = 0.0


class Invoker:
    def __init__(self, function_directory: str) -> None:
        self.function_directory = function_directory

    def invoke(self, spec: FunctionSpec, arg: Any, *, reason: str) -> Outcome:
        """Run ``spec`` with ``arg`` bound to its trigger parameter. Never raises for a user error.

        ``reason`` names what fired it (no secrets, no payloads) for the invocation log line.
        """
        invocation_id = str(uuid.uuid4())
        kwargs: dict[str, Any] = {spec.arg_name: arg}
        if spec.accepts_context:
            kwargs["context"] = _Context(invocation_id, spec.name, self.function_directory)
        logger.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, invocation_id)
        start = time.perf_counter()
        try:
            if spec.is_async:
                value = asyncio.run(spec.user_function(**kwargs))
            else:
                value = spec.user_function(**kwargs)
        except Exception as err:
            duration = (time.perf_counter() - start) * 1000
            logger.error(
                "Executed 'Functions.%s' (Failed, trigger=%s, Id=%s, Duration=%.0fms): %s: %s",
                spec.name,
                spec.trigger_type,
                invocation_id,
                duration,
                err.__class__.__name__,
                err,
                exc_info=err,
            )
            return Outcome(invocation_id, False, error=err, duration_ms=duration)
        duration = (time.perf_counter() - start) * 1000
        logger.info(
            "Executed 'Functions.%s' (Succeeded, trigger=%s, Id=%s, Duration=%.0fms)",
            spec.name,
            spec.trigger_type,
            invocation_id,
            duration,
        )
        return Outcome(invocation_id, True, value=value, duration_ms=duration)
