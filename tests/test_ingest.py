"""shared.ingest: every accepted variant and every rejection of a dropped CSV file.

Inputs are generated here (no rows of the real data are in the repository); the real files are
read only through BANKML_REAL_DATA / BANKML_REAL_DATA_UCI.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.contract import BY_NAME, CATEGORICAL, FEATURE_NAMES, FEATURES, MAX_INTEGER, NUMERIC
from shared.datagen import generate_frame
from shared.errors import ConfigError, DataError
from shared.ingest import MIN_CLASS_ROWS, ParsedDataset, drift_warnings, parse_csv, profile_frame

COLUMNS = (*FEATURE_NAMES, "y")
CP1252_UNDEFINED = {0x81, 0x8D, 0x8F, 0x90, 0x9D}
LIMIT = 10_000_000

# --------------------------------------------------------------------------------------------
# helpers


def valid_rows(n: int = 40) -> list[dict[str, str]]:
    """``n`` plausible rows as text; every documented category occurs, every 4th row is "yes"."""
    cycles = {
        "emp.var.rate": ("1.1", "1.4", "-1.8", "-2.9"),
        "cons.price.idx": ("93.994", "92.893", "94.465"),
        "cons.conf.idx": ("-36.4", "-46.2", "-42.7"),
        "nr.employed": ("5191.0", "5099.1", "5228.1"),
    }
    rows = []
    for i in range(n):
        row = {c.name: c.categories[i % len(c.categories)] for c in FEATURES if c.kind == "string"}
        row |= {name: values[i % len(values)] for name, values in cycles.items()}
        row |= {
            "age": str(20 + i % 60),
            "duration": str(5 + 37 * i),
            "campaign": str(1 + i % 5),
            "pdays": "999" if i % 3 else str(i % 20),
            "previous": str(i % 3),
            "euribor3m": repr(round(0.634 + (i * 0.137) % 4.4, 3)),
            "y": "yes" if i % 4 == 0 else "no",
        }
        rows.append(row)
    return rows


def render(
    rows: list[dict[str, str]],
    *,
    columns: tuple[str, ...] | list[str] = COLUMNS,
    header: list[str] | None = None,
    sep: str = ",",
    quote_strings: bool = False,
    quote_header: bool = False,
    eol: str = "\n",
) -> str:
    """CSV text written by hand (not by pandas), so each test controls the exact format."""
    strings = {*CATEGORICAL, "y"}

    def cell(col: str, value: str) -> str:
        return f'"{value}"' if quote_strings and col in strings else value

    names = list(header if header is not None else columns)
    head = sep.join(f'"{n}"' if quote_header else n for n in names)
    body = [sep.join(cell(c, r[c]) for c in columns) for r in rows]
    return eol.join([head, *body]) + eol


def parse(data: bytes | io.BytesIO, **kw: object) -> ParsedDataset:
    return parse_csv(data, max_bytes=kw.pop("max_bytes", LIMIT), **kw)  # type: ignore[arg-type]


def rejected(data: bytes | io.BytesIO, **kw: object) -> DataError:
    with pytest.raises(DataError) as info:
        parse(data, **kw)
    return info.value


def with_cell(rows: list[dict[str, str]], index: int, column: str, value: str) -> list[dict[str, str]]:
    out = [dict(r) for r in rows]
    out[index][column] = value
    return out


def line_of(index: int) -> int:
    # The header is line 1, row 0 is line 2.
    return index + 2


PLAIN = render(valid_rows()).encode()


# --------------------------------------------------------------------------------------------
# accepted


def test_plain_csv_is_normalised_to_the_contract() -> None:
    p = parse(PLAIN)
    assert p.rows == 40 and len(p.frame) == 40
    assert list(p.frame.columns) == list(COLUMNS)
    for col in FEATURES:
        expected = {"integer": np.int64, "number": np.float64, "string": object}[col.kind]
        assert p.frame[col.name].dtype == expected, col.name
    assert p.frame["duration"].iloc[3] == 5 + 37 * 3
    assert p.frame["nr.employed"].iloc[0] == 5191.0
    assert set(p.frame["y"]) == {"yes", "no"}
    assert (p.delimiter, p.encoding, p.had_bom) == (",", "utf-8", False)
    assert p.class_balance == {"no": 30, "yes": 10}
    assert p.column_types["age"] == "integer"
    assert p.column_types["euribor3m"] == "number"
    assert p.column_types["job"] == "string"
    assert p.column_types["y"] == "string"


def test_bom_quoted_header_and_label_with_trailing_space() -> None:
    header = [*FEATURE_NAMES, "y "]
    text = render(valid_rows(), header=header, quote_header=True, quote_strings=True)
    p = parse(codecs.BOM_UTF8 + text.encode())
    assert p.rows == 40
    assert p.had_bom and p.encoding == "utf-8"
    assert p.content_hash == parse(PLAIN).content_hash


def test_uci_format_semicolon_with_quoted_strings() -> None:
    text = render(valid_rows(60), sep=";", quote_strings=True, quote_header=True)
    p = parse(text.encode())
    assert p.rows == 60 and p.delimiter == ";"
    assert p.frame["job"].iloc[0] == "admin."


def test_whitespace_around_values_crlf_and_trailing_blank_lines() -> None:
    rows = [{k: f"  {v} " for k, v in r.items()} for r in valid_rows()]
    p = parse((render(rows, eol="\r\n") + "\r\n\r\n").encode())
    assert p.rows == 40
    assert p.frame["marital"].iloc[0] == "divorced"
    assert p.content_hash == parse(PLAIN).content_hash


def test_spaces_around_quoted_values() -> None:
    text = render(valid_rows(), sep=";", quote_strings=True, quote_header=True).replace(";", "  ;  ")
    assert parse(text.encode()).content_hash == parse(PLAIN).content_hash


def test_dos_end_of_file_marker() -> None:
    assert parse(PLAIN + b"\x1a").content_hash == parse(PLAIN).content_hash


def test_old_mac_line_ends() -> None:
    assert parse(render(valid_rows(), eol="\r").encode()).content_hash == parse(PLAIN).content_hash


def test_blank_and_delimiter_only_lines_are_skipped_and_still_counted() -> None:
    lines = render(valid_rows()).splitlines()
    lines.insert(0, "")  # a blank line before the header
    lines.insert(4, "")
    lines.insert(6, "," * 20)  # what spreadsheet exports leave behind
    lines.insert(7, " ; ;")
    assert parse(("\n".join(lines) + "\n").encode()).rows == 40
    # A bad value after the skipped lines still names its physical line.
    lines[12] = "old" + lines[12][lines[12].index(",") :]
    err = rejected(("\n".join(lines) + "\n").encode())
    assert (err.details["column"], err.details["line"], err.details["value"]) == ("age", 13, "old")


def test_same_data_in_other_encodings_and_delimiters_hashes_the_same() -> None:
    rows = valid_rows()
    rows[1]["job"] = "técnico"  # a non-ASCII value makes the encodings actually differ
    reference = parse(render(rows).encode())
    variants = {
        "bom-semicolon-crlf": codecs.BOM_UTF8 + render(rows, sep=";", quote_strings=True, eol="\r\n").encode(),
        "cp1252": render(rows).encode("cp1252"),
        "utf-16": render(rows).encode("utf-16"),
    }
    for name, data in variants.items():
        p = parse(data)
        assert p.content_hash == reference.content_hash, name
        assert p.frame["job"].iloc[1] == "técnico", name
    assert parse(variants["cp1252"]).encoding == "cp1252"
    assert parse(variants["utf-16"]).encoding == "utf-16"
    # Different data, different hash.
    assert parse(render(with_cell(rows, 0, "age", "21")).encode()).content_hash != reference.content_hash


def test_number_spellings_of_the_same_value_hash_the_same() -> None:
    rows = valid_rows()
    respelled = [dict(r) for r in rows]
    for r in respelled:
        r["nr.employed"] = r["nr.employed"].removesuffix(".0")  # 5191.0 -> 5191, as in the real files
        r["age"] = r["age"] + ".0"  # an integer column exported through a float dtype
        r["euribor3m"] = "+" + r["euribor3m"] + "0"
    respelled[0]["cons.conf.idx"] = "-0.0"  # negative zero is zero: no different bytes
    rows[0]["cons.conf.idx"] = "0"
    assert parse(render(respelled).encode()).content_hash == parse(render(rows).encode()).content_hash


def test_columns_in_any_order_come_out_in_contract_order() -> None:
    shuffled = tuple(reversed(COLUMNS))
    p = parse(render(valid_rows(), columns=shuffled).encode())
    assert list(p.frame.columns) == list(COLUMNS)
    assert p.content_hash == parse(PLAIN).content_hash


def test_label_column_name_and_values_are_normalised() -> None:
    rows = valid_rows()
    for i, r in enumerate(rows):
        r["target"] = [" Yes", "NO ", "no", "yes"][i % 4]
    p = parse(render(rows, columns=(*FEATURE_NAMES, "target")).encode(), label="target")
    assert list(p.frame.columns)[-1] == "y"
    assert p.frame["y"].tolist()[:4] == ["yes", "no", "no", "yes"]
    # With the default label the same file lacks "y" and has an unknown "target".
    err = rejected(render(rows, columns=(*FEATURE_NAMES, "target")).encode())
    assert err.details["missing"] == ["y"] and err.details["unexpected"] == ["target"]


def test_label_argument_must_not_be_a_feature() -> None:
    with pytest.raises(ConfigError, match="age"):
        parse(PLAIN, label="age")


def test_unknown_is_a_category_and_empty_categoricals_are_counted_missing() -> None:
    rows = valid_rows()
    rows[2]["contact"] = ""
    rows[5]["contact"] = "  "
    p = parse(render(rows).encode())
    assert p.profile["missing"]["contact"] == 2
    assert p.profile["missing"]["job"] == 0
    assert p.profile["categories"]["job"]["unknown"] == sum(r["job"] == "unknown" for r in rows)
    assert "" not in p.profile["categories"]["contact"]
    assert p.frame["contact"].iloc[2] == ""


def test_stream_input_is_read() -> None:
    assert parse(io.BytesIO(PLAIN), size=len(PLAIN)).content_hash == parse(PLAIN).content_hash


def test_canonical_csv_is_the_hashed_normal_form() -> None:
    p = parse(render(valid_rows(), sep=";", quote_strings=True, eol="\r\n").encode())
    canonical = p.to_canonical_csv()
    assert hashlib.sha256(canonical).hexdigest() == p.content_hash
    text = canonical.decode()
    assert "\r" not in text and text.endswith("\n")
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert text.splitlines()[1].startswith("20,admin.,divorced,")
    # pandas reads it back to the same frame (floats round-trip exactly).
    back = pd.read_csv(io.BytesIO(canonical), dtype={c: str for c in CATEGORICAL}, keep_default_na=False)
    pd.testing.assert_frame_equal(back, p.frame)


def test_canonical_csv_matches_pandas_to_csv() -> None:
    # The fast writer must agree with the obvious one, byte for byte.
    rows = valid_rows(200)
    rows[3]["job"] = '"with, comma and ""quotes"""'
    p = parse(render(rows).encode())
    assert p.frame["job"].iloc[3] == 'with, comma and "quotes"'
    assert p.to_canonical_csv() == p.frame.to_csv(index=False, lineterminator="\n").encode()


