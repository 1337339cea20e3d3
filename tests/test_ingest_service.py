"""Ingest end to end against a real Azurite: shared.ingest_service, the ingest function, and the real
function host running the real function_app.py (blob scan and the Event Grid blob webhook).

Every file that arrives ends either accepted (one dataset version, one run) or rejected (original
in rejected/, a reason beside it, no version, no run), and nothing is done twice.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import azure.functions as func
import pytest
import requests
from azure.storage.blob import BlobServiceClient, ContainerClient

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` puts tests/ first; the project's packages live in ROOT
    sys.path.append(str(ROOT))

from devhost.azurite import PROJECT_ROOT, Azurite  # noqa: E402
from devhost.host import FunctionHost  # noqa: E402
from shared.config import SETTINGS, Settings  # noqa: E402
from shared.datagen import generate_frame  # noqa: E402
from shared.ingest import canonical_csv, parse_csv  # noqa: E402
from shared.ingest_service import IngestOutcome, ingest_blob, unsafe_name_reason  # noqa: E402
from shared.workspace.local.workspace import LocalWorkspace  # noqa: E402

CASES = ROOT.parent / "shared" / "cases"
SETTLE_S = 0.4  # the zero-length settle delay in service tests (the function uses EMPTY_SETTLE_S)


# --------------------------------------------------------------------------------------------
# fixtures and helpers


def _require_azurite() -> None:
    if not (PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob").exists():
        pytest.skip("Azurite is not installed (node_modules/.bin/azurite-blob is missing): run `make install`")
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH: install Node.js, then run `make install`")


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    _require_azurite()
    az = Azurite(tmp_path_factory.mktemp("azurite"), port=0)
    az.start()
    try:
        yield az
    finally:
        az.stop()  # by PID (its own process group)


@pytest.fixture(scope="module")
def service(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def csv_bytes(rows: int = 200, seed: int = 1) -> bytes:
    return canonical_csv(generate_frame(rows, seed))


def unique(name: str) -> str:
    return f"{uuid.uuid4().hex[:8]}-{name}"


@dataclass
class Stage:
    """One workspace (its own data dir) over the shared Azurite; each test has its own."""

    settings: Settings
    ws: LocalWorkspace
    service: BlobServiceClient

    def container(self, name: str) -> ContainerClient:
        client = self.service.get_container_client(name)
        if not client.exists():
            client.create_container()
        return client

    @property
    def incoming(self) -> ContainerClient:
        return self.container("incoming")

    @property
    def rejected(self) -> ContainerClient:
        return self.container(self.settings.rejected_container)

    def drop(self, name: str, data: bytes) -> str:
        blob = self.incoming.get_blob_client(name)
        return str(blob.upload_blob(data, overwrite=True)["etag"]).strip('"')

    def ingest(self, name: str, *, settle_s: float = SETTLE_S) -> IngestOutcome:
        """What the host does for the current version: read it, then call the function's service."""
        downloader = self.incoming.download_blob(name)
        data = downloader.readall()
        props = downloader.properties
        return ingest_blob(
            self.settings, self.ws, name=name, etag=props.etag, size=props.size, data=lambda: data, settle_s=settle_s
        )

    def reason(self, name: str) -> dict[str, Any]:
        return json.loads(self.rejected.download_blob(f"{name}.error.json").readall())

    def exists(self, container: ContainerClient, name: str) -> bool:
        return container.get_blob_client(name).exists()

    def datasets(self) -> list[dict[str, Any]]:
        return self.ws.registry.list_datasets()

    def runs(self) -> list[dict[str, Any]]:
        return self.ws.registry.list_runs()


def settings_for(azurite: Azurite, home: Path, **env: str) -> Settings:
    return Settings.from_env(
        {"AzureWebJobsStorage": azurite.connection_string, "BANKML_HOME": str(home), "BANKML_BACKEND": "local", **env}
    )


@pytest.fixture()
def stage(azurite: Azurite, service: BlobServiceClient, tmp_path: Path) -> Stage:
    settings = settings_for(azurite, tmp_path / "home")
    return Stage(settings, LocalWorkspace(settings), service)


