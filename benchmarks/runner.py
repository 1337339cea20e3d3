"""`make bench`: run every benchmark on this machine, one at a time, and rewrite docs/benchmarks.md.

    .venv/bin/python -m benchmarks [--quick] [--only NAME,...] [--skip NAME,...] [--doc PATH] [--out DIR]
                                   [--module MODULE ...] [--no-install] [--render-from DIR]

Each benchmark is a module of this package run as its own process (``python -m <module> --json FILE
[--quick]``), never two at once (they measure). The runner records each one's wall time, exit status
and the 1-minute load average before and after, then renders the document: a header (date, commit,
machine, versions, command line, total time) and one section per benchmark from the module's own
``markdown(result: dict) -> str``. A benchmark that fails (non-zero exit, timeout, no JSON, no
``markdown()``, ``markdown()`` raising) gets a "failed" section with the reason and the last lines of
its stderr; the others still run, and the runner exits 1 at the end.

Before the first benchmark it makes sure wrk and ab are there (``apt-get install -y wrk apache2-utils``,
printed first, when missing and this process is root with apt-get); otherwise the scoring benchmark
falls back to the Python load generator and the header says so.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
HISTORY_LINK = "benchmark-history.md"
LOAD_TOOLS_APT = ["apt-get", "install", "-y", "wrk", "apache2-utils"]
STDERR_TAIL_LINES = 25
TARGET_TOTAL_S = {"quick": 5 * 60, "full": 30 * 60}
PYTHON_PACKAGES = (
    "lightgbm", "xgboost", "flaml", "onnxruntime", "scikit-learn", "pandas", "numpy", "azure-functions",
    "uvicorn", "orjson",
)


@dataclass(frozen=True)
class Bench:
    """One benchmark of the run: a module that takes ``--json FILE`` and ``--quick``."""

    name: str
    module: str
    title: str
    timeout_s: float = 1800.0
    quick_timeout_s: float = 600.0
    args: tuple[str, ...] = ()
    in_quick: bool = True  # False: the full run only (the robustness benchmarks, minutes each)

    def command(self, json_path: Path, *, quick: bool) -> list[str]:
        cmd = [sys.executable, "-m", self.module, "--json", str(json_path), *self.args]
        return cmd + ["--quick"] if quick else cmd


# The order of the document (and of the run).
PLAN: tuple[Bench, ...] = (
    Bench("training", "benchmarks.training", "Model quality: our AutoML, Azure AutoML, a default LightGBM",
          timeout_s=1200),
    Bench("stages", "benchmarks.stages", "Drop to live deployment, by stage", timeout_s=900),
    Bench("scoring", "benchmarks.scoring", "Scoring: model server, relay, MLflow", timeout_s=1500),
    Bench("scale", "benchmarks.scale", "Scale: training cost against rows, batch scoring", timeout_s=1200),
    Bench("ingest", "benchmarks.ingest", "Ingest: the real file, and a million generated rows (200,000 in --quick)", timeout_s=600),
    Bench("startup", "benchmarks.startup", "Startup: `bankml up`, and a deployment's first answer", timeout_s=600),
    # Robustness (faults, load, safe deployments): in the full run only, so that --quick, the
    # comparison with the peers above, stays under 5 minutes.
    Bench("deploy", "benchmarks.deploy", "Deployments: redeploys under load, telemetry cost", timeout_s=900,
          in_quick=False),
    Bench("bench_reports", "benchmarks.bench_reports", "Benchmark reports (the timer's run)", timeout_s=600,
          in_quick=False),
    Bench("load", "benchmarks.load", "Load", timeout_s=1200, in_quick=False),
    Bench("faults", "benchmarks.faults", "Faults", timeout_s=1200, in_quick=False),
)


@dataclass
class Outcome:
    """What one benchmark's run left: its figures (or why there are none)."""

    bench: Bench
    command: list[str]
    returncode: int | None = None
    wall_s: float = 0.0
    load_before: float | None = None
    load_after: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None  # why the run failed (None: ran and wrote its JSON)
    stderr_tail: str = ""
    tail_source: str = "stderr"
    section: str = ""  # rendered markdown, once rendered
    failed: bool = False


