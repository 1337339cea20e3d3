"""Start and stop Azurite's blob service (from the project's ``node_modules``) on loopback.

The account name and key are random per data dir (never the well-known devstoreaccount1 key),
kept in ``<data_dir>/azurite-account.json`` (0600) and handed to Azurite via ``AZURITE_ACCOUNTS``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from devhost.keys import write_private_json

logger = logging.getLogger(__name__)

ACCOUNT_FILE = "azurite-account.json"
LOCATION_DIR = "azurite"
LOG_FILE = "azurite.log"
HOST = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class AzuriteError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def load_or_create_account(data_dir: Path) -> tuple[str, str]:
    """(account name, base64 key) for this data dir, generated at first use."""
    path = data_dir / ACCOUNT_FILE
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            name, key = str(data["accountName"]), str(data["accountKey"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise AzuriteError(f"cannot read {path}: {err.__class__.__name__}") from err
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return name, key
    # Storage account names: 3-24 lowercase letters and digits.
    name = "dev" + secrets.token_hex(6)
    key = base64.b64encode(secrets.token_bytes(64)).decode("ascii")
    write_private_json(path, {"accountName": name, "accountKey": key})
    logger.info("generated a new Azurite account %s (%s)", name, path)
    return name, key


class Azurite:
    """Azurite blob service as a child process; use as a context manager or start()/stop()."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        project_root: Path | None = None,
        executable: Path | None = None,
        loose: bool = True,
        startup_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.requested_port = port
        self.project_root = Path(project_root) if project_root else PROJECT_ROOT
        self.executable = (
            Path(executable) if executable else self.project_root / "node_modules" / ".bin" / "azurite-blob"
        )
        self.loose = loose
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._account: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"Azurite(data_dir={str(self.data_dir)!r}, port={self._port}, pid={self.pid})"

    # -- properties ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise AzuriteError("Azurite is not started")
        return self._port

    @property
    def account_name(self) -> str:
        return self._get_account()[0]

    @property
    def blob_endpoint(self) -> str:
        return f"http://{HOST}:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        name, key = self._get_account()
        return f"DefaultEndpointsProtocol=http;AccountName={name};AccountKey={key};BlobEndpoint={self.blob_endpoint};"

    def _get_account(self) -> tuple[str, str]:
        if self._account is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._account = load_or_create_account(self.data_dir)
        return self._account

    # -- lifecycle ----------------------------------------------------------------------------
    def _command(self, port: int) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise AzuriteError("node is not on PATH; install Node.js, then run `make install`")
        if not self.executable.exists():
            raise AzuriteError(f"Azurite is not installed ({self.executable} is missing); run `make install`")
        script = self.executable.resolve()
        cmd = [
            node,
            str(script),
            "--blobHost",
            HOST,
            "--blobPort",
            str(port),
            "--location",
            str(self.data_dir / LOCATION_DIR),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ]
        if self.loose:
            cmd.append("--loose")
        return cmd

    def start(self) -> Azurite:
        if self._proc is not None:
            return self
        name, key = self._get_account()
        (self.data_dir / LOCATION_DIR).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["AZURITE_ACCOUNTS"] = f"{name}:{key}"
        attempts = 3 if self.requested_port == 0 else 1
        last_error: AzuriteError | None = None
        for _ in range(attempts):
            port = self.requested_port or free_port()
            if _port_answers(port):
                last_error = AzuriteError(f"port {port} is already in use on {HOST}")
                continue
            try:
                self._spawn(port, env)
                return self
            except AzuriteError as err:
                last_error = err
        assert last_error is not None
        raise last_error

    def _spawn(self, port: int, env: dict[str, str]) -> None:
        cmd = self._command(port)
        log_path = self.data_dir / LOG_FILE
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                cwd=self.data_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AzuriteError(
                    f"Azurite exited with code {proc.returncode} while starting; see {log_path}: {self._tail(log_path)}"
                )
            if _port_answers(port):
                self._proc, self._port = proc, port
                logger.info("Azurite blob service listening on http://%s:%d (pid %d)", HOST, port, proc.pid)
                return
            time.sleep(0.1)
        self._terminate(proc)
        raise AzuriteError(f"Azurite did not answer on port {port} within {self.startup_timeout:.0f} s; see {log_path}")

    @staticmethod
    def _tail(path: Path, lines: int = 5) -> str:
        try:
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: pid == pgid
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            proc.wait(timeout=timeout)

    def exited(self) -> int | None:
        """The exit status of the started process once it has ended (None while it runs)."""
        return self._proc.poll() if self._proc is not None else None

    def restart_if_exited(self) -> bool:
        """Start Azurite again, on the same port with the same data, when its process has ended
        (killed, crashed); True when it was restarted. Acknowledged blobs are on disk under the
        location folder, so a restart serves them again."""
        proc = self._proc
        if proc is None or proc.poll() is None or self._port is None:
            return False
        code = proc.returncode
        name, key = self._get_account()
        env = dict(os.environ)
        env["AZURITE_ACCOUNTS"] = f"{name}:{key}"
        logger.warning("Azurite (pid %d) exited with %s; starting it again on port %d", proc.pid,
                       f"signal {-code}" if code < 0 else f"code {code}", self._port)
        self._spawn(self._port, env)  # raises AzuriteError when it cannot start (the caller retries)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._terminate(proc, timeout)
        logger.info("Azurite (pid %d) stopped", proc.pid)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