def assert_rejected(stage: Stage, name: str, outcome: IngestOutcome, original: bytes) -> dict[str, Any]:
    """The four things "rejected" means; returns the reason record."""
    assert outcome.status == "rejected", outcome
    assert stage.rejected.download_blob(name).readall() == original
    reason = stage.reason(name)
    assert reason["blob"] == f"incoming/{name}" and reason["error"]["code"] == "invalid_data"
    assert not stage.exists(stage.incoming, name)
    assert stage.datasets() == [] and stage.runs() == []
    return reason["error"]


# --------------------------------------------------------------------------------------------
# accepted, and exactly once


def test_accepted_file_is_registered_with_its_quality_record(stage: Stage) -> None:
    name, data = unique("bank.csv"), csv_bytes()
    etag = stage.drop(name, data)
    outcome = stage.ingest(name)
    assert outcome.status == "registered" and outcome.dataset_version == 1
    (d,) = stage.datasets()
    parsed = parse_csv(data, max_bytes=10**8)
    assert d["content_hash"] == parsed.content_hash
    assert (d["source_blob"], d["etag"], d["rows"]) == (f"incoming/{name}", etag.strip('"'), 200)
    assert d["column_types"]["age"] == "integer" and d["column_types"]["euribor3m"] == "number"
    assert d["class_balance"] == parsed.class_balance and sum(d["class_balance"].values()) == 200
    assert set(d["profile"]) >= {"missing", "numeric", "categories"}
    assert Path(d["path"]).read_bytes() == parsed.to_canonical_csv()
    (run,) = stage.runs()
    assert (run["run_id"], run["dataset_version"], run["trigger"]) == (outcome.run_id, 1, "ingest")
    assert stage.exists(stage.incoming, name)  # accepted files stay where they were dropped


def test_redelivery_and_the_same_content_again_are_logged_no_ops(
    stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared.ingest_service")
    data = csv_bytes()
    first_name = unique("a.csv")
    stage.drop(first_name, data)
    first = stage.ingest(first_name)
    again = stage.ingest(first_name)  # the same (name, ETag) delivered a second time
    assert (again.status, again.dataset_version, again.run_id) == ("duplicate", 1, first.run_id)
    assert "is dataset v1 again" in caplog.text and "nothing to do" in caplog.text
    # The same data exported differently, under another name: still the same version, no new run.
    text = data.decode().replace(",", ";").replace("\n", "\r\n")
    other = unique("the same, from Excel.csv")
    stage.drop(other, codecs.BOM_UTF8 + text.encode())
    assert stage.ingest(other).status == "duplicate"
    # The same name overwritten with the same bytes: a new ETag, the same content.
    stage.drop(first_name, data)
    assert stage.ingest(first_name).status == "duplicate"
    assert len(stage.datasets()) == 1 and len(stage.runs()) == 1
    # New content is a new version with its own run.
    stage.drop(first_name, csv_bytes(seed=2))
    assert stage.ingest(first_name).dataset_version == 2
    assert [r["dataset_version"] for r in stage.runs()] == [1, 2]


def test_a_crash_between_registered_and_submitted_is_finished_once_by_the_retry(stage: Stage) -> None:
    name, data = unique("crash.csv"), csv_bytes()
    etag = stage.drop(name, data)
    # The first attempt got as far as registering, then died before submitting the run.
    stage.ws.register_dataset(parse_csv(data, max_bytes=10**8), source_blob=f"incoming/{name}", etag=etag)
    assert len(stage.datasets()) == 1 and stage.runs() == []
    retry = stage.ingest(name)  # the host retries the same version
    assert retry.status == "registered" and retry.dataset_version == 1
    assert len(stage.runs()) == 1
    assert stage.ingest(name).status == "duplicate"
    assert [r["run_id"] for r in stage.runs()] == [retry.run_id]


def test_concurrent_deliveries_register_once(stage: Stage) -> None:
    names = [unique(f"copy{i}.csv") for i in range(4)]
    data = csv_bytes()
    for n in names:
        stage.drop(n, data)
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(stage.ingest, names + names))
    # "registered" is the delivery that created the version and the one that created its run
    # (the same one, or two racing ones); all others are no-ops. Either way: one version, one run.
    statuses = {o.status for o in outcomes}
    assert "registered" in statuses and statuses <= {"registered", "duplicate"}
    assert len({(o.dataset_version, o.run_id) for o in outcomes}) == 1
    assert len(stage.datasets()) == 1 and len(stage.runs()) == 1


