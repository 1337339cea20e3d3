"""Bounded HTTP load generator, run as its own process: ``python -m shared.loadgen < job.json``.

It runs outside the function host so the figures measure the target, not a host that is also
busy generating its own load. The job comes on stdin (never argv, where keys would show in
``ps``); one JSON result goes to stdout. Only the standard library is imported, so start-up is
quick and cheap.

Job: ``{"url", "method", "headers", "body", "max_requests", "max_seconds", "concurrency",
"timeout_s"}``, and optionally ``"record_header"`` (a response header name) and ``"expect_json"``
(a list of acceptable decoded answers). The run stops at ``max_requests`` or ``max_seconds``,
whichever comes first, or at SIGTERM/SIGINT (the result is still written); a request already in
flight then may take up to ``timeout_s`` more.

Answers are checked, not only counted: with ``expect_json`` a 2xx answer whose body does not
decode to one of the listed values counts as ``wrong_body`` (a failed request). With
``record_header`` every answer's value of that header is kept: ``answers`` counts each distinct
(header value, body) pair, so a caller can check every body against what the answering version
must say, and ``header_spans``/``per_second`` show when each value answered (a blue/green
switch). ``max_gap_ms`` is the longest time during the run with no request completing, and
``longest_gaps`` the hundred longest such stretches with the time they began.

Header values are never written out: error samples are scrubbed of them and of URL query values
(Azure Functions also accepts a key as ``?code=``).
"""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Bounds on a job: a benchmark is a short probe on a 2-core box, not a stress test.
# A time-bound run passes MAX_REQUESTS as its count: the local relay answers over 2,000 req/s, so
# 100,000 ended a 60 s load after 44 s (the result's ``stopped_by`` says which bound ended a run).
MAX_REQUESTS = 2_000_000
MAX_SECONDS = 600.0
MAX_CONCURRENCY = 64
MAX_TIMEOUT_S = 120.0
METHODS = ("GET", "POST", "PUT", "HEAD")

# Past this many points the timeline is thinned evenly; latencies_ms stays complete.
TIMELINE_CAP = 5_000
ERROR_SAMPLES = 10
SAMPLE_CHARS = 200
# Status recorded in the timeline for a request that got no HTTP answer at all.
NO_RESPONSE = 0
# Distinct (header value, body) pairs kept in ``answers``; past this they are counted as "other".
MAX_ANSWERS = 64
ANSWER_CHARS = 2_000
MAX_EXPECTED = 16
# The longest stretches without a completed request kept in ``longest_gaps``.
GAPS_KEPT = 100


class JobError(ValueError):
    """The job is malformed; the message names the field, never a header value."""


@dataclass(frozen=True)
class Job:
    url: str
    method: str
    headers: dict[str, str]
    body: bytes
    max_requests: int
    max_seconds: float
    concurrency: int
    timeout_s: float
    record_header: str | None = None
    expect_json: tuple[Any, ...] | None = None

    @property
    def secrets(self) -> list[str]:
        """Values that must never appear in the output: every header value and URL query value."""
        values = list(self.headers.values())
        values += [v for _, v in parse_qsl(urlsplit(self.url).query)]
        return [v for v in values if len(v) >= 4]


def _number(job: dict[str, Any], name: str, kind: type, low: float, high: float) -> Any:
    raw = job.get(name)
    # bool is an int subclass; "max_requests": true is a mistake, not 1.
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise JobError(f"job field {name!r} must be a number")
    if kind is int and raw != int(raw):
        raise JobError(f"job field {name!r} must be a whole number")
    value = kind(raw)
    if not low <= value <= high:
        raise JobError(f"job field {name!r} must be between {low} and {high}")
    return value


