"""Read, validate, normalise and profile a Bank Marketing CSV file (pure: bytes in, frame out).

Every rejection is a ``DataError`` naming what a person needs to fix the file: the column, the
1-based file line (the header is line 1), the offending value and what was expected.

Decisions (see the tests for each):

* Encoding: UTF-8 with or without BOM; UTF-16 with a BOM (Excel's "Unicode text"); otherwise
  cp1252, the usual encoding of spreadsheet exports on Windows, so a file whose only non-ASCII
  bytes are in free-text values is still accepted. Bytes that are not text (NUL bytes, control
  characters, bytes cp1252 leaves undefined) are rejected, never guessed at.
* Delimiter: ``,`` or ``;``, chosen from the header line alone (the one whose split yields the most
  known column names), then used for the whole file.
* Header names: whitespace and quotes around them are stripped; matching is case-sensitive
  because the contract's names are literal everywhere (scoring payloads, the model); an
  ``Age`` header is rejected with a hint naming ``age`` rather than silently renamed.
* Extra columns are rejected (an id, a leaked score or a renamed column is a mistake to see).
* Decimal comma (``1,1`` in a ``;`` file) is rejected naming column, line and value, never
  re-interpreted: a file mixing ``1.1`` and ``1,1`` cannot be read consistently, and ``1,234`` is
  ambiguous (thousands separator or decimal).
* Integer columns accept whole numbers written as floats (``3.0``, ``1e3``: pandas exports of
  columns that once held NaN look like that); ``3.5`` is rejected.
* Empty numeric values and empty labels are rejected; an empty categorical value is kept as
  ``""`` and counted in ``profile["missing"]`` (``unknown`` is a real category, not missing).
* Lines that are blank or hold only delimiters (spreadsheet exports end with such rows) are
  skipped; their line numbers still count.
* A quoted value must close on its own line (no value of the contract holds a line break): a
  lost quote is then named by its line instead of silently gluing the next lines together.
* "One class only" includes a class with a single row (``MIN_CLASS_ROWS``): it cannot be on
  both sides of a stratified train/validation split.
* ``content_hash`` is the sha256 of ``to_canonical_csv()``, so the same data exported with a
  BOM, ``;``, quotes, CRLF, ``5191`` vs ``5191.0`` or another column order hashes the same.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from shared.contract import BY_NAME, CATEGORICAL, DEFAULT_LABEL, FEATURE_NAMES, LABEL_VALUES, NUMERIC
from shared.errors import ConfigError, DataError

_CHUNK = 1 << 20
_DELIMITERS = (",", ";")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+$")
# Beyond 2**53 a float no longer holds every integer; no column of this data comes near it.
_MAX_INT = 2**53
# Drift thresholds: a mean further than this many reference standard deviations is a shift, and
# a range sharing less than this fraction with the reference range lies "mostly outside".
_DRIFT_STD = 3.0
_DRIFT_OVERLAP = 0.5

_NO, _YES = LABEL_VALUES
# Fewest rows a label class needs: a stratified train/validation split needs one on each side.
MIN_CLASS_ROWS = 2


@dataclass(frozen=True)
class ParsedDataset:
    frame: pd.DataFrame
    rows: int
    content_hash: str
    column_types: dict[str, str]
    class_balance: dict[str, int]
    profile: dict[str, Any]
    delimiter: str
    encoding: str
    had_bom: bool
    # Written once while hashing; kept so that registering the file does not serialise it again.
    _canonical: bytes = field(repr=False, compare=False)

    def to_canonical_csv(self) -> bytes:
        """The normalised file whose sha256 is ``content_hash``: comma-separated, header row,
        ``\\n`` line ends, contract column order, floats in shortest round-trip form."""
        return self._canonical


def canonical_csv(frame: pd.DataFrame) -> bytes:
    """Comma-separated, header row, ``\\n`` line ends, minimal quoting, floats as ``repr``."""
    # Formats each distinct value once and joins rows with C-level str.join: 4x faster than
    # DataFrame.to_csv on the 33k-row file, and byte-identical to it for this data.
    columns = []
    for name in frame.columns:
        codes, uniques = pd.factorize(frame[name].to_numpy())
        if frame[name].dtype.kind == "f":
            text = [repr(float(v)) for v in uniques]
        elif frame[name].dtype.kind in "iu":
            text = [str(int(v)) for v in uniques]
        else:
            text = [_quote(str(v)) for v in uniques]
        columns.append(np.array(text, dtype=object)[codes] if len(codes) else np.array([], dtype=object))
    header = ",".join(_quote(str(n)) for n in frame.columns)
    lines = [header, *map(",".join, zip(*columns, strict=True))]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _quote(value: str) -> str:
    # The csv module's QUOTE_MINIMAL rule (also pandas'): quote only what would otherwise break a row.
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


# --------------------------------------------------------------------------------------------
# reading and decoding


def _read_limited(data: bytes | bytearray | memoryview | BinaryIO, max_bytes: int) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise _too_large(len(raw), max_bytes)
        return raw
    buf = bytearray()
    while True:
        # Read at most one byte past the limit: enough to know it was exceeded, never the whole body.
        chunk = data.read(min(_CHUNK, max_bytes + 1 - len(buf)))
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > max_bytes:
            raise _too_large(None, max_bytes)


def _too_large(size: int | None, max_bytes: int) -> DataError:
    what = f"{size:,} bytes" if size is not None else f"more than {max_bytes:,} bytes"
    return DataError(
        f"file is too large: {what}, the limit is {max_bytes:,} bytes",
        value=size,
        expected=f"at most {max_bytes} bytes",
    )


def _not_text(reason: str, **details: Any) -> DataError:
    return DataError(f"not a text CSV file: {reason}", expected="a UTF-8 (or cp1252) text CSV file", **details)


def _decode(raw: bytes) -> tuple[str, str, bool]:
    """(text, encoding, had_bom)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), "utf-16", True
        except UnicodeDecodeError as err:
            raise _not_text("it starts with a UTF-16 mark but is not UTF-16") from err
    # NUL bytes mean binary (zip/xlsx/gzip/parquet...) or UTF-16 without a BOM: neither is readable here.
    if b"\x00" in raw:
        raise _not_text("it contains NUL bytes (a binary file such as .xlsx, .zip or .gz?)")
    if raw.startswith(b"\xef\xbb\xbf"):
        try:
            return raw[3:].decode("utf-8"), "utf-8", True
        except UnicodeDecodeError as err:
            raise _not_text(f"it has a UTF-8 mark but byte {err.start + 3} is not UTF-8") from err
    try:
        return raw.decode("utf-8"), "utf-8", False
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "cp1252", False
    except UnicodeDecodeError as err:
        raise _not_text(f"byte {err.start} is neither UTF-8 nor cp1252 text") from err


