"""Links on a page, and the rules that turn them into requests.

A :class:`LinkExtractor` says which links of a page to take: where on the page, to which URLs
and domains. A :class:`Rule` says what becomes of them: a callback of the spider reads their
pages, or the crawl follows them on, or both. A spider lists its rules in ``rules``, and its
default ``parse`` applies them (:func:`parsed_by_rules`)::

    class ShopSpider(Spider):
        name = "shop"
        start_urls = ["https://shop.example/"]
        rules = (
            Rule(LinkExtractor(restrict_css="ul.pager")),  # no callback: followed
            Rule(LinkExtractor(allow=r"/product/\\d+$"), callback="parse_product"),
        )

Extractors and rules are immutable values that hold no live state (no parsed page, no lock, no
cache of their own), so one instance serves every worker thread, and every worker process
builds the same ones from the spider's class.
"""

from __future__ import annotations

import inspect
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cssselect import SelectorError
from lxml import etree
from parsel import Selector, css2xpath

from .request import Request, has_empty_authority
from .rules import CrawlRules
from .urls import WEB_SCHEMES, normalize_url, scheme_of

if TYPE_CHECKING:
    from .response import Response
    from .spider import CallbackOutput, Spider

#: One regular expression or several, as strings or compiled.
Patterns = str | re.Pattern[str] | Iterable[str | re.Pattern[str]]
#: One name (a domain, a selector, a tag...) or several.
Names = str | Iterable[str]

#: What a link to a file of one of these extensions is left out for by default: files no
#: callback reads as text. The crawl would skip them by their content type anyway, but only
#: after asking for them; their extension saves the request.
DEFAULT_DENY_EXTENSIONS = frozenset(
    f".{extension}"
    for extension in (
        # images
        "avif", "bmp", "eps", "gif", "heic", "ico", "jpeg", "jpg", "png", "psd", "svg", "tif",
        "tiff", "webp",
        # audio
        "aac", "aif", "aiff", "flac", "m4a", "mid", "midi", "mp3", "oga", "ogg", "opus", "wav",
        "wma",
        # video
        "3gp", "asf", "avi", "flv", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ogv", "qt", "rm",
        "swf", "webm", "wmv",
        # archives and disk images
        "7z", "bz2", "cab", "dmg", "gz", "iso", "lz", "lzma", "rar", "tar", "tgz", "xz", "zip",
        "zst",
        # office documents
        "doc", "docx", "epub", "odg", "odp", "ods", "odt", "pdf", "pps", "ppt", "pptx", "rtf",
        "xls", "xlsx",
        # programs, packages and fonts
        "apk", "bin", "deb", "exe", "jar", "msi", "rpm", "eot", "otf", "ttf", "woff", "woff2",
    )
)

# The spider's default parse is what applies the rules (see Spider.parse), so a page whose links
# are to be followed is requested back to it.
_PARSE = "parse"
#: The ``meta`` key of a request for a rule with both a callback and ``follow``: the callback
#: that ``parse`` runs on its page before following the page's links.
RULE_CALLBACK = "rule_callback"


def _several(value: Any) -> tuple[Any, ...]:
    """``value`` as a tuple, one string (or compiled pattern) being one value, not its letters."""
    if isinstance(value, (str, re.Pattern)):
        return (value,)
    return tuple(value)


def _checked_css(query: str) -> str:
    # A typo in a selector is told when the spider's class is defined, not on every page.
    try:
        css2xpath(query)
    except SelectorError as error:
        raise ValueError(f"restrict_css {query!r} is not a CSS selector: {error}") from None
    return query


def _checked_xpath(query: str) -> str:
    try:
        etree.XPath(query)
    except etree.XPathSyntaxError as error:
        raise ValueError(f"restrict_xpaths {query!r} is not an XPath expression: {error}") from None
    return query


def _extension(extension: str) -> str:
    """``"PDF"`` or ``".pdf"`` as ``".pdf"``."""
    return "." + extension.strip().lower().lstrip(".")


@dataclass(frozen=True, slots=True)
class Link:
    """A link found on a page. ``url`` is absolute, in the crawl's one URL form, without a
    fragment; ``text`` is what the link says, its whitespace collapsed; ``nofollow`` tells a
    ``rel="nofollow"`` (rules and ``follow_all`` follow such links all the same, as browsers and
    Scrapy do: the site asks search engines not to rank them, not crawlers not to visit them)."""

    url: str
    text: str = ""
    nofollow: bool = False