# --------------------------------------------------------------------------------------------
# rejected


def _header_and_rows(data: bytes) -> tuple[str, list[str]]:
    header, *rows = data.decode().splitlines()
    return header, rows


def _replace_column(data: bytes, column: str, new: str) -> bytes:
    header, rows = _header_and_rows(data)
    names = header.split(",")
    names[names.index(column)] = new
    return ("\n".join([",".join(names), *rows]) + "\n").encode()


def _set_cell(data: bytes, row: int, column: str, value: str) -> bytes:
    header, rows = _header_and_rows(data)
    cells = rows[row].split(",")
    cells[header.split(",").index(column)] = value
    rows[row] = ",".join(cells)
    return ("\n".join([header, *rows]) + "\n").encode()


def _drop_column(data: bytes, column: str) -> bytes:
    header, rows = _header_and_rows(data)
    i = header.split(",").index(column)
    out = [",".join(c for j, c in enumerate(line.split(",")) if j != i) for line in [header, *rows]]
    return ("\n".join(out) + "\n").encode()


def _add_column(data: bytes, column: str, value: str) -> bytes:
    header, rows = _header_and_rows(data)
    return ("\n".join([f"{header},{column}", *(f"{r},{value}" for r in rows)]) + "\n").encode()


def _all_label(data: bytes, value: str) -> bytes:
    header, rows = _header_and_rows(data)
    return ("\n".join([header, *(r.rsplit(",", 1)[0] + "," + value for r in rows)]) + "\n").encode()


GOOD = csv_bytes(60, seed=3)
REJECTIONS: dict[str, tuple[bytes, dict[str, Any], str]] = {
    # kind: (file, details the reason must hold, words in the message)
    "empty": (b" \r\n\r\n", {}, "file is empty"),
    "header only": (GOOD.split(b"\n", 1)[0] + b"\n", {"line": 1}, "no data rows"),
    "missing column": (_drop_column(GOOD, "euribor3m"), {"column": "euribor3m"}, "missing column(s): euribor3m"),
    "duplicated column": (_replace_column(GOOD, "month", "job"), {"column": "job"}, "duplicated"),
    "unknown column": (_add_column(GOOD, "score", "0.5"), {"unexpected": ["score"]}, "unknown column(s): score"),
    "text in a numeric column": (
        _set_cell(GOOD, 9, "duration", "twelve"),
        {"column": "duration", "line": 11, "value": "twelve", "expected": "an integer"},
        "twelve",
    ),
    "one class only": (_all_label(GOOD, "no"), {"column": "y"}, "one class only"),
    "other label values": (_set_cell(GOOD, 4, "y", "maybe"), {"column": "y", "line": 6, "value": "maybe"}, "yes or no"),
    "not text": (b"PK\x03\x04" + bytes(range(256)) * 4, {}, "not a text CSV file"),
    "decimal comma": (
        _set_cell(GOOD, 2, "cons.price.idx", '"93,994"').replace(b",", b";").replace(b'"93;994"', b"93,994"),
        {"column": "cons.price.idx", "line": 4, "value": "93,994"},
        "decimal comma",
    ),
}


@pytest.mark.parametrize("kind", list(REJECTIONS))
def test_rejections_keep_the_original_and_say_why(stage: Stage, kind: str) -> None:
    data, details, words = REJECTIONS[kind]
    name = unique(f"{kind}.csv")
    stage.drop(name, data)
    error = assert_rejected(stage, name, stage.ingest(name), data)
    assert words in error["message"]
    for key, value in details.items():
        assert error[key] == value, (key, error)


