"""write_atomic: a file rewritten while others read it (stack.json) is never seen half written."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from shared.files import write_atomic


def test_a_reader_never_sees_a_half_written_file(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    docs = [json.dumps({"pid": i, "padding": "x" * (200_000 + i)}) for i in range(2)]
    write_atomic(path, docs[0])
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            write_atomic(path, docs[i % 2])
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = {json.loads(path.read_text())["pid"] for _ in range(3000)}  # a partial file would not parse
    finally:
        stop.set()
        thread.join()
    assert seen <= {0, 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.json"]  # no temp file left behind
    write_atomic(path, b"raw")
    assert path.read_bytes() == b"raw"
