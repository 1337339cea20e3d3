"""The local stack of `bankml up`: Azurite, the function host, the workspace agent and the
model servers, started and stopped together (by PID), with their state in one data dir."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from devhost.azurite import Azurite, AzuriteError
from devhost.host import FunctionHost
from devhost.keys import HostKeys
from shared.config import SETTINGS, Settings
from shared.errors import ConfigError
from shared.files import write_atomic
from shared.workspace.local.agent import Agent
from shared.workspace.local.registry import Registry, utcnow
from shared.workspace.local.servers import Supervisor, pid_alive, stop_pid
from shared.workspace.local.workspace import LocalWorkspace

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
STACK_FILE = "stack.json"
STORAGE_CHECK_S = 1.0  # how often `bankml up` checks that its Azurite still runs
STORAGE_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # waits after failed restarts of Azurite


def stack_ready(home: Path, url: str, timeout_s: float = 1.0) -> bool:
    """Whether ``bankml up`` on ``home`` is ready: it wrote stack.json (after everything started)
    and the function host at ``url`` answers ``GET /`` (anonymous; ``/admin/host/status`` needs
    the master key). What every launcher of ``bankml up`` (tests, benchmarks) waits for."""
    import requests

    if not (home / STACK_FILE).exists():
        return False
    try:
        return requests.get(f"{url}/", timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


def read_stack(home: Path) -> dict[str, Any] | None:
    """The running stack of a data dir, or None when none is running."""
    path = home / STACK_FILE
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except ValueError:
        return None
    return info if pid_alive(info.get("pid")) else None


class LocalStack:
    def __init__(
        self,
        home: Path,
        *,
        port: int = 7071,
        azurite_port: int = 10000,
        environ: dict[str, str] | None = None,
        blob_poll_s: float = 1.0,
    ) -> None:
        self.home = home.resolve()
        self.port = port
        self.azurite_port = azurite_port
        self.extra_env = dict(environ or {})
        self.blob_poll_s = blob_poll_s
        self.azurite: Azurite | None = None
        self.host: FunctionHost | None = None
        self.agent: Agent | None = None
        self.workspace: LocalWorkspace | None = None
        self.supervisor: Supervisor | None = None  # restarts a live model server that died
        self.storage_supervisor: Supervisor | None = None  # restarts Azurite when it dies
        self._storage_retry_at = 0.0
        self._storage_failures = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self, connection: str, keys: HostKeys) -> dict[str, str]:
        env: dict[str, str] = {}
        for s in SETTINGS.values():
            if s.default is not None and s.default != "" and not os.environ.get(s.env):
                env[s.env] = s.default
        env.update(self.extra_env)
        env.update(
            {
                "AzureWebJobsStorage": connection,
                "BANKML_BACKEND": "local",
                "BANKML_HOME": str(self.home),
                "BANKML_FUNCTION_HOST_URL": self.url,
                "BANKML_RELAY_KEY": keys.function_key,
                "FUNCTIONS_WORKER_RUNTIME": "python",
            }
        )
        return env

    def start(self) -> LocalStack:
        running = read_stack(self.home)
        if running and running.get("pid") != os.getpid():
            raise ConfigError(
                f"a stack already runs for {self.home} (pid {running['pid']}, {running.get('url')}); stop it first",
                setting="--home",
            )
        self._started_at = utcnow()
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)  # the data dir holds keys: this user's only
        self._clean_orphans()
        keys = HostKeys.load_or_create(self.home)
        self.azurite = Azurite(self.home / "azurite", port=self.azurite_port, project_root=PROJECT_ROOT).start()
        try:
            env = self.environment(self.azurite.connection_string, keys)
            self.host = FunctionHost(PROJECT_ROOT, home=self.home, port=self.port, environ=env, poll_interval=self.blob_poll_s)
            self.host.start()
            self.port = self.host.port if hasattr(self.host, "port") else self.port
            settings = Settings.from_env(os.environ)
            # Fail at start, naming the setting, rather than on every benchmark tick.
            from shared.benchrun import build_payload

            build_payload(settings)
            self.workspace = LocalWorkspace(settings)
            # Event subscriptions: every Event Grid function gets the workspace's run events.
            Registry(self.home / "registry.sqlite").set_subscriptions(
                {name: self.host.eventgrid_webhook_url(name) for name in self.host.eventgrid_functions()}
            )
            self.workspace.reconcile()
            self.agent = Agent(self.home, system_key=keys.system_key("eventgrid_extension"), grace_s=settings.worker_grace_s)
            self.agent.start()
            self.supervisor = Supervisor(self.workspace.supervise, interval_s=settings.liveness_interval_s).start()
            self._write_stack_file()
            self.storage_supervisor = Supervisor(self._keep_storage, interval_s=STORAGE_CHECK_S,
                                                 name="bankml-azurite").start()
        except BaseException:
            self.stop()
            raise
        log.info("local stack up: function host %s, Azurite blob port %d", self.url, self.azurite.port)
        return self

    def _keep_storage(self) -> None:
        """Azurite that died (killed, crashed) is started again on its port, with back-off when it
        cannot start; the blob scanner and ingest's retries pick up what waited meanwhile."""
        azurite = self.azurite
        if azurite is None or azurite.exited() is None or time.monotonic() < self._storage_retry_at:
            return
        try:
            azurite.restart_if_exited()
        except AzuriteError as err:
            self._storage_failures += 1
            wait = STORAGE_BACKOFF_S[min(self._storage_failures, len(STORAGE_BACKOFF_S)) - 1]
            self._storage_retry_at = time.monotonic() + wait
            log.error("Azurite could not be started again (%s); next try in %g s", err, wait)
            return
        self._storage_failures = 0
        self._write_stack_file()

    def _write_stack_file(self) -> None:
        """stack.json, replaced in one step: it is rewritten while the stack runs (a restarted
        Azurite has a new pid), and readers (`bankml status`, `drop`, tests) must never see it half written."""
        assert self.azurite is not None
        write_atomic(
            self.home / STACK_FILE,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "url": self.url,
                    "port": self.port,
                    "azurite_port": self.azurite.port,
                    "azurite_pid": self.azurite.pid,
                    # Non-secret settings as this stack runs with them (`bankml bench` uses them).
                    "settings": {
                        s.env: os.environ[s.env] for s in SETTINGS.values() if not s.secret and s.env in os.environ
                    },
                    "started_at": self._started_at,
                }
            ),
        )

    def _clean_orphans(self) -> None:
        """A stack killed with SIGKILL leaves its Azurite running (and its port taken): end it.
        Only a process whose command line is Azurite's, recorded by the dead stack, is signalled."""
        path = self.home / STACK_FILE
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if pid_alive(info.get("pid")):
            return
        pid = info.get("azurite_pid")
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") if pid else ""
        except OSError:
            cmdline = ""
        if "azurite" in cmdline:
            log.warning("stopping Azurite (pid %s) left behind by a stack that did not shut down", pid)
            stop_pid(int(pid))
        path.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.storage_supervisor:
            self.storage_supervisor.stop()
        if self.supervisor:
            self.supervisor.stop()
        if self.agent:
            self.agent.stop()
        if self.host:
            self.host.stop()
        if self.workspace:
            self.workspace.stop_servers()
        if self.azurite:
            self.azurite.stop()
        stack_file = self.home / STACK_FILE
        if stack_file.exists():
            try:
                if json.loads(stack_file.read_text()).get("pid") == os.getpid():
                    stack_file.unlink()
            except ValueError:
                stack_file.unlink()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
