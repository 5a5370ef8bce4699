"""What the command line lays over a config file (``-s``, ``-a``, ``-o``), as the sections of keys
the file would have held: validated like the file, with errors naming the option and the key."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

from .config import Config
from .exceptions import ConfigError
from .loader import load_spiders

#: Output file suffixes that say the format, as Scrapy's ``-o`` reads them.
_FORMATS = {".jsonl": "jsonl", ".jl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def setting_overrides(assignments: Iterable[str]) -> dict[str, Any]:
    """``-s section.key=value`` options as config sections. A value is read as TOML (``8``,
    ``true``, ``0.5``, ``[429, 503]``, ``"text"``), and as a plain string where it is not TOML."""
    settings = {}
    for assignment in assignments:
        name, value = _split(assignment, "-s", "section.key=value")
        settings[name] = (_value(value), f"-s {assignment}")
    return _sections(settings)


def dotted_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings given as ``{"crawl.workers": 4}`` (``crawler.crawl``'s), as config sections."""
    return _sections({name: (value, f"settings[{name!r}]") for name, value in settings.items()})


def _sections(settings: Mapping[str, tuple[Any, str]]) -> dict[str, Any]:
    """``section.key`` names with their values (and what to call each in an error), as the
    nested sections a config file would have."""
    overrides: dict[str, Any] = {}
    for name, (value, given) in settings.items():
        path = name.split(".")
        if len(path) < 2 or not all(path):
            raise ConfigError([f"{given}: name a key of a section, such as crawl.workers=8"])
        if path[0] == "spiders":
            raise ConfigError([f"{given}: the [[spiders]] entries are set in the file (-a sets a spider's arguments)"])
        section = overrides
        for part in path[:-1]:
            section = section.setdefault(part, {})
            if not isinstance(section, dict):
                raise ConfigError([f"{given}: {part} is set as a key and as a section"])
        section[path[-1]] = value
    return overrides


def spider_arguments(assignments: Iterable[str]) -> dict[str, Any]:
    """``-a name=value`` options: spider arguments, read as ``-s`` values are."""
    return {name: _value(value) for name, value in (_split(item, "-a", "name=value") for item in assignments)}


def overridden(
    config: Config, sections: Mapping[str, Any], *, output: str | None, arguments: Mapping[str, Any],
    spider: str | None, source: str,
) -> Config:
    """``config`` with ``sections`` (settings), the ``output`` path and spider ``arguments`` (for
    the spiders that run: every one, or ``spider``) laid over it, validated like the file;
    ``source`` names where they came from in the errors."""
    overrides = dict(sections)
    if output is not None:
        overrides["output"] = {**overrides.get("output", {}), **_output_section(output)}
    if arguments:
        indices = load_spiders(config, spider).keys()
        overrides["spiders"] = _with_arguments(config.model_dump()["spiders"], arguments, indices)
    return config.with_overrides(overrides, source) if overrides else config


def _output_section(path: str) -> dict[str, Any]:
    """``-o PATH``: the output file (``{spider}`` and ``{format}`` may be in it), and its format
    where the suffix says it; ``-o -`` writes JSON Lines to standard output."""
    if path == "-":
        return {"path": "-", "format": "jsonl"}
    chosen = _FORMATS.get(PurePath(path).suffix.lower())
    return {"path": path, **({"format": chosen} if chosen else {})}


def _with_arguments(spiders: list[dict[str, Any]], arguments: Mapping[str, Any], indices: Iterable[int]) -> list[dict[str, Any]]:
    """The ``[[spiders]]`` entries with ``arguments`` added to the args of those at ``indices``."""
    chosen = set(indices)
    return [
        {**entry, "args": {**(entry.get("args") or {}), **arguments}} if index in chosen else entry
        for index, entry in enumerate(spiders)
    ]


def _split(assignment: str, option: str, shape: str) -> tuple[str, str]:
    name, equals, value = assignment.partition("=")
    if not equals or not name.strip():
        raise ConfigError([f"{option} {assignment}: expected {shape}"])
    return name.strip(), value


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text
