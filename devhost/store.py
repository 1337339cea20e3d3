"""The host's own state in ``<home>/host.sqlite``: blob receipts, failure counts/poison (with the
time of the next retry of a poisoned blob version), timer status."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DB_FILE = "host.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blob_receipts (
    function TEXT NOT NULL,
    blob_name TEXT NOT NULL,
    etag TEXT NOT NULL,
    source TEXT NOT NULL,
    invocation_id TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (function, blob_name, etag)
);
CREATE TABLE IF NOT EXISTS blob_failures (
    function TEXT NOT NULL,
    blob_name TEXT NOT NULL,
    etag TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    poisoned INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    retry_at TEXT,
    PRIMARY KEY (function, blob_name, etag)
);
CREATE TABLE IF NOT EXISTS timer_status (
    function TEXT PRIMARY KEY,
    schedule TEXT NOT NULL,
    last_scheduled TEXT NOT NULL,
    last_run TEXT NOT NULL
);
"""


def normalize_etag(etag: str | None) -> str:
    """ETags arrive quoted (SDK, most events) or bare (some events); compare them bare."""
    return (etag or "").strip().strip('"')


def _now() -> str:
    return datetime.now(UTC).isoformat()


class HostStore:
    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / DB_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(blob_failures)")}
        if "retry_at" not in columns:  # a host.sqlite from before poisoned blobs were retried
            self._db.execute("ALTER TABLE blob_failures ADD COLUMN retry_at TEXT")
            # Their versions were dropped for good: retry them at the next scan.
            self._db.execute("UPDATE blob_failures SET retry_at=? WHERE poisoned=1", (_now(),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- blob receipts ------------------------------------------------------------------------
    def has_receipt(self, function: str, blob_name: str, etag: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM blob_receipts WHERE function=? AND blob_name=? AND etag=?",
                (function, blob_name, normalize_etag(etag)),
            ).fetchone()
        return row is not None

    def add_receipt(self, function: str, blob_name: str, etag: str, *, source: str, invocation_id: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO blob_receipts VALUES (?, ?, ?, ?, ?, ?)",
                (function, blob_name, normalize_etag(etag), source, invocation_id, _now()),
            )
            self._db.execute(
                "DELETE FROM blob_failures WHERE function=? AND blob_name=? AND etag=?",
                (function, blob_name, normalize_etag(etag)),
            )

    def receipts(self, function: str) -> list[tuple[str, str, str]]:
        """(blob name, etag, source) of processed blobs, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT blob_name, etag, source FROM blob_receipts WHERE function=? ORDER BY processed_at",
                (function,),
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def is_poisoned(self, function: str, blob_name: str, etag: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT poisoned FROM blob_failures WHERE function=? AND blob_name=? AND etag=?",
                (function, blob_name, normalize_etag(etag)),
            ).fetchone()
        return bool(row and row[0])

    def record_failure(
        self,
        function: str,
        blob_name: str,
        etag: str,
        error: str,
        *,
        max_attempts: int,
        backoff_s: Sequence[float] = (),
    ) -> tuple[int, bool]:
        """Count a failed attempt; returns (attempts so far, now poisoned).

        A poisoned version is retried after ``backoff_s[n]`` seconds following its n-th failure
        since it was poisoned (the last delay repeats); with no ``backoff_s``, never again."""
        key = (function, blob_name, normalize_etag(etag))
        with self._lock:
            row = self._db.execute(
                "SELECT attempts FROM blob_failures WHERE function=? AND blob_name=? AND etag=?", key
            ).fetchone()
            attempts = (row[0] if row else 0) + 1
            poisoned = attempts >= max_attempts
            retry_at = None
            if poisoned and backoff_s:
                delay = backoff_s[min(attempts - max_attempts, len(backoff_s) - 1)]
                retry_at = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat()
            self._db.execute(
                "INSERT INTO blob_failures (function, blob_name, etag, attempts, poisoned, last_error, updated_at, retry_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (function, blob_name, etag) DO UPDATE SET "
                "attempts=excluded.attempts, poisoned=excluded.poisoned, "
                "last_error=excluded.last_error, updated_at=excluded.updated_at, retry_at=excluded.retry_at",
                (*key, attempts, int(poisoned), error[:2000], _now(), retry_at),
            )
        return attempts, poisoned

    def poison_retry_at(self, function: str, blob_name: str, etag: str) -> tuple[bool, datetime | None]:
        """(poisoned, when it is retried: None for never) of a blob version."""
        with self._lock:
            row = self._db.execute(
                "SELECT poisoned, retry_at FROM blob_failures WHERE function=? AND blob_name=? AND etag=?",
                (function, blob_name, normalize_etag(etag)),
            ).fetchone()
        if not row or not row[0]:
            return False, None
        return True, datetime.fromisoformat(row[1]) if row[1] else None

    def poisoned(self) -> list[dict[str, Any]]:
        """Every poisoned blob version, oldest first: what failed, how often, why, when it is retried."""
        with self._lock:
            rows = self._db.execute(
                "SELECT function, blob_name, etag, attempts, last_error, updated_at, retry_at FROM blob_failures "
                "WHERE poisoned=1 ORDER BY updated_at"
            ).fetchall()
        keys = ("function", "blob", "etag", "attempts", "last_error", "last_failure_at", "retry_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def failure(self, function: str, blob_name: str, etag: str) -> tuple[int, bool, str] | None:
        """(attempts, poisoned, last error) for a blob version, if it ever failed."""
        with self._lock:
            row = self._db.execute(
                "SELECT attempts, poisoned, last_error FROM blob_failures WHERE function=? AND blob_name=? AND etag=?",
                (function, blob_name, normalize_etag(etag)),
            ).fetchone()
        return (int(row[0]), bool(row[1]), str(row[2])) if row else None

    # -- timers -------------------------------------------------------------------------------
    def timer_status(self, function: str) -> tuple[str, datetime, datetime] | None:
        """(schedule, last scheduled occurrence, last run) of a timer function."""
        with self._lock:
            row = self._db.execute(
                "SELECT schedule, last_scheduled, last_run FROM timer_status WHERE function=?", (function,)
            ).fetchone()
        if row is None:
            return None
        return str(row[0]), datetime.fromisoformat(row[1]), datetime.fromisoformat(row[2])

    def set_timer_status(self, function: str, schedule: str, last_scheduled: datetime, last_run: datetime) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO timer_status VALUES (?, ?, ?, ?) ON CONFLICT (function) DO UPDATE SET "
                "schedule=excluded.schedule, last_scheduled=excluded.last_scheduled, last_run=excluded.last_run",
                (function, schedule, last_scheduled.isoformat(), last_run.isoformat()),
            )
