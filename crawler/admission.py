"""Which requests a spider's output may add to the crawl: a URL in its one normal form, a scheme
we fetch, within the crawl's rules, storable; the rest is dropped and counted by reason."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from .exceptions import MalformedURL
from .request import Request, fingerprint, has_empty_authority
from .rules import CrawlRules
from .stats import Stats
from .urls import WEB_SCHEMES, normalize_url, scheme_of

logger = logging.getLogger(__name__)


def checked_request(
    request: Request,
    stats: Stats,
    spider: str,
    base_url: str | None = None,
    *,
    rules: CrawlRules | None = None,
    depth: int = 0,
) -> Request | None:
    """Put the URL in its one normal form (resolved against ``base_url`` if relative), and drop
    (counting why) what can never be fetched or stored, or what the crawl's rules leave out."""
    try:
        if has_empty_authority(request.url.strip()):
            raise MalformedURL(request.url, "no host")
        url = normalize_url(request.url, base_url)
        scheme = scheme_of(url)
        if scheme not in WEB_SCHEMES:
            stats.inc(f"filtered:scheme:{scheme or 'none'}")
            return None
        checked = request if url == request.url else request.replace(url=url)
        # Also what dedupe will use, cached for the frontier; it refuses what cannot be encoded.
        fingerprint(spider, checked)
    except ValueError as error:  # MalformedURL, and UnicodeError from a host IDNA cannot encode
        stats.inc("malformed:url")
        logger.warning(
            "dropped a malformed link %.200r on %s: %s", request.url, base_url or "start requests",
            getattr(error, "reason", error),
        )
        return None
    if rules is not None and (reason := rules.refusal(url, depth)):
        stats.inc(f"filtered:{reason}")
        return None
    if request.meta:
        try:
            json.dumps(request.meta)
        except (TypeError, ValueError):
            stats.inc("malformed:meta")
            logger.warning("dropped a request for %s: its meta is not JSON-serializable", url)
            return None
    return checked


def checked_requests(requests: Iterable[Any], stats: Stats, spider: str) -> Iterable[Request]:
    for request in requests:
        if not isinstance(request, Request):
            stats.inc("malformed:output")
            logger.warning("start_requests yielded a %s; expected a Request", type(request).__name__)
        elif (checked := checked_request(request, stats, spider)) is not None:
            yield checked
