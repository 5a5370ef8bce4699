"""Finding spider classes by name (in the ``spiders/`` folder beside the config) or by import path,
and the hooks a config entry names by import path."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from .config import Config
from .exceptions import ConfigError
from .hooks import Hooks, hooks_for
from .spider import Spider


def _spider_classes(module: ModuleType) -> list[type[Spider]]:
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, Spider)
        and value is not Spider
        and value.__module__ == module.__name__
        and "name" in vars(value)
    ]


def _use_project(base_dir: Path) -> None:
    """Make ``base_dir``'s modules (its ``spiders`` package first) the ones imports find.

    A process that loads two projects in turn (tests, or a program using the library) must not get
    the first project's ``spiders`` package from the module cache.
    """
    folder = str(base_dir)
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    cached = sys.modules.get("spiders")
    cached_paths = list(getattr(cached, "__path__", []))
    if cached is not None and cached_paths != [str(base_dir / "spiders")]:
        for name in [name for name in sys.modules if name == "spiders" or name.startswith("spiders.")]:
            del sys.modules[name]
    importlib.invalidate_caches()


def _project_spiders(base_dir: Path) -> dict[str, type[Spider]]:
    folder = base_dir / "spiders"
    if not folder.is_dir():
        return {}
    _use_project(base_dir)
    found: dict[str, type[Spider]] = {}
    for info in pkgutil.iter_modules([str(folder)]):
        module = importlib.import_module(f"spiders.{info.name}")
        for cls in _spider_classes(module):
            found.setdefault(cls.name, cls)
    return found


def find_spider_class(reference: str, base_dir: Path) -> type[Spider]:
    """``module:Class`` imports that class; a plain name is looked up in ``spiders/``."""
    if ":" in reference:
        module_name, _, class_name = reference.partition(":")
        _use_project(base_dir)
        cls = getattr(importlib.import_module(module_name), class_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Spider)):
            raise LookupError(f"{reference} is not a Spider class")
        return cls
    found = _project_spiders(base_dir)
    if reference not in found:
        known = ", ".join(sorted(found)) or "none"
        raise LookupError(f"no spider named {reference!r} in {base_dir / 'spiders'} (found: {known})")
    return found[reference]


def load_object(reference: str, base_dir: Path) -> object:
    """``module:name`` (``name`` may be dotted: ``module:Class.attribute``), imported with the
    project beside the config first on the path, as spiders are. LookupError says why it
    cannot be had, in a line for the config's error list."""
    module_name, _, attribute = reference.partition(":")
    _use_project(base_dir)
    try:
        found: object = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as error:
        raise LookupError(f"cannot import {reference}: {error}") from None
    except Exception as error:  # the user's module failed while importing
        raise LookupError(f"importing {reference} raised {type(error).__name__}: {error}") from None
    for part in attribute.split("."):
        if (found := getattr(found, part, None)) is None:
            raise LookupError(f"cannot import {reference}: {module_name} has no {attribute}")
    return found


def load_spiders(config: Config, only: str | None = None) -> dict[int, Spider]:
    """Instantiate the configured spiders (or just ``only``), by their index in ``config.spiders``,
    naming the config field on error."""
    spiders: dict[int, Spider] = {}
    problems: list[str] = []
    for index, entry in enumerate(config.spiders):
        field = f"spiders[{index}]"
        try:
            cls = find_spider_class(entry.spider, config.base_dir)
        except (ImportError, LookupError, SyntaxError) as error:
            problems.append(f"{field}.spider: {error}")
            continue
        except Exception as error:  # the user's module failed while importing
            problems.append(f"{field}.spider: importing it raised {type(error).__name__}: {error}")
            continue
        if only is not None and cls.name != only and entry.spider != only:
            continue
        try:
            spiders[index] = cls(**entry.args)
        except TypeError as error:
            problems.append(f"{field}.args: {error}")
            continue
        try:
            # Imported now, so that `crawler check` and the start of a run name a bad one.
            configured_hooks(config, index, spiders[index])
        except ConfigError as error:
            problems += error.problems
    if problems:
        raise ConfigError(problems)
    if only is not None and not spiders:
        raise ConfigError([f"no spider named {only!r} in the config"])
    return spiders


def configured_hooks(config: Config, index: int, spider: Spider) -> Hooks:
    """The hooks around ``spider``'s requests and responses: its own, and those its config entry
    names by import path, in the order ``crawler.hooks`` describes. One problem line per hook
    that cannot be had, naming its field."""
    entry, field = config.spiders[index], f"spiders[{index}]"
    problems: list[str] = []
    imported: dict[str, list[Callable[..., Any]]] = {"request_hooks": [], "response_hooks": []}
    for name, found in imported.items():
        for position, reference in enumerate(getattr(entry, name)):
            where = f"{field}.{name}[{position}]"
            try:
                hook = load_object(reference, config.base_dir)
            except LookupError as error:
                problems.append(f"{where}: {error}")
            else:
                if callable(hook):
                    found.append(hook)
                else:
                    problems.append(f"{where}: {reference} is not a function: {hook!r:.60}")
    try:
        hooks = hooks_for(spider, imported["request_hooks"], imported["response_hooks"])
    except LookupError as error:
        problems.append(f"{field}.spider: {error}")
    if problems:
        raise ConfigError(problems)
    return hooks