def parse_job(job: Any) -> Job:
    """Validate a job dict; raises JobError naming the field."""
    if not isinstance(job, dict):
        raise JobError("job must be a JSON object")
    url = job.get("url")
    if not isinstance(url, str):
        raise JobError("job field 'url' must be a string")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JobError("job field 'url' must be an absolute http(s) URL")
    method = str(job.get("method", "POST")).upper()
    if method not in METHODS:
        raise JobError(f"job field 'method' must be one of {', '.join(METHODS)}")
    headers = job.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise JobError("job field 'headers' must map strings to strings")
    body = job.get("body") or ""
    if not isinstance(body, str):
        raise JobError("job field 'body' must be a string")
    record_header = job.get("record_header")
    if record_header is not None and (not isinstance(record_header, str) or not record_header.strip()):
        raise JobError("job field 'record_header' must be a header name")
    expect = job.get("expect_json")
    if expect is not None and (not isinstance(expect, list) or not 1 <= len(expect) <= MAX_EXPECTED):
        raise JobError(f"job field 'expect_json' must be a list of 1 to {MAX_EXPECTED} JSON values")
    return Job(
        url=url,
        method=method,
        headers=dict(headers),
        body=body.encode("utf-8"),
        max_requests=_number(job, "max_requests", int, 1, MAX_REQUESTS),
        max_seconds=_number(job, "max_seconds", float, 0.001, MAX_SECONDS),
        concurrency=_number(job, "concurrency", int, 1, MAX_CONCURRENCY),
        timeout_s=_number(job, "timeout_s", float, 0.001, MAX_TIMEOUT_S),
        record_header=record_header.strip().lower() if record_header else None,
        expect_json=tuple(expect) if expect is not None else None,
    )


