"""Local files that other processes read while they change (stack.json, standby.json, latest.json)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` in one step: a temp file beside it, then a rename, so that a reader sees the
    old content or the new, never half a file (a reader of a half-written stack.json took the
    stack for stopped)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
