"""ASP.NET-style route templates, the subset Functions apps use.

``items/{id}``, optional ``{id?}``, defaults ``{page=1}``, catch-all ``{*path}``, typed
``{id:int}`` (int, long, bool, alpha, guid, double, float, decimal, datetime, minlength(n),
maxlength(n), length(n[,m]), min(n), max(n), range(a,b)) and segments mixing literals and
parameters (``{name}.{ext}``). Literals match case-insensitively. Request segments are matched
after percent-decoding each segment separately, so an encoded ``/`` stays inside its segment.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"\{([^{}]+)\}")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _is_int(value: str, bounds: tuple[int, int]) -> bool:
    if not re.fullmatch(r"-?\d+", value):
        return False
    return bounds[0] <= int(value) <= bounds[1]


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in ("nan", "inf", "-inf", "infinity", "-infinity")


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _constraint(spec: str) -> Callable[[str], bool] | None:
    m = re.fullmatch(r"(\w+)(?:\((.*)\))?", spec)
    if not m:
        return None
    name, arg = m.group(1).lower(), m.group(2)
    args = [a.strip() for a in arg.split(",")] if arg else []
    simple: dict[str, Callable[[str], bool]] = {
        "int": lambda v: _is_int(v, _INT32),
        "long": lambda v: _is_int(v, _INT64),
        "bool": lambda v: v.lower() in ("true", "false"),
        "alpha": lambda v: bool(re.fullmatch(r"[A-Za-z]+", v)),
        "guid": _is_guid,
        "double": _is_float,
        "float": _is_float,
        "decimal": _is_float,
        "datetime": _is_datetime,
    }
    if name in simple and not args:
        return simple[name]
    try:
        nums = [int(a) for a in args]
    except ValueError:
        return None
    if name == "minlength" and len(nums) == 1:
        return lambda v: len(v) >= nums[0]
    if name == "maxlength" and len(nums) == 1:
        return lambda v: len(v) <= nums[0]
    if name == "length" and len(nums) == 1:
        return lambda v: len(v) == nums[0]
    if name == "length" and len(nums) == 2:
        return lambda v: nums[0] <= len(v) <= nums[1]
    if name == "min" and len(nums) == 1:
        return lambda v: _is_int(v, _INT64) and int(v) >= nums[0]
    if name == "max" and len(nums) == 1:
        return lambda v: _is_int(v, _INT64) and int(v) <= nums[0]
    if name == "range" and len(nums) == 2:
        return lambda v: _is_int(v, _INT64) and nums[0] <= int(v) <= nums[1]
    return None


@dataclass
class _Param:
    name: str
    checks: list[Callable[[str], bool]] = field(default_factory=list)
    optional: bool = False
    default: str | None = None
    catch_all: bool = False

    def accepts(self, value: str) -> bool:
        return all(check(value) for check in self.checks)


def _parse_param(token: str, template: str) -> _Param:
    catch_all = token.startswith("*")
    token = token.lstrip("*")
    optional = token.endswith("?")
    token = token.rstrip("?")
    default = None
    if "=" in token:
        token, default = token.split("=", 1)
    name, *constraints = token.split(":")
    param = _Param(name=name.strip(), optional=optional or catch_all, default=default, catch_all=catch_all)
    for spec in constraints:
        check = _constraint(spec.strip())
        if check is None:
            logger.warning("route %r: constraint %r is not supported locally; not enforced", template, spec)
        else:
            param.checks.append(check)
    return param


@dataclass
class _Segment:
    literal: str | None = None  # a pure literal segment
    param: _Param | None = None  # a segment that is exactly one parameter
    regex: re.Pattern[str] | None = None  # a segment mixing literals and parameters
    params: list[_Param] = field(default_factory=list)

    @property
    def rank(self) -> int:
        if self.literal is not None:
            return 1
        if self.regex is not None:
            return 2
        assert self.param is not None
        if self.param.catch_all:
            return 5 if self.param.checks else 6
        return 3 if self.param.checks else 4


class RouteTemplate:
    def __init__(self, template: str) -> None:
        self.template = template
        self.segments: list[_Segment] = []
        stripped = template.strip().strip("/")
        parts = stripped.split("/") if stripped else []
        for i, part in enumerate(parts):
            tokens = _TOKEN.findall(part)
            if not tokens:
                self.segments.append(_Segment(literal=part.lower()))
            elif _TOKEN.fullmatch(part):
                param = _parse_param(tokens[0], template)
                if param.catch_all and i != len(parts) - 1:
                    raise ValueError(f"route {template!r}: a catch-all parameter must be the last segment")
                self.segments.append(_Segment(param=param))
            else:
                params = [_parse_param(t, template) for t in tokens]
                pattern, pos = "", 0
                for m in _TOKEN.finditer(part):
                    pattern += (
                        re.escape(part[pos : m.start()]) + "(.+)"
                    )  # greedy: ASP.NET matches complex segments right to left
                    pos = m.end()
                pattern += re.escape(part[pos:])
                self.segments.append(_Segment(regex=re.compile(pattern, re.IGNORECASE), params=params))
        self.precedence = tuple(s.rank for s in self.segments)

    def __repr__(self) -> str:
        return f"RouteTemplate({self.template!r})"

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """Route values for the decoded request ``segments``, or None if the template does not match."""
        values: dict[str, str] = {}
        i = 0
        for seg in self.segments:
            if seg.param is not None and seg.param.catch_all:
                rest = "/".join(segments[i:])
                i = len(segments)
                if rest:
                    if not seg.param.accepts(rest):
                        return None
                    values[seg.param.name] = rest
                elif seg.param.default is not None:
                    values[seg.param.name] = seg.param.default
                continue
            if i >= len(segments):
                if seg.param is not None and (seg.param.optional or seg.param.default is not None):
                    if seg.param.default is not None:
                        values[seg.param.name] = seg.param.default
                    continue
                return None
            value = segments[i]
            i += 1
            if seg.literal is not None:
                if value.lower() != seg.literal:
                    return None
            elif seg.param is not None:
                if value == "" or not seg.param.accepts(value):
                    return None
                values[seg.param.name] = value
            else:
                assert seg.regex is not None
                m = seg.regex.fullmatch(value)
                if not m:
                    return None
                for param, group in zip(seg.params, m.groups(), strict=True):
                    if not param.accepts(group):
                        return None
                    values[param.name] = group
        if i != len(segments):
            return None
        return values


# Values tried for a route parameter when an example request path is needed, in order.
_EXAMPLE_VALUES = ("x", "1", "true", "00000000-0000-0000-0000-000000000001", "2026-01-01", "abc1")


def example_segments(template: RouteTemplate) -> list[str]:
    """Request path segments that ``template`` matches: literals as written, each required
    parameter a value its constraints accept, optional ones left out. Lets a test reach every
    HTTP function from the app's own metadata (security checks cover a new function unasked)."""
    segments: list[str] = []
    for seg in template.segments:
        if seg.literal is not None:
            segments.append(seg.literal)
            continue
        if seg.param is not None:
            if seg.param.optional or seg.param.default is not None:
                continue
            segments.append(_example_value(seg.param, template))
            continue
        assert seg.regex is not None
        values = [_example_value(p, template) for p in seg.params]
        pattern = seg.regex.pattern
        text, pos = "", 0
        for value, group in zip(values, re.finditer(r"\(\.\+\)", pattern), strict=False):
            text += re.sub(r"\\(.)", r"\1", pattern[pos : group.start()]) + value
            pos = group.end()
        segments.append(text + re.sub(r"\\(.)", r"\1", pattern[pos:]))
    if template.match(segments) is None:
        raise ValueError(f"route {template.template!r}: no example path found")
    return segments


def _example_value(param: _Param, template: RouteTemplate) -> str:
    for value in _EXAMPLE_VALUES:
        if param.accepts(value):
            return value
    raise ValueError(f"route {template.template!r}: no example value for parameter {param.name!r}")
