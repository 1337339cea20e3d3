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

Memory stays flat in the file size (the 1,000,000-row benchmark in ``benchmarks/ingest.py``):
the file is validated in blocks of about ``CHUNK_BYTES`` that end at a line end, so only one
block is ever held as text, cells and masks; what is kept of the whole file is the normalised
result (numbers as float64/int64, category cells as references to one string object per
distinct value) and its canonical CSV. Consequences of reading in blocks:

* The first bad line is named wherever it is; when a column has bad values, the rest of the file
  is still read to count them (``rows_affected``); if a later block cannot be read at all the
  count becomes "at least N".
* A UTF-8 file is decided block by block; a block that is not UTF-8 switches the file to cp1252
  only if every byte before it was ASCII (then both read the same). After non-ASCII UTF-8 text,
  it is rejected as mixed encodings instead of re-reading the earlier text as mojibake.
* UTF-16 is decoded whole before validation (it cannot be cut at a line end before decoding).
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import chain
from typing import IO, Any, BinaryIO

import numpy as np
import pandas as pd

from shared.contract import BY_NAME, CATEGORICAL, DEFAULT_LABEL, FEATURE_NAMES, LABEL_VALUES, MAX_INTEGER, NUMERIC
from shared.errors import ConfigError, DataError, shown

# Text validated at once: small enough that the per-block arrays and cells (about 20x the bytes)
# stay well under the memory target, large enough that per-block overhead is negligible.
CHUNK_BYTES = 4 << 20
_DELIMITERS = (",", ";")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+$")
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# Beyond 2**53 a float no longer holds every integer (shared.contract.MAX_INTEGER, the scoring
# contract's bound too).
_MAX_INT = MAX_INTEGER
# Drift thresholds: a mean further than this many reference standard deviations is a shift, and
# a range sharing less than this fraction with the reference range lies "mostly outside".
_DRIFT_STD = 3.0
_DRIFT_OVERLAP = 0.5
# The longest value an error message quotes (column names, cells), see ``shown``.
_SHOWN_NAME = 40
_LISTED = 8

_NO, _YES = LABEL_VALUES
_LABELS = np.array(LABEL_VALUES, dtype=object)
_OUT_COLUMNS = (*FEATURE_NAMES, DEFAULT_LABEL)
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
    # Written once while hashing, one piece per block; kept so that registering the file does not
    # serialise it again.
    _canonical: tuple[bytes, ...] = field(repr=False, compare=False)

    def to_canonical_csv(self) -> bytes:
        """The normalised file whose sha256 is ``content_hash``: comma-separated, header row,
        ``\\n`` line ends, contract column order, floats in shortest round-trip form."""
        return b"".join(self._canonical)

    def write_canonical(self, out: IO[bytes]) -> int:
        """Write ``to_canonical_csv()`` to ``out`` piece by piece (no second copy); returns bytes."""
        return sum(out.write(piece) for piece in self._canonical)


def canonical_csv(frame: pd.DataFrame) -> bytes:
    """Comma-separated, header row, ``\\n`` line ends, minimal quoting, floats as ``repr``."""
    return _canonical_text({str(n): frame[n].to_numpy() for n in frame.columns}, header=True)


def _canonical_text(columns: Mapping[str, np.ndarray], *, header: bool) -> bytes:
    # Formats each distinct value once and joins rows with C-level str.join: 4x faster than
    # DataFrame.to_csv on the 33k-row file, and byte-identical to it for this data. Blocks written
    # without a header concatenate to the text of the whole frame.
    text_columns = []
    for values in columns.values():
        codes, uniques = pd.factorize(values)
        text_columns.append(_value_text(uniques, values.dtype.kind)[codes])
    return _join_rows(list(columns) if header else None, text_columns)


def _value_text(uniques: np.ndarray, kind: str) -> np.ndarray:
    """The canonical text of each value: floats as ``repr``, integers plain, strings quoted if needed."""
    if kind == "f":
        text = [repr(float(v)) for v in uniques]
    elif kind in "iu":
        text = [str(int(v)) for v in uniques]
    else:
        text = [_quote(str(v)) for v in uniques]
    return np.array(text, dtype=object)


