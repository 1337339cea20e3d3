"""The whole local stack as a user runs it: `bankml up` in a subprocess, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.workspace.local.stack import stack_ready

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningStack:
    home: Path
    port: int
    azurite_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [sys.executable, "-m", "cli", *args, "--home", str(self.home)],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"bankml {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)

    def key(self) -> str:
        return self.cli("keys").stdout.strip()

    def wait_for(self, what: str, predicate: Any, timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"bankml up exited while waiting for {what}:\n{self.log.read_text()[-4000:]}")
            value = predicate(self.status())
            if value:
                return value
            time.sleep(1)
        raise AssertionError(f"timed out waiting for {what}; status: {json.dumps(self.status(), default=str)[:3000]}\nlog:\n{self.log.read_text()[-4000:]}")


def start_stack(home: Path, env_extra: dict[str, str]) -> RunningStack:
    port, azport = free_port(), free_port()
    env = {**os.environ, **env_extra}
    log = home.parent / f"{home.name}-up.log"
    home.mkdir(parents=True, exist_ok=True)
    fh = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "--home", str(home), "--port", str(port), "--azurite-port", str(azport)],
        cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    fh.close()
    stack = RunningStack(home, port, azport, proc, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bankml up exited: {log.read_text()[-4000:]}")
        if stack_ready(home, stack.url):
            return stack
        time.sleep(0.3)
    stop_stack(stack)
    raise AssertionError(f"bankml up did not become ready: {log.read_text()[-4000:]}")


def stop_stack(stack: RunningStack) -> None:
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGTERM)
        try:
            stack.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(stack.proc.pid, signal.SIGKILL)
            stack.proc.wait(timeout=10)


def model_server_pids(home: Path) -> list[int]:
    import sqlite3

    db = sqlite3.connect(home / "registry.sqlite")
    try:
        return [r[0] for r in db.execute("SELECT pid FROM deployments WHERE pid IS NOT NULL")]
    finally:
        db.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


@pytest.fixture(scope="module")
def stack_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    started: list[RunningStack] = []

    def make(name: str, **env: str) -> RunningStack:
        s = start_stack(tmp_path_factory.mktemp(name) / "home", env)
        started.append(s)
        return s

    yield make
    for s in started:
        stop_stack(s)
        for pid in model_server_pids(s.home) if (s.home / "registry.sqlite").exists() else []:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
