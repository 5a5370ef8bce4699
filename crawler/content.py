"""Which content types a callback wants, so binary responses are skipped before their body is read.

A crawl that follows links finds images, archives and PDFs behind them. Reading those whole only
to hand a parser bytes it cannot use wastes bandwidth and memory, so by default a callback gets
text: HTML, XML, JSON and plain text. A callback that wants something else says so::

    @accepts("application/pdf")
    def parse_report(self, response): ...
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

Callback = TypeVar("Callback", bound=Callable[..., Any])

_ATTRIBUTE = "__crawler_accepts__"


class ContentTypes:
    """Media-type patterns (``text/html``, ``image/*``, ``application/*+xml``, ``*/*``)."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = tuple(pattern.strip().lower() for pattern in patterns)
        self._anything = "*/*" in self.patterns

    def __repr__(self) -> str:
        return f"ContentTypes({', '.join(self.patterns)})"

    def allows(self, content_type: str | None) -> bool:
        """Whether a response with this ``Content-Type`` header is wanted. A response without one
        is: what it is can only be told from its body, which is the callback's call."""
        if self._anything or not content_type:
            return True
        media_type = content_type.split(";", 1)[0].strip().lower()
        return not media_type or any(fnmatch.fnmatchcase(media_type, pattern) for pattern in self.patterns)


TEXT = ContentTypes(
    (
        "text/html",
        "application/xhtml+xml",
        "text/xml",
        "application/xml",
        "application/*+xml",
        "text/plain",
        "application/json",
        "application/*+json",
    )
)


def accepts(*patterns: str) -> Callable[[Callback], Callback]:
    """Mark a callback as wanting responses of these media types (instead of text only)."""
    if not patterns:
        raise TypeError("accepts() needs at least one media type, e.g. accepts('application/pdf')")

    def mark(callback: Callback) -> Callback:
        setattr(callback, _ATTRIBUTE, ContentTypes(patterns))
        return callback

    return mark


def accepted_by(callback: Callable[..., Any]) -> ContentTypes:
    return getattr(callback, _ATTRIBUTE, TEXT)