def _join_rows(header: list[str] | None, text_columns: list[np.ndarray]) -> bytes:
    lines = list(map(",".join, zip(*text_columns, strict=True)))
    if header is not None:
        lines.insert(0, ",".join(_quote(str(n)) for n in header))
    if not lines:
        return b""
    return ("\n".join(lines) + "\n").encode("utf-8")


def _quote(value: str) -> str:
    # The csv module's QUOTE_MINIMAL rule (also pandas'): quote only what would otherwise break a row.
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


# --------------------------------------------------------------------------------------------
# reading and decoding, block by block


class _TooLarge(DataError):
    """Over the size limit: always the reason given, whatever else is wrong with the file."""


def _too_large(size: int | None, max_bytes: int) -> DataError:
    what = f"{size:,} bytes" if size is not None else f"more than {max_bytes:,} bytes"
    return _TooLarge(
        f"file is too large: {what}, the limit is {max_bytes:,} bytes",
        value=size,
        expected=f"at most {max_bytes} bytes",
    )


def _not_text(reason: str, **details: Any) -> DataError:
    return DataError(f"not a text CSV file: {reason}", expected="a UTF-8 (or cp1252) text CSV file", **details)


def _line_cut(buf: bytes | bytearray, start: int, end: int) -> int:
    """Index just past the last line end in ``buf[start:end]``, or -1. A lone CR (old Mac files)
    counts only where the byte after it is known and is not LF, so CRLF is never cut in two."""
    cut = buf.rfind(b"\n", start, end)
    if cut >= 0:
        return cut + 1
    cr = buf.rfind(b"\r", start, end - 1)
    return cr + 1 if cr >= 0 else -1


def _blocks_of_bytes(raw: bytes, chunk: int) -> Iterator[bytes]:
    pos, n = 0, len(raw)
    while pos < n:
        end = pos + chunk
        cut = -1
        while end < n:
            cut = _line_cut(raw, pos, end)
            if cut >= 0:
                break
            end += chunk  # one line longer than a block: the block grows to its end
        if end >= n:
            cut = n
        yield raw[pos:cut]
        pos = cut


def _blocks_of_stream(stream: BinaryIO, max_bytes: int, chunk: int) -> Iterator[bytes]:
    buf = bytearray()
    total = 0
    while True:
        # Never more than one byte past the limit: enough to know it was exceeded.
        part = stream.read(min(chunk, max_bytes + 1 - total))
        if not part:
            if buf:
                yield bytes(buf)
            return
        total += len(part)
        if total > max_bytes:
            raise _too_large(None, max_bytes)
        buf += part
        if len(buf) >= chunk:
            cut = _line_cut(buf, 0, len(buf))
            if cut > 0:
                yield bytes(buf[:cut])
                del buf[:cut]


def _text_pieces(text: str, chunk: int) -> Iterator[str]:
    pos, n = 0, len(text)
    while pos < n:
        end = pos + chunk
        if end >= n:
            cut = n
        else:
            found = text.rfind("\n", pos, end)
            if found < 0:
                found = text.find("\n", end)
            cut = n if found < 0 else found + 1
        yield text[pos:cut]
        pos = cut


