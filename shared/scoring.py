"""The Azure ML scoring contract as plain functions: bytes in, validated records out; predictions in,
one response dict out. The model server and the HTTP relay are thin wrappers around these.

Two request envelopes are accepted (both case-sensitive, as in Azure ML):

* legacy (``scoring_file_v_1_0_0``): ``{"data": [{...20 columns...}, ...], "method": "predict"}``;
  ``method`` is optional, as in the generated ``run(data, method="predict")``.
* v2 (``scoring_file_v_2_0_0``): ``{"Inputs": {"data": [...]}, "GlobalParameters": {"method": ...}}``;
  ``GlobalParameters`` and its ``method`` are optional (default ``predict``).

Answers are ``{"result": [...]}`` (legacy) and ``{"Results": [...]}`` (v2), JSON-encoded once:
Azure's legacy score.py returned a string that the server encoded a second time, which forces
every client to decode twice; we do not reproduce that quirk.

Validation is strict and every refusal names the field, the row and the offending value:

* unknown keys (top level, in ``Inputs``, in ``GlobalParameters`` and in a row) are refused rather
  than ignored, so a typo such as ``"campain"`` cannot silently score a row with a wrong column set;
* booleans are not numbers, ``null`` is not a value, NaN/Infinity are refused;
* integer columns accept integral floats such as ``3.0``, between -2**53 and 2**53
  (shared.contract.MAX_INTEGER, the bound ingest applies to a CSV): beyond it a float64 no longer
  holds every integer, so ``9007199254740993`` or ``1e308`` is refused as out of range;
* a string outside the training vocabulary is accepted: it encodes as a missing value (see
  shared.features), so new categories get a prediction instead of an error. This is the one
  decision for unseen categories; the Swagger document and the README say so, and the model
  server names such columns in the ``x-bankml-unseen-categories`` answer header.

Speed: the body is parsed with orjson when it is installed (3-5x faster than ``json`` on large
bodies) and checked column by column with C-level ``map``/``set`` calls; only a request that fails
that quick check is walked row by row again, to name the first offending row, field and value
exactly as the slow path always did. A valid request never pays for the detailed walk.
"""

from __future__ import annotations

import json
import logging
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

try:  # optional: a C JSON parser; the stdlib one explains what is wrong with a bad body
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is in requirements; json is the fallback
    _orjson = None

from shared.contract import FEATURE_NAMES, FEATURES, MAX_INTEGER
from shared.errors import PayloadTooLarge, RequestError, UnsupportedMediaType, json_type, shown, shown_number

logger = logging.getLogger(__name__)

Contract = Literal["legacy", "v2"]
Method = Literal["predict", "predict_proba"]
METHODS: tuple[str, ...] = ("predict", "predict_proba")
JSON_MEDIA_TYPE = "application/json"
ENVELOPE_SHAPES = '{"data": [...]} (legacy) or {"Inputs": {"data": [...]}, "GlobalParameters": {"method": ...}} (v2)'
ENVELOPES = "expected " + ENVELOPE_SHAPES

_LEGACY_KEYS = frozenset({"data", "method"})
_V2_KEYS = frozenset({"Inputs", "GlobalParameters"})
_COLUMNS = frozenset(FEATURE_NAMES)
# (name, kind) pairs in contract order; iterated once per row.
_KINDS: tuple[tuple[str, str], ...] = tuple((c.name, c.kind) for c in FEATURES)


@dataclass(frozen=True)
class ScoringRequest:
    """A validated request. ``columns`` holds the values column by column; ``data`` the rows as
    dicts with exactly the 20 columns and values of the right JSON types; ``records`` the same rows
    normalised to the contract's Python types (integral floats become ints, numbers floats)."""

    contract: Contract
    method: Method
    # The values column by column, in contract order (FEATURE_NAMES): what the encoders read.
    columns: Sequence[Sequence[Any]] = field(repr=False, compare=False)
    # The rows as decoded, when they were decoded as dicts (small bodies); else built on demand.
    sent: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def rows(self) -> int:
        return len(self.columns[0])

    @cached_property
    def data(self) -> list[dict[str, Any]]:
        if self.sent is not None:
            return self.sent
        return [dict(zip(FEATURE_NAMES, values, strict=True)) for values in zip(*self.columns, strict=True)]

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        return [_validate_row(row, i) for i, row in enumerate(self.data)]


