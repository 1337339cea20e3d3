"""Property-based tests of the CSV reader (shared/ingest.py) with hypothesis.

Valid files written in every format the reader claims to support (UTF-8 with or without BOM,
UTF-16 with BOM, cp1252; ',' or ';'; any quoting; LF, CRLF or CR; any column order; blank lines)
are accepted with the right rows and values. Anything else (arbitrary bytes, truncations, flipped
bytes, dropped columns, cells replaced by garbage, huge numbers, NaN/Infinity, unicode, very long
strings, mixed encodings) ends in acceptance or a ``BankmlError`` whose details name a column, a
line or a value, with a bounded message: never another exception and never a hang (files are
small: ``MAX_BYTES``).

Example counts stay moderate (the suite shares two cores). Set ``HYPOTHESIS_PROFILE=bankml-deep``
for a longer local run; CI (``CI`` set) runs the derandomized profile, so it is reproducible.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.contract import BY_NAME, FEATURE_NAMES, FEATURES, LABEL_VALUES
from shared.errors import BankmlError
from shared.ingest import MIN_CLASS_ROWS, parse_csv

COLUMNS = (*FEATURE_NAMES, "y")
MAX_BYTES = 256 * 1024
# The longest message an error may carry: values are cut, never echoed whole.
MAX_MESSAGE = 1000
_COMMON = {
    "deadline": None,
    "database": None,  # nothing written into the work tree
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
settings.register_profile("bankml-ci", derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("bankml-dev", **_COMMON)
settings.register_profile("bankml-deep", max_examples=2000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("bankml-ci" if os.environ.get("CI") else "bankml-dev"))

pytestmark = pytest.mark.timeout(600)

# --------------------------------------------------------------------------------------------
# strategies: valid rows and the formats they are written in

# Free text a category cell may hold: any printable character except line breaks, control
# characters and surrogates (none of which a valid file holds; each is tested as hostile below).
_TEXT = st.text(
    st.characters(
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
        blacklist_characters="\r\n\x00",
    ),
    max_size=12,
)
_CP1252_TEXT = _TEXT.filter(lambda s: _encodable(s, "cp1252"))


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _int_text(draw: st.DrawFn, name: str) -> tuple[str, float]:
    value = draw(st.integers(min_value=-(10**6), max_value=10**6))
    spelling = draw(st.sampled_from(("plain", "float", "exp", "plus", "spaces")))
    text = {
        "plain": str(value),
        "float": f"{value}.0",  # pandas exports of a column that once held NaN
        "exp": f"{value:e}" if abs(value) < 10**5 else str(value),
        "plus": f"+{value}" if value >= 0 else str(value),
        "spaces": f" {value} ",
    }[spelling]
    return text, float(value)


def _float_text(draw: st.DrawFn) -> tuple[str, float]:
    value = draw(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False))
    spelling = draw(st.sampled_from(("repr", "exp", "fixed")))
    text = {"repr": repr(value), "exp": f"{value:.17e}", "fixed": repr(value)}[spelling]
    return text, float(text)


@dataclass(frozen=True)
class Rows:
    cells: list[dict[str, str]]  # as written
    values: list[dict[str, Any]]  # what the reader must return


@st.composite
def rows_strategy(draw: st.DrawFn, *, cp1252: bool = False, max_rows: int = 12) -> Rows:
    n = draw(st.integers(min_value=2 * MIN_CLASS_ROWS, max_value=max_rows))
    text = _CP1252_TEXT if cp1252 else _TEXT
    cells: list[dict[str, str]] = []
    values: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, str] = {}
        val: dict[str, Any] = {}
        for col in FEATURES:
            if col.kind == "integer":
                row[col.name], val[col.name] = _int_text(draw, col.name)
            elif col.kind == "number":
                row[col.name], val[col.name] = _float_text(draw)
            else:
                known = st.sampled_from(col.categories)
                row[col.name] = draw(st.one_of(known, known, text))
                val[col.name] = row[col.name].strip()
        # Both classes MIN_CLASS_ROWS times at least: the first rows alternate.
        label = LABEL_VALUES[i % 2] if i < 2 * MIN_CLASS_ROWS else draw(st.sampled_from(LABEL_VALUES))
        row["y"] = draw(st.sampled_from((label, label.upper(), f" {label}")))
        val["y"] = label
        cells.append(row)
        values.append(val)
    return Rows(cells, values)


@dataclass(frozen=True)
class Format:
    encoding: str  # utf-8 | utf-8-sig | utf-16 | cp1252
    delimiter: str
    quoting: int
    line_end: str
    order: tuple[str, ...]
    blank_lines: int
    header_padding: str


def formats(*, cp1252: bool) -> st.SearchStrategy[Format]:
    encodings = ("cp1252",) if cp1252 else ("utf-8", "utf-8-sig", "utf-16")
    return st.builds(
        Format,
        encoding=st.sampled_from(encodings),
        delimiter=st.sampled_from((",", ";")),
        quoting=st.sampled_from((csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC)),
        line_end=st.sampled_from(("\n", "\r\n", "\r")),
        order=st.permutations(COLUMNS).map(tuple),
        blank_lines=st.integers(min_value=0, max_value=2),
        header_padding=st.sampled_from(("", " ")),
    )


def write(rows: Rows, fmt: Format) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=fmt.delimiter, quoting=fmt.quoting, lineterminator=fmt.line_end)
    writer.writerow([f"{fmt.header_padding}{c}{fmt.header_padding}" for c in fmt.order])
    for row in rows.cells:
        writer.writerow([row[c] for c in fmt.order])
    text = out.getvalue() + fmt.line_end * fmt.blank_lines
    return text.encode(fmt.encoding)


def check_values(parsed: Any, rows: Rows) -> None:
    frame = parsed.frame
    assert list(frame.columns) == list(COLUMNS)
    for i, expected in enumerate(rows.values):
        for name in COLUMNS:
            got = frame[name].iloc[i]
            want = expected[name]
            if name in BY_NAME and BY_NAME[name].is_numeric:
                assert float(got) == want, (name, i, got, want)
            else:
                assert got == want, (name, i, got, want)


# --------------------------------------------------------------------------------------------
# valid files


@settings(max_examples=120)
@given(rows=rows_strategy(), fmt=formats(cp1252=False))
def test_valid_files_in_every_supported_format_are_accepted(rows: Rows, fmt: Format) -> None:
    data = write(rows, fmt)
    parsed = parse_csv(data, max_bytes=MAX_BYTES)
    assert parsed.rows == len(rows.cells)
    assert parsed.delimiter == fmt.delimiter
    assert parsed.had_bom == (fmt.encoding in ("utf-8-sig", "utf-16"))
    check_values(parsed, rows)
    assert sum(parsed.class_balance.values()) == parsed.rows


@settings(max_examples=60)
@given(rows=rows_strategy(cp1252=True), fmt=formats(cp1252=True))
def test_valid_cp1252_files_are_accepted(rows: Rows, fmt: Format) -> None:
    data = write(rows, fmt)
    parsed = parse_csv(data, max_bytes=MAX_BYTES)
    assert parsed.rows == len(rows.cells)
    if data.isascii():
        check_values(parsed, rows)


@settings(max_examples=60)
@given(rows=rows_strategy(), a=formats(cp1252=False), b=formats(cp1252=False))
def test_the_same_rows_hash_the_same_in_any_format(rows: Rows, a: Format, b: Format) -> None:
    first, second = parse_csv(write(rows, a), max_bytes=MAX_BYTES), parse_csv(write(rows, b), max_bytes=MAX_BYTES)
    assert first.content_hash == second.content_hash
    assert first.to_canonical_csv() == second.to_canonical_csv()


@settings(max_examples=60)
@given(rows=rows_strategy(max_rows=30), fmt=formats(cp1252=False), chunk=st.integers(min_value=1, max_value=600))
def test_the_result_does_not_depend_on_the_block_size(rows: Rows, fmt: Format, chunk: int) -> None:
    data = write(rows, fmt)
    whole = parse_csv(data, max_bytes=MAX_BYTES)
    streamed = parse_csv(io.BytesIO(data), max_bytes=MAX_BYTES, chunk_bytes=chunk)
    in_blocks = parse_csv(data, max_bytes=MAX_BYTES, chunk_bytes=chunk)
    assert whole.content_hash == streamed.content_hash == in_blocks.content_hash
    assert whole.rows == streamed.rows == in_blocks.rows == len(rows.cells)


# --------------------------------------------------------------------------------------------
# hostile files


def outcome(data: bytes, **kw: Any) -> BankmlError | None:
    """Accepted (None) or the refusal; any other exception fails the test."""
    try:
        parsed = parse_csv(data, max_bytes=MAX_BYTES, **kw)
    except BankmlError as err:
        check_refusal(err)
        return err
    assert parsed.rows >= 1
    json.dumps(parsed.profile, allow_nan=False)  # what is stored about an accepted file is valid JSON
    return None


# Whole-file reasons: nothing in the file to point at.
_WHOLE_FILE = ("file is empty",)


def check_refusal(err: BankmlError) -> None:
    assert err.status == 400, err
    doc = err.to_dict()
    text = json.dumps(doc, allow_nan=False)  # the rejection record is valid JSON
    assert err.message and len(err.message) <= MAX_MESSAGE, err.message[:3000]
    assert len(text) <= 4 * MAX_MESSAGE, text[:3000]
    named = {"column", "line", "value"} & set(err.details)
    assert named or err.message.startswith(_WHOLE_FILE), doc


def valid_file(rows: Rows, fmt: Format) -> bytes:
    return write(rows, fmt)


@settings(max_examples=150)
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_are_accepted_or_refused_with_a_reason(data: bytes) -> None:
    outcome(data)


@settings(max_examples=100)
@given(data=st.text(max_size=2000).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_arbitrary_text_is_accepted_or_refused_with_a_reason(data: bytes) -> None:
    outcome(data)


_GARBAGE = (
    "",
    " ",
    "NaN",
    "nan",
    "-nan",
    "Infinity",
    "-Infinity",
    "inf",
    "+inf",
    "1e400",
    "-1e400",
    "1e-400",
    "9" * 400,
    "-" + "9" * 400,
    "1" + "0" * 5000,
    "0x1F",
    "1_000",
    "١٢٣",
    "１２",
    "−5",
    "1,5",
    "1.2.3",
    "null",
    "None",
    "true",
    "[]",
    "{}",
    '"',
    '""',
    "'",
    'a"b',
    "😀",
    "\u202eevil",
    "\u200b",
    "\ufeff",
    "\u0085",
    "\u2028",
    "\x00",
    "\x1b[31m",
    "\x7f",
    "\t",
    "é",
    "\ud800",
    "x" * 100_000,
    "=cmd|' /C calc'!A0",
    "%s%n",
    "../../etc/passwd",
    "Ｎａｎ",
    "1e308",
    "-0",
    "2e53",
    "9007199254740993",
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str]:
    rows = draw(rows_strategy(max_rows=8))
    fmt = draw(formats(cp1252=False))
    kind = draw(st.sampled_from(("flip", "truncate", "drop_column", "cell", "insert", "mixed", "splice")))
    text_rows = [dict(r) for r in rows.cells]
    if kind in ("cell", "drop_column"):
        i = draw(st.integers(min_value=0, max_value=len(text_rows) - 1))
        col = draw(st.sampled_from(COLUMNS))
        if kind == "cell":
            text_rows[i][col] = draw(st.one_of(st.sampled_from(_GARBAGE), st.text(max_size=50)))
        else:
            where = draw(st.sampled_from(("header", "row", "all")))
            fmt = (
                Format(**{**fmt.__dict__, "order": tuple(c for c in fmt.order if c != col)}) if where != "row" else fmt
            )
            if where == "header":  # the rows keep the column: one field too many
                return _write_rows_with(text_rows, fmt, extra=col, rows=rows), kind
            if where == "row":
                return _write_rows_with(text_rows, fmt, drop_in_row=(i, col), rows=rows), kind
        data = (
            write(Rows(text_rows, rows.values), fmt)
            .decode(fmt.encoding, "surrogatepass")
            .encode(_safe_codec(fmt.encoding), "surrogatepass")
        )
        return data, kind
    data = bytearray(write(rows, fmt))
    if kind == "flip":
        for _ in range(draw(st.integers(min_value=1, max_value=8))):
            pos = draw(st.integers(min_value=0, max_value=len(data) - 1))
            data[pos] = draw(st.integers(min_value=0, max_value=255))
    elif kind == "truncate":
        data = data[: draw(st.integers(min_value=0, max_value=len(data)))]
    elif kind == "insert":
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=40))
    elif kind == "mixed":
        # a part in another encoding: cp1252 or UTF-16 bytes in a UTF-8 file, or the reverse
        piece = draw(st.sampled_from(("é;ü,ß", "😀", "naïve", "\u00e9t\u00e9")))
        codec = draw(st.sampled_from(("cp1252", "utf-16-le", "utf-8", "latin-1")))
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        data[pos:pos] = piece.encode(codec, "replace")
    else:  # splice: two valid files glued, header included, maybe in different encodings
        other = draw(formats(cp1252=False))
        data += write(rows, other)
    return bytes(data), kind


def _safe_codec(encoding: str) -> str:
    # A garbage cell may hold a lone surrogate: written as UTF-8 bytes with surrogatepass, as a
    # broken exporter would.
    return "utf-8" if encoding.startswith("utf-8") else encoding


def _write_rows_with(
    text_rows: list[dict[str, str]],
    fmt: Format,
    *,
    rows: Rows,
    extra: str | None = None,
    drop_in_row: tuple[int, str] | None = None,
) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=fmt.delimiter, quoting=fmt.quoting, lineterminator=fmt.line_end)
    writer.writerow(list(fmt.order))
    for i, row in enumerate(text_rows):
        cols = [*fmt.order, extra] if extra else list(fmt.order)
        if drop_in_row and drop_in_row[0] == i:
            cols = [c for c in cols if c != drop_in_row[1]]
        writer.writerow([row[c] for c in cols])
    return out.getvalue().encode(_safe_codec(fmt.encoding), "surrogatepass")


@settings(max_examples=250)
@given(case=mutated())
def test_mutated_valid_files_are_accepted_or_refused_with_a_reason(case: tuple[bytes, str]) -> None:
    data, _kind = case
    outcome(data)
    # the same bytes read in small blocks, from a stream: the same kind of answer
    outcome(data, chunk_bytes=64)
    try:
        parse_csv(io.BytesIO(data), max_bytes=MAX_BYTES, chunk_bytes=97)
    except BankmlError as err:
        check_refusal(err)


@settings(max_examples=80)
@given(
    rows=rows_strategy(max_rows=6),
    fmt=formats(cp1252=False),
    col=st.sampled_from(COLUMNS),
    bad=st.sampled_from(_GARBAGE),
)
def test_a_bad_cell_is_named_by_column_and_line(rows: Rows, fmt: Format, col: str, bad: str) -> None:
    """A garbage value in one cell: accepted when it is a value of that column (a category, a
    number spelled another way), else refused naming that column, its line and (cut) value."""
    assume(_encodable(bad, fmt.encoding))
    cells = [dict(r) for r in rows.cells]
    cells[-1][col] = bad
    data = write(Rows(cells, rows.values), fmt)
    err = outcome(data)
    line = len(cells) + 1  # the header is line 1
    if err is None:
        return
    details = err.details
    if "line" in details and details.get("column") == col:
        assert details["line"] == line, details
        value = str(details.get("value", ""))
        assert len(value) <= MAX_MESSAGE
        assert value[:50] == bad.strip()[:50], (details, bad[:50])
        return
    # not about that cell: a whole-line reason (a control character, a stray quote) on its line
    assert details.get("line") == line or err.message.startswith("not a text CSV file"), err.to_dict()


@pytest.mark.parametrize(
    "bad",
    ["NaN", "Infinity", "-Infinity", "1e400", "9" * 400, "x" * 100_000],
    ids=["nan", "inf", "-inf", "1e400", "400-digits", "100k-chars"],
)
def test_huge_and_non_finite_numbers_are_refused_in_every_numeric_column(bad: str) -> None:
    base = [
        {c.name: (c.categories[0] if c.categories else "1") for c in FEATURES} | {"y": LABEL_VALUES[i % 2]}
        for i in range(4)
    ]
    for col in (c.name for c in FEATURES if c.is_numeric):
        cells = [dict(r) for r in base]
        cells[2][col] = bad
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in cells:
            w.writerow([r[c] for c in COLUMNS])
        with pytest.raises(BankmlError) as info:
            parse_csv(out.getvalue().encode(), max_bytes=MAX_BYTES)
        err = info.value
        check_refusal(err)
        assert (err.details["column"], err.details["line"]) == (col, 4), err.to_dict()
        assert len(err.message) <= MAX_MESSAGE and str(err.details["value"])[:10] == bad[:10]
        assert not math.isnan(float(err.details.get("rows_affected", 1)))