@dataclass
class RunInfo:
    """The header's facts."""

    started: datetime
    mode: str
    command: str
    total_s: float = 0.0
    commit: str = "unknown"
    machine: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- facts about the machine


def _run_text(cmd: Sequence[str], timeout: float = 20.0) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (proc.stdout + proc.stderr).strip()


def git_commit() -> str:
    sha = _run_text(["git", "rev-parse", "--short=12", "HEAD"])
    if not sha or " " in sha:
        return "unknown (not a git checkout)"
    dirty = _run_text(["git", "status", "--porcelain", "--untracked-files=no"])
    return f"{sha} (with uncommitted changes)" if dirty else sha


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count() or "unknown"),
        "RAM": ram,
        "kernel": f"{platform.system()} {platform.release()}",
        "OS": _os_name(),
    }


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


def mlflow_venv() -> Path:
    # The same place benchmarks/scoring.py installs MLflow into (its DEFAULT_MLFLOW_VENV).
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bankml" / "mlflow-venv"


def versions() -> dict[str, str]:
    out = {"Python": platform.python_version()}
    for name in PYTHON_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["Azurite"] = _azurite_version()
    wrk = _run_text(["wrk", "-v"]).splitlines() if shutil.which("wrk") else []
    out["wrk"] = wrk[0].split(" [")[0].removeprefix("wrk ") if wrk else "not installed"
    ab = _run_text(["ab", "-V"]).splitlines() if shutil.which("ab") else []
    out["ab"] = ab[0].replace("This is ApacheBench, ", "").split(" <")[0] if ab else "not installed"
    py = mlflow_venv() / "bin" / "python"
    mlflow = _run_text([str(py), "-c", "import mlflow; print(mlflow.__version__)"], timeout=60) if py.exists() else ""
    out["mlflow (own venv)"] = mlflow.splitlines()[-1] if mlflow and "Error" not in mlflow else "not installed"
    return out


def _azurite_version() -> str:
    spec = "?"
    with contextlib.suppress(OSError, ValueError, KeyError):
        spec = json.loads((ROOT / "package.json").read_text())["dependencies"]["azurite"]
    installed = "not installed"
    with contextlib.suppress(OSError, ValueError, KeyError):
        installed = json.loads((ROOT / "node_modules" / "azurite" / "package.json").read_text())["version"]
    return f"{installed} (package.json: {spec})"


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def ensure_load_tools(log: Callable[[str], None] = print) -> str:
    """wrk and ab from Debian's packages when missing; returns the note for the header."""
    missing = [t for t in ("wrk", "ab") if shutil.which(t) is None]
    if not missing:
        return "wrk and ab present"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        why = "no apt-get" if shutil.which("apt-get") is None else "not root"
        return (f"{' and '.join(missing)} missing and not installable here ({why}): the scoring benchmark falls back "
                f"to {'ab' if shutil.which('ab') else 'the Python load generator (shared.loadgen)'}")
    log(f"$ {shlex.join(LOAD_TOOLS_APT)}")
    ok = subprocess.run(LOAD_TOOLS_APT, check=False, stdout=subprocess.DEVNULL).returncode == 0
    if not ok:
        log("$ apt-get update")
        subprocess.run(["apt-get", "update"], check=False, stdout=subprocess.DEVNULL)
        log(f"$ {shlex.join(LOAD_TOOLS_APT)}")
        ok = subprocess.run(LOAD_TOOLS_APT, check=False, stdout=subprocess.DEVNULL).returncode == 0
    still = [t for t in ("wrk", "ab") if shutil.which(t) is None]
    if not still:
        return f"installed {' and '.join(missing)} with `{shlex.join(LOAD_TOOLS_APT)}`"
    return f"`{shlex.join(LOAD_TOOLS_APT)}` failed: {', '.join(still)} missing; the scoring benchmark falls back"