def test_canonical_csv_quotes_values_that_need_it() -> None:
    rows = valid_rows()
    rows[0]["job"] = 'a "quoted", job'
    p = parse(render(rows, sep=";").encode())
    assert '"a ""quoted"", job"' in p.to_canonical_csv().decode()
    back = pd.read_csv(io.BytesIO(p.to_canonical_csv()), dtype=str, keep_default_na=False)
    assert back["job"].iloc[0] == 'a "quoted", job'


def test_profile_contents() -> None:
    rows = valid_rows(8)
    rows[0]["job"] = "astronaut"
    p = parse(render(rows).encode())
    ages = [20 + i for i in range(8)]
    stats = p.profile["numeric"]["age"]
    assert stats["min"] == 20 and stats["max"] == 27
    assert stats["mean"] == pytest.approx(np.mean(ages))
    assert stats["std"] == pytest.approx(np.std(ages))
    assert set(p.profile["numeric"]) == set(NUMERIC)
    assert set(p.profile["categories"]) == set(CATEGORICAL)
    assert set(p.profile["missing"]) == set(FEATURE_NAMES)
    assert p.profile["categories"]["job"]["astronaut"] == 1
    assert sum(p.profile["categories"]["month"].values()) == 8
    assert p.profile["unseen_categories"] == {"job": ["astronaut"]}
    # The profile is stored as JSON: plain Python numbers only.
    assert all(type(v) is float for v in stats.values())
    assert all(type(v) is int for v in p.profile["categories"]["month"].values())