class _Decoder:
    """Turns blocks of bytes into blocks of text and remembers what it found."""

    def __init__(self) -> None:
        self.encoding = "utf-8"
        self.had_bom = False
        self._non_ascii = False  # non-ASCII UTF-8 text seen in an earlier block
        self._lines = 0  # line ends in the blocks before the current one

    def texts(self, blocks: Iterator[bytes], chunk: int) -> Iterator[str]:
        first = next(blocks, None)
        if first is None:
            return
        if first.startswith(_UTF16_BOMS):
            raw = b"".join(chain([first], blocks))
            try:
                text = raw.decode("utf-16")
            except UnicodeDecodeError as err:
                before = raw[: err.start - err.start % 2].decode("utf-16", "replace")
                line = _line_ends(before) + 1
                raise _not_text(
                    f"it starts with a UTF-16 mark but byte {err.start} (line {line}) is not UTF-16",
                    line=line,
                    byte=err.start,
                ) from err
            self.encoding, self.had_bom = "utf-16", True
            # DOS tools end text files with Ctrl-Z; harmless, unlike any other control character.
            yield from _text_pieces(text.rstrip("\x1a"), chunk)
            return
        offset = 0
        previous: str | None = None
        for block in chain([first], blocks):
            start = offset
            offset += len(block)
            # NUL bytes mean binary (zip/xlsx/gzip/parquet...) or UTF-16 without a BOM: neither is readable here.
            nul = block.find(b"\x00")
            if nul >= 0:
                at, line = start + nul, self._line_of(block, nul)
                raise _not_text(
                    f"it contains NUL bytes, the first at byte {at} (line {line}): a binary file such as"
                    " .xlsx, .zip or .gz, or UTF-16 without its byte order mark?",
                    line=line,
                    byte=at,
                )
            if start == 0 and block.startswith(_UTF8_BOM):
                self.had_bom = True
                block, start = block[3:], 3
            text = self._decode(block, start)
            self._lines += _line_ends(block)
            if previous is not None:
                yield previous
            previous = text
        if previous is not None:
            yield previous.rstrip("\x1a")

    def _decode(self, block: bytes, start: int) -> str:
        if self.encoding == "cp1252":
            return self._cp1252(block, start)
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as err:
            at, line = start + err.start, self._line_of(block, err.start)
            if self.had_bom:
                raise _not_text(
                    f"it has a UTF-8 mark but byte {at} (line {line}) is not UTF-8", line=line, byte=at
                ) from err
            if self._non_ascii:
                raise _not_text(
                    f"byte {at} (line {line}) is not UTF-8 although the text before it is UTF-8 (a file"
                    " joined from parts in different encodings?)",
                    line=line,
                    byte=at,
                ) from err
            self.encoding = "cp1252"
            return self._cp1252(block, start)
        if not self._non_ascii and not block.isascii():
            self._non_ascii = True
        return text

    def _line_of(self, block: bytes, pos: int) -> int:
        """The 1-based file line of byte ``pos`` of ``block`` (blocks end at line ends)."""
        return self._lines + _line_ends(block[:pos]) + 1

    def _cp1252(self, block: bytes, start: int) -> str:
        try:
            return block.decode("cp1252")
        except UnicodeDecodeError as err:
            at, line = start + err.start, self._line_of(block, err.start)
            raise _not_text(
                f"byte {at} (line {line}) is neither UTF-8 nor cp1252 text", line=line, byte=at
            ) from err


def _line_ends(text: bytes | str) -> int:
    """Line ends in ``text``: LF, CRLF and a lone CR (old Mac files) each end one line."""
    if isinstance(text, bytes):
        return text.count(b"\n") + text.count(b"\r") - text.count(b"\r\n")
    return text.count("\n") + text.count("\r") - text.count("\r\n")


# --------------------------------------------------------------------------------------------
# record structure


@dataclass(frozen=True)
class _Records:
    """The lines of a block of text, computed on all its bytes at once (no loop per row)."""

    starts: np.ndarray  # byte offset of each line
    fields: np.ndarray  # fields per line (delimiters outside quotes + 1)
    content: np.ndarray  # True if the line holds anything besides spaces, tabs, quotes, ',' and ';'


def _records(b: np.ndarray, delimiter: str, line0: int = 0) -> _Records:
    """Scan the UTF-8 bytes ``b`` (``\n`` line ends, not blank) whose first line is file line
    ``line0 + 1``: one record per line."""
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
            line = line0 + int(np.flatnonzero(odd)[0]) + 1
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
    return _Records(starts=starts, fields=fields, content=content)


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
    duplicated = [shown(n, _SHOWN_NAME) for n, c in seen.items() if c > 1]
    if duplicated:
        raise DataError(
            "duplicated column(s) in the header: " + _listed([repr(n) for n in duplicated]),
            column=duplicated[0],
            duplicated=duplicated[:_LISTED],
            line=header_line,
            expected="each column once",
        )
    missing = [n for n in expected_cols if n not in seen]
    unexpected = [
        shown(n, _SHOWN_NAME) if n else f"(unnamed column {i + 1})"
        for i, n in enumerate(names)
        if n not in expected_cols
    ]
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append("missing column(s): " + _listed(missing))
    if unexpected:
        parts.append("unknown column(s): " + _listed(unexpected))
    # A case slip is the likeliest cause of a missing name: point at it rather than say "missing".
    lower = {n.lower(): n for n in names}
    hints = [f"{lower[m.lower()]!r} should be {m!r}" for m in missing if m.lower() in lower]
    if hints:
        parts.append("column names are case-sensitive: " + _listed(hints))
    raise DataError(
        "; ".join(parts),
        column=(missing or unexpected)[0],
        missing=missing or None,
        unexpected=unexpected[:_LISTED] or None,
        line=header_line,
        expected=expected,
    )