# --------------------------------------------------------------------------------------------
# record structure


@dataclass(frozen=True)
class _Records:
    """The lines of a text, computed on all bytes at once (no loop per row)."""

    fields: np.ndarray  # fields per line (delimiters outside quotes + 1)
    content: np.ndarray  # True if the line holds anything besides spaces, tabs, quotes, ',' and ';'


def _records(b: np.ndarray, delimiter: str) -> _Records:
    """Scan the UTF-8 bytes ``b`` (``\n`` line ends, not blank): one record per line."""
    quote = b == ord('"')
    newline = b == ord("\n")
    # Each line owns the newline that ends it, so the empty remainder after a final newline is no
    # line (as for pandas); a blank line before it is one, and pandas also yields a row for it.
    starts = np.concatenate(([0], np.flatnonzero(newline) + 1))
    starts = starts[starts < b.size]
    if quote.any():
        # No value of this contract holds a line break, so a quote must close on the line that
        # opens it. Requiring that keeps record == line (exact line numbers) and names the line
        # of a lost quote, where the parser would silently glue the following lines together.
        odd = np.add.reduceat(quote, starts, dtype=np.int64) & 1
        if odd.any():
            line = int(np.flatnonzero(odd)[0]) + 1
            raise DataError(
                f'line {line}: a quote (") is opened and never closed on that line',
                line=line,
                expected='quoted values that open and close on the same line: "value"',
            )
        # A byte is inside quotes when an odd number of quotes precede it; a doubled "" escape
        # toggles twice, so it needs no special case. uint8 wraps at 256, parity survives that.
        inside = (np.cumsum(quote, dtype=np.uint8) & 1).astype(bool)
        delim = (b == ord(delimiter)) & ~inside
    else:
        delim = b == ord(delimiter)
    # Both delimiters count as filler whatever the file uses, the same rule parse_csv uses to find
    # the header line before the delimiter is known.
    filler = quote | newline | (b == ord(" ")) | (b == ord("\t")) | (b == ord(",")) | (b == ord(";"))
    # reduceat sums each line's segment in one pass, without a cumulative array per byte.
    fields = np.add.reduceat(delim, starts, dtype=np.int64) + 1
    content = np.logical_or.reduceat(~filler, starts)
    return _Records(fields=fields, content=content)