# --------------------------------------------------------------------------------------------
# rejected: size, emptiness, not text


class NoRead(io.BytesIO):
    def read(self, *args: object) -> bytes:  # type: ignore[override]
        raise AssertionError("the body was read although the size was over the limit")


def test_size_over_limit_is_rejected_before_reading() -> None:
    err = rejected(NoRead(PLAIN), size=5000, max_bytes=4000)
    assert "5,000" in err.message and "4,000" in err.message
    assert err.details["value"] == 5000


class Counting(io.BytesIO):
    served = 0

    def read(self, n: int | None = -1) -> bytes:  # type: ignore[override]
        chunk = super().read(n)
        self.served += len(chunk)
        return chunk


def test_stream_longer_than_limit_is_cut_off() -> None:
    stream = Counting(PLAIN * 50)
    err = rejected(stream, max_bytes=1000)
    assert "1,000" in err.message
    assert stream.served <= 1001
    assert "1,000" in rejected(PLAIN, max_bytes=1000).message


@pytest.mark.parametrize("data", [b"", b"   \n\r\n\t", codecs.BOM_UTF8, codecs.BOM_UTF8 + b"\n\n"])
def test_empty_file(data: bytes) -> None:
    assert rejected(data).message == "file is empty"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)), "NUL bytes", id="zip"),
        pytest.param(PLAIN.decode().encode("utf-16-le"), "NUL bytes", id="utf16-without-mark"),
        # Binary without NUL that cp1252 decodes: the control characters give it away.
        pytest.param(b"\x1f\x8b\x08\x08" + bytes(set(range(1, 256)) - CP1252_UNDEFINED), "control", id="binary"),
        pytest.param(PLAIN[:200] + b"\x07" + PLAIN[200:], "control character '\\x07' on line 2", id="bell"),
        pytest.param(b"age,job\n\x81\x8d\x8f\n", "neither UTF-8 nor cp1252", id="undecodable"),
        pytest.param(codecs.BOM_UTF8 + b"age,\xe9\n", "UTF-8 mark", id="bad-utf8-after-mark"),
    ],
)
def test_binary_or_undecodable_is_not_text(data: bytes, reason: str) -> None:
    err = rejected(data)
    assert err.message.startswith("not a text CSV file") and reason in err.message