@dataclass(frozen=True, slots=True, init=False)
class LinkExtractor:
    """Which links of a page to take, in page order.

    ``allow`` / ``deny``: regular expressions searched in the absolute URL; a link must match one
    ``allow`` pattern (if there are any) and no ``deny`` pattern. ``allow_domains`` /
    ``deny_domains``: domains a link's host must be (or must not be), each with its subdomains.
    ``restrict_css`` / ``restrict_xpaths``: only links inside what these select (a selector may
    select the links themselves). ``tags`` / ``attrs``: the elements and attributes that hold
    links. ``deny_extensions``: file extensions left out (by default binary files:
    ``DEFAULT_DENY_EXTENSIONS``; ``()`` for none, ``DEFAULT_DENY_EXTENSIONS - {".pdf"}`` to take
    PDFs). ``unique``: each URL once, at its first place on the page.

    Each link is made absolute against the page (or its ``<base href>``) and put in the crawl's
    one URL form, its fragment dropped. What is no web page is left out: other schemes
    (``mailto:``, ``javascript:``, ``tel:``, ``data:``...), and links the crawl would refuse as
    malformed (a backslash, userinfo, a control character inside, no host, a bad port).
    """

    filters: CrawlRules
    denied_domains: CrawlRules
    restrict_css: tuple[str, ...]
    restrict_xpaths: tuple[str, ...]
    tags: tuple[str, ...]
    attrs: tuple[str, ...]
    deny_extensions: frozenset[str] = field(repr=False)  # the default's many entries would bury the rest
    unique: bool

    def __init__(
        self,
        allow: Patterns = (),
        *,
        deny: Patterns = (),
        allow_domains: Names = (),
        deny_domains: Names = (),
        restrict_css: Names = (),
        restrict_xpaths: Names = (),
        tags: Names = ("a", "area"),
        attrs: Names = ("href",),
        deny_extensions: Names = DEFAULT_DENY_EXTENSIONS,
        unique: bool = True,
    ) -> None:
        set_field = object.__setattr__  # frozen dataclass: assign once, here
        # The same test the crawl makes of its own allow, deny and allowed_domains, so a pattern
        # or a domain means one thing in config.toml and in a spider.
        set_field(self, "filters", CrawlRules.build(_several(allow_domains), _several(allow), _several(deny)))
        set_field(self, "denied_domains", CrawlRules.build(_several(deny_domains)))
        set_field(self, "restrict_css", tuple(_checked_css(query) for query in _several(restrict_css)))
        set_field(self, "restrict_xpaths", tuple(_checked_xpath(query) for query in _several(restrict_xpaths)))
        set_field(self, "tags", tuple(tag.lower() for tag in _several(tags)))
        set_field(self, "attrs", tuple(attr.lower() for attr in _several(attrs)))
        set_field(self, "deny_extensions", frozenset(_extension(ext) for ext in _several(deny_extensions)))
        set_field(self, "unique", unique)

    def extract_links(self, response: Response) -> list[Link]:
        """The links of ``response`` this extractor takes, in page order."""
        selector = response.selector
        if selector.type not in ("html", "xml") or not self.tags:
            # A JSON body has no elements; and without tags, iter() below would take every element.
            return []
        base = _base_url(selector.root, response.url)
        links: list[Link] = []
        taken: set[str] = set()
        for element in self._elements(selector):
            for attr in self.attrs:
                value = element.get(attr)
                if value is None or (url := self._url(value, base)) is None:
                    continue
                if self.unique:
                    if url in taken:
                        continue
                    taken.add(url)
                links.append(Link(url, " ".join("".join(element.itertext()).split()), _is_nofollow(element)))
        return links

    def _elements(self, selector: Selector) -> Iterator[etree._Element]:
        """The page's link elements, in page order, within the restricting parts if any."""
        # "{*}a" is <a> with or without a namespace: XHTML parsed as XML has one.
        patterns = [f"{{*}}{tag}" for tag in self.tags]
        everywhere = selector.root.iter(*patterns)
        if not (self.restrict_css or self.restrict_xpaths):
            return everywhere
        regions = chain(
            *(selector.css(query) for query in self.restrict_css),
            *(selector.xpath(query) for query in self.restrict_xpaths),
        )
        # Kept as a set and read in the page's order, so links inside parts that overlap, or
        # that several selectors name, come once and where they are on the page.
        inside: set[etree._Element] = set()
        for region in regions:
            if isinstance(region.root, etree._Element):  # not a text or an attribute it selected
                inside.update(region.root.iter(*patterns))
        return (element for element in everywhere if element in inside)

    def _url(self, value: str, base: str) -> str | None:
        """The absolute URL of an attribute's ``value``, or None if it is not a link to take."""
        if has_empty_authority(value.strip()):
            return None  # "//" or "http://": urljoin would quietly make it the page itself
        try:
            url = normalize_url(value, base)
        except ValueError:  # MalformedURL, and UnicodeError from a host IDNA cannot encode
            return None
        if scheme_of(url) not in WEB_SCHEMES:
            return None
        # In the normal form the first "#" starts the fragment: every other one is escaped.
        url = url.partition("#")[0]
        if self.filters.refusal(url, depth=0) is not None:
            return None
        if self.denied_domains.allowed_domains and self.denied_domains.is_on_site(url):
            return None
        if self.deny_extensions and posixpath.splitext(urlsplit(url).path)[1].lower() in self.deny_extensions:
            return None
        return url