def _clean_name(name: str) -> str:
    return name.strip().strip("\ufeff").strip().strip("\"'").strip()


def _sniff_delimiter(header: str, line: int, known: set[str]) -> str:
    def score(d: str) -> tuple[int, int]:
        names = [_clean_name(n) for n in header.split(d)]
        return sum(n in known for n in names), len(names)

    best = max(_DELIMITERS, key=score)
    if score(best)[1] < 2:
        raise DataError(
            "cannot find the delimiter: the header line has no ',' or ';'",
            line=line,
            value=header[:200],
            expected="a header of column names separated by ',' or ';'",
        )
    return best


def _check_header(names: list[str], label: str, header_line: int) -> None:
    expected_cols = [*FEATURE_NAMES, label]
    expected = f"the {len(FEATURE_NAMES)} contract columns and the label column {label!r}"
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    duplicated = [n for n, c in seen.items() if c > 1]
    if duplicated:
        raise DataError(
            "duplicated column(s) in the header: " + ", ".join(repr(n) for n in duplicated),
            column=duplicated[0],
            duplicated=duplicated,
            line=header_line,
            expected="each column once",
        )
    missing = [n for n in expected_cols if n not in seen]
    unexpected = [n if n else f"(unnamed column {i + 1})" for i, n in enumerate(names) if n not in expected_cols]
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append("missing column(s): " + ", ".join(missing))
    if unexpected:
        parts.append("unknown column(s): " + ", ".join(unexpected))
    # A case slip is the likeliest cause of a missing name: point at it rather than say "missing".
    lower = {n.lower(): n for n in names}
    hints = [f"{lower[m.lower()]!r} should be {m!r}" for m in missing if m.lower() in lower]
    if hints:
        parts.append("column names are case-sensitive: " + ", ".join(hints))
    raise DataError(
        "; ".join(parts),
        column=(missing or unexpected)[0],
        missing=missing or None,
        unexpected=unexpected or None,
        line=header_line,
        expected=expected,
    )


# --------------------------------------------------------------------------------------------
# values


@dataclass(frozen=True)
class _Cells:
    """One column as distinct stripped values plus, per row, the index of its value.

    Real columns hold few distinct values (a float column of 33k rows: a few hundred), so every
    check and conversion below runs on the distinct values and is mapped back through ``codes``.
    """

    codes: np.ndarray
    uniques: np.ndarray  # object array of str, stripped (may hold duplicates after stripping)

    @classmethod
    def of(cls, column: pd.Series) -> _Cells:
        codes, uniques = pd.factorize(column.to_numpy(dtype=object))
        return cls(codes, np.array([u.strip() for u in uniques], dtype=object))

    def values(self) -> np.ndarray:
        return self.uniques[self.codes]

    def first(self, bad_unique: np.ndarray) -> tuple[int, int]:
        """(first row position, number of rows) holding a value flagged in ``bad_unique``."""
        rows = bad_unique[self.codes]
        return int(np.flatnonzero(rows)[0]), int(rows.sum())