@pytest.mark.parametrize("chunk", [64, 4 << 20])
def test_binary_and_undecodable_bytes_are_named_by_line_and_byte(chunk: int) -> None:
    lines = PLAIN.split(b"\n")
    at_line = 7  # file line 7 (row index 5)
    cases = {
        b"\x00": "NUL bytes",
        b"\x81\x8d": "neither UTF-8 nor cp1252",
    }
    for bad, reason in cases.items():
        data = b"\n".join([*lines[: at_line - 1], lines[at_line - 1][:10] + bad + lines[at_line - 1][10:], *lines[at_line:]])
        err = rejected(data, chunk_bytes=chunk)
        byte = data.index(bad)
        assert reason in err.message and f"byte {byte} (line {at_line})" in err.message, err.message
        assert (err.details["line"], err.details["byte"]) == (at_line, byte)
    # after UTF-8 text, a cp1252 byte on a later line: a mixed file, named by line too
    mixed = PLAIN.replace(b"admin.", "adm\u00efn.".encode(), 1) + b"41,\xe9\n"
    err = rejected(mixed, chunk_bytes=64)
    assert err.details["line"] == mixed.count(b"\n") and "different encodings" in err.message
    utf16 = codecs.BOM_UTF16_LE + "age,job\nx,\ud800\n".encode("utf-16-le", "surrogatepass")
    err = rejected(utf16)
    assert err.details["line"] == 2 and "UTF-16" in err.message


def test_huge_values_and_headers_are_cut_in_the_reason() -> None:
    long = "9" * 100_000
    err = rejected(render(with_cell(valid_rows(), 3, "duration", long)).encode())
    assert (err.details["column"], err.details["line"]) == ("duration", line_of(3))
    assert len(err.message) < 400 and len(str(err.details["value"])) < 200
    assert str(err.details["value"]).startswith("9" * 100) and "100,000 characters" in str(err.details["value"])
    junk = [f"junk{i}-" + "x" * 5000 for i in range(1000)]
    head, *rows = render(valid_rows()).splitlines()
    text = "\n".join([",".join([head, *junk]), *(",".join([r, *["1"] * len(junk)]) for r in rows)]) + "\n"
    err = rejected(text.encode())
    assert len(err.message) < 1000 and "and 992 more" in err.message, err.message[:300]
    assert len(err.details["unexpected"]) == 8


def test_header_only() -> None:
    assert rejected(render([]).encode()).message.startswith("no data rows")
    assert rejected((render([]) + "\n\n,,,,\n").encode()).message.startswith("no data rows")


def test_no_delimiter_found() -> None:
    text = render(valid_rows(), sep="\t")
    err = rejected(text.encode())
    assert "delimiter" in err.message and err.details["line"] == 1


# --------------------------------------------------------------------------------------------
# rejected: header


def test_missing_columns_are_all_named() -> None:
    cols = tuple(c for c in COLUMNS if c not in ("euribor3m", "pdays"))
    err = rejected(render(valid_rows(), columns=cols).encode())
    assert err.details["missing"] == ["pdays", "euribor3m"]
    assert err.details["column"] == "pdays"
    assert "euribor3m" in err.message and "pdays" in err.message