# The shared cases: each kind handled, not just that file (see tests above for the generated kinds).
CSV_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "header_only.csv": ("rejected", {"message": "no data rows"}),
    "bom_quoted_trailing_space.csv": ("registered", {"rows": 40}),
    "uci_semicolon_quoted.csv": ("registered", {"rows": 60}),
    "decimal_comma.csv": ("rejected", {"column": None, "line": None, "value": None}),
    "single_class.csv": ("rejected", {"message": "one class only"}),
    "text_in_numeric_column.csv": ("rejected", {"column": "duration", "value": "twelve", "line": None}),
    "missing_column.csv": ("rejected", {"column": "euribor3m"}),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_shared_csv_cases(stage: Stage, case: str) -> None:
    path = CASES / "csv" / case
    if not path.exists():
        pytest.skip(f"shared case {path} is not available")
    data = path.read_bytes()
    status, expected = CSV_CASES[case]
    name = unique(case)
    stage.drop(name, data)
    outcome = stage.ingest(name)
    if status == "registered":
        assert outcome.status == "registered", outcome.reason
        assert stage.datasets()[0]["rows"] == expected["rows"] and len(stage.runs()) == 1
        return
    error = assert_rejected(stage, name, outcome, data)
    for key, value in expected.items():
        if key == "message":
            assert value in error["message"]
        elif value is None:
            assert error.get(key) not in (None, ""), (key, error)  # named, whatever the value
        else:
            assert error[key] == value, (key, error)


def test_label_column_comes_from_the_setting(azurite: Azurite, service: BlobServiceClient, tmp_path: Path) -> None:
    settings = settings_for(azurite, tmp_path / "home", BANKML_LABEL_COLUMN="subscribed")
    stage = Stage(settings, LocalWorkspace(settings), service)
    renamed = _replace_column(GOOD, "y", "subscribed")
    good, bad = unique("subscribed.csv"), unique("still-y.csv")
    stage.drop(good, renamed)
    stage.drop(bad, GOOD)
    assert stage.ingest(good).status == "registered"
    assert stage.datasets()[0]["content_hash"] == parse_csv(GOOD, max_bytes=10**8).content_hash  # stored as y
    outcome = stage.ingest(bad)
    assert outcome.status == "rejected" and outcome.reason is not None
    assert outcome.reason["error"]["missing"] == ["subscribed"] and outcome.reason["error"]["unexpected"] == ["y"]


def test_the_real_uci_file_is_accepted(stage: Stage) -> None:
    path = os.environ.get("BANKML_REAL_DATA_UCI")
    if not path:
        pytest.skip("BANKML_REAL_DATA_UCI is not set")
    name = unique("bank-additional.csv")
    stage.drop(name, Path(path).read_bytes())
    outcome = stage.ingest(name)
    assert outcome.status == "registered", outcome.reason
    (d,) = stage.datasets()
    assert d["rows"] == 4119 and min(d["class_balance"].values()) > 0
    assert d["profile"]["categories"]["job"].get("unknown", 0) > 0  # "unknown" is a category, not missing


def _make_live(ws: LocalWorkspace, dataset_version: int) -> None:
    """A live deployment of a run trained on ``dataset_version`` (the registry rows only: drift
    warnings read nothing else, so no model server is needed)."""
    run = ws.submit_run(dataset_version, trigger="api")
    with ws.registry.transaction() as db:
        db.execute(
            "INSERT INTO deployments (name, run_id, model_version, status, key, model_dir, created_at, live_at)"
            " VALUES ('blue', ?, 1, 'live', 'k', '/nowhere', '2026-01-01', '2026-01-01')",
            (run.run_id,),
        )


def test_drift_against_the_live_models_training_data_is_recorded_and_shown(stage: Stage) -> None:
    reference = generate_frame(400, 21)
    first = unique("train.csv")
    stage.drop(first, canonical_csv(reference))
    assert stage.ingest(first).dataset_version == 1
    assert stage.datasets()[0]["warnings"] == []  # nothing is live yet: nothing to compare with
    _make_live(stage.ws, 1)

    similar = unique("similar.csv")
    stage.drop(similar, canonical_csv(generate_frame(400, 22)))
    assert stage.ingest(similar).dataset_version == 2
    drifted = generate_frame(400, 23)
    drifted.loc[:9, "job"] = "astronaut"  # a category the model never saw
    drifted["nr.employed"] = drifted["nr.employed"] + 1000.0  # a shifted numeric range
    name = unique("drifted.csv")
    stage.drop(name, canonical_csv(drifted))
    assert stage.ingest(name).dataset_version == 3
    v1, v2, v3 = stage.datasets()
    assert v2["warnings"] == []
    assert any("job" in w and "'astronaut'" in w and "10 rows" in w for w in v3["warnings"]), v3["warnings"]
    assert any(w.startswith("nr.employed:") for w in v3["warnings"]), v3["warnings"]

    from cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["status", "--home", str(stage.settings.home)]) == 0
    text = out.getvalue()
    assert "drift warning: job: category 'astronaut'" in text
    assert f"from incoming/{name}" in text and v3["content_hash"][:12] in text