def _numbers(name: str, cells: _Cells) -> tuple[np.ndarray, np.ndarray]:
    """(value per distinct cell, bad flag per distinct cell) of a numeric column."""
    # to_numeric only finds bad cells; astype(float) gives the values because it rounds like
    # float() (correctly), while to_numeric's fast parser is an ulp off for ~1 value in 10 and
    # would make the same data hash differently. nan/inf spelled out are not data either.
    coerced = pd.to_numeric(pd.Series(cells.uniques), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(coerced)
    if BY_NAME[name].kind == "integer":
        with np.errstate(invalid="ignore"):
            bad |= (coerced != np.round(coerced)) | (np.abs(coerced) > _MAX_INT)
    values = np.zeros(len(cells.uniques))
    ok = ~bad
    try:
        values[ok] = cells.uniques[ok].astype(np.float64)
    except ValueError:  # a spelling to_numeric accepts but float() does not: flag it as bad
        ok_idx = np.flatnonzero(ok)
        parsed = [_float_or_none(v) for v in cells.uniques[ok_idx]]
        bad[ok_idx] = [v is None for v in parsed]
        values[ok_idx] = [0.0 if v is None else v for v in parsed]
    return values + 0.0, bad  # -0.0 + 0.0 == 0.0: "-0" and "0" are the same data and hash the same


def _float_or_none(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def _numeric_error(
    name: str, cells: _Cells, bad: np.ndarray, lines: np.ndarray, delimiter: str
) -> tuple[int, DataError]:
    kind = BY_NAME[name].kind
    what = "an integer" if kind == "integer" else "a number"
    pos, count = cells.first(bad)
    line = int(lines[pos])
    value = str(cells.uniques[cells.codes[pos]])
    more = f" ({count} rows affected, this is the first)" if count > 1 else ""
    number = _float_or_none(value) if not _DECIMAL_COMMA.match(value) else None
    if value == "":
        msg = f"column {name!r}, line {line}: value is missing{more}"
        expected = what
    elif _DECIMAL_COMMA.match(value):
        msg = f"column {name!r}, line {line}: {value!r} uses a decimal comma{more}"
        expected = f"{what} written with a decimal point, e.g. {value.replace(',', '.')}"
    elif kind == "integer" and number is not None and math.isfinite(number) and abs(number) > _MAX_INT:
        msg = f"column {name!r}, line {line}: {value!r} is out of range{more}"
        expected = f"an integer between -{_MAX_INT} and {_MAX_INT}"
    elif kind == "integer" and number is not None and math.isfinite(number):
        msg = f"column {name!r}, line {line}: {value!r} is not a whole number{more}"
        expected = "an integer"
    else:
        msg = f"column {name!r}, line {line}: {value!r} is not {what}{more}"
        expected = what
    if delimiter == ";" and "," in value:
        expected += " (this ';' file must use '.' as the decimal separator)"
    return pos, DataError(msg, column=name, line=line, value=value, expected=expected, rows_affected=count)


# --------------------------------------------------------------------------------------------
# parse


def parse_csv(
    data: bytes | BinaryIO,
    *,
    label: str = DEFAULT_LABEL,
    max_bytes: int,
    size: int | None = None,
) -> ParsedDataset:
    """Validate and normalise one dropped CSV file; raises ``DataError`` naming what to fix.

    ``size`` (when known, e.g. a blob's length) is checked before any byte is read; the stream is
    also cut off after ``max_bytes``. ``label`` names the label column in the file; it is renamed
    to ``y`` in the result.
    """
    label = label.strip()
    if not label or label in BY_NAME:
        raise ConfigError(
            f"setting BANKML_LABEL_COLUMN must name a non-feature column, got {label!r}", setting="BANKML_LABEL_COLUMN"
        )
    if size is not None and size > max_bytes:
        raise _too_large(size, max_bytes)
    raw = _read_limited(data, max_bytes)
    if not raw.removeprefix(b"\xef\xbb\xbf").strip():
        raise DataError("file is empty", expected="a header line and data rows")
    text, encoding, had_bom = _decode(raw)
    # DOS tools end text files with Ctrl-Z; harmless, unlike any other control character.
    text = text.rstrip("\x1a")
    if not text.strip(" \t\r\n\ufeff"):
        raise DataError("file is empty", expected="a header line and data rows")
    if "\r" in text:
        # One line terminator for both the parser and the record scan below (CRLF and old-Mac CR).
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Delimiters, quotes and line ends are ASCII, so the UTF-8 bytes serve every encoding read.
    b = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    control = ((b < 32) & (b != ord("\t")) & (b != ord("\n"))) | (b == 127)
    if control.any():
        at = int(np.flatnonzero(control)[0])
        line = int(np.count_nonzero(b[:at] == ord("\n"))) + 1
        raise _not_text(f"control character {chr(b[at])!r} on line {line}", line=line)

    known = {*FEATURE_NAMES, label}
    # The header is the first line holding more than whitespace, quotes and delimiters, the same
    # rule _records uses for "content", so both pick the same line.
    first = re.search(r'[^ \t\n",;]', text)
    if first is None:
        raise DataError("file is empty: it holds only delimiters", expected="a header line and data rows")
    header_start = text.rfind("\n", 0, first.start()) + 1
    header_end = text.find("\n", header_start)
    header_text = text[header_start : header_end if header_end >= 0 else len(text)]
    delimiter = _sniff_delimiter(header_text, text.count("\n", 0, header_start) + 1, known)

    rec = _records(b, delimiter)
    header_idx = int(np.flatnonzero(rec.content)[0])
    header_line = header_idx + 1
    ncols = int(rec.fields[header_idx])
    body = slice(header_idx + 1, None)
    wrong = rec.content[body] & (rec.fields[body] != ncols)
    if wrong.any():
        pos = int(np.flatnonzero(wrong)[0])
        line = header_line + 1 + pos
        got = int(rec.fields[body][pos])
        hint = " (a decimal comma or an unquoted ',' inside a value?)" if got > ncols and delimiter == "," else ""
        raise DataError(
            f"line {line} has {got} fields, the header has {ncols}{hint}",
            line=line,
            value=got,
            expected=f"{ncols} fields separated by {delimiter!r}",
        )

    try:
        table = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            header=None,
            dtype=str,
            engine="c",
            quotechar='"',
            skipinitialspace=True,
            keep_default_na=False,  # "", "NA" and "null" stay text: only the contract decides what is missing
            na_filter=False,
            skip_blank_lines=False,  # keeps row i == record i, so line numbers stay exact
            skiprows=header_idx,
        )
    except (pd.errors.ParserError, ValueError) as err:  # the record scan above should leave none
        raise DataError(f"cannot read the file as CSV: {err}", expected="a well-formed CSV file") from err
    if len(table) != len(rec.fields) - header_idx:
        raise DataError(
            "cannot read the file as CSV: stray quotes make its lines ambiguous",
            expected='values quoted with " only around the whole value',
        )

    names = [_clean_name(str(n)) for n in table.iloc[0]]
    _check_header(names, label, header_line)
    keep = rec.content[body]
    lines = np.flatnonzero(keep) + header_line + 1  # 1-based file line of each kept row
    table = table.iloc[1:][keep]
    table.columns = names
    if table.empty:
        raise DataError("no data rows: the file has a header only", line=header_line, expected="at least one data row")

    cells = {n: _Cells.of(table[n]) for n in (*FEATURE_NAMES, label)}
    numbers: dict[str, np.ndarray] = {}
    problems = []
    for n in NUMERIC:
        numbers[n], bad = _numbers(n, cells[n])
        if bad.any():
            problems.append(_numeric_error(n, cells[n], bad, lines, delimiter))
    if problems:
        # Several columns may be wrong: name the first bad line, as a person reads the file.
        raise min(problems, key=lambda p: p[0])[1]

    label_cells = cells[label]
    y_unique = np.array([v.lower() for v in label_cells.uniques], dtype=object)
    bad_label = ~np.isin(y_unique, LABEL_VALUES)
    if bad_label.any():
        pos, count = label_cells.first(bad_label)
        line = int(lines[pos])
        value = str(label_cells.uniques[label_cells.codes[pos]])
        what = "is missing" if value == "" else f"{value!r} is not yes or no"
        more = f" ({count} rows affected, this is the first)" if count > 1 else ""
        raise DataError(
            f"label column {label!r}, line {line}: {what}{more}",
            column=label,
            line=line,
            value=value,
            expected="yes or no",
            rows_affected=count,
        )
    y = y_unique[label_cells.codes]
    balance = {v: int(np.count_nonzero(y == v)) for v in LABEL_VALUES}
    _check_classes(balance, label)

    out: dict[str, np.ndarray] = {}
    for n in FEATURE_NAMES:
        kind = BY_NAME[n].kind
        if kind == "string":
            out[n] = cells[n].values()
        else:
            floats = numbers[n][cells[n].codes]
            out[n] = floats.astype(np.int64) if kind == "integer" else floats
    out[DEFAULT_LABEL] = y
    frame = pd.DataFrame(out)

    canonical = canonical_csv(frame)
    column_types = {n: BY_NAME[n].kind for n in FEATURE_NAMES} | {DEFAULT_LABEL: "string"}
    return ParsedDataset(
        frame=frame,
        rows=len(frame),
        content_hash=hashlib.sha256(canonical).hexdigest(),
        column_types=column_types,
        class_balance=balance,
        profile=profile_frame(frame),
        delimiter=delimiter,
        encoding=encoding,
        had_bom=had_bom,
        _canonical=canonical,
    )


def _check_classes(balance: dict[str, int], label: str) -> None:
    # A class with a single row cannot be both trained on and validated on (a stratified split
    # fails with "the least populated class has only 1 member"); for training that is one class.
    rare = [v for v in LABEL_VALUES if balance[v] < MIN_CLASS_ROWS]
    if not rare:
        return
    v = rare[0]
    other = _YES if v == _NO else _NO
    count = "no row is" if balance[v] == 0 else f"only {balance[v]} row is"
    raise DataError(
        f"the label has one class only: {balance[other]} rows are {other!r} and {count} {v!r}",
        column=label,
        value=v,
        expected=f"at least {MIN_CLASS_ROWS} rows of each class, {_NO!r} and {_YES!r}",
        rows_affected=balance[v],
    )


# --------------------------------------------------------------------------------------------
# profile and drift


def profile_frame(frame: pd.DataFrame) -> dict[str, Any]:
    """JSON-ready summary of a normalised frame (the shape ``drift_warnings`` compares)."""
    missing: dict[str, int] = {}
    numeric: dict[str, dict[str, float]] = {}
    categories: dict[str, dict[str, int]] = {}
    unseen: dict[str, list[str]] = {}
    for n in NUMERIC:
        col = frame[n].to_numpy(dtype=np.float64)
        missing[n] = 0  # empty numeric cells are rejected, so an accepted file has none
        # Population std (ddof=0): finite even for one row, so the profile stays valid JSON.
        numeric[n] = {
            "min": float(col.min()),
            "max": float(col.max()),
            "mean": float(col.mean()),
            "std": float(col.std()),
        }
    for n in CATEGORICAL:
        counts = {str(v): int(c) for v, c in frame[n].value_counts().items()}
        missing[n] = counts.pop("", 0)
        categories[n] = counts
        documented = set(BY_NAME[n].categories)
        extra = sorted(v for v in categories[n] if v not in documented)
        if extra:
            unseen[n] = extra
    return {
        "missing": {n: missing[n] for n in FEATURE_NAMES},
        "numeric": numeric,
        "categories": categories,
        "unseen_categories": unseen,
    }


def drift_warnings(profile: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    """Sentences naming where ``profile`` differs strongly from ``reference`` (both from
    ``profile_frame``); empty when nothing stands out. Columns absent from either are skipped."""
    warnings: list[str] = []
    ref_cats = reference.get("categories", {})
    for col, counts in profile.get("categories", {}).items():
        if col not in ref_cats:
            continue
        new = [v for v in counts if v not in ref_cats[col]]
        for v in sorted(new):
            warnings.append(f"{col}: category {v!r} ({counts[v]} rows) never occurs in the reference data")
    ref_num = reference.get("numeric", {})
    for col, stats in profile.get("numeric", {}).items():
        ref = ref_num.get(col)
        if not ref:
            continue
        msg = _numeric_drift(col, stats, ref)
        if msg:
            warnings.append(msg)
    return warnings


def _numeric_drift(col: str, stats: Mapping[str, float], ref: Mapping[str, float]) -> str | None:
    shift = abs(stats["mean"] - ref["mean"])
    if ref["std"] > 0 and shift > _DRIFT_STD * ref["std"]:
        return (
            f"{col}: mean {stats['mean']:.6g} is {shift / ref['std']:.1f} reference standard deviations "
            f"from the reference mean {ref['mean']:.6g}"
        )
    if ref["std"] == 0 and shift > 0:
        return f"{col}: mean {stats['mean']:.6g} differs from the constant reference value {ref['mean']:.6g}"
    width = stats["max"] - stats["min"]
    overlap = min(stats["max"], ref["max"]) - max(stats["min"], ref["min"])
    outside = overlap < 0 if width == 0 else overlap < _DRIFT_OVERLAP * width
    if outside:
        return (
            f"{col}: range {stats['min']:.6g}..{stats['max']:.6g} lies mostly outside the reference "
            f"range {ref['min']:.6g}..{ref['max']:.6g}"
        )
    return None
