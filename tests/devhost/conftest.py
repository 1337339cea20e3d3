"""Real Azurite (free port, temp folder) and the real host running the toy app, both stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    # plain `pytest` puts tests/ first on sys.path, where tests/devhost/ would pass for a namespace
    # package `devhost`; with the project root anywhere on sys.path the real (regular) package wins.
    sys.path.append(_ROOT)

# submodule imports also work while the editable install maps `devhost` as a namespace
from devhost.azurite import PROJECT_ROOT, Azurite  # noqa: E402
from devhost.host import FunctionHost  # noqa: E402

TOYAPP = Path(__file__).parent / "toyapp"
CASES_EVENTS = Path(os.environ.get("BANKML_CASES_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "cases"))) / "events"
TIMER_SLEEP_S = 1.2


class Records:
    """What the toy functions saw, one JSON line per invocation under $TOY_RECORD_DIR/<kind>.jsonl.

    Test modules get helpers through fixtures (``records``, ``case``), not imports: plain ``pytest``
    does not put the project root on sys.path.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            time.sleep(interval)

    def read(self, kind: str) -> list[dict[str, Any]]:
        file = self.path / f"{kind}.jsonl"
        if not file.exists():
            return []
        return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]

    def blobs(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.read("blob") if r["name"] == name]

    def events(self, event_id: str) -> list[dict[str, Any]]:
        return [r for r in self.read("eventgrid") if r["id"] == event_id]


def load_case(name: str) -> Any:
    path = CASES_EVENTS / name
    if not path.exists():
        pytest.skip(f"shared case file {path} is not available (set BANKML_CASES_DIR)")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def case() -> Callable[[str], Any]:
    """Load a shared event case file by name (read in place, never copied)."""
    return load_case


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    if not (PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob").exists():
        pytest.skip("Azurite is not installed (node_modules/.bin/azurite-blob is missing): run `make install`")
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH: install Node.js, then run `make install`")
    az = Azurite(tmp_path_factory.mktemp("azurite"), port=0)
    az.start()
    try:
        yield az
    finally:
        az.stop()


@pytest.fixture(scope="session")
def records(tmp_path_factory: pytest.TempPathFactory) -> Records:
    return Records(tmp_path_factory.mktemp("records"))


@pytest.fixture(scope="session")
def make_host(
    azurite: Azurite, records: Records, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., FunctionHost]]:
    """Build (not start) a host for the toy app; extra hosts disable the timer and watch their own container."""
    started: list[FunctionHost] = []

    def factory(
        *, container: str, home: Path | None = None, timer: bool = False, env: dict[str, str] | None = None, **kw: Any
    ) -> FunctionHost:
        environ = {
            "AzureWebJobsStorage": azurite.connection_string,
            "TOY_RECORD_DIR": str(records.path),
            "TOY_CONTAINER": container,
            "TOY_SCHEDULE": "* * * * * *",
            "TOY_TIMER_SLEEP": str(TIMER_SLEEP_S),
        }
        # explicit both ways: os.environ is shared by hosts running at the same time in this process
        environ["AzureWebJobs.tick.Disabled"] = "false" if timer else "true"
        environ.update(env or {})
        kw.setdefault("poll_interval", 0.25)
        host = FunctionHost(TOYAPP, home=home or tmp_path_factory.mktemp("home"), port=0, environ=environ, **kw)
        started.append(host)
        return host

    yield factory
    for host in reversed(started):
        host.stop()


@pytest.fixture(scope="session")
def host(make_host: Callable[..., FunctionHost]) -> FunctionHost:
    """The main toy host: container ``incoming``, timer every second."""
    return make_host(container="incoming", timer=True).start()