# --------------------------------------------------------------------------- running


def available(bench: Bench) -> bool:
    """The module exists (other helpers add some of them)."""
    try:
        return importlib.util.find_spec(bench.module) is not None
    except (ImportError, ValueError):
        return False


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_one(bench: Bench, out_dir: Path, *, quick: bool, echo: bool = True) -> Outcome:
    """Run one benchmark as its own process; its stdout is echoed and kept, stderr kept."""
    json_path = out_dir / f"{bench.name}.json"
    json_path.unlink(missing_ok=True)
    cmd = bench.command(json_path, quick=quick)
    outcome = Outcome(bench, cmd, load_before=loadavg())
    stdout_path, stderr_path = out_dir / f"{bench.name}.stdout.txt", out_dir / f"{bench.name}.stderr.txt"
    timeout = bench.quick_timeout_s if quick else bench.timeout_s
    started = time.monotonic()
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
                                start_new_session=True, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        timer = threading.Timer(timeout, _kill_group, args=(proc,))
        timer.start()
        try:
            for line in proc.stdout:
                out.write(line)
                if echo:
                    print(f"  [{bench.name}] {line}", end="", flush=True)
            proc.wait()
        finally:
            timer.cancel()
    outcome.wall_s = time.monotonic() - started
    outcome.returncode = proc.returncode
    outcome.load_after = loadavg()
    outcome.stderr_tail = _tail(stderr_path)
    if not outcome.stderr_tail.strip():
        outcome.stderr_tail, outcome.tail_source = _tail(stdout_path), "output (stderr was empty)"
    if outcome.wall_s >= timeout:
        outcome.error = f"timed out after {timeout:.0f} s (stopped)"
    elif proc.returncode != 0:
        outcome.error = f"exit status {proc.returncode}"
    elif not json_path.exists():
        outcome.error = "exit status 0 but no JSON written (--json not supported?)"
    else:
        try:
            outcome.result = json.loads(json_path.read_text())
        except ValueError as err:
            outcome.error = f"its JSON does not parse: {err}"
        else:
            if not isinstance(outcome.result, dict):
                outcome.error, outcome.result = "its JSON is not an object", None
    return outcome


def _kill_group(proc: subprocess.Popen[str]) -> None:
    # The benchmark and what it started (servers, load tools) are in its own process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 15)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 9)


# --------------------------------------------------------------------------- rendering


def fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def _load(v: float | None) -> str:
    return "?" if v is None else f"{v:.2f}"


def _without_own_heading(body: str) -> str:
    """A module's markdown() may open with its own "## ..." heading (it also prints stand-alone);
    under the runner's numbered heading it would be a second one."""
    lines = body.lstrip("\n").splitlines()
    if lines and lines[0].startswith("## "):
        lines = lines[1:]
    return "\n".join(lines).strip("\n")


def render_section(outcome: Outcome, number: int) -> Outcome:
    """Fill ``outcome.section`` (and ``failed``): the module's markdown(), or a failed section."""
    b = outcome.bench
    head = f"## {number}. {b.title}\n\n"
    run_line = (
        f"_`{shlex.join(['python', *outcome.command[1:]])}`: {fmt_duration(outcome.wall_s)}, exit status "
        f"{outcome.returncode}, 1-min load average {_load(outcome.load_before)} before, "
        f"{_load(outcome.load_after)} after._\n\n"
    )
    reason = outcome.error
    body = ""
    if reason is None:
        try:
            module = importlib.import_module(b.module)
            render = getattr(module, "markdown", None)
            if not callable(render):
                reason = f"{b.module} has no markdown(result) function"
            else:
                body = _without_own_heading(str(render(outcome.result or {})))
        except (Exception, SystemExit) as err:  # noqa: BLE001 - one broken section must not stop the document
            reason = f"importing {b.module} or its markdown() raised {type(err).__name__}: {err}"
    if reason is not None:
        outcome.failed = True
        tail = outcome.stderr_tail.strip() or "(nothing on stderr)"
        body = f"**failed**: {reason}\n\nLast lines of its {outcome.tail_source}:\n\n```\n{tail}\n```\n"
    outcome.section = head + run_line + body.strip() + "\n"
    return outcome