# --------------------------------------------------------------------------------------------
# zero-length versions


def test_zero_length_that_stays_empty_is_rejected(stage: Stage) -> None:
    name = unique("empty.csv")
    stage.drop(name, b"")
    error = assert_rejected(stage, name, stage.ingest(name), b"")
    assert error["message"] == "file is empty"


def test_zero_length_then_committed_content_is_processed_once_for_the_content(stage: Stage) -> None:
    name, data = unique("two-writes.csv"), csv_bytes()
    stage.drop(name, b"")
    first_version = stage.incoming.download_blob(name)
    assert first_version.properties.size == 0

    def commit_later() -> None:
        time.sleep(0.3)
        stage.drop(name, data)

    writer = threading.Thread(target=commit_later)
    writer.start()
    outcome = ingest_blob(
        stage.settings,
        stage.ws,
        name=name,
        etag=first_version.properties.etag,
        size=0,
        data=lambda: b"",
        settle_s=30,  # returns as soon as the new version shows, long before this
    )
    writer.join()
    assert outcome.status == "ignored" and outcome.reason == {"message": "zero-length version superseded"}
    assert stage.datasets() == [] and not stage.exists(stage.rejected, name)
    assert stage.ingest(name).status == "registered"  # the committed version's own trigger
    assert len(stage.datasets()) == 1 and len(stage.runs()) == 1
    assert not stage.exists(stage.rejected, name) and not stage.exists(stage.rejected, f"{name}.error.json")


def test_zero_length_with_an_upload_in_progress_is_left_for_the_commit(stage: Stage) -> None:
    name, data = unique("staged.csv"), csv_bytes()
    stage.drop(name, b"")
    blob = stage.incoming.get_blob_client(name)
    blob.stage_block("YmxvY2stMQ==", data)  # the writer staged its blocks and has not committed yet
    outcome = stage.ingest(name)
    assert outcome.status == "ignored" and "upload in progress" in str(outcome.reason)
    assert stage.exists(stage.incoming, name) and not stage.exists(stage.rejected, name)
    blob.commit_block_list(["YmxvY2stMQ=="])
    assert stage.ingest(name).status == "registered"
    assert len(stage.runs()) == 1


def test_a_superseded_zero_length_version_delivered_late_changes_nothing(stage: Stage) -> None:
    name, data = unique("late.csv"), csv_bytes()
    empty_etag = stage.drop(name, b"")
    stage.drop(name, data)
    assert stage.ingest(name).status == "registered"
    late = ingest_blob(stage.settings, stage.ws, name=name, etag=empty_etag, size=0, data=b"", settle_s=SETTLE_S)
    assert late.status == "ignored"
    assert stage.exists(stage.incoming, name) and len(stage.datasets()) == 1 and len(stage.runs()) == 1


# --------------------------------------------------------------------------------------------
# names and sizes

AWKWARD = ["with space.csv", "données ü €.csv", "100%.csv", "a%20b.csv", "sub dir/x+y#1.csv"]


@pytest.mark.parametrize("suffix", AWKWARD)
def test_awkward_names_are_the_blob_they_name(stage: Stage, suffix: str) -> None:
    name = unique(suffix)
    stage.drop(name, csv_bytes(seed=5))
    assert stage.ingest(name).status == "registered"
    assert stage.datasets()[0]["source_blob"] == f"incoming/{name}"
    bad_name = unique("bad " + suffix)
    bad = _set_cell(GOOD, 0, "age", "old")
    stage.drop(bad_name, bad)
    outcome = stage.ingest(bad_name)
    assert outcome.status == "rejected"
    assert stage.rejected.download_blob(bad_name).readall() == bad
    assert stage.reason(bad_name)["blob"] == f"incoming/{bad_name}"
    assert not stage.exists(stage.incoming, bad_name)