def test_missing_label_column() -> None:
    err = rejected(render(valid_rows(), columns=FEATURE_NAMES).encode())
    assert err.details["missing"] == ["y"]


def test_header_names_are_case_sensitive_with_a_hint() -> None:
    header = ["Age", *FEATURE_NAMES[1:], "y"]
    err = rejected(render(valid_rows(), header=header).encode())
    assert err.details["missing"] == ["age"] and err.details["unexpected"] == ["Age"]
    assert "'Age' should be 'age'" in err.message


def test_duplicated_columns() -> None:
    rows = valid_rows()
    err = rejected(render(rows, columns=(*COLUMNS, "age")).encode())
    assert err.details["duplicated"] == ["age"] and err.details["column"] == "age"


def test_unknown_extra_columns_are_named() -> None:
    rows = [r | {"customer_id": str(i), "score": "0.5"} for i, r in enumerate(valid_rows())]
    err = rejected(render(rows, columns=(*COLUMNS, "customer_id", "score")).encode())
    assert err.details["unexpected"] == ["customer_id", "score"]
    assert "customer_id" in err.message and "score" in err.message


def test_trailing_delimiter_makes_an_unnamed_column() -> None:
    text = "".join(line + ",\n" for line in render(valid_rows()).splitlines())
    err = rejected(text.encode())
    assert err.details["unexpected"] == ["(unnamed column 22)"]


# --------------------------------------------------------------------------------------------
# rejected: rows and values


def test_text_in_numeric_column_names_column_line_and_value() -> None:
    err = rejected(render(with_cell(valid_rows(), 17, "duration", "twelve")).encode())
    assert err.details["column"] == "duration"
    assert err.details["line"] == line_of(17) == 19
    assert err.details["value"] == "twelve"
    assert err.details["expected"] == "an integer"
    assert "duration" in err.message and "19" in err.message and "twelve" in err.message


def test_first_bad_line_is_named_across_columns() -> None:
    rows = with_cell(with_cell(valid_rows(), 9, "age", "x"), 4, "euribor3m", "y")
    err = rejected(render(rows).encode())
    assert (err.details["column"], err.details["line"]) == ("euribor3m", line_of(4))


def test_bad_rows_are_counted() -> None:
    rows = valid_rows()
    for i in (3, 6, 7):
        rows[i]["campaign"] = "many"
    err = rejected(render(rows).encode())
    assert err.details["line"] == line_of(3) and err.details["rows_affected"] == 3


def test_decimal_comma_in_semicolon_file_is_rejected_never_misread() -> None:
    rows = with_cell(valid_rows(), 3, "cons.price.idx", "92,893")
    err = rejected(render(rows, sep=";").encode())
    assert err.details["column"] == "cons.price.idx"
    assert err.details["line"] == line_of(3)
    assert err.details["value"] == "92,893"
    assert "decimal comma" in err.message and "92.893" in err.details["expected"]


def test_decimal_comma_in_comma_file() -> None:
    # Unquoted it splits the row; quoted it reaches the value check. Either way: rejected.
    rows = with_cell(valid_rows(), 5, "emp.var.rate", "1,1")
    err = rejected(render(rows).encode())
    assert err.details["line"] == line_of(5) and "22 fields" in err.message
    rows = with_cell(valid_rows(), 5, "emp.var.rate", '"1,1"')
    err = rejected(render(rows).encode())
    assert (err.details["column"], err.details["line"], err.details["value"]) == ("emp.var.rate", line_of(5), "1,1")


@pytest.mark.parametrize("value", ["", "   "])
def test_missing_numeric_value(value: str) -> None:
    err = rejected(render(with_cell(valid_rows(), 0, "pdays", value)).encode())
    assert (err.details["column"], err.details["line"], err.details["value"]) == ("pdays", 2, "")
    assert "missing" in err.message


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "NA", "1_000", "0x10", "1.2.3", "١٢"])
def test_non_numbers_that_some_parsers_accept(value: str) -> None:
    err = rejected(render(with_cell(valid_rows(), 2, "cons.conf.idx", value)).encode())
    assert (err.details["column"], err.details["line"], err.details["value"]) == ("cons.conf.idx", 4, value)


def test_integer_columns_accept_whole_floats_and_reject_fractions() -> None:
    p = parse(render(with_cell(valid_rows(), 0, "campaign", "3.0")).encode())
    assert p.frame["campaign"].iloc[0] == 3 and p.frame["campaign"].dtype == np.int64
    err = rejected(render(with_cell(valid_rows(), 1, "campaign", "3.5")).encode())
    assert (err.details["column"], err.details["line"], err.details["value"]) == ("campaign", 3, "3.5")
    assert "whole number" in err.message
    err = rejected(render(with_cell(valid_rows(), 1, "age", "1e300")).encode())
    assert err.details["value"] == "1e300" and "out of range" in err.message


