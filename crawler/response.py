"""What a callback receives: the body, decoded correctly, with selectors and link helpers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urljoin

from lxml import etree
from parsel import Selector, SelectorList
from requests.structures import CaseInsensitiveDict
from w3lib.encoding import html_to_unicode

from .exceptions import MalformedURL
from .links import LINK_OPTIONS, LinkExtractor
from .request import Request, has_empty_authority
from .urls import normalize_url


class Response:
    """A fetched page.

    ``url`` is the final URL after redirects, and the base for relative links. ``request`` is the
    request that produced it, and ``meta`` is that request's meta.
    """

    def __init__(
        self,
        url: str,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        request: Request,
    ) -> None:
        self.url = url
        self.status = status
        # Header names are case-insensitive, whoever builds the response (tests often pass a dict).
        self.headers = headers if isinstance(headers, CaseInsensitiveDict) else CaseInsensitiveDict(headers)
        self.body = body
        self.request = request
        # Filled on first use. Not functools.cached_property: before Python 3.12 it takes one
        # lock shared by every instance, which serialises all worker threads on it.
        self._decoded: tuple[str, str] | None = None
        self._selector: Selector | None = None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url}>"

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.request.meta

    def _decode(self) -> tuple[str, str]:
        if self._decoded is None:
            # Header charset, then BOM, then <meta charset>, then UTF-8: what browsers do.
            # requests' own .text falls back to ISO-8859-1 for text/html without a header
            # charset, which garbles most of the modern web.
            self._decoded = html_to_unicode(self.headers.get("Content-Type"), self.body)
        return self._decoded

    @property
    def undecodable(self) -> bool:
        """Whether the body, once decoded, had bytes its encoding does not allow (each became
        U+FFFD). False until the text was asked for: an undecoded body was never in question."""
        if self._decoded is None:
            return False
        encoding, text = self._decoded
        if "\ufffd" not in text:
            return False
        try:
            # A page may carry U+FFFD itself; only a strict decode tells it from a bad byte.
            self.body.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            return True
        return False

    @property
    def truncated_by_depth(self) -> bool:
        """Whether the parser gave up on the page's nesting: libxml2 builds no more than about
        2,048 levels (with huge_tree, as parsel parses) and then stops, so the tree lacks what
        was deeper and everything after it. False until the selector was built: an unparsed page
        was never in question."""
        if self._selector is None or self._selector.type not in ("html", "xml"):
            return False
        # The tree keeps the parser parsel made for this page alone, and with it that parse's
        # errors, so nothing is parsed twice. With huge_tree libxml2's other resource limits (on
        # a text's or a name's length) stand at a gigabyte: at page sizes this code means depth.
        # The code, not the message, is what is checked.
        parser = self._selector.root.getroottree().parser
        return any(error.type == etree.ErrorTypes.ERR_RESOURCE_LIMIT for error in parser.error_log)

    @property
    def encoding(self) -> str:
        return self._decode()[0]

    @property
    def text(self) -> str:
        return self._decode()[1]

    @property
    def selector(self) -> Selector:
        if self._selector is None:
            self._selector = Selector(text=self.text, base_url=self.url)
        return self._selector

    def css(self, query: str) -> SelectorList[Selector]:
        return self.selector.css(query)

    def xpath(self, query: str, **namespaces_and_variables: Any) -> SelectorList[Selector]:
        return self.selector.xpath(query, **namespaces_and_variables)

    def json(self) -> Any:
        return json.loads(self.body)

    def urljoin(self, url: str) -> str:
        return urljoin(self.url, url)

    def follow(
        self,
        url: str | Selector,
        callback: str | Callable[..., Any] | None = None,
        **request_options: Any,
    ) -> Request:
        """A request for a link on this page; ``url`` may be relative, or an ``<a>`` selector."""
        if isinstance(url, Selector):
            # An <a> element gives its href; an attribute or text selector (``::attr(href)``) its value.
            if isinstance(url.root, str):
                url = url.root
            elif "href" in url.attrib:
                url = url.attrib["href"]
            else:
                raise ValueError(f"cannot follow {url.get()[:80]!r}: it has no href")
        if not has_empty_authority(url.strip()):
            try:
                url = normalize_url(url, self.url)
            except MalformedURL:
                pass  # as written: the engine counts it as malformed and drops it, the page goes on
        return Request(url, callback, **request_options)

    def follow_all(
        self,
        urls: Iterable[str | Selector] | None = None,
        callback: str | Callable[..., Any] | None = None,
        **options: Any,
    ) -> list[Request]:
        """Requests for ``urls`` (each as ``follow`` makes it), or, without ``urls``, for the links
        of this page that a :class:`~crawler.links.LinkExtractor` takes with the link options
        among ``options`` (``allow``, ``deny``, ``allow_domains``, ``deny_domains``,
        ``restrict_css``, ``restrict_xpaths``, ``tags``, ``attrs``, ``deny_extensions``,
        ``unique``; none: every link). The other options are the requests' (``priority``,
        ``meta``...)."""
        link_options = {name: options.pop(name) for name in LINK_OPTIONS & options.keys()}
        if urls is None:
            urls = [link.url for link in LinkExtractor(**link_options).extract_links(self)]
        elif link_options:
            # The options choose among the page's links; URLs given by hand are already chosen
            # (restrict_css="a.product-link" picks anchors with the options instead).
            raise TypeError(f"follow_all() takes urls or link options, not both: {', '.join(sorted(link_options))}")
        return [self.follow(url, callback, **options) for url in urls]