UNSAFE = [
    "../x.csv",
    "a/../../reports/latest.json",
    "/etc/x.csv",
    "..\\x.csv",
    "\\x.csv",
    "C:\\x.csv",
    "a/./b.csv",
    "a\nb.csv",
    "",
]


@pytest.mark.parametrize("name", UNSAFE)
def test_names_that_leave_the_container_are_rejected_without_using_them(stage: Stage, name: str) -> None:
    reason = unsafe_name_reason(name)
    assert reason is not None
    before = {c.name for c in stage.service.list_containers()}
    data = csv_bytes()
    outcome = ingest_blob(stage.settings, stage.ws, name=name, etag="0x1", size=len(data), data=data)
    assert outcome.status == "rejected" and outcome.reason is not None
    assert outcome.reason["error"]["message"].startswith(reason)
    safe = "unsafe-name-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    record = json.loads(stage.rejected.download_blob(f"{safe}.error.json").readall())
    assert record["blob"] == f"incoming/{name}" and record["original"] == f"rejected/{safe}"
    assert stage.rejected.download_blob(safe).readall() == data
    assert {c.name for c in stage.service.list_containers()} <= before | {stage.settings.rejected_container}
    assert stage.datasets() == [] and stage.runs() == []


def test_ordinary_names_are_not_unsafe() -> None:
    for name in [*AWKWARD, "..csv", "a..b.csv", "x.csv.", "%2E%2E/x.csv", "dir/.hidden.csv"]:
        assert unsafe_name_reason(name) is None, name


def test_oversized_blob_is_moved_without_reading_its_body(
    azurite: Azurite, service: BlobServiceClient, tmp_path: Path
) -> None:
    settings = settings_for(azurite, tmp_path / "home", BANKML_MAX_UPLOAD_MB="0.01")  # 10,485 bytes
    stage = Stage(settings, LocalWorkspace(settings), service)
    name, data = unique("huge ü.csv"), csv_bytes(200)
    assert len(data) > settings.max_upload_bytes
    etag = stage.drop(name, data)

    def body() -> bytes:
        raise AssertionError("the body was read although the blob's size is over the limit")

    outcome = ingest_blob(settings, stage.ws, name=name, etag=etag, size=len(data), data=body)
    error = assert_rejected(stage, name, outcome, data)  # the original, copied by the service
    assert error["message"].startswith("file is too large") and error["value"] == len(data)
    assert "BANKML_MAX_UPLOAD_MB" in error["message"]


def test_oversized_body_of_unknown_size_is_rejected_too(
    azurite: Azurite, service: BlobServiceClient, tmp_path: Path
) -> None:
    settings = settings_for(azurite, tmp_path / "home", BANKML_MAX_UPLOAD_MB="0.01")
    stage = Stage(settings, LocalWorkspace(settings), service)
    name, data = unique("no-length.csv"), csv_bytes(200)
    etag = stage.drop(name, data)
    outcome = ingest_blob(settings, stage.ws, name=name, etag=etag, size=None, data=data)
    assert assert_rejected(stage, name, outcome, data)["message"].startswith("file is too large")


class SpyStream(func.blob.InputStream):
    """A real binding object that records whether the function read the body."""

    reads = 0

    def read(self, size: int = -1) -> bytes:
        SpyStream.reads += 1
        return super().read(size)