@pytest.mark.parametrize("cell", ["9007199254740993", "-9007199254740993", "9007199254740992.5", "9007199254740991.5"])
def test_integers_near_2_53_are_checked_exactly(cell: str) -> None:
    """float64 rounds 9007199254740993 to 2**53: the bound (shared.contract.MAX_INTEGER, the scoring
    contract's too) and wholeness are checked on the exact value, not on its rounding."""
    err = rejected(render(with_cell(valid_rows(), 1, "duration", cell)).encode())
    assert (err.details["column"], err.details["line"], err.details["value"]) == ("duration", 3, cell)
    expected = "out of range" if abs(Decimal(cell)) > MAX_INTEGER else "not a whole number"
    assert expected in err.message
    p = parse(render(with_cell(valid_rows(), 1, "duration", str(MAX_INTEGER))).encode())
    assert p.frame["duration"].iloc[1] == MAX_INTEGER


@pytest.mark.parametrize(("value", "shown"), [("maybe", "maybe"), ("1", "1"), ("", "")])
def test_label_values_other_than_yes_no(value: str, shown: str) -> None:
    err = rejected(render(with_cell(valid_rows(), 6, "y", value)).encode())
    assert (err.details["column"], err.details["line"], err.details["value"]) == ("y", line_of(6), shown)
    assert err.details["expected"] == "yes or no"


def test_label_with_one_class_only() -> None:
    rows = [r | {"y": "no"} for r in valid_rows()]
    err = rejected(render(rows).encode())
    assert err.message.startswith("the label has one class only")
    assert err.details["value"] == "yes" and err.details["rows_affected"] == 0


def test_label_with_a_single_row_of_a_class_counts_as_one_class() -> None:
    # A single row cannot be on both sides of a stratified train/validation split.
    assert MIN_CLASS_ROWS == 2
    rows = [r | {"y": "no"} for r in valid_rows()]
    rows[0]["y"] = "yes"
    err = rejected(render(rows).encode())
    assert err.message.startswith("the label has one class only") and err.details["rows_affected"] == 1
    rows[1]["y"] = "yes"
    assert parse(render(rows).encode()).class_balance == {"no": 38, "yes": 2}


def test_rows_with_the_wrong_number_of_fields() -> None:
    lines = render(valid_rows()).splitlines()
    short = lines.copy()
    short[7] = short[7].rsplit(",", 1)[0]
    err = rejected(("\n".join(short) + "\n").encode())
    assert err.details["line"] == 8 and "20 fields" in err.message
    long = lines.copy()
    long[30] += ",extra"
    assert rejected(("\n".join(long) + "\n").encode()).details["line"] == 31


def test_unterminated_quote_names_its_line() -> None:
    lines = render(valid_rows(), quote_strings=True).splitlines()
    lines[4] = lines[4].removesuffix('"')  # the label's closing quote is lost
    err = rejected(("\n".join(lines) + "\n").encode())
    assert err.details["line"] == 5 and "never closed" in err.message
    lines[4] += '"'
    lines[9] = lines[9].replace('"', "", 1)  # an opening quote is lost: the odd one is on this line too
    assert rejected(("\n".join(lines) + "\n").encode()).details["line"] == 10


def test_delimiters_inside_quotes_are_part_of_the_value() -> None:
    rows = with_cell(valid_rows(), 0, "job", '"ad;min, ""x"""')
    p = parse(render(rows, sep=";").encode())
    assert p.frame["job"].iloc[0] == 'ad;min, "x"'
    assert p.profile["unseen_categories"]["job"] == ['ad;min, "x"']


# --------------------------------------------------------------------------------------------
# drift


def _profile(rows: list[dict[str, str]]) -> dict:
    return parse(render(rows).encode()).profile


def test_no_drift_against_itself() -> None:
    profile = _profile(valid_rows())
    assert drift_warnings(profile, profile) == []


def test_drift_names_a_new_category_and_a_shifted_mean() -> None:
    reference = _profile(valid_rows())
    rows = [r | {"age": str(int(r["age"]) + 200)} for r in valid_rows()]
    rows[0]["job"] = "astronaut"
    warnings = drift_warnings(_profile(rows), reference)
    assert len(warnings) == 2
    assert any(w.startswith("job:") and "'astronaut'" in w for w in warnings)
    assert any(w.startswith("age:") and "standard deviations" in w for w in warnings)


