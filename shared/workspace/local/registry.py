"""The local workspace's registry: one SQLite file in the data dir (WAL, shared by processes).

Holds datasets, runs, child runs, deployments, deploy decisions, handled events and event
subscriptions. Every write is one short transaction so the function host, the training worker and
the CLI can use it at the same time.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    content_hash TEXT NOT NULL UNIQUE,
    source_blob TEXT NOT NULL,
    etag TEXT NOT NULL,
    rows INTEGER NOT NULL,
    path TEXT NOT NULL,
    column_types TEXT NOT NULL,
    class_balance TEXT NOT NULL,
    profile TEXT NOT NULL,
    warnings TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    dataset_version INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    parameters TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    error TEXT,
    best TEXT NOT NULL DEFAULT '{}',
    model_dir TEXT,
    worker_pid INTEGER,
    event_published INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_ingest_once ON runs(dataset_version, trigger) WHERE trigger = 'ingest';
CREATE TABLE IF NOT EXISTS child_runs (
    run_id TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    learner TEXT NOT NULL,
    config TEXT NOT NULL,
    metric REAL,
    train_time_s REAL,
    status TEXT NOT NULL,
    PRIMARY KEY (run_id, iteration)
);
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    status TEXT NOT NULL,
    port INTEGER,
    pid INTEGER,
    key TEXT NOT NULL,
    model_dir TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    insights INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    created_at TEXT NOT NULL,
    live_at TEXT,
    retired_at TEXT
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    deployed INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS decisions_once ON decisions(run_id);
CREATE TABLE IF NOT EXISTS insights_requests (
    run_id TEXT PRIMARY KEY,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _loads(value: str | None, default: Any) -> Any:
    return json.loads(value) if value else default


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.executescript(SCHEMA)
        # It holds the model servers' keys and webhook URLs with system keys: this user's only.
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if p.exists():
                os.chmod(p, 0o600)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- datasets ------------------------------------------------------------------------
    @staticmethod
    def dataset_row(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        for k, default in (("column_types", {}), ("class_balance", {}), ("profile", {}), ("warnings", [])):
            d[k] = _loads(d[k], default)
        return d

    def list_datasets(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            return [self.dataset_row(r) for r in db.execute("SELECT * FROM datasets ORDER BY version")]

    def get_dataset(self, version: int) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM datasets WHERE version = ?", (version,)).fetchone()
        return self.dataset_row(row) if row else None

    # -- runs ----------------------------------------------------------------------------
    @staticmethod
    def run_row(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["parameters"] = _loads(d["parameters"], {})
        d["best"] = _loads(d["best"], {})
        return d

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return self.run_row(row) if row else None

    def list_runs(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            return [self.run_row(r) for r in db.execute("SELECT * FROM runs ORDER BY submitted_at")]

    def update_run(self, run_id: str, **fields: Any) -> None:
        encoded = {k: json.dumps(v) if k in ("parameters", "best") else v for k, v in fields.items()}
        cols = ", ".join(f"{k} = ?" for k in encoded)
        with self.transaction() as db:
            db.execute(f"UPDATE runs SET {cols} WHERE run_id = ?", (*encoded.values(), run_id))  # noqa: S608

    def add_child_run(self, run_id: str, child: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO child_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    int(child["iteration"]),
                    str(child.get("learner", "")),
                    json.dumps(child.get("config", {}), default=str),
                    child.get("metric"),
                    child.get("train_time_s"),
                    str(child.get("status", "Completed")),
                ),
            )

    def child_runs(self, run_id: str) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM child_runs WHERE run_id = ? ORDER BY iteration", (run_id,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["config"] = _loads(d["config"], {})
            out.append(d)
        return out

    # -- deployments ---------------------------------------------------------------------
    @staticmethod
    def deployment_row(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["metrics"] = _loads(d["metrics"], {})
        d["insights"] = bool(d["insights"])
        return d

    def list_deployments(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            return [self.deployment_row(r) for r in db.execute("SELECT * FROM deployments ORDER BY created_at")]

    def live_deployment(self) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM deployments WHERE status = 'live' ORDER BY live_at DESC LIMIT 1").fetchone()
        return self.deployment_row(row) if row else None

    def update_deployment(self, name: str, **fields: Any) -> None:
        encoded = {k: json.dumps(v) if k == "metrics" else v for k, v in fields.items()}
        cols = ", ".join(f"{k} = ?" for k in encoded)
        with self.transaction() as db:
            db.execute(f"UPDATE deployments SET {cols} WHERE name = ?", (*encoded.values(), name))  # noqa: S608

    def decisions(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM decisions ORDER BY id")]

    # -- subscriptions -------------------------------------------------------------------
    def set_subscriptions(self, endpoints: dict[str, str]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM subscriptions")
            for name, url in endpoints.items():
                db.execute("INSERT INTO subscriptions VALUES (?, ?, ?)", (name, url, utcnow()))

    def subscriptions(self) -> dict[str, str]:
        with self.connect() as db:
            return {r["name"]: r["endpoint"] for r in db.execute("SELECT * FROM subscriptions ORDER BY name")}
