"""crawler: a synchronous web-crawling framework with real sessions and crash-safe checkpoints.

Write a :class:`Spider`, name it in ``config.toml``, and run ``crawler run config.toml``.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import crawl
    from .auth.tokens import HeaderAuth
    from .content import accepts
    from .exceptions import CrawlerError, FetchError, LoginFailed
    from .links import LinkExtractor, Rule
    from .pipelines import DropItem
    from .request import Request
    from .response import Response
    from .spider import Spider

__version__ = "0.1.0"

__all__ = [
    "CrawlerError",
    "DropItem",
    "FetchError",
    "HeaderAuth",
    "LinkExtractor",
    "LoginFailed",
    "Request",
    "Response",
    "Rule",
    "Spider",
    "__version__",
    "accepts",
    "crawl",
]

# Imported on first use, not with the package: the ``crawler`` command's entry point lives in it,
# and must be able to catch SIGTERM before the libraries behind these (requests, pydantic, lxml)
# take their time to load.
_PUBLIC_HOMES = {
    "CrawlerError": ".exceptions",
    "DropItem": ".pipelines",
    "FetchError": ".exceptions",
    "HeaderAuth": ".auth.tokens",
    "LinkExtractor": ".links",
    "LoginFailed": ".exceptions",
    "Request": ".request",
    "Response": ".response",
    "Rule": ".links",
    "Spider": ".spider",
    "accepts": ".content",
    "crawl": ".api",
}


def __getattr__(name: str) -> Any:
    if (home := _PUBLIC_HOMES.get(name)) is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Only the CLI configures logging; a library user decides where our messages go.
logging.getLogger(__name__).addHandler(logging.NullHandler())