def render(info: RunInfo, outcomes: list[Outcome], skipped: list[Bench]) -> str:
    mode = info.mode
    target = TARGET_TOTAL_S[mode]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `make bench{' QUICK=1' if mode == 'quick' else ''}` on {info.started:%Y-%m-%d %H:%M} UTC. "
        "Do not edit by hand: the next run rewrites this file. Every comparison below ran both sides in this "
        "run, on this machine, and is stated as a ratio, because absolute times vary from run to run here. "
        f"Figures and investigations of earlier runs: [{HISTORY_LINK}]({HISTORY_LINK}).",
        "",
        "| | |",
        "|---|---|",
        f"| date | {info.started:%Y-%m-%d %H:%M:%S} UTC |",
        f"| git commit | {info.commit} |",
        f"| command | `{info.command}` |",
        f"| mode | {mode} ({'shorter budgets and loads' if mode == 'quick' else 'full budgets'}) |",
        f"| total time | {fmt_duration(info.total_s)} (target < {target // 60} min) |",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.machine.items()]
    lines += [f"| note | {n} |" for n in info.notes]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in info.versions.items()) + ".", ""]
    lines += [
        "| # | benchmark | status | wall time | 1-min load before | after |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for i, o in enumerate(outcomes, 1):
        status = "failed" if o.failed else "ok"
        lines.append(f"| {i} | [{o.bench.title}](#{_anchor(i, o.bench.title)}) | {status} | {fmt_duration(o.wall_s)} | "
                     f"{_load(o.load_before)} | {_load(o.load_after)} |")
    for b in skipped:
        why = "not present" if not available(b) else "full run only" if mode == "quick" and not b.in_quick else "skipped"
        lines.append(f"| | {b.title} | not run (`{b.module}` {why}) | | | |")
    lines.append("")
    for o in outcomes:
        lines += [o.section.rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def _anchor(number: int, title: str) -> str:
    text = f"{number}. {title}".lower()
    keep = "".join(c for c in text if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


# --------------------------------------------------------------------------- saved runs

RUN_FILE = "run.json"
_OUTCOME_FIELDS = ("command", "returncode", "wall_s", "load_before", "load_after", "error", "stderr_tail", "tail_source")


def save_run(path: Path, info: RunInfo, outcomes: list[Outcome], skipped: list[Bench]) -> None:
    """What the document is made of besides each benchmark's JSON, so that it can be rendered again."""
    path.write_text(json.dumps({
        "info": {"started": info.started.isoformat(), "mode": info.mode, "command": info.command,
                 "total_s": info.total_s, "commit": info.commit, "machine": info.machine, "versions": info.versions,
                 "notes": info.notes},
        "outcomes": [{"name": o.bench.name, "module": o.bench.module, "title": o.bench.title,
                      **{k: getattr(o, k) for k in _OUTCOME_FIELDS}} for o in outcomes],
        "skipped": [{"name": b.name, "module": b.module, "title": b.title} for b in skipped],
    }, indent=2))


def rerender(out_dir: Path, doc: Path) -> int:
    """Render the document again from ``out_dir`` (after a fix to a markdown(), without measuring again)."""
    saved = json.loads((out_dir / RUN_FILE).read_text())
    i = saved["info"]
    info = RunInfo(started=datetime.fromisoformat(i["started"]), mode=i["mode"], command=i["command"],
                   total_s=i["total_s"], commit=i["commit"], machine=i["machine"], versions=i["versions"],
                   notes=i["notes"])
    known = {b.name: b for b in PLAN}
    outcomes = []
    for n, o in enumerate(saved["outcomes"], 1):
        bench = known.get(o["name"]) or Bench(o["name"], o["module"], o["title"])
        outcome = Outcome(bench, **{k: o[k] for k in _OUTCOME_FIELDS})
        if outcome.error is None:
            outcome.result = json.loads((out_dir / f"{bench.name}.json").read_text())
        outcomes.append(render_section(outcome, n))
    skipped = [known.get(b["name"]) or Bench(b["name"], b["module"], b["title"]) for b in saved["skipped"]]
    doc.write_text(render(info, outcomes, skipped))
    failed = [o.bench.name for o in outcomes if o.failed]
    print(f"rendered {doc} again from {out_dir}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


# --------------------------------------------------------------------------- main


def select(plan: Sequence[Bench], only: list[str], skip: list[str], *, quick: bool = False) -> tuple[list[Bench], list[Bench]]:
    unknown = [n for n in only + skip if n not in {b.name for b in plan}]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(b.name for b in plan)}")
    chosen, left = [], []
    for b in plan:
        # --quick leaves out the full-run-only benchmarks unless --only names them.
        wanted = (not only or b.name in only) and b.name not in skip and (not quick or b.in_quick or b.name in only)
        (chosen if wanted and available(b) else left).append(b)
    return chosen, left


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every benchmark's --quick mode (target: under 5 min)")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    ap.add_argument("--doc", type=Path, default=DOC, help=f"the document to rewrite (default {DOC.relative_to(ROOT)})")
    ap.add_argument("--out", type=Path, default=None, help="where the JSON and logs go (default: a new temp dir)")
    ap.add_argument("--module", action="append", default=[],
                    help="run these modules instead of the plan (name = last part of the module name)")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install wrk/ab when missing")
    ap.add_argument("--render-from", type=Path, default=None, metavar="DIR",
                    help="run nothing: render the document again from an earlier run's --out DIR (its run.json)")
    args = ap.parse_args(argv)
    if args.render_from:
        return rerender(args.render_from, args.doc)

    plan: tuple[Bench, ...] = PLAN
    if args.module:
        plan = tuple(Bench(m.rsplit(".", 1)[-1], m, m, timeout_s=600, quick_timeout_s=600) for m in args.module)
    chosen, skipped = select(plan, [n for n in args.only.split(",") if n], [n for n in args.skip.split(",") if n],
                             quick=args.quick)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bankml-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])])
    info = RunInfo(started=datetime.now(UTC), mode="quick" if args.quick else "full", command=command)
    print(f"bankml benchmarks ({info.mode}): {', '.join(b.name for b in chosen) or 'none'}; logs and JSON in {out_dir}",
          flush=True)
    if not args.no_install and not args.module:
        info.notes.append(ensure_load_tools())
    data = os.environ.get("BANKML_REAL_DATA")
    if data:
        info.notes.append(f"real data: {Path(data).name} (BANKML_REAL_DATA)")
    started = time.monotonic()
    outcomes: list[Outcome] = []
    for i, bench in enumerate(chosen, 1):
        print(f"\n=== {i}/{len(chosen)} {bench.name}: {shlex.join(bench.command(out_dir / f'{bench.name}.json', quick=args.quick)[1:])}",
              flush=True)
        outcome = render_section(run_one(bench, out_dir, quick=args.quick), i)
        outcomes.append(outcome)
        state = f"FAILED ({outcome.error or 'rendering'})" if outcome.failed else "ok"
        print(f"=== {bench.name}: {state} in {fmt_duration(outcome.wall_s)}, load {_load(outcome.load_before)} -> "
              f"{_load(outcome.load_after)}", flush=True)
    info.total_s = time.monotonic() - started
    info.commit = git_commit()
    info.machine = machine()
    info.versions = versions()
    save_run(out_dir / RUN_FILE, info, outcomes, skipped)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(info, outcomes, skipped))
    failed = [o.bench.name for o in outcomes if o.failed]
    print(f"\nwrote {args.doc} in {fmt_duration(info.total_s)}; "
          + (f"failed: {', '.join(failed)}" if failed else "all benchmarks ok"), flush=True)
    return 1 if failed else 0