class _Unreadable:
    """A number token no float64 holds: NaN/Infinity/-Infinity (not JSON) or an integer of more
    than 4,300 digits (valid JSON that int() refuses). Kept in place by the reference parser, so
    the row check names its column, row and (cut) token like any other bad value."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


def _keep_constant(token: str) -> _Unreadable:
    return _Unreadable(token)


def _parse_int(text: str) -> int | _Unreadable:
    try:
        return int(text)
    except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
        return _Unreadable(text)


def _type_name(value: Any) -> str:
    return "number" if isinstance(value, _Unreadable) else json_type(value)


def _check_media_type(content_type: str | None) -> None:
    if content_type is None or content_type.strip() == "":
        return  # absent: assume JSON, as the Azure ML server does
    media = content_type.split(";", 1)[0].strip().lower()
    if media != JSON_MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"content type {content_type!r} is not supported, send {JSON_MEDIA_TYPE}",
            field="Content-Type",
            value=content_type,
            expected=JSON_MEDIA_TYPE,
        )


def _decode(body: bytes) -> Any:
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError:
            pass  # parsed again below, to say exactly what is wrong (or accept what json accepts)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError("body is not JSON: it is not UTF-8 text", field="body", position=err.start) from err
    try:
        return json.loads(text, parse_constant=_keep_constant, parse_int=_parse_int)
    except json.JSONDecodeError as err:
        raise RequestError(
            f"body is not JSON: {err.msg} at line {err.lineno} column {err.colno}",
            field="body",
            line=err.lineno,
            column=err.colno,
        ) from err
    except RecursionError as err:
        raise RequestError("body is JSON nested too deeply to be a scoring request", field="body") from err
    except ValueError as err:  # valid JSON Python will not hold, e.g. an integer of more than 4300 digits
        raise RequestError(f"body holds a value that cannot be read: {err}", field="body") from err


def _unwrap(doc: Any) -> tuple[Any, Contract, Method]:
    if not isinstance(doc, dict):
        raise RequestError(
            f"body is a JSON {_type_name(doc)}, {ENVELOPES}", field="body", value=_type_name(doc), expected=ENVELOPE_SHAPES
        )
    keys = set(doc)
    if "data" in keys:
        extra = sorted(keys - _LEGACY_KEYS)
        if extra:
            raise RequestError(f"unknown top-level key {extra[0]!r}; {ENVELOPES}", field=extra[0], expected=ENVELOPE_SHAPES)
        method = doc.get("method", "predict")
        _check_method(method, "method")
        return doc["data"], "legacy", method
    if "Inputs" in keys:
        extra = sorted(keys - _V2_KEYS)
        if extra:
            raise RequestError(f"unknown top-level key {extra[0]!r}; {ENVELOPES}", field=extra[0], expected=ENVELOPE_SHAPES)
        inputs = doc["Inputs"]
        if not isinstance(inputs, dict) or "data" not in inputs:
            raise RequestError(
                'Inputs must be an object {"data": [...]}',
                field="Inputs",
                value=_type_name(inputs),
                expected='{"data": [...]}',
            )
        extra = sorted(set(inputs) - {"data"})
        if extra:
            raise RequestError(f"unknown key {extra[0]!r} in Inputs, expected only 'data'", field=f"Inputs.{extra[0]}")
        params = doc.get("GlobalParameters", {})
        if not isinstance(params, dict):
            raise RequestError(
                'GlobalParameters must be an object {"method": ...}',
                field="GlobalParameters",
                value=_type_name(params),
                expected='{"method": "predict" | "predict_proba"}',
            )
        extra = sorted(set(params) - {"method"})
        if extra:
            raise RequestError(
                f"unknown key {extra[0]!r} in GlobalParameters, expected only 'method'",
                field=f"GlobalParameters.{extra[0]}",
            )
        method = params.get("method", "predict")
        _check_method(method, "GlobalParameters.method")
        return inputs["data"], "v2", method
    found = ", ".join(repr(k) for k in sorted(keys)) or "no keys"
    first = sorted(keys)[0] if keys else None
    raise RequestError(f"unknown request envelope ({found}); {ENVELOPES}", field=first, expected=ENVELOPE_SHAPES)


def _check_method(method: Any, field: str) -> None:
    if method not in METHODS:
        raise RequestError(
            f"{field} must be 'predict' or 'predict_proba', got {method!r}",
            field=field,
            value=method if isinstance(method, str | int | float | bool) or method is None else _type_name(method),
            expected=list(METHODS),
        )


def _bad_value(name: str, row: int, value: Any, expected: str, why: str) -> RequestError:
    # A null value is dropped from the details by BankmlError; "got" still says what was sent.
    if isinstance(value, str):
        quoted: Any = shown(value)
    else:
        quoted = value if isinstance(value, int | float | bool) or value is None else _type_name(value)
    return RequestError(
        f"row {row}: column {name!r} {why}", field=name, row=row, value=quoted, got=_type_name(value), expected=expected
    )


def _validate_row(row: Any, index: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise RequestError(
            f"row {index} is a JSON {_type_name(row)}, expected an object of column: value",
            field="data",
            row=index,
            value=_type_name(row),
            expected="object",
        )
    if len(row) != len(_COLUMNS) or not _COLUMNS.issuperset(row):
        missing = [n for n in FEATURE_NAMES if n not in row]
        if missing:
            raise RequestError(
                f"row {index}: missing column {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                field=missing[0],
                row=index,
                missing=missing,
            )
        extra = sorted(shown(str(k)) for k in row if k not in _COLUMNS)
        raise RequestError(
            f"row {index}: unknown column {extra[0]!r}; only the 20 contract columns are accepted",
            field=extra[0],
            row=index,
            expected=list(FEATURE_NAMES),
        )
    out: dict[str, Any] = {}
    for name, kind in _KINDS:
        value = row[name]
        if kind == "string":
            if type(value) is not str:
                raise _bad_value(name, index, value, "string", f"must be a string, got {_type_name(value)}")
            out[name] = value
            continue
        if isinstance(value, _Unreadable):
            raise RequestError(
                f"row {index}: column {name!r} must be a finite number, got {shown(value.token)}",
                field=name,
                row=index,
                value=shown(value.token),
                got="number",
                expected=kind,
            )
        # bool is a subclass of int in Python; JSON true/false are not numbers.
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad_value(name, index, value, kind, f"must be {'an' if kind == 'integer' else 'a'} {kind}, got {_type_name(value)}")
        if not _finite(value):
            # json.loads turns an overflowing literal such as 1e999 into inf; a 400-digit
            # integer stays an int that no float64 can hold.
            raise RequestError(
                f"row {index}: column {name!r} must be a finite number",
                field=name,
                row=index,
                value=str(value) if isinstance(value, float) else shown_number(value),
                got="number",
                expected=kind,
            )
        if kind == "integer":
            sent = value
            if isinstance(value, float):
                if not value.is_integer():
                    raise _bad_value(name, index, value, kind, f"must be a whole number, got {value!r}")
                value = int(value)
            if not -MAX_INTEGER <= value <= MAX_INTEGER:
                raise _out_of_range(name, index, sent)
            out[name] = value
        else:
            out[name] = float(value)
    return out


INTEGER_RANGE = f"an integer between -{MAX_INTEGER} and {MAX_INTEGER}"


def _out_of_range(name: str, row: int, value: int | float) -> RequestError:
    """An integer column's value beyond +-MAX_INTEGER, worded like ingest's refusal of a CSV cell."""
    cut = shown_number(value)
    return RequestError(
        f"row {row}: column {name!r}: {cut} is out of range",
        field=name,
        row=row,
        value=cut,
        got="number",
        expected=INTEGER_RANGE,
    )


def _finite(value: int | float) -> bool:
    """A JSON number that is a finite float64 (an integer literal with 400 digits is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


_NUMBER_TYPES = frozenset({int, float})
_STRING_TYPES = frozenset({str})
_ROW_VALUES = operator.itemgetter(*FEATURE_NAMES)


def _valid_columns(data: list[Any]) -> list[tuple[Any, ...]] | None:
    """The rows' values column by column (contract order) when every row is valid, else None.

    Checked at C speed: ``map``/``zip``/``set`` over whole columns, about 10x faster than
    ``_validate_row`` on 10,000 rows. None means "walk the rows to name the first problem".
    """
    if set(map(type, data)) != {dict} or set(map(len, data)) != {len(FEATURE_NAMES)}:
        return None
    try:
        # Every row has 20 keys and all 20 contract names among them: exactly the contract.
        columns = list(zip(*map(_ROW_VALUES, data), strict=True))
    except KeyError:
        return None
    try:
        for (_, kind), values in zip(_KINDS, columns, strict=True):
            types = set(map(type, values))
            if kind == "string":
                if types != _STRING_TYPES:
                    return None
                continue
            # type() is exact: bool (an int subclass) and None fall out here.
            if not types <= _NUMBER_TYPES or not all(map(math.isfinite, values)):
                return None
            if kind == "integer" and (
                max(values) > MAX_INTEGER
                or min(values) < -MAX_INTEGER
                or (float in types and not all(v.is_integer() for v in values if type(v) is float))
            ):
                return None
    except OverflowError:  # an integer too large for a float64
        return None
    return columns


def check_body_size(body: bytes, max_body_bytes: int) -> None:
    """The body-size part of ``parse_request`` (413)."""
    if len(body) > max_body_bytes:
        raise PayloadTooLarge(
            f"body is {len(body)} bytes, the limit is {max_body_bytes}",
            field="body",
            value=len(body),
            expected=f"at most {max_body_bytes} bytes",
        )


def check_media_type(content_type: str | None) -> None:
    """The content-type part of ``parse_request`` (415)."""
    _check_media_type(content_type)


def parse_request(body: bytes, content_type: str | None, *, max_rows: int, max_body_bytes: int) -> ScoringRequest:
    """Parse and validate a scoring request; raises shared.errors.RequestError (or a subclass)."""
    check_body_size(body, max_body_bytes)
    _check_media_type(content_type)
    if len(body) >= TYPED_DECODE_BYTES and _FAST is not None:
        fast = _FAST.parse(body, max_rows)
        if fast is not None:
            return fast
    data, contract, method = _unwrap(_decode(body))
    where = "data" if contract == "legacy" else "Inputs.data"
    if not isinstance(data, list):
        raise RequestError(
            f"{where} must be an array of rows, got {_type_name(data)}",
            field=where,
            value=_type_name(data),
            expected="array",
        )
    if not data:
        raise RequestError(f"{where} is empty, send at least one row", field=where, value=0, expected="at least 1 row")
    if len(data) > max_rows:
        raise PayloadTooLarge(
            f"{where} has {len(data)} rows, the limit is {max_rows}",
            field=where,
            value=len(data),
            expected=f"at most {max_rows} rows",
        )
    columns = _valid_columns(data)
    if columns is None:
        for i, row in enumerate(data):
            _validate_row(row, i)  # raises, naming the first bad row, field and value
        columns = _valid_columns(data)  # pragma: no cover - the walk above always raises
        assert columns is not None, "a request refused by the quick check passed the detailed one"
    return ScoringRequest(contract=contract, method=method, columns=columns, sent=data)


# From this body size (about 180 rows) a request is first decoded straight into typed rows with
# msgspec, which checks the types while it parses (10,000 rows: ~11 ms instead of ~29 ms for orjson
# and ~40 ms more for the column check). It only ever accepts: anything it does not accept goes
# through the reference path above, which accepts or refuses with the detailed message, so the
# outcome of a request never depends on which path ran (tests/test_scoring.py checks both).
TYPED_DECODE_BYTES = 64 * 1024


class _TypedDecoder:
    """msgspec decoders of both envelopes into typed rows, and the rows' values column by column.

    Two attempts: integer columns typed ``int`` (the usual request: no per-value check is left but
    one range check per column), then ``int | float`` (integral floats such as ``3.0``, checked
    value by value). Columns are read with one ``attrgetter`` pass each (no 20-tuple per row).
    """

    def __init__(self) -> None:
        import msgspec

        def decoders(strict: bool) -> list[tuple[Any, Contract]]:
            def kind(name: str) -> Any:
                return {"string": str, "integer": int if strict else int | float, "number": float}[name]

            suffix = "Strict" if strict else ""
            row = msgspec.defstruct(
                f"Row{suffix}",
                [(f"c{i}", kind(c.kind), msgspec.field(name=c.name)) for i, c in enumerate(FEATURES)],
                forbid_unknown_fields=True,
                gc=False,
            )
            method = Literal["predict", "predict_proba"]
            legacy = msgspec.defstruct(
                f"Legacy{suffix}", [("data", list[row]), ("method", method, "predict")], forbid_unknown_fields=True
            )
            inputs = msgspec.defstruct(f"Inputs{suffix}", [("data", list[row])], forbid_unknown_fields=True)
            params = msgspec.defstruct(
                f"GlobalParameters{suffix}", [("method", method, "predict")], forbid_unknown_fields=True
            )
            v2 = msgspec.defstruct(
                f"V2{suffix}",
                [("Inputs", inputs), ("GlobalParameters", params, msgspec.field(default_factory=params))],
                forbid_unknown_fields=True,
            )
            return [(msgspec.json.Decoder(legacy), "legacy"), (msgspec.json.Decoder(v2), "v2")]

        self._attempts = [(decoders(True), True), (decoders(False), False)]
        self._errors = (msgspec.DecodeError,)
        self._getters = [operator.attrgetter(f"c{i}") for i in range(len(FEATURES))]
        self._integer = [i for i, c in enumerate(FEATURES) if c.kind == "integer"]

    def parse(self, body: bytes, max_rows: int) -> ScoringRequest | None:
        """The request when it is valid and within ``max_rows``, else None (use the reference path)."""
        for decoders, strict in self._attempts:
            for decoder, contract in decoders:
                try:
                    doc = decoder.decode(body)
                except self._errors:
                    continue
                return self._request(doc, contract, strict, max_rows)
        return None

    def _request(self, doc: Any, contract: Contract, strict: bool, max_rows: int) -> ScoringRequest | None:
        if contract == "legacy":
            rows, method = doc.data, doc.method
        else:
            rows, method = doc.Inputs.data, doc.GlobalParameters.method
        if not rows or len(rows) > max_rows:
            return None
        columns = [list(map(get, rows)) for get in self._getters]
        try:
            for i in self._integer:
                values = columns[i]
                # Python ints of any size: the extremes must be within +-MAX_INTEGER, as on the
                # reference path (which names the first value beyond).
                if max(values) > MAX_INTEGER or min(values) < -MAX_INTEGER:
                    return None
                if strict:
                    continue
                if not all(map(math.isfinite, values)):  # an int too large for a float64
                    return None
                if float in set(map(type, values)) and not all(v.is_integer() for v in values if type(v) is float):
                    return None
        except OverflowError:
            return None
        return ScoringRequest(contract=contract, method=method, columns=columns)


try:
    _FAST: _TypedDecoder | None = _TypedDecoder()
except ImportError:  # pragma: no cover - msgspec is in requirements; the reference path suffices
    _FAST = None


def format_response(request: ScoringRequest, labels: list[str], probabilities: list[list[float]]) -> dict[str, Any]:
    """The answer for ``request``: labels for predict, ``[[p_no, p_yes], ...]`` for predict_proba."""
    return envelope(request, labels if request.method == "predict" else probabilities)


def envelope(request: ScoringRequest, result: list[Any]) -> dict[str, Any]:
    """``{"result": ...}`` for the legacy contract, ``{"Results": ...}`` for v2."""
    return {"result": result} if request.contract == "legacy" else {"Results": result}


def encode_json(doc: Any, *, finite: bool = False) -> bytes:
    """Encode an answer once, compactly; NaN/Infinity never leave the server as invalid JSON.

    ``finite=True`` is the caller's promise that ``doc`` holds no NaN/Infinity (orjson would write
    them as null rather than refuse): then orjson encodes it, 10x faster on 10,000 pairs.
    """
    if finite and _orjson is not None:
        return _orjson.dumps(doc)
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