def test_drift_range_mostly_outside_and_constant_reference() -> None:
    ref = {"numeric": {"x": {"min": -1.0, "max": 1.0, "mean": 0.0, "std": 10.0}}, "categories": {}}
    inside = {"numeric": {"x": {"min": -0.5, "max": 1.5, "mean": 0.5, "std": 0.5}}}
    outside = {"numeric": {"x": {"min": 5.0, "max": 9.0, "mean": 7.0, "std": 1.0}}}
    assert drift_warnings(inside, ref) == []
    [warning] = drift_warnings(outside, ref)
    assert warning.startswith("x:") and "outside" in warning
    constant = {"numeric": {"x": {"min": 3.0, "max": 3.0, "mean": 3.0, "std": 0.0}}}
    assert drift_warnings(constant, constant) == []
    assert drift_warnings(outside, constant)[0].startswith("x:")
    # Columns the reference does not know are not compared.
    assert drift_warnings(outside, {"numeric": {}}) == []


# --------------------------------------------------------------------------------------------
# large files: validated block by block, the same result whatever the block size

# Small blocks put many block boundaries inside a file of a few hundred rows (a row is about
# 150 bytes); per-block work makes tiny blocks slow, so the tests keep files small.
BLOCK_SIZES = (500, 3000)


def test_block_size_does_not_change_the_result() -> None:
    rows = valid_rows(60)
    rows[7]["job"] = "técnico"  # non-ASCII in the first block
    variants = {
        "plain": render(rows).encode(),
        "crlf-bom-semicolon-quoted": codecs.BOM_UTF8
        + render(rows, sep=";", quote_strings=True, quote_header=True, eol="\r\n").encode(),
        "old-mac": render(rows, eol="\r").encode(),
        "utf-16": render(rows).encode("utf-16"),
        "cp1252": render(rows).encode("cp1252"),
        "blank-lines": ("\n\n" + render(rows).replace("\n", "\n\n,,,\n") + "\n\n").encode(),
    }
    reference = parse(variants["plain"], chunk_bytes=10**9)
    for name, data in variants.items():
        for size in BLOCK_SIZES:
            for source in (data, io.BytesIO(data)) if name in ("plain", "old-mac") else (data,):
                p = parse(source, chunk_bytes=size)
                assert p.content_hash == reference.content_hash, (name, size)
                assert p.to_canonical_csv() == reference.to_canonical_csv(), (name, size)
                assert p.frame.equals(reference.frame), (name, size)
                assert p.profile == reference.profile and p.class_balance == reference.class_balance, (name, size)


def test_write_canonical_writes_the_hashed_bytes() -> None:
    p = parse(render(valid_rows(60)).encode(), chunk_bytes=2000)
    out = io.BytesIO()
    assert p.write_canonical(out) == len(p.to_canonical_csv())
    assert hashlib.sha256(out.getvalue()).hexdigest() == p.content_hash


def test_category_cells_share_one_string_per_value_across_blocks() -> None:
    # What keeps a million-row frame small: 8 bytes per cell, not a str object per cell.
    p = parse(render(valid_rows(60)).encode(), chunk_bytes=2000)
    job = p.frame["job"].to_numpy()
    assert len({id(v) for v in job}) == len(set(job))


@pytest.mark.parametrize("size", BLOCK_SIZES)
def test_bad_value_in_a_later_block_names_its_file_line(size: int) -> None:
    rows = with_cell(valid_rows(100), 90, "duration", "twelve")
    lines = render(rows).splitlines()
    lines.insert(50, "")  # a skipped line before it still counts
    err = rejected(("\n".join(lines) + "\n").encode(), chunk_bytes=size)
    assert (err.details["column"], err.details["line"], err.details["value"]) == ("duration", line_of(90) + 1, "twelve")


@pytest.mark.parametrize("size", BLOCK_SIZES)
def test_bad_rows_are_counted_over_the_whole_file(size: int) -> None:
    rows = valid_rows(100)
    bad = (5, 60, 61, 99)
    for i in bad:
        rows[i]["y"] = "maybe"
    err = rejected(render(rows).encode(), chunk_bytes=size)
    assert err.details["line"] == line_of(5) and err.details["rows_affected"] == len(bad)
    assert f"({len(bad)} rows affected, this is the first)" in err.message


