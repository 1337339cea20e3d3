"""Model-server processes of the local backend: start, check, supervise, stop (by PID, never by
name; a recorded PID is only signalled after checking that it still is that deployment's server,
so a PID reused by another process after a restart is never touched)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

from shared.contract import TUTORIAL_CUSTOMERS
from shared.errors import DeploymentError
from shared.workspace.local.registry import utcnow

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_alive(pid: int | None) -> bool:
    """True while the process runs; a zombie counts as ended (and is reaped when it is our child)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    except ChildProcessError:
        pass  # not our child: its parent reaps it; ask the kernel whether it is a zombie
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def is_model_server(pid: int | None, name: str) -> bool:
    """True when ``pid`` is alive and is the model server of deployment ``name``."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return False
    if "shared.modelserver" not in cmdline:
        return False
    try:
        return cmdline[cmdline.index("--name") + 1] == name
    except (ValueError, IndexError):
        return False


def stop_pid(pid: int | None, *, grace_s: float = 5.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL."""
    if not pid or not pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_model_server(pid: int | None, name: str) -> bool:
    """SIGKILL deployment ``name``'s server (its process group) if ``pid`` still is it, and wait
    until it has gone. For a hung server (a stopped process does not act on SIGTERM); the
    connections it had accepted are reset, so callers waiting on it get an error at once."""
    if not is_model_server(pid, name):
        return False
    assert pid is not None
    log.warning("killing hung model server %s (pid %s)", name, pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
    deadline = time.monotonic() + 10.0
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return True


def probe_model_server(base_url: str, *, timeout_s: float) -> str | None:
    """One liveness check (``GET /`` answered 200 within ``timeout_s``): None when healthy, else why not."""
    try:
        r = requests.get(base_url.rstrip("/") + "/", timeout=timeout_s)
    except requests.Timeout:
        return f"no answer within {timeout_s:g} s"
    except requests.RequestException as err:
        return f"{type(err).__name__}"
    if r.status_code != 200:
        return f"health check answered {r.status_code}"
    return None


def stop_model_server(pid: int | None, name: str, *, grace_s: float = 5.0) -> bool:
    """Stop deployment ``name``'s server if ``pid`` still is it. SIGTERM lets uvicorn finish the
    requests in flight (it stops accepting first), so ``grace_s`` is the longest drain."""
    if not is_model_server(pid, name):
        return False
    log.info("stopping model server %s (pid %s)", name, pid)
    stop_pid(pid, grace_s=grace_s)
    return True


def start_model_server(
    *,
    model_dir: Path,
    port: int,
    name: str,
    version: int,
    key: str,
    deploy_dir: Path,
    telemetry_file: Path,
    insights_flag: Path,
    metrics_file: Path | None = None,
    why: str = "deploy",
    standby: bool = False,
) -> int:
    """Start a model server; ``standby``: a warm spare of the live one (same model, its own port),
    marked as such in the deployment's log."""
    deploy_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["BANKML_MODEL_KEY"] = key  # the key travels in the environment, never in argv
    env.pop("AzureWebJobsStorage", None)
    cmd = [
        sys.executable,
        "-m",
        "shared.modelserver",
        "--model-dir", str(model_dir),
        "--port", str(port),
        "--name", name,
        "--version", str(version),
        "--telemetry-file", str(telemetry_file),
        "--insights-flag", str(insights_flag),
    ]
    if metrics_file is not None:
        cmd += ["--metrics-file", str(metrics_file)]
    logf = open(deploy_dir / "server.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        # A marker per start, so that the log reads like a container log across restarts.
        what = f"warm standby of {name}" if standby else name
        logf.write(f"----- {utcnow()} starting {what} v{version} on port {port} ({why})\n".encode())
        logf.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group, so stop_pid can end it and its children
            cwd=str(Path(__file__).resolve().parents[3]),
            env=env,
        )
    finally:
        logf.close()
    return proc.pid


def check_model_server(scoring_uri: str, key: str, pid: int, *, timeout_s: float = 60.0) -> None:
    """Liveness, then a real scoring request; raises DeploymentError with the reason."""
    base = scoring_uri.rsplit("/score", 1)[0]
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise DeploymentError(f"model server exited during start ({last})")
        try:
            r = requests.get(base + "/", timeout=2)
            if r.status_code == 200:
                break
            last = f"liveness answered {r.status_code}"
        except requests.RequestException as err:
            last = type(err).__name__
        time.sleep(0.1)
    else:
        raise DeploymentError(f"model server not live after {timeout_s:.0f} s ({last})")
    try:
        r = requests.post(
            scoring_uri,
            data=json.dumps({"data": list(TUTORIAL_CUSTOMERS)}),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=10,
        )
    except requests.RequestException as err:
        raise DeploymentError(f"scoring check failed: {type(err).__name__}") from err
    if r.status_code != 200:
        raise DeploymentError(f"scoring check answered {r.status_code}: {r.text[:200]}")
    result = r.json().get("result")
    if not isinstance(result, list) or len(result) != len(TUTORIAL_CUSTOMERS):
        raise DeploymentError(f"scoring check gave an unexpected answer: {r.text[:200]}")


class Supervisor:
    """A daemon thread that calls ``step`` every ``interval_s`` until stopped (errors are logged)."""

    def __init__(self, step: Callable[[], object], *, interval_s: float = 1.0, name: str = "bankml-supervisor") -> None:
        self.step = step
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the supervisor must keep watching; the error is logged
                log.exception("supervisor step failed")
