"""Finding, before crawling, the callbacks a spider names but does not have.

A request's callback is looked up only when its response comes back, so a misspelt name fails
page after page, deep into a crawl. What the spider's source says is known at once: a
``Request(url, callback=...)``, ``Request(url, "name")``, ``response.follow(link, ...)``,
``follow_all`` or ``Rule(extractor, ...)`` whose callback is ``self.<name>`` or the string
``"<name>"``. Callbacks chosen at run time (a variable, ``getattr``) are left to the crawl, which
fails their requests one line each.
"""

from __future__ import annotations

import ast
import inspect
import os
import textwrap
from dataclasses import dataclass

from .spider import Spider

# Calls that take a callback: the argument's name, and its position when given without one.
_TAKES_CALLBACK = {"Request": 1, "follow": 1, "follow_all": 1, "Rule": 1}


@dataclass(frozen=True, slots=True)
class MissingCallback:
    spider: str
    callback: str
    where: str  # "spiders/products.py:31"

    def __str__(self) -> str:
        return f"{self.where}: spider {self.spider!r} has no callback {self.callback!r}"


def missing_callbacks(spider: type[Spider]) -> list[MissingCallback]:
    """The callbacks ``spider``'s own source code names that the class does not have."""
    missing = []
    for cls in spider.__mro__:
        if cls is Spider or not issubclass(cls, Spider):
            continue
        try:
            lines, first_line = inspect.getsourcelines(cls)
            path = _shown(inspect.getsourcefile(cls) or "<unknown>")
        except (OSError, TypeError):
            continue  # no source to read (built at run time): the crawl will tell
        tree = ast.parse(textwrap.dedent("".join(lines)))
        for name, line in _named_callbacks(tree):
            if not callable(getattr(spider, name, None)):
                missing.append(MissingCallback(spider.name, name, f"{path}:{first_line + line - 1}"))
    return missing


def _shown(path: str) -> str:
    """``path`` relative to the working folder when it is inside it (``spiders/products.py``)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _named_callbacks(tree: ast.AST) -> list[tuple[str, int]]:
    named = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if function not in _TAKES_CALLBACK:
            continue
        given = [keyword.value for keyword in node.keywords if keyword.arg == "callback"]
        position = _TAKES_CALLBACK[function]
        if not given and len(node.args) > position:
            given = [node.args[position]]
        for value in given:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                named.append((value.value, value.lineno))
            elif (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
                  and value.value.id == "self"):
                named.append((value.attr, value.lineno))
    return sorted(named, key=lambda found: found[1])