def test_count_after_an_unreadable_block_is_a_lower_bound() -> None:
    rows = with_cell(valid_rows(100), 3, "age", "old")
    lines = render(rows).splitlines()
    lines[80] = lines[80] + ",extra"  # a later line that cannot be read at all
    err = rejected(("\n".join(lines) + "\n").encode(), chunk_bytes=2000)
    assert (err.details["column"], err.details["line"]) == ("age", line_of(3))
    assert "at least 1 rows affected" in err.message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param(None, 90, id="wrong-field-count"),
        pytest.param('"unclosed', 90, id="lost-quote"),
        pytest.param("\x07", 90, id="control-character"),
    ],
)
def test_structural_errors_in_a_later_block_name_their_line(text: str | None, line: int) -> None:
    lines = render(valid_rows(100)).splitlines()
    lines[line - 1] = lines[line - 1] + ",x" if text is None else text + lines[line - 1]
    err = rejected(("\n".join(lines) + "\n").encode(), chunk_bytes=2000)
    assert err.details["line"] == line, err.message


def test_header_after_blocks_of_blank_lines() -> None:
    data = b"\n" * 5000 + b",,,;;;\n" * 300 + PLAIN
    p = parse(data, chunk_bytes=256)
    assert p.rows == 40 and p.content_hash == parse(PLAIN).content_hash
    err = rejected(data.replace(b"\n41,", b"\nold,", 1), chunk_bytes=256)
    assert err.details["value"] == "old" and err.details["line"] == 5000 + 300 + 1 + 22


def test_cp1252_after_ascii_blocks_reads_like_the_whole_file() -> None:
    rows = with_cell(valid_rows(100), 90, "job", "técnico")
    data = render(rows).encode("cp1252")
    assert data[: data.index(b"t\xe9c")].isascii()
    whole = parse(data, chunk_bytes=10**9)
    assert whole.encoding == "cp1252"
    for size in BLOCK_SIZES:
        p = parse(data, chunk_bytes=size)
        assert p.encoding == "cp1252" and p.content_hash == whole.content_hash


def test_mixed_encodings_across_blocks_are_rejected() -> None:
    rows = with_cell(with_cell(valid_rows(100), 2, "job", "técnico"), 90, "job", "técnico")
    text = render(rows)
    cut = text.index("técnico", text.index("técnico") + 1)
    data = text[:cut].encode("utf-8") + text[cut:].encode("cp1252")  # two exports glued together
    err = rejected(data, chunk_bytes=2000)
    assert "not UTF-8 although the text before it is UTF-8" in err.message


def test_a_line_longer_than_a_block() -> None:
    rows = with_cell(valid_rows(), 5, "job", "x" * 3000)
    p = parse(render(rows).encode(), chunk_bytes=100)
    assert p.frame["job"].iloc[5] == "x" * 3000


def test_stream_over_the_limit_is_rejected_whatever_else_is_wrong() -> None:
    rows = with_cell(valid_rows(100), 1, "age", "old")
    data = render(rows).encode()
    err = rejected(io.BytesIO(data), max_bytes=len(data) - 1, chunk_bytes=2000)
    assert err.message.startswith("file is too large")


# --------------------------------------------------------------------------------------------
# the real files (never in the repository)


def _real(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set")
    return Path(value)


@pytest.mark.realdata
def test_real_training_file() -> None:
    raw = _real("BANKML_REAL_DATA").read_bytes()
    p = parse_csv(raw, max_bytes=len(raw), size=len(raw))
    assert p.rows == 32_950 and p.delimiter == ","
    assert p.class_balance["yes"] > 0 and p.class_balance["no"] > p.class_balance["yes"]
    assert p.profile["unseen_categories"] == {}


@pytest.mark.realdata
def test_real_uci_file() -> None:
    raw = _real("BANKML_REAL_DATA_UCI").read_bytes()
    p = parse_csv(raw, max_bytes=len(raw))
    assert p.rows == 4_119 and p.delimiter == ";"
    assert min(p.class_balance.values()) > 0
    assert p.frame.dtypes["pdays"] == np.int64 and BY_NAME["pdays"].kind == "integer"


def test_the_profile_of_numbers_near_the_float64_limit_is_finite_json() -> None:
    """1e308 is a valid number; a sum of a few of them overflows, so the profile's mean and std
    must not be a plain sum (the stored profile is strict JSON)."""
    frame = generate_frame(6, seed=2)
    frame["euribor3m"] = [1e308, 1.5e308, -1e308, 1e308, 1.7e308, 0.5]
    stats = profile_frame(frame)["numeric"]["euribor3m"]
    json.dumps(stats, allow_nan=False)
    assert stats["max"] == 1.7e308 and stats["min"] == -1e308
    assert stats["mean"] == pytest.approx(np.mean(np.array(frame["euribor3m"]) / 1e308) * 1e308)
    assert 0 < stats["std"] < 1.7e308
