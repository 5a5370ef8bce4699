"""The spider API: what users subclass."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime
from functools import cached_property
from typing import Any, ClassVar, get_args, get_origin, get_type_hints

from pydantic import BaseModel, PydanticSchemaGenerationError, TypeAdapter, ValidationError

from .auth.tokens import TokenAuth
from .content import accepts
from .links import Rule, parsed_by_rules
from .request import Request
from .response import Response
from .sitemap_following import SITEMAP_CONTENT_TYPES, SitemapFollowing
from .sitemaps import MAX_ENTRIES, MAX_SIZE
from .stats import Stats

#: What a callback may yield.
CallbackOutput = Request | BaseModel | dict[str, Any]


def _argument(cls: type, key: str, value: Any) -> Any:
    """``value`` for the class attribute ``key``, checked against what the class declares: its
    annotation if it has one, else the type of its default (``urls = []`` takes a list). A value
    of the wrong type would otherwise only fail inside the crawl, as a TypeError."""
    annotation = _annotations(cls).get(key)
    if annotation is not None:
        if get_origin(annotation) is ClassVar:
            annotation = get_args(annotation)[0] if get_args(annotation) else Any
        try:
            return TypeAdapter(annotation).validate_python(value)
        except ValidationError as error:
            problem = error.errors(include_url=False)[0]["msg"]
            raise TypeError(f"argument {key!r} of spider {cls.__name__}: {problem[0].lower()}{problem[1:]}") from None
        except PydanticSchemaGenerationError:
            return value  # an annotation pydantic cannot check: taken as given
    default = getattr(cls, key)
    expected = _LIKE.get(type(default), type(default))
    if default is not None and not callable(default) and not isinstance(value, expected):
        raise TypeError(
            f"argument {key!r} of spider {cls.__name__} must be {type(default).__name__}, "
            f"not {type(value).__name__} ({value!r:.40})"
        )
    return value


# Defaults whose type stands for a family: a float default takes an int, a tuple a list.
_LIKE: dict[type, type | tuple[type, ...]] = {float: (int, float), tuple: (tuple, list), list: (list, tuple)}


def _annotations(cls: type) -> dict[str, Any]:
    try:
        return get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a forward reference the user's module cannot resolve
        return {}


class Spider:
    """Subclass this, give it a ``name`` and ``start_urls`` (or ``start_requests``), and write callbacks.

    A callback receives a :class:`Response` and yields :class:`Request` objects to follow and items
    (pydantic models or dicts). When ``item_model`` is set, dict items are validated against it, and
    an item that fails goes to the checkpoint's rejected-items store instead of the output.

    Arguments from ``config.toml`` (``args = {...}``) set class attributes of the same name; an
    argument the spider does not declare is an error, so a typo cannot pass silently, and so is
    one of another type than the attribute's annotation (or, without one, its default) says.
    """

    name: ClassVar[str]
    start_urls: ClassVar[tuple[str, ...] | list[str]] = ()
    item_model: ClassVar[type[BaseModel] | None] = None
    #: Domains followed links may go to, each with its subdomains (empty: any); the config's
    #: ``allowed_domains`` replaces it. Requests to other hosts are counted as ``filtered:offsite``.
    allowed_domains: ClassVar[tuple[str, ...] | list[str]] = ()
    #: Error statuses (>= 400) that still reach the callback instead of failing the request.
    handle_statuses: ClassVar[frozenset[int]] = frozenset()
    #: What the default ``parse`` does with each page it gets: these rules' links become requests
    #: to their callbacks, or back to ``parse`` to be followed (see :class:`crawler.links.Rule`).
    rules: ClassVar[tuple[Rule, ...] | list[Rule]] = ()
    #: Called as ``hook(request, spider)`` before each attempt at a request: return the request
    #: (or ``request.replace(...)``) to send, or None to drop it. Callables, or names of methods
    #: of this spider; the config's ``request_hooks`` run after these (see ``crawler.hooks``).
    request_hooks: ClassVar[tuple[str | Callable[..., Any], ...] | list[str | Callable[..., Any]]] = ()
    #: Called as ``hook(response, spider)`` before the callback: return the response (or another)
    #: for the callback, or None to drop it. The config's ``response_hooks`` run before these.
    response_hooks: ClassVar[tuple[str | Callable[..., Any], ...] | list[str | Callable[..., Any]]] = ()
    # Starting from sitemaps (see README, "Starting from sitemaps", and crawler.sitemap_following).
    #: Sitemaps to start from (sitemaps.org XML, a ``<urlset>`` or a ``<sitemapindex>``, gzipped
    #: or not, or a text file of URLs), each read by ``parse_sitemap``; a robots.txt URL here
    #: starts from its ``Sitemap:`` lines.
    sitemap_urls: ClassVar[tuple[str, ...] | list[str]] = ()
    #: ``(regex, callback name)`` pairs: the first regex found in a page's URL picks its callback;
    #: a page no rule picks is left out (``filtered:sitemap_rule``).
    sitemap_rules: ClassVar[Sequence[tuple[str, str]]] = ((".*", "parse"),)
    #: Regexes: a sitemap an index or a robots.txt names is read if one is found in its URL
    #: (``filtered:sitemap_follow``). The default reads them all.
    sitemap_follow: ClassVar[Sequence[str]] = (".*",)
    #: A date (``"2024-01-01"``, or a datetime with its zone; UTC if it has none): pages and
    #: sitemaps whose lastmod is older are left out (``filtered:lastmod``), those without kept.
    sitemap_after: ClassVar[str | datetime | date | None] = None
    #: Also follow each page's alternates (``<xhtml:link rel="alternate">``: other languages).
    sitemap_alternate_links: ClassVar[bool] = False
    #: Bytes one sitemap may hold once uncompressed (the protocol's 50 MB); one that inflates
    #: to more, a gzip bomb, is refused there (``malformed:sitemap:too_large``).
    sitemap_max_size: ClassVar[int] = MAX_SIZE
    #: URLs (or sitemaps, in an index) one sitemap may list, the protocol's 50,000; those past
    #: it are left out (``malformed:sitemap:too_many``).
    sitemap_max_urls: ClassVar[int] = MAX_ENTRIES
    #: The counters of the crawl this spider runs in (the summary's), given by the crawl; None
    #: outside one (``crawler.testing``), where what a built-in callback counts is not kept.
    crawl_stats: Stats | None = None

    def __init__(self, **args: Any) -> None:
        for key, value in args.items():
            if key.startswith("_") or not hasattr(type(self), key):
                raise TypeError(f"unknown argument {key!r} for spider {self.name!r}")
            setattr(self, key, _argument(type(self), key, value))

    def start_requests(self) -> Iterable[Request]:
        if self.sitemap_urls:
            SitemapFollowing.of(self)  # a bad rule or date stops the crawl here, before any request
        for url in self.start_urls:
            yield Request(url, callback=self.parse)
        for url in self.sitemap_urls:
            yield Request(url, callback=self.parse_sitemap)

    @accepts(*SITEMAP_CONTENT_TYPES)
    def parse_sitemap(self, response: Response) -> Iterator[CallbackOutput]:
        """The callback of ``sitemap_urls``: a request for each page of a sitemap (to the callback
        ``sitemap_rules`` picks) and for each sitemap of an index or a robots.txt (back here),
        made as the document is read. A document that breaks off keeps what was read before."""
        stats = self.crawl_stats if self.crawl_stats is not None else Stats()
        return self._sitemap_following.requests(response, stats)

    @cached_property
    def _sitemap_following(self) -> SitemapFollowing:
        return SitemapFollowing.of(self)

    def parse(self, response: Response) -> Iterator[CallbackOutput]:
        """The default callback: applies ``rules`` to ``response`` (the rules' requests back to
        ``parse`` come here, so a spider with rules keeps this one, or calls it from its own). A
        spider without rules writes its own."""
        if not self.rules:
            raise NotImplementedError(f"{type(self).__name__}.parse is not defined")
        return parsed_by_rules(self, response)

    # Logging in. A spider that needs a login either gets ``login`` in its config entry (a form
    # login), or defines ``login(self, session)``, which logs in with a ``requests.Session``
    # whose cookie jar every worker shares, and raises ``LoginFailed`` if it cannot.

    def is_logged_out(self, response: Response) -> bool:
        """Whether ``response`` shows the session was logged out (then: log in again, replay).

        By default a 401 or 403; a form login from config also treats landing on its login page
        as logged out. Override for sites that say it another way.
        """
        return response.status in (401, 403)

    def token_auth(self) -> TokenAuth | None:
        """Headers computed for each request as it is sent (e.g. ``HeaderAuth``), or None."""
        return None