def _listed(items: list[str]) -> str:
    """At most ``_LISTED`` items, then how many more (a header of 10,000 junk names stays short)."""
    more = len(items) - _LISTED
    return ", ".join(items[:_LISTED]) + (f" and {more} more" if more > 0 else "")


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
            # From 2**52 on a float64 rounds to whole numbers: "9007199254740993" reads as 2**53.
            # Those rare cells are checked exactly (out of range, or not a whole number).
            near = np.flatnonzero(~bad & (np.abs(coerced) >= _MAX_INT // 2))
        for i in near:
            exact = _decimal_or_none(cells.uniques[i])
            bad[i] = exact is not None and (abs(exact) > _MAX_INT or exact != exact.to_integral_value())
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


def _decimal_or_none(v: str) -> Decimal | None:
    """The exact value of a number cell (float() rounds beyond 2**53), None when unreadable."""
    try:
        exact = Decimal(v.strip())
    except (InvalidOperation, ValueError):
        return None
    return exact if exact.is_finite() else None


def _beyond_max_int(v: str) -> bool:
    exact = _decimal_or_none(v)
    return exact is not None and abs(exact) > _MAX_INT


def _float_or_none(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Problem:
    """The first bad value of a column; ``build(rows, at_least)`` makes its error."""

    line: int
    column: str
    rows: int
    build: Callable[[int, bool], DataError]


def _affected(rows: int, at_least: bool) -> str:
    if at_least:
        return f" (at least {rows} rows affected, this is the first)"
    return f" ({rows} rows affected, this is the first)" if rows > 1 else ""


def _numeric_problem(name: str, cells: _Cells, bad: np.ndarray, lines: np.ndarray, delimiter: str) -> _Problem:
    kind = BY_NAME[name].kind
    what = "an integer" if kind == "integer" else "a number"
    pos, count = cells.first(bad)
    line = int(lines[pos])
    full = str(cells.uniques[cells.codes[pos]])
    value = shown(full)
    number = _float_or_none(full) if not _DECIMAL_COMMA.match(full) else None
    if value == "":
        msg, expected = "value is missing", what
    elif _DECIMAL_COMMA.match(value):
        msg = f"{value!r} uses a decimal comma"
        expected = f"{what} written with a decimal point, e.g. {value.replace(',', '.')}"
    elif kind == "integer" and number is not None and math.isfinite(number) and (abs(number) > _MAX_INT or _beyond_max_int(full)):
        msg, expected = f"{value!r} is out of range", f"an integer between -{_MAX_INT} and {_MAX_INT}"
    elif kind == "integer" and number is not None and math.isfinite(number):
        msg, expected = f"{value!r} is not a whole number", "an integer"
    else:
        msg, expected = f"{value!r} is not {what}", what
    if delimiter == ";" and "," in value:
        expected += " (this ';' file must use '.' as the decimal separator)"

    def build(rows: int, at_least: bool) -> DataError:
        return DataError(
            f"column {name!r}, line {line}: {msg}{_affected(rows, at_least)}",
            column=name,
            line=line,
            value=value,
            expected=expected,
            rows_affected=rows,
        )

    return _Problem(line, name, count, build)


def _label_problem(label: str, cells: _Cells, bad: np.ndarray, lines: np.ndarray) -> _Problem:
    pos, count = cells.first(bad)
    line = int(lines[pos])
    value = shown(str(cells.uniques[cells.codes[pos]]))
    what = "is missing" if value == "" else f"{value!r} is not yes or no"

    def build(rows: int, at_least: bool) -> DataError:
        return DataError(
            f"label column {label!r}, line {line}: {what}{_affected(rows, at_least)}",
            column=label,
            line=line,
            value=value,
            expected="yes or no",
            rows_affected=rows,
        )

    return _Problem(line, label, count, build)


def _label_flags(cells: _Cells) -> tuple[np.ndarray, np.ndarray]:
    """(is "yes", is neither yes nor no) per distinct label cell."""
    lower = np.array([v.lower() for v in cells.uniques], dtype=object)
    return lower == _YES, ~np.isin(lower, LABEL_VALUES)


# --------------------------------------------------------------------------------------------
# parse


def parse_csv(
    data: bytes | bytearray | memoryview | BinaryIO,
    *,
    label: str = DEFAULT_LABEL,
    max_bytes: int,
    size: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> ParsedDataset:
    """Validate and normalise one dropped CSV file; raises ``DataError`` naming what to fix.

    ``size`` (when known, e.g. a blob's length) is checked before any byte is read; a stream is
    also cut off after ``max_bytes``. ``label`` names the label column in the file; it is renamed
    to ``y`` in the result. The file is validated in blocks of about ``chunk_bytes`` (see the
    module docstring); the result does not depend on the block size.
    """
    label = label.strip()
    if not label or label in BY_NAME:
        raise ConfigError(
            f"setting BANKML_LABEL_COLUMN must name a non-feature column, got {label!r}", setting="BANKML_LABEL_COLUMN"
        )
    if size is not None and size > max_bytes:
        raise _too_large(size, max_bytes)
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise _too_large(len(raw), max_bytes)
        blocks = _blocks_of_bytes(raw, chunk_bytes)
        # At most one data row per line: the result's arrays are allocated once, at their size.
        rows_hint: int | None = max(raw.count(b"\n"), raw.count(b"\r")) + 1
    else:
        blocks = _blocks_of_stream(data, max_bytes, chunk_bytes)
        rows_hint = None
    decoder = _Decoder()
    parser = _Parser(label, rows_hint)
    texts = decoder.texts(blocks, chunk_bytes)
    while True:
        try:
            text = next(texts, None)
            if text is None:
                break
            parser.feed(text)
        except _TooLarge:
            raise
        except DataError:
            if parser.problem is None:
                raise
            # A bad value was found earlier: that is the reason; this block ends the count.
            parser.count_is_lower_bound = True
            break
    return parser.finish(decoder)


class _Parser:
    """Validates blocks of text in file order and keeps the normalised result of each."""

    def __init__(self, label: str, rows_hint: int | None = None) -> None:
        self.label = label
        self.known = {*FEATURE_NAMES, label}
        self.lines = 0  # lines before the next block
        self.any_text = False  # a character other than whitespace seen before the header
        self.delimiter: str | None = None
        self.ncols = 0
        self.header_line = 0
        self.names: list[str] = []
        self.rows = 0
        self.balance = dict.fromkeys(LABEL_VALUES, 0)
        # The normalised columns, filled block by block. Allocated once when the row count is known
        # roughly (bytes input), else grown by doubling: small per-block pieces joined at the end
        # would leave their freed memory behind in the heap and cost a second copy.
        self.rows_hint = rows_hint
        self.columns: dict[str, np.ndarray] = {}
        # One str object per distinct category value, shared by every block's cells.
        self.strings: dict[str, dict[str, str]] = {n: {} for n in CATEGORICAL}
        self.canonical: list[bytes] = []
        self.sha = hashlib.sha256()
        self.problem: _Problem | None = None
        self.problem_rows = 0
        self.count_is_lower_bound = False

    def feed(self, text: str) -> None:
        if "\r" in text:
            # One line terminator for both the parser and the record scan (CRLF and old-Mac CR).
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if not text:
            return
        line0 = self.lines
        self.lines += text.count("\n") + (not text.endswith("\n"))
        # Delimiters, quotes and line ends are ASCII, so the UTF-8 bytes serve every encoding read.
        b = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        control = ((b < 32) & (b != ord("\t")) & (b != ord("\n"))) | (b == 127)
        if control.any():
            at = int(np.flatnonzero(control)[0])
            line = line0 + int(np.count_nonzero(b[:at] == ord("\n"))) + 1
            raise _not_text(f"control character {chr(b[at])!r} on line {line}", line=line)
        header_block = self.delimiter is None
        if header_block:
            # The header is the first line holding more than whitespace, quotes and delimiters,
            # the same rule _records uses for "content", so both pick the same line.
            first = re.search(r'[^ \t\n",;]', text)
            if first is None:
                self.any_text = self.any_text or bool(text.strip(" \t\n\ufeff"))
                return
            header_start = text.rfind("\n", 0, first.start()) + 1
            header_end = text.find("\n", header_start)
            header_text = text[header_start : header_end if header_end >= 0 else len(text)]
            self.delimiter = _sniff_delimiter(header_text, line0 + text.count("\n", 0, header_start) + 1, self.known)
        assert self.delimiter is not None
        rec = _records(b, self.delimiter, line0)
        if header_block:
            header_idx = int(np.flatnonzero(rec.content)[0])
            self.header_line = line0 + header_idx + 1
            self.ncols = int(rec.fields[header_idx])
            body = header_idx + 1
        else:
            header_idx, body = -1, 0
        wrong = rec.content[body:] & (rec.fields[body:] != self.ncols)
        if wrong.any():
            pos = int(np.flatnonzero(wrong)[0])
            line = line0 + body + pos + 1
            got = int(rec.fields[body + pos])
            hint = (
                " (a decimal comma or an unquoted ',' inside a value?)"
                if got > self.ncols and self.delimiter == ","
                else ""
            )
            raise DataError(
                f"line {line} has {got} fields, the header has {self.ncols}{hint}",
                line=line,
                value=got,
                expected=f"{self.ncols} fields separated by {self.delimiter!r}",
            )
        kept = np.flatnonzero(rec.content[body:]) + body  # data lines of this block
        wanted = np.concatenate(([header_idx], kept)) if header_block else kept
        if not wanted.size:
            return
        table = self._read(b, rec.starts, wanted)
        if header_block:
            self.names = [_clean_name(str(n)) for n in table.iloc[0]]
            _check_header(self.names, self.label, self.header_line)
            table = table.iloc[1:]
        table.columns = self.names
        if table.empty:
            return
        self._rows(table, kept + line0 + 1)

    def _read(self, b: np.ndarray, starts: np.ndarray, wanted: np.ndarray) -> pd.DataFrame:
        """The lines ``wanted`` (header and data lines; blank ones left out) as a table of str."""
        ends = np.append(starts[1:], b.size)
        if wanted[-1] - wanted[0] + 1 == wanted.size:  # one run of lines (the usual case): one slice
            buf = b[starts[wanted[0]] : ends[wanted[-1]]].tobytes()
        else:
            raw = b.tobytes()
            buf = b"".join(raw[starts[i] : ends[i]] for i in wanted)
        if not buf.endswith(b"\n"):
            buf += b"\n"
        try:
            table = pd.read_csv(
                io.BytesIO(buf),
                sep=self.delimiter,
                header=None,
                names=range(self.ncols),
                dtype=str,
                encoding="utf-8",
                engine="c",
                quotechar='"',
                skipinitialspace=True,
                keep_default_na=False,  # "", "NA" and "null" stay text: only the contract decides what is missing
                na_filter=False,
                skip_blank_lines=False,  # row i is wanted line i, so line numbers stay exact
            )
        except (pd.errors.ParserError, ValueError) as err:  # the record scan above should leave none
            raise DataError(f"cannot read the file as CSV: {err}", expected="a well-formed CSV file") from err
        if len(table) != wanted.size:
            raise DataError(
                "cannot read the file as CSV: stray quotes make its lines ambiguous",
                expected='values quoted with " only around the whole value',
            )
        return table

    def _rows(self, table: pd.DataFrame, lines: np.ndarray) -> None:
        """Check and keep one block's data rows; ``lines`` holds each row's 1-based file line."""
        label = self.label
        if self.problem is not None:
            # The file is rejected already: only count the rows that share the reported fault.
            cells = _Cells.of(table[self.problem.column])
            bad = _label_flags(cells)[1] if self.problem.column == label else _numbers(self.problem.column, cells)[1]
            self.problem_rows += int(bad[cells.codes].sum())
            return
        cells = {n: _Cells.of(table[n]) for n in (*FEATURE_NAMES, label)}
        numbers: dict[str, np.ndarray] = {}
        problems = []
        for n in NUMERIC:
            numbers[n], bad = _numbers(n, cells[n])
            if bad.any():
                problems.append(_numeric_problem(n, cells[n], bad, lines, self.delimiter or ","))
        yes, bad_label = _label_flags(cells[label])
        if bad_label.any():
            problems.append(_label_problem(label, cells[label], bad_label, lines))
        if problems:
            # Several columns may be wrong: name the first bad line, as a person reads the file.
            self.problem = min(problems, key=lambda p: p.line)
            self.problem_rows = self.problem.rows
            return

        # Values and their canonical text both come from the distinct cells: the text of a block is
        # what _canonical_text would write for its rows, without factorizing them again.
        out: dict[str, np.ndarray] = {}
        text: list[np.ndarray] = []
        for n in FEATURE_NAMES:
            c = cells[n]
            kind = BY_NAME[n].kind
            if kind == "string":
                shared = self.strings[n]
                uniques = np.array([shared.setdefault(u, u) for u in c.uniques], dtype=object)
            else:
                uniques = numbers[n].astype(np.int64) if kind == "integer" else numbers[n]
            out[n] = uniques[c.codes]
            text.append(_value_text(uniques, uniques.dtype.kind)[c.codes])
        y_codes = yes.astype(np.intp)[cells[label].codes]
        y = _LABELS[y_codes]
        out[DEFAULT_LABEL] = y
        text.append(y)
        n_yes = int(np.count_nonzero(y_codes))
        self.balance[_YES] += n_yes
        self.balance[_NO] += len(y) - n_yes
        self._store(out)
        piece = _join_rows(list(_OUT_COLUMNS) if not self.canonical else None, text)
        self.sha.update(piece)
        self.canonical.append(piece)
        self.rows += len(y)

    def _store(self, out: dict[str, np.ndarray]) -> None:
        end = self.rows + len(out[DEFAULT_LABEL])
        size = len(self.columns[DEFAULT_LABEL]) if self.columns else 0
        if end > size:
            size = max(end, 2 * size, self.rows_hint or 0)
            old, self.columns = self.columns, {}
            for n, values in out.items():
                self.columns[n] = np.empty(size, dtype=values.dtype)
                if old:
                    self.columns[n][: self.rows] = old.pop(n)[: self.rows]
        for n, values in out.items():
            self.columns[n][self.rows : end] = values

    def finish(self, decoder: _Decoder) -> ParsedDataset:
        if self.problem is not None:
            raise self.problem.build(self.problem_rows, self.count_is_lower_bound)
        if self.delimiter is None:
            if self.any_text:
                raise DataError("file is empty: it holds only delimiters", expected="a header line and data rows")
            raise DataError("file is empty", expected="a header line and data rows")
        if self.rows == 0:
            raise DataError(
                "no data rows: the file has a header only", line=self.header_line, expected="at least one data row"
            )
        _check_classes(self.balance, self.label)
        frame = pd.DataFrame({n: self.columns[n][: self.rows] for n in _OUT_COLUMNS}, copy=False)
        self.columns = {}
        column_types = {n: BY_NAME[n].kind for n in FEATURE_NAMES} | {DEFAULT_LABEL: "string"}
        return ParsedDataset(
            frame=frame,
            rows=self.rows,
            content_hash=self.sha.hexdigest(),
            column_types=column_types,
            class_balance=dict(self.balance),
            profile=profile_frame(frame),
            delimiter=self.delimiter,
            encoding=decoder.encoding,
            had_bom=decoder.had_bom,
            _canonical=tuple(self.canonical),
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
        # Population std (ddof=0): finite even for one row, so the profile stays valid JSON. Mean
        # and std are taken of the values scaled into [-1, 1]: cells near the float64 limit (1e308
        # is a valid number) would overflow the sum to inf otherwise.
        low, high = float(col.min()), float(col.max())
        scale = max(abs(low), abs(high)) or 1.0
        scaled = col / scale
        numeric[n] = {"min": low, "max": high, "mean": float(scaled.mean()) * scale, "std": float(scaled.std()) * scale}
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
