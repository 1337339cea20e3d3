"""The `make bench` runner: rendering docs/benchmarks.md from module results (one failed), and the
CLI running stub benchmark modules as real subprocesses. No timing is asserted."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks import runner

ROOT = Path(__file__).resolve().parents[1]

GOOD = '''
import argparse, json, sys
from pathlib import Path

def markdown(result):
    return f"GOOD section: quick={result['quick']} value={result['value']}"

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    print("good benchmark running")
    a.json.write_text(json.dumps({"quick": a.quick, "value": 42}))
'''

BAD = '''
import sys
print("bad benchmark starting")
print("Traceback: boom, the server did not start", file=sys.stderr)
sys.exit(3)
'''

NO_MARKDOWN = '''
import argparse, json
from pathlib import Path

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.parse_args().json.write_text("{}")
'''

# Parses its arguments at import time (no __main__ guard): importing it for markdown() exits.
NO_GUARD = '''
import argparse
argparse.ArgumentParser().parse_args(["--no-such-option"])
'''

RAISES = '''
def markdown(result):
    raise KeyError("figures")
'''


@pytest.fixture()
def stubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "stubbench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in {"good": GOOD, "bad": BAD, "nomd": NO_MARKDOWN, "raises": RAISES, "noguard": NO_GUARD}.items():
        (pkg / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return tmp_path


def _bench(name: str) -> runner.Bench:
    return runner.Bench(name, f"stubbench.{name}", f"Stub {name}")


def test_render_header_sections_and_failures(stubs: Path) -> None:
    ok = runner.Outcome(_bench("good"), [sys.executable, "-m", "stubbench.good", "--json", "x.json"], returncode=0,
                        wall_s=12.5, load_before=0.5, load_after=1.25, result={"quick": True, "value": 7})
    failed = runner.Outcome(_bench("bad"), [sys.executable, "-m", "stubbench.bad"], returncode=3, wall_s=2.0,
                            error="exit status 3", stderr_tail="line 1\nRuntimeError: boom")
    nomd = runner.Outcome(_bench("nomd"), [sys.executable, "-m", "stubbench.nomd"], returncode=0, result={})
    raises = runner.Outcome(_bench("raises"), [sys.executable, "-m", "stubbench.raises"], returncode=0, result={})
    noguard = runner.Outcome(_bench("noguard"), [sys.executable, "-m", "stubbench.noguard"], returncode=0, result={})
    outcomes = [runner.render_section(o, i) for i, o in enumerate([ok, failed, nomd, raises, noguard], 1)]
    assert [o.failed for o in outcomes] == [False, True, True, True, True]

    info = runner.RunInfo(started=datetime(2026, 12, 3, 19, 30, tzinfo=UTC), mode="quick",
                          command="python -m benchmarks --quick", total_s=125.0, commit="abc123def456",
                          machine={"CPU": "Test CPU", "cores": "2", "RAM": "1.0 GiB", "kernel": "Linux 6", "OS": "Debian"},
                          versions={"Python": "3.11.7", "lightgbm": "4.7.0", "wrk": "4.1.0"},
                          notes=["wrk and ab present"])
    missing = runner.Bench("absent", "stubbench.absent", "Absent one")
    doc = runner.render(info, outcomes, [missing])

    assert doc.startswith("# Benchmarks\n")
    assert "2026-12-03 19:30:00 UTC" in doc
    assert "| git commit | abc123def456 |" in doc
    assert "| command | `python -m benchmarks --quick` |" in doc
    assert "| total time | 2 min 05 s (target < 5 min) |" in doc
    assert "| CPU | Test CPU |" in doc and "| RAM | 1.0 GiB |" in doc and "| kernel | Linux 6 |" in doc
    assert "Python 3.11.7, lightgbm 4.7.0, wrk 4.1.0" in doc
    assert "[benchmark-history.md](benchmark-history.md)" in doc
    # The summary table: one row per benchmark with its status and load averages, then the absent one.
    assert "| 1 | [Stub good](#1-stub-good) | ok | 12.5 s | 0.50 | 1.25 |" in doc
    assert "| 2 | [Stub bad](#2-stub-bad) | failed |" in doc
    assert "not run (`stubbench.absent` not present)" in doc
    # Sections in order, each with its run line.
    heads = [line for line in doc.splitlines() if line.startswith("## ")]
    assert heads == ["## 1. Stub good", "## 2. Stub bad", "## 3. Stub nomd", "## 4. Stub raises", "## 5. Stub noguard"]
    good = doc.split("## 1. Stub good")[1].split("## 2.")[0]
    assert "GOOD section: quick=True value=7" in good
    assert "exit status 0, 1-min load average 0.50 before, 1.25 after" in good
    bad = doc.split("## 2. Stub bad")[1].split("## 3.")[0]
    assert "**failed**: exit status 3" in bad and "RuntimeError: boom" in bad
    assert "**failed**: stubbench.nomd has no markdown(result) function" in doc
    assert "**failed**: importing stubbench.raises or its markdown() raised KeyError" in doc
    assert "**failed**: importing stubbench.noguard or its markdown() raised SystemExit" in doc


def test_cli_runs_stub_modules_as_subprocesses(stubs: Path, tmp_path: Path) -> None:
    doc, out = tmp_path / "benchmarks.md", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--doc", str(doc), "--out", str(out),
         "--module", "stubbench.good", "--module", "stubbench.bad", "--module", "stubbench.absent"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one benchmark failed
    assert "[good] good benchmark running" in proc.stdout  # the benchmark's output is echoed
    assert "bad: FAILED (exit status 3)" in proc.stdout
    text = doc.read_text()
    assert "GOOD section: quick=True value=42" in text  # ran with --quick and --json, rendered by its markdown()
    assert "**failed**: exit status 3" in text and "boom, the server did not start" in text
    assert "not run (`stubbench.absent` not present)" in text
    assert json.loads((out / "good.json").read_text()) == {"quick": True, "value": 42}
    assert "bad benchmark starting" in (out / "bad.stdout.txt").read_text()

    # Rendered again from the saved run (nothing measured): the same document.
    again = tmp_path / "again.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render-from", str(out), "--doc", str(again)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert again.read_text() == text

    # Only the good one: the run succeeds.
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--doc", str(doc), "--out", str(out), "--module", "stubbench.good"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GOOD section: quick=False value=42" in doc.read_text()
    assert "| mode | full" in doc.read_text()


def test_unknown_benchmark_name_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown benchmark"):
        runner.select(runner.PLAN, ["nosuch"], [])


def test_plan_order_and_own_modules_render() -> None:
    assert [b.name for b in runner.PLAN] == [
        "training", "stages", "scoring", "scale", "ingest", "startup", "deploy", "bench_reports", "load", "faults",
    ]
    for name in ("training", "stages", "scale", "ingest", "startup", "deploy", "bench_reports"):
        module = importlib.import_module(f"benchmarks.{name}")
        assert callable(getattr(module, "markdown", None)), name


def test_quick_runs_the_peer_comparison_and_leaves_the_full_run_only_benchmarks_out() -> None:
    chosen, left = runner.select(runner.PLAN, [], [], quick=True)
    assert [b.name for b in chosen] == ["training", "stages", "scoring", "scale", "ingest", "startup"]
    assert {b.name for b in left} == {"deploy", "bench_reports", "load", "faults"}
    full, none_left = runner.select(runner.PLAN, [], [])
    assert [b.name for b in full] == [b.name for b in runner.PLAN] and none_left == []
    # named with --only, a full-run-only benchmark runs in quick mode too
    assert [b.name for b in runner.select(runner.PLAN, ["load"], [], quick=True)[0]] == ["load"]
    info = runner.RunInfo(started=datetime.now(UTC), mode="quick", command="python -m benchmarks --quick")
    text = runner.render(info, [], left)
    assert text.count("full run only") == 4


def test_a_section_keeps_one_heading_when_the_module_opens_with_its_own() -> None:
    assert runner._without_own_heading("## Load\n\nfigures\n") == "figures"
    assert runner._without_own_heading("\n## Faults\ntext\n## Later heading\n") == "text\n## Later heading"
    assert runner._without_own_heading("no heading here") == "no heading here"
