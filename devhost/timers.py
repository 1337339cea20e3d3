"""Timer triggers: NCRONTAB (six fields, seconds first; five-field cron and TimeSpan ``hh:mm:ss`` too), UTC.

One thread per timer function; a run never overlaps itself (occurrences missed while it runs are
skipped, not queued). ``runOnStartup`` fires once at start. With ``useMonitor`` (default for
schedules of a minute or more) a missed occurrence since the last recorded run fires once at start
with ``past_due=True``, like the host's schedule monitor.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest  # func.TimerRequest is the abstract base
from croniter import croniter

from devhost.catalog import FunctionSpec, HostError
from devhost.invoker import Invoker, Outcome
from devhost.store import HostStore

logger = logging.getLogger(__name__)

PAST_DUE_AFTER = timedelta(seconds=1)
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Schedule:
    def __init__(self, expr: str) -> None:
        self.expr = expr.strip()
        self.interval: timedelta | None = None
        self._six = False
        m = _TIMESPAN.fullmatch(self.expr)
        if m:
            days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
            self.interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
            if self.interval <= timedelta(0):
                raise ValueError(f"schedule {expr!r}: the interval must be positive")
            return
        fields = self.expr.split()
        if len(fields) not in (5, 6):
            raise ValueError(f"schedule {expr!r}: NCRONTAB needs six fields (second minute hour day month day-of-week)")
        self._six = len(fields) == 6
        try:
            croniter(self.expr, utcnow(), second_at_beginning=self._six).get_next(datetime)
        except (ValueError, KeyError) as err:
            raise ValueError(f"schedule {expr!r} is not a valid NCRONTAB expression: {err}") from err

    def next_after(self, when: datetime) -> datetime:
        if self.interval is not None:
            return when + self.interval
        nxt: datetime = croniter(self.expr, when, second_at_beginning=self._six).get_next(datetime)
        return nxt

    def typical_interval(self) -> timedelta:
        first = self.next_after(utcnow())
        return self.next_after(first) - first


class TimerRunner:
    def __init__(
        self,
        spec: FunctionSpec,
        *,
        store: HostStore,
        invoker: Invoker,
        on_result: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.invoker = invoker
        self.on_result = on_result
        expr = str(spec.trigger.get("schedule") or "")
        try:
            self.schedule = Schedule(expr)
        except ValueError as err:
            raise HostError(f"function {spec.name}: {err}") from err
        self.run_on_startup = bool(spec.trigger.get("runOnStartup"))
        use_monitor = spec.trigger.get("useMonitor")
        self.use_monitor = (
            bool(use_monitor) if use_monitor is not None else self.schedule.typical_interval() >= timedelta(minutes=1)
        )
        self._lock = threading.Lock()  # a run never overlaps itself (scheduled or manual)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.next_due: datetime | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"devhost-timer-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_now(self, *, past_due: bool = False, scheduled: datetime | None = None, reason: str = "Manual") -> Outcome:
        with self._lock:
            scheduled = scheduled or utcnow()
            status = self.store.timer_status(self.spec.name)
            request = TimerRequest(
                past_due=past_due,
                schedule_status={
                    "Last": status[2].isoformat() if status else None,
                    "Next": self.schedule.next_after(scheduled).isoformat(),
                    "LastUpdated": utcnow().isoformat(),
                },
                schedule={"AdjustForDST": True},
            )
            outcome = self.invoker.invoke(self.spec, request, reason=reason)
            self.store.set_timer_status(self.spec.name, self.schedule.expr, scheduled, utcnow())
        if self.on_result is not None:
            self.on_result(outcome)
        return outcome

    def _loop(self) -> None:
        status = self.store.timer_status(self.spec.name)
        if self.run_on_startup:
            self.run_now(reason="Timer fired at startup (runOnStartup)")
        elif self.use_monitor and status is not None and status[0] == self.schedule.expr:
            missed = self.schedule.next_after(status[1])
            if missed < utcnow():
                self.run_now(past_due=True, scheduled=missed, reason=f"Timer past due (missed {missed.isoformat()})")
        due = self.schedule.next_after(utcnow())
        while not self._stop.is_set():
            self.next_due = due
            delay = (due - utcnow()).total_seconds()
            if delay > 0:
                self._stop.wait(min(delay, 60.0))
                continue
            late = utcnow() - due
            try:
                self.run_now(past_due=late > PAST_DUE_AFTER, scheduled=due, reason=f"Timer fired at {due.isoformat()}")
            except Exception:  # the host's own failure (state store); the schedule continues
                logger.exception("timer %s: run bookkeeping failed", self.spec.name)
            due = self.schedule.next_after(max(utcnow(), due))
