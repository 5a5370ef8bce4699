"""The practice site's ``/robots.txt``: whatever a test sets, even while the site is serving.

``site.robots`` is the site's :class:`RobotsFile`. With no body (and no ``sitemaps``) it
answers 404 like a site without one; a body is served as ``text/plain``; ``status`` makes it
answer 403, 503 and the like; ``delay`` holds the answer back, so concurrent first fetches
overlap in time; ``sitemaps`` adds ``Sitemap:`` lines.
Hits are counted like any path: ``site.counters.hits("/robots.txt")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from crawler.practice.sitemaps import site_url

if TYPE_CHECKING:
    from crawler.practice.endpoints import Handler


@dataclass
class RobotsFile:
    """What ``/robots.txt`` answers; change the fields, the next request sees them.

    ``body``: the file; ``str`` goes out as UTF-8, ``bytes`` as they are (for files that are
    not UTF-8 or not text at all); ``None`` means the site has no robots.txt.
    ``status``: the status to answer with the body; ``None`` means 200 with a body, 404 without.
    ``delay``: seconds to wait before answering.
    ``sitemaps``: paths of the site (``"/sitemap.xml"``) named after the body in ``Sitemap:``
    lines, as absolute URLs; with no body, the file is these lines alone.
    """

    body: str | bytes | None = None
    status: int | None = None
    delay: float = 0.0
    sitemaps: tuple[str, ...] = ()

    def answer(self, handler: Handler) -> None:
        # Read each field once: a test may change them while this request is being answered.
        body, status, delay, sitemaps = self.body, self.status, self.delay, self.sitemaps
        if delay and handler.server.stopping.wait(delay):
            handler.close_connection = True  # shutting down: no answer that never waited
            return
        if body is None and status is None and not sitemaps:
            handler._not_found("/robots.txt")
            return
        data = body.encode("utf-8") if isinstance(body, str) else body or b""
        if sitemaps:
            base = site_url(handler)
            lines = "".join(f"Sitemap: {base}{path}\n" for path in sitemaps)
            data += (b"\n" if data and not data.endswith(b"\n") else b"") + lines.encode()
        handler._send(200 if status is None else status, data, "text/plain; charset=utf-8")