def redact_url(url: str) -> str:
    """The URL without credentials or query values, safe to store and show."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def scrub(text: str, secrets: list[str]) -> str:
    # Longest first so a secret that contains another is removed whole.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass
class _Sample:
    start_s: float
    latency_ms: float
    status: int
    bytes_in: int
    error: str | None = None
    header: str | None = None  # the value of the job's record_header
    body: bytes | None = None  # kept for 2xx answers when record_header is set
    wrong_body: bool = False


class _Run:
    """State shared by the worker threads: the request budget, the deadline, the samples."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.lock = threading.Lock()
        self.issued = 0
        self.samples: list[_Sample] = []
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + job.max_seconds
        parts = urlsplit(job.url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.bytes_per_request = self._request_size()

    def _request_size(self) -> int:
        # What http.client puts on the wire: request line, our headers, the ones it adds, body.
        headers = {"Host": self.host, "Accept-Encoding": "identity", **self.job.headers}
        if self.job.body or self.job.method in ("POST", "PUT"):
            headers["Content-Length"] = str(len(self.job.body))
        head = f"{self.job.method} {self.target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return len(head.encode("latin-1", "replace")) + 2 + len(self.job.body)

    def stop(self) -> None:
        """End the run now: no new request starts; those in flight finish."""
        with self.lock:
            self.deadline = min(self.deadline, time.perf_counter())

    def claim(self) -> bool:
        """Take one request from the budget; False once the count or the time is used up."""
        with self.lock:
            if self.issued >= self.job.max_requests or time.perf_counter() >= self.deadline:
                return False
            self.issued += 1
            return True

    def connect(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            # Default context: certificates are verified; a benchmark must not weaken TLS.
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.job.timeout_s, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.job.timeout_s)

    def worker(self) -> None:
        # One connection per thread, reused while the server keeps it open (HTTP/1.1 keep-alive);
        # http.client reconnects by itself after the server or an error closed it.
        conn = self.connect()
        try:
            while self.claim():
                self.samples.append(self._one(conn))
        finally:
            conn.close()

    def _one(self, conn: http.client.HTTPConnection) -> _Sample:
        start = time.perf_counter()
        try:
            conn.request(self.job.method, self.target, body=self.job.body or None, headers=self.job.headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            return _Sample(start - self.t0, (time.perf_counter() - start) * 1000, NO_RESPONSE, 0, _describe(err))
        latency_ms = (time.perf_counter() - start) * 1000
        head = (
            len(f"HTTP/1.1 {resp.status} {resp.reason}\r\n")
            + sum(len(k) + len(v) + 4 for k, v in resp.getheaders())
            + 2
        )
        error = None
        wrong = False
        if not 200 <= resp.status < 300:
            error = f"HTTP {resp.status}: {data[:SAMPLE_CHARS].decode('utf-8', 'replace')}"
        elif self.job.expect_json is not None and not _matches(data, self.job.expect_json):
            wrong = True
            error = f"wrong body: {data[:SAMPLE_CHARS].decode('utf-8', 'replace')}"
        header = None
        if self.job.record_header:
            header = resp.getheader(self.job.record_header)
        keep = data if self.job.record_header and 200 <= resp.status < 300 else None
        return _Sample(start - self.t0, latency_ms, resp.status, head + len(data), error, header, keep, wrong)


def _matches(data: bytes, expected: tuple[Any, ...]) -> bool:
    try:
        value = json.loads(data)
    except ValueError:
        return False
    return any(value == e for e in expected)


def _describe(err: BaseException) -> str:
    text = str(err) or repr(err)
    return f"{type(err).__name__}: {text}"


def run(job: Job) -> dict[str, Any]:
    """Run the job and return the result dict (see module docstring)."""
    started_at = datetime.now(UTC)
    state = _Run(job)
    threads = [
        threading.Thread(target=state.worker, name=f"loadgen-{i}", daemon=True)
        for i in range(min(job.concurrency, job.max_requests))
    ]
    previous = _on_stop_signals(state.stop)
    try:
        for t in threads:
            t.start()
        # A request in flight at the deadline may take timeout_s more (per socket operation);
        # past that a stuck worker is abandoned (daemon thread) so the process always ends.
        # Joined in short steps so that a stop signal is handled promptly.
        while any(t.is_alive() for t in threads):
            join_until = state.deadline + 2 * job.timeout_s + 1
            if time.perf_counter() >= join_until:
                break
            for t in threads:
                t.join(min(0.2, max(0.0, join_until - time.perf_counter())))
                if t.is_alive():
                    break
    finally:
        _restore_signals(previous)
    abandoned = sum(t.is_alive() for t in threads)
    duration_s = time.perf_counter() - state.t0
    ended_at = datetime.now(UTC)

    with state.lock:
        samples = sorted(state.samples, key=lambda s: s.start_s)
    return summarise_samples(job, samples, started_at, ended_at, duration_s, state.bytes_per_request, abandoned)


def _on_stop_signals(stop: Any) -> dict[int, Any]:
    """SIGTERM/SIGINT end the run early (the result is still written); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda *_: stop())
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _answers(samples: list[_Sample]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Distinct (header, body) answers with counts, each header value's span, per-second counts."""
    answers: dict[tuple[str | None, bytes], int] = {}
    other = 0
    spans: dict[str, dict[str, Any]] = {}
    seconds: dict[int, dict[str, Any]] = {}
    for s in samples:
        sec = seconds.setdefault(int(s.start_s), {"t": int(s.start_s), "requests": 0, "ok": 0, "failed": 0, "headers": {}})
        sec["requests"] += 1
        ok = 200 <= s.status < 300 and not s.wrong_body
        sec["ok" if ok else "failed"] += 1
        if s.body is None:
            continue
        key = (s.header, s.body)
        if key in answers or len(answers) < MAX_ANSWERS:
            answers[key] = answers.get(key, 0) + 1
        else:
            other += 1
        value = s.header if s.header is not None else ""
        sec["headers"][value] = sec["headers"].get(value, 0) + 1
        end = s.start_s + s.latency_ms / 1000
        span = spans.get(value)
        if span is None:
            spans[value] = {"count": 1, "first_start_s": s.start_s, "last_start_s": s.start_s,
                            "first_end_s": end, "last_end_s": end}
        else:
            span["count"] += 1
            span["last_start_s"] = max(span["last_start_s"], s.start_s)
            span["first_end_s"] = min(span["first_end_s"], end)
            span["last_end_s"] = max(span["last_end_s"], end)
    listed = [
        {"header": h, "body": b[:ANSWER_CHARS].decode("utf-8", "replace"), "truncated": len(b) > ANSWER_CHARS, "count": n}
        for (h, b), n in sorted(answers.items(), key=lambda kv: -kv[1])
    ]
    if other:
        listed.append({"header": None, "body": None, "truncated": True, "count": other})
    for span in spans.values():
        for k in ("first_start_s", "last_start_s", "first_end_s", "last_end_s"):
            span[k] = round(span[k], 4)
    return listed, spans, [seconds[k] for k in sorted(seconds)]


def gaps(samples: list[_Sample], duration_s: float, top: int = GAPS_KEPT) -> list[list[float]]:
    """The ``top`` longest stretches of the run (from its start to its end) in which no request
    completed, longest first, as ``[from_s, gap_ms]``."""
    ends = sorted(s.start_s + s.latency_ms / 1000 for s in samples)
    found: list[tuple[float, float]] = []
    last = 0.0
    for end in [*ends, max(duration_s, ends[-1] if ends else 0.0)]:
        found.append((end - last, last))
        last = max(last, end)
    found.sort(reverse=True)
    return [[round(at, 4), round(gap * 1000, 3)] for gap, at in found[:top]]


def max_gap_ms(samples: list[_Sample], duration_s: float) -> float:
    """The longest stretch of the run (from its start to its end) in which no request completed."""
    longest = gaps(samples, duration_s, top=1)
    return longest[0][1] if longest else round(duration_s * 1000, 3)


def summarise_samples(
    job: Job,
    samples: list[_Sample],
    started_at: datetime,
    ended_at: datetime,
    duration_s: float,
    bytes_per_request: int,
    abandoned: int = 0,
) -> dict[str, Any]:
    non_2xx: dict[str, int] = {}
    error_kinds: dict[str, int] = {}
    error_samples: list[str] = []
    secrets = job.secrets
    ok = connection_errors = wrong_body = 0
    for s in samples:
        if s.status == NO_RESPONSE:
            connection_errors += 1
            kind = (s.error or "error").split(":", 1)[0]
            error_kinds[kind] = error_kinds.get(kind, 0) + 1
        elif s.wrong_body:
            wrong_body += 1
        elif 200 <= s.status < 300:
            ok += 1
        else:
            non_2xx[str(s.status)] = non_2xx.get(str(s.status), 0) + 1
        if s.error:
            text = scrub(s.error, secrets)[:SAMPLE_CHARS]
            if text not in error_samples and len(error_samples) < ERROR_SAMPLES:
                error_samples.append(text)

    stride = max(1, -(-len(samples) // TIMELINE_CAP))
    timeline = [[round(s.start_s, 4), round(s.latency_ms, 3), s.status] for s in samples[::stride]]
    extra: dict[str, Any] = {}
    if job.record_header:
        answers, spans, per_second = _answers(samples)
        extra = {
            "record_header": job.record_header,
            # Bodies are answers of the target, which never carry the job's headers; scrubbed anyway.
            "answers": [dict(a, body=scrub(a["body"], secrets) if a["body"] else a["body"]) for a in answers],
            "header_spans": spans,
            "per_second": per_second,
        }
    return {
        "started_at": started_at.isoformat(),
        "ended_at": ended_at.isoformat(),
        "duration_s": round(duration_s, 4),
        "job": {
            "url": redact_url(job.url),
            "method": job.method,
            "max_requests": job.max_requests,
            "max_seconds": job.max_seconds,
            "concurrency": job.concurrency,
            "timeout_s": job.timeout_s,
            "body_bytes": len(job.body),
        },
        "requests": len(samples),
        # Which bound ended the run: the request count, or the time (or a stop signal).
        "stopped_by": "max_requests" if len(samples) >= job.max_requests else "max_seconds",
        "ok": ok,
        "non_2xx": dict(sorted(non_2xx.items())),
        "connection_errors": connection_errors,
        "wrong_body": wrong_body,
        "max_gap_ms": max_gap_ms(samples, duration_s),
        "longest_gaps": gaps(samples, duration_s),
        "error_kinds": error_kinds,
        "error_samples": error_samples,
        # Only requests that got an HTTP answer have a latency; a refused connection is no data point.
        "latencies_ms": [round(s.latency_ms, 3) for s in samples if s.status != NO_RESPONSE],
        "timeline": timeline,
        "timeline_stride": stride,
        "bytes_received": sum(s.bytes_in for s in samples),
        # Counted for requests that got an answer; a refused connection sent nothing.
        "bytes_sent": bytes_per_request * (len(samples) - connection_errors),
        "abandoned_workers": abandoned,
        **extra,
    }


def main() -> int:
    try:
        job = parse_job(json.load(sys.stdin))
    except (JobError, json.JSONDecodeError) as err:
        print(json.dumps({"error": str(err)}), file=sys.stderr)
        return 2
    json.dump(run(job), sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
