"""Host keys of the local function host, kept in ``<home>/host-keys.json`` (mode 0600).

Like the Functions host: a function key (``default``), a master key, and system keys for the
Event Grid (``eventgrid_extension``) and Event Grid blob (``blobs_extension``) webhooks.
Generated on first start with :func:`secrets.token_urlsafe`; never logged.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

logger = logging.getLogger(__name__)

KEYS_FILE = "host-keys.json"
DEFAULT_FUNCTION_KEY = "default"
EVENTGRID_SYSTEM_KEY = "eventgrid_extension"
BLOBS_SYSTEM_KEY = "blobs_extension"
SYSTEM_KEY_NAMES = (EVENTGRID_SYSTEM_KEY, BLOBS_SYSTEM_KEY)


def _new_key() -> str:
    return secrets.token_urlsafe(32)


def _safe_equal(a: str | None, b: str) -> bool:
    return a is not None and secrets.compare_digest(a.encode(), b.encode())


def write_private_json(path: Path, payload: object) -> None:
    """Write JSON readable by the owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True, repr=False)
class HostKeys:
    path: Path
    master_key: str
    function_keys: Mapping[str, str]
    system_keys: Mapping[str, str]

    def __repr__(self) -> str:  # never show key values
        return (
            f"HostKeys(path={str(self.path)!r}, function_keys={sorted(self.function_keys)}, "
            f"system_keys={sorted(self.system_keys)})"
        )

    @property
    def function_key(self) -> str:
        """The default function key (valid for every FUNCTION-level HTTP function)."""
        return self.function_keys[DEFAULT_FUNCTION_KEY]

    def system_key(self, name: str) -> str:
        return self.system_keys[name]

    def is_master(self, value: str | None) -> bool:
        return _safe_equal(value, self.master_key)

    def allows_function(self, value: str | None) -> bool:
        """FUNCTION level: any function key or the master key."""
        return self.is_master(value) or any(_safe_equal(value, k) for k in self.function_keys.values())

    def allows_system(self, name: str, value: str | None) -> bool:
        """A system-key protected endpoint: that system key or the master key."""
        key = self.system_keys.get(name)
        return self.is_master(value) or (key is not None and _safe_equal(value, key))

    @classmethod
    def load_or_create(cls, home: Path) -> HostKeys:
        path = Path(home) / KEYS_FILE
        data: dict[str, object] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot read host keys file {path}: {err}") from err
            if not isinstance(data, dict):
                raise ValueError(f"host keys file {path} is not a JSON object")
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
        changed = False
        master = data.get("masterKey")
        if not isinstance(master, str) or not master:
            master, changed = _new_key(), True
        fkeys = data.get("functionKeys")
        fkeys = dict(fkeys) if isinstance(fkeys, dict) else {}
        if not fkeys.get(DEFAULT_FUNCTION_KEY):
            fkeys[DEFAULT_FUNCTION_KEY], changed = _new_key(), True
        skeys = data.get("systemKeys")
        skeys = dict(skeys) if isinstance(skeys, dict) else {}
        for name in SYSTEM_KEY_NAMES:
            if not skeys.get(name):
                skeys[name], changed = _new_key(), True
        if changed:
            write_private_json(path, {"masterKey": master, "functionKeys": fkeys, "systemKeys": skeys})
            logger.info("host keys written to %s", path)
        return cls(
            path=path,
            master_key=master,
            function_keys=MappingProxyType({str(k): str(v) for k, v in fkeys.items()}),
            system_keys=MappingProxyType({str(k): str(v) for k, v in skeys.items()}),
        )
