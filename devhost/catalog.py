"""Load ``function_app.py`` and build the function table from each function's trigger metadata."""

from __future__ import annotations

import enum
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func

logger = logging.getLogger(__name__)

HTTP = "httpTrigger"
EVENT_GRID = "eventGridTrigger"
BLOB = "blobTrigger"
TIMER = "timerTrigger"
SUPPORTED_TRIGGERS = (HTTP, EVENT_GRID, BLOB, TIMER)
MODULE_NAME = "function_app"
_PLACEHOLDER = re.compile(r"%([^%\s]+)%")
_TRUE = {"1", "true", "yes", "on"}


class HostError(RuntimeError):
    """The app cannot be loaded or one of its bindings is invalid."""


def _plain(value: Any) -> Any:
    """Binding dicts hold enums (AuthLevel, HttpMethod, ...); reduce them to plain JSON values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def resolve_placeholders(text: str, environ: Mapping[str, str], *, where: str) -> str:
    """Replace ``%NAME%`` with the app setting NAME, as the host does for binding expressions."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise HostError(f"{where}: app setting {name!r} (referenced as %{name}%) is not set")
        return environ[name]

    return _PLACEHOLDER.sub(sub, text)


def is_disabled(name: str, environ: Mapping[str, str]) -> bool:
    return environ.get(f"AzureWebJobs.{name}.Disabled", "").strip().lower() in _TRUE


@dataclass
class FunctionSpec:
    name: str
    trigger_type: str
    trigger: dict[str, Any]  # the trigger binding, plain JSON values, %X% resolved
    bindings: list[dict[str, Any]]
    user_function: Callable[..., Any]
    arg_name: str
    disabled: bool = False
    accepts_context: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


def apply_settings(
    app_dir: Path, environ: Mapping[str, str], target: MutableMapping[str, str]
) -> dict[str, str | None]:
    """Apply local.settings.json "Values" (not over variables already set, like Core Tools),
    then ``environ`` (always wins). Returns the previous values of the touched keys."""
    previous: dict[str, str | None] = {}

    def put(key: str, value: str) -> None:
        if key not in previous:
            previous[key] = target.get(key)
        target[key] = value

    settings_path = app_dir / "local.settings.json"
    if settings_path.exists():
        try:
            doc = json.loads(settings_path.read_text(encoding="utf-8-sig"))
        except ValueError as err:
            raise HostError(f"{settings_path} is not valid JSON: {err}") from err
        values = doc.get("Values") or {}
        if not isinstance(values, dict):
            raise HostError(f'{settings_path}: "Values" must be an object of strings')
        for key, value in values.items():
            if value is None:
                continue
            if key in target and key not in environ:
                logger.info("local.settings.json: skipping %s, already set in the environment", key)
                continue
            put(str(key), value if isinstance(value, str) else json.dumps(value))
    for key, value in environ.items():
        put(key, value)
    return previous


def import_app_module(app_dir: Path) -> ModuleType:
    path = app_dir / "function_app.py"
    if not path.exists():
        raise HostError(f"{path} not found")
    app_dir_str = str(app_dir)
    if app_dir_str not in sys.path:
        sys.path.insert(0, app_dir_str)
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise HostError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(MODULE_NAME, None)
        raise HostError(f"importing {path} failed: {err.__class__.__name__}: {err}") from err
    return module


def find_function_app(module: ModuleType) -> func.FunctionRegister:
    """The one FunctionApp (any FunctionRegister) defined at module level, as the worker looks it up."""
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    unique = list({id(a): a for a in apps}.values())
    if not unique:
        raise HostError(f"{module.__file__} defines no FunctionApp")
    if len(unique) > 1:
        raise HostError(f"{module.__file__} defines {len(unique)} FunctionApp instances; expected one")
    return unique[0]


def build_table(app: func.FunctionRegister, environ: Mapping[str, str]) -> dict[str, FunctionSpec]:
    """Call ``app.get_functions()`` once (a second call on the same app raises) and index the result."""
    table: dict[str, FunctionSpec] = {}
    for fn in app.get_functions():
        name = fn.get_function_name()
        trigger = fn.get_trigger()
        if trigger is None:
            raise HostError(f"function {name} has no trigger")
        trigger_type = trigger.get_binding_name()
        bindings = [_plain(b) for b in fn.get_bindings_dict().get("bindings", [])]
        tdict: dict[str, Any] = _plain(trigger.get_dict_repr())
        if trigger_type not in SUPPORTED_TRIGGERS:
            logger.warning("function %s: trigger %s is not supported by the local host; skipped", name, trigger_type)
            continue
        if trigger_type != HTTP:
            for key, value in list(tdict.items()):
                if isinstance(value, str) and key not in ("name", "type", "direction", "connection"):
                    tdict[key] = resolve_placeholders(value, environ, where=f"function {name}, binding {key}")
        user_fn = fn.get_user_function()
        arg_name = str(tdict.get("name") or "")
        params = inspect.signature(user_fn).parameters
        if arg_name not in params:
            raise HostError(f"function {name}: trigger argument {arg_name!r} is not a parameter of the function")
        others = [
            b
            for b in bindings
            if b.get("type") not in (trigger_type, "http") and b.get("name") not in (arg_name, "$return")
        ]
        if others:
            logger.warning(
                "function %s: bindings %s are not provided by the local host",
                name,
                [f"{b.get('type')}:{b.get('name')}" for b in others],
            )
        table[name] = FunctionSpec(
            name=name,
            trigger_type=trigger_type,
            trigger=tdict,
            bindings=bindings,
            user_function=user_fn,
            arg_name=arg_name,
            disabled=is_disabled(name, environ),
            accepts_context="context" in params and arg_name != "context",
        )
    return table


def load_functions(app_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, FunctionSpec]:
    env = os.environ if environ is None else environ
    module = import_app_module(app_dir)
    return build_table(find_function_app(module), env)
