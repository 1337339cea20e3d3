"""Timer triggers: %SETTING% schedules, firing without overlap, runOnStartup, past-due, errors."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from azure.functions.timer import TimerRequest

from devhost.catalog import TIMER, FunctionSpec, HostError, resolve_placeholders
from devhost.host import FunctionHost
from devhost.invoker import Invoker
from devhost.store import HostStore
from devhost.timers import Schedule, TimerRunner

if TYPE_CHECKING:
    from conftest import Records


def test_schedule_setting_is_resolved(host: FunctionHost) -> None:
    assert host.functions["tick"].trigger["schedule"] == "* * * * * *"  # from "%TOY_SCHEDULE%"
    assert host.functions["on_blob"].trigger["path"] == "incoming/{name}"  # from "%TOY_CONTAINER%/{name}"
    with pytest.raises(HostError, match="NOT_SET_ANYWHERE"):
        resolve_placeholders("%NOT_SET_ANYWHERE%", {}, where="function x")


def test_manual_run_through_the_admin_api(host: FunctionHost, records: Records) -> None:
    before = len(records.read("timer"))
    r = requests.post(f"{host.url}/admin/functions/tick", headers={"x-functions-key": host.keys.master_key}, timeout=5)
    assert r.status_code == 202
    records.wait_until(lambda: len(records.read("timer")) > before, timeout=5)


def test_timer_fires_every_second_and_never_overlaps(host: FunctionHost, records: Records) -> None:
    runs = records.wait_until(lambda: (r := records.read("timer")) and len(r) >= 4 and r, timeout=15)
    runs = sorted(runs, key=lambda r: r["start"])
    for prev, cur in zip(runs, runs[1:], strict=False):
        assert cur["start"] >= prev["end"] - 0.01, "a timer run overlapped the previous one"
        assert cur["start"] - prev["end"] < 1.5, "the schedule stopped firing"
    assert not any(r["past_due"] for r in runs)


def _spec(name: str, schedule: str, fn: Any, **trigger: Any) -> FunctionSpec:
    return FunctionSpec(
        name=name,
        trigger_type=TIMER,
        trigger={"type": TIMER, "name": "timer", "schedule": schedule, **trigger},
        bindings=[],
        user_function=fn,
        arg_name="timer",
    )


def _runner(tmp_path: Path, spec: FunctionSpec) -> tuple[TimerRunner, HostStore]:
    store = HostStore(tmp_path)
    return TimerRunner(spec, store=store, invoker=Invoker(str(tmp_path))), store


def test_run_on_startup(tmp_path: Path) -> None:
    calls: list[TimerRequest] = []
    runner, store = _runner(
        tmp_path, _spec("yearly", "0 0 0 1 1 *", lambda timer: calls.append(timer), runOnStartup=True)
    )
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        runner.stop()
        store.close()
    assert len(calls) == 1
    assert isinstance(calls[0], TimerRequest) and calls[0].past_due is False


def test_missed_occurrence_fires_past_due_with_monitor(tmp_path: Path) -> None:
    calls: list[TimerRequest] = []
    store = HostStore(tmp_path)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    store.set_timer_status("five", "0 */5 * * * *", hour_ago, hour_ago)
    store.close()
    runner, store = _runner(tmp_path, _spec("five", "0 */5 * * * *", lambda timer: calls.append(timer)))
    assert runner.use_monitor  # default for schedules of a minute or more
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        runner.stop()
        store.close()
    assert len(calls) == 1 and calls[0].past_due is True


def test_an_exception_does_not_stop_the_schedule(tmp_path: Path) -> None:
    calls: list[float] = []
    done = threading.Event()

    def flaky(timer: TimerRequest) -> None:
        calls.append(time.time())
        if len(calls) >= 2:
            done.set()
        raise RuntimeError("timer failed")

    runner, store = _runner(tmp_path, _spec("flaky", "* * * * * *", flaky))
    runner.start()
    try:
        assert done.wait(5)
    finally:
        runner.stop()
        store.close()
    assert len(calls) >= 2


def test_schedule_parsing() -> None:
    at = datetime(2026, 1, 1, 10, 2, 3, tzinfo=UTC)
    assert Schedule("0 */5 * * * *").next_after(at) == datetime(2026, 1, 1, 10, 5, 0, tzinfo=UTC)
    assert Schedule("*/15 * * * * *").next_after(at) == datetime(2026, 1, 1, 10, 2, 15, tzinfo=UTC)
    assert Schedule("0 30 9 * * 1-5").next_after(at) == datetime(2026, 1, 2, 9, 30, tzinfo=UTC)  # Friday
    assert Schedule("*/5 * * * *").next_after(at) == datetime(2026, 1, 1, 10, 5, 0, tzinfo=UTC)  # five fields
    assert Schedule("00:00:30").next_after(at) == at + timedelta(seconds=30)  # TimeSpan
    for bad in ("every day", "* * * *", "61 * * * * *"):
        with pytest.raises(ValueError):
            Schedule(bad)
