"""crawler: a synchronous web-crawling framework with real sessions and crash-safe checkpoints.

Write a :class:`Spider`, name it in ``config.toml``, and run ``crawler run config.toml``.
"""

import logging

from .auth.tokens import HeaderAuth
from .content import accepts
from .exceptions import CrawlerError, FetchError, LoginFailed
from .request import Request
from .response import Response
from .spider import Spider

__version__ = "0.1.0"

__all__ = [
    "CrawlerError",
    "FetchError",
    "HeaderAuth",
    "LoginFailed",
    "Request",
    "Response",
    "Spider",
    "__version__",
    "accepts",
]

# Only the CLI configures logging; a library user decides where our messages go.
logging.getLogger(__name__).addHandler(logging.NullHandler())