def test_the_function_checks_the_length_before_reading(
    azurite: Azurite, service: BlobServiceClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.ingest import ingest

    env = {"AzureWebJobsStorage": azurite.connection_string, "BANKML_HOME": str(tmp_path / "home")}
    for key, value in {**env, "BANKML_BACKEND": "local", "BANKML_MAX_UPLOAD_MB": "0.01"}.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    stage = Stage(settings, LocalWorkspace(settings), service)
    handler = ingest.build().get_user_function()
    small, large = unique("small.csv"), unique("large.csv")
    for name, data in ((small, GOOD), (large, csv_bytes(200))):
        etag = stage.drop(name, data)
        SpyStream.reads = 0
        handler(
            SpyStream(
                data=data,
                name=f"incoming/{name}",
                length=len(data),
                blob_properties={"ETag": etag, "Length": len(data)},
            )
        )
        assert SpyStream.reads == (1 if name == small else 0), name
    assert [d["source_blob"] for d in stage.datasets()] == [f"incoming/{small}"]
    assert stage.reason(large)["error"]["message"].startswith("file is too large")


# --------------------------------------------------------------------------------------------
# through the real function host (function_app.py) and its triggers


@dataclass
class Host:
    host: FunctionHost
    stage: Stage

    def post(self, events: list[dict[str, Any]]) -> requests.Response:
        return requests.post(
            self.host.blob_webhook_url("ingest"),
            data=json.dumps(events),
            headers={"aeg-event-type": "Notification", "Content-Type": "application/json"},
            timeout=60,
        )

    def scan(self) -> list[str]:
        assert self.host.blobs is not None
        return [f.result(60).value for f in self.host.blobs.scan_once()]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """The host over an Azurite of its own: its scanner sees only what the host tests drop, and
    each host test leaves no blob version unprocessed."""
    _require_azurite()
    home = tmp_path_factory.mktemp("host-home")
    azurite = Azurite(home / "azurite", port=0).start()
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    env = {s.env: s.default for s in SETTINGS.values() if s.default}
    env |= {
        "AzureWebJobsStorage": azurite.connection_string,
        "BANKML_HOME": str(home),
        "BANKML_BACKEND": "local",
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobs.benchmark.Disabled": "true",
    }
    # The scanner lists incoming/ once at start and then sleeps: tests drive it with scan_once()
    # and the Event Grid blob webhook, so each delivery is one the test made.
    try:
        host = FunctionHost(ROOT, home=home / "host", port=0, environ=env, poll_interval=3600).start()
        try:
            settings = settings_for(azurite, home)
            yield Host(host, Stage(settings, LocalWorkspace(settings), service))
        finally:
            host.stop()
    finally:
        azurite.stop()


BLOB_CREATED: dict[str, Any] = {
    "topic": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct",
    "eventType": "Microsoft.Storage.BlobCreated",
    "eventTime": "2026-11-30T10:00:00Z",
    "data": {"api": "PutBlockList", "blobType": "BlockBlob"},
    "dataVersion": "",
    "metadataVersion": "1",
}


def _event(case: dict[str, Any], name: str, etag: str, length: int) -> dict[str, Any]:
    event = copy.deepcopy(case)
    event["id"] = uuid.uuid4().hex
    event["subject"] = f"/blobServices/default/containers/incoming/blobs/{name}"
    event["data"]["eTag"] = etag
    event["data"]["contentLength"] = length
    event["data"]["url"] = f"https://acct.blob.core.windows.net/incoming/{quote(name)}"
    return event


def test_host_three_deliveries_with_a_zero_length_first_write(running: Host) -> None:
    path = CASES / "events" / "blobcreated_three_deliveries.json"
    if not path.exists():
        pytest.skip(f"shared case {path} is not available")
    e1, e2, e3 = json.loads(path.read_text(encoding="utf-8"))
    stage = running.stage
    before = len(stage.datasets()), len(stage.runs())
    name, data = unique("bank 100% ü.csv"), csv_bytes(300, seed=11)
    empty_etag = stage.drop(name, b"")
    with ThreadPoolExecutor(1) as pool:
        # The zero-length write is delivered while it is still the current version ...
        first = pool.submit(running.post, [_event(e1, name, empty_etag, 0)])
        time.sleep(1.5)  # the function is waiting for the empty version to settle (5 s at most)
        etag = stage.drop(name, data)  # ... and the committed block list lands meanwhile.
        assert first.result().json()["results"][0]["result"] == "processed"  # the function completed
    with ThreadPoolExecutor(2) as pool:
        later = list(pool.map(running.post, [[_event(e, name, etag, len(data))] for e in (e2, e3)]))
    assert sorted(r.json()["results"][0]["result"] for r in later) == ["duplicate", "processed"]
    # The zero-length version delivered again: its receipt makes it a no-op.
    assert running.post([_event(e1, name, empty_etag, 0)]).json()["results"][0]["result"] == "duplicate"
    assert (len(stage.datasets()), len(stage.runs())) == (before[0] + 1, before[1] + 1)
    assert stage.datasets()[-1]["source_blob"] == f"incoming/{name}"
    assert not stage.exists(stage.rejected, name)
    assert running.scan() == []  # the scanner shares the receipts


def test_host_scan_accepts_and_rejects_awkward_names_once(running: Host) -> None:
    stage = running.stage
    good, bad = unique("sub dir/données 100%.csv"), unique("bad a%20b.csv")
    lookalike = bad.replace("%20", " ")  # exists too: the literal name must not resolve to it
    stage.drop(good, csv_bytes(120, seed=12))
    stage.drop(bad, REJECTIONS["missing column"][0])
    stage.drop(lookalike, csv_bytes(120, seed=13))
    assert sorted(running.scan()) == ["processed"] * 3
    sources = [d["source_blob"] for d in stage.datasets()]
    assert f"incoming/{good}" in sources and f"incoming/{lookalike}" in sources
    assert stage.reason(bad)["error"]["column"] == "euribor3m"
    assert running.scan() == []
    runs = len(stage.runs())
    # A forced redelivery of a processed version runs the function again: ingest is a no-op too.
    assert running.host.blobs is not None
    etag = stage.incoming.get_blob_client(good).get_blob_properties().etag
    assert running.host.blobs.process("ingest", good, etag, source="test", force=True).value == "processed"
    assert len(stage.runs()) == runs


def test_host_webhook_resolves_a_literal_percent_name(running: Host) -> None:
    stage = running.stage
    tag = uuid.uuid4().hex[:8]
    literal, spaced = f"{tag} a%20b.csv", f"{tag} a b.csv"
    etag = stage.drop(literal, csv_bytes(100, seed=14))
    stage.drop(spaced, csv_bytes(100, seed=15))
    r = running.post([_event(BLOB_CREATED, literal, etag, 100)])
    assert r.json()["results"][0]["result"] == "processed"
    assert f"incoming/{literal}" in [d["source_blob"] for d in stage.datasets()]
    assert f"incoming/{spaced}" not in [d["source_blob"] for d in stage.datasets()]
    assert running.scan() == ["processed"]  # the look-alike is a blob of its own
    assert f"incoming/{spaced}" in [d["source_blob"] for d in stage.datasets()]


def test_host_never_reads_a_name_that_leaves_the_container(running: Host) -> None:
    stage = running.stage
    reports = stage.container("reports")
    reports.upload_blob("latest.json", b"{}", overwrite=True)
    event = {
        "id": uuid.uuid4().hex,
        "eventType": "Microsoft.Storage.BlobCreated",
        "subject": "/blobServices/default/containers/incoming/blobs/../reports/latest.json",
        "eventTime": "2026-11-30T10:00:00Z",
        "data": {"eTag": reports.get_blob_client("latest.json").get_blob_properties().etag},
    }
    r = running.post([event])
    assert r.status_code == 200 and r.json()["results"][0]["result"] == "ignored"  # no retry storm either
    # Azurite stores a backslash as '/', so this upload creates a blob named 'x/../evil.csv'.
    tag = uuid.uuid4().hex[:8]
    stage.incoming.get_blob_client(f"{tag}\\..\\evil.csv").upload_blob(csv_bytes(), overwrite=True)
    datasets = len(stage.datasets())
    assert running.scan() == ["poisoned"]
    assert running.scan() == []  # not retried on every scan
    assert len(stage.datasets()) == datasets


def test_ingest_status_shows_the_quality_record(running: Host) -> None:
    from cli import main

    stage = running.stage
    name = unique("status.csv")
    stage.drop(name, csv_bytes(150, seed=16))
    assert running.scan() == ["processed"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["status", "--home", str(stage.settings.home)]) == 0
    text = out.getvalue()
    d = next(d for d in stage.datasets() if d["source_blob"] == f"incoming/{name}")
    assert d["content_hash"][:12] in text and f"incoming/{name}" in text and str(d["etag"]) in text
    assert "age:integer" in text and "missing" in text