def _base_url(root: etree._Element, page_url: str) -> str:
    """What the page's relative links are relative to: its first ``<base href>`` (resolved
    against the page's URL), as browsers read it, else the page's URL, which is also what a
    base that is no web URL leaves."""
    for base in root.iter("{*}base"):
        if (href := base.get("href")) is None:
            continue
        try:
            url = normalize_url(href, page_url)
        except ValueError:
            return page_url
        return url if scheme_of(url) in WEB_SCHEMES else page_url
    return page_url


def _is_nofollow(element: etree._Element) -> bool:
    return "nofollow" in (element.get("rel") or "").lower().split()


#: The options ``Response.follow_all`` passes to a LinkExtractor (the rest go to the requests).
LINK_OPTIONS = frozenset(inspect.signature(LinkExtractor).parameters)


def _method_name(method: str | Callable[..., Any] | None) -> str | None:
    # A function from the class body (callback=parse_product) is stored by name, as Request does.
    return method.__name__ if callable(method) else method


@dataclass(frozen=True, slots=True, init=False)
class Rule:
    """What a spider does with the links ``link_extractor`` takes from a page (by default: all).

    ``callback`` names the spider's method that reads their pages (a name, or the function
    itself from the class body: requests are stored by callback name). ``follow`` says whether
    the rules are applied to their pages in turn; it defaults to True without a callback and to
    False with one. With both, a page's callback runs first, then its links are followed.
    ``process_request`` names a spider method called with each request and the page it comes
    from; it returns the request to make (changed with ``request.replace(...)`` if need be:
    ``priority``, ``meta``, ``headers``), or None to leave the link out.
    """

    link_extractor: LinkExtractor
    callback: str | None
    follow: bool
    process_request: str | None

    def __init__(
        self,
        link_extractor: LinkExtractor | None = None,
        callback: str | Callable[..., Any] | None = None,
        follow: bool | None = None,
        process_request: str | Callable[..., Any] | None = None,
    ) -> None:
        callback = _method_name(callback)
        follow = callback is None if follow is None else follow
        if callback is None and not follow:
            raise ValueError("a Rule with no callback and follow=False would fetch its links for nothing")
        set_field = object.__setattr__  # frozen dataclass: assign once, here
        set_field(self, "link_extractor", link_extractor or LinkExtractor())
        set_field(self, "callback", callback)
        set_field(self, "follow", follow)
        set_field(self, "process_request", _method_name(process_request))

    def request(self, link: Link) -> Request:
        """The request for ``link``: to the callback, or back to ``parse`` to follow it (telling
        ``parse`` the callback to run first, if there is one)."""
        if not self.follow:
            return Request(link.url, self.callback)
        if self.callback is None:
            return Request(link.url, _PARSE)
        return Request(link.url, _PARSE, meta={RULE_CALLBACK: self.callback})


def parsed_by_rules(spider: Spider, response: Response) -> Iterator[CallbackOutput]:
    """What the default ``parse`` of a spider with ``rules`` yields for ``response``.

    For a page a rule with both a callback and ``follow`` led to, first what that callback
    yields. Then, rule by rule, a request for each link the rule's extractor takes, except the
    links an earlier rule took: a link goes where the first rule that takes it says.
    """
    if (callback := response.meta.get(RULE_CALLBACK)) is not None:
        yield from getattr(spider, callback)(response) or ()
    taken: set[str] = set()
    for rule in spider.rules:
        for link in rule.link_extractor.extract_links(response):
            if link.url in taken:
                continue
            taken.add(link.url)
            request: Request | None = rule.request(link)
            if rule.process_request is not None:
                request = getattr(spider, rule.process_request)(request, response)
            if request is not None:
                yield request
