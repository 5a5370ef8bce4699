"""One parse of every URL, into one form that every later reader agrees on.

Parsers disagree on odd URLs, and the disagreement is exploitable: for
``http://OTHER\\@TOKENHOST/``, ``urlsplit`` reads the host as TOKENHOST (so a token scoped to it
was attached) while urllib3 connected to OTHER (which received the token). So a URL is parsed
once, here, the way browsers do (the WHATWG URL standard, by the ada-url library), and the
serialised result is what the crawl stores, decides on and sends. In that form the authority is
unambiguous: ``urlsplit``, urllib3 and requests all read the same scheme, host and port from it.

Some inputs are refused instead of normalised, because parsers (or the humans reading them)
disagree about them and no honest page needs them:

- a backslash before the query (browsers read it as ``/``, urllib3 and ``urlsplit`` do not);
- userinfo (``user@host``, ``a%40b@host``): a classic way to disguise the real host, and
  credentials that would be sent without the crawl's scope rules;
- control characters, tabs and newlines included (``urlsplit`` silently deletes them, which
  can join two labels of a host into one); surrounding whitespace is only stripped.

What the normal form settles: scheme and host in lowercase; hosts IDNA-encoded with UTS #46
mapping (full-width dots and letters become ASCII), IPv4 addresses in their dotted-quad form
whatever their spelling (``0x7f.1``, ``2130706433``), one trailing dot removed (``host.`` is
``host``), the scheme's default port and a port's leading zeros dropped, the path's dot
segments resolved and unsafe characters percent-encoded.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import urljoin, urlsplit

import ada_url

from .exceptions import MalformedURL

WEB_SCHEMES = frozenset({"http", "https"})

_SURROUNDING = "".join(map(chr, range(0x21)))  # C0 controls and space, which browsers strip
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUERY_OR_FRAGMENT = re.compile(r"[?#]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_AUTHORITY_END = re.compile(r"[/?#]")
_EMPTY_QUERY_OR_FRAGMENT = re.compile(r"\?#|[?#]$")


def normalize_url(url: str, base: str | None = None) -> str:
    """``url`` (resolved against ``base`` if it is relative) in the crawl's one URL form.

    URLs of schemes other than http(s) are returned parsed but otherwise unchecked, so the
    caller can filter them by scheme. Raises MalformedURL for what cannot be read one way only.
    """
    try:
        if base is not None and not _SCHEME.match(url.lstrip(_SURROUNDING)):
            # RFC 3986 resolution in Python, not a call into ada (see _normalized): what could
            # read two ways is refused first, and ada parses the result, so its host is the one
            # decided.
            return _normalized(_resolve(_checked(url), base))
        return _normalized(url)
    except MalformedURL as error:
        raise MalformedURL(url, error.reason) from None


def _checked(url: str) -> str:
    """``url`` without surrounding whitespace, refused if it could be read two ways."""
    text = url.strip(_SURROUNDING)
    if _CONTROL.search(text):
        raise MalformedURL(url, "control character")
    if "\\" in _QUERY_OR_FRAGMENT.split(text, 1)[0]:
        raise MalformedURL(url, "backslash")
    return text


def _resolve(reference: str, base: str) -> str:
    """``reference`` resolved against ``base``, as ``urljoin`` does it."""
    if reference.startswith("/") and not reference.startswith("//") and not _EMPTY_QUERY_OR_FRAGMENT.search(reference):
        # Most links are absolute paths ("/product/1"), which keep only the base's scheme and
        # authority: in a normal-form base, all before the first / ? or # after "://". urljoin
        # would parse and rebuild both URLs for that, which is most of a link's cost; the dot
        # segments it would also remove, ada removes when it parses the result. (urljoin also
        # drops an empty query or fragment, which ada keeps: those few go the long way.)
        scheme_end = base.find("://")
        if scheme_end > 0 and _SCHEME.fullmatch(base, 0, scheme_end + 1):
            end = _AUTHORITY_END.search(base, scheme_end + 3)
            return (base if end is None else base[: end.start()]) + reference
    return urljoin(base, reference)


# Pages link to the same URLs over and over, and each call into ada hands the GIL to another
# worker and back, which under 16 threads costs more than the parse: absolute URLs are cached,
# as written (a link already in normal form, checked again as the crawl takes it in, is found
# at once).
@functools.lru_cache(maxsize=32768)
def _normalized(url: str) -> str:
    text = _checked(url)
    try:
        href: str = ada_url.normalize_url(text)
    except ValueError:
        raise MalformedURL(text, "cannot be parsed") from None
    scheme = scheme_of(href)
    if scheme not in WEB_SCHEMES:
        return href
    # The serialised form of an http(s) URL is scheme://authority/path...: its authority is
    # everything up to the first / ? or #, and has an @ only if it has userinfo.
    start = len(scheme) + 3
    end = _AUTHORITY_END.search(href, start)
    authority = href[start : end.start() if end else len(href)]
    if "@" in authority:
        raise MalformedURL(text, "userinfo")
    host, port = _split_port(authority)
    # DNS's limits, which ada does not apply but urllib3 does when it sends: a longer name is a
    # request that can never be made, so it is malformed here, not a failure there.
    if len(host) > 253 or any(len(label) > 63 for label in host.split(".")):
        raise MalformedURL(text, "host name too long")
    if host.endswith("."):
        host = host[:-1]
        if not host or host.endswith("."):
            raise MalformedURL(text, "empty host label")
        href = f"{href[:start]}{host}{port}{href[start + len(authority):]}"
    return href


def _split_port(authority: str) -> tuple[str, str]:
    """``host`` and ``:port`` (or "") of a serialised authority, which has no userinfo."""
    if authority.startswith("["):  # an IPv6 literal, whose colons are not the port's
        end = authority.index("]") + 1
        return authority[:end], authority[end:]
    host, colon, port = authority.partition(":")
    return host, colon + port


def scheme_of(url: str) -> str:
    """The scheme of a URL in normal form (lowercase, without the colon)."""
    return url.partition(":")[0]


def holds_password(url: str) -> bool:
    """Whether ``url`` carries a password: in its userinfo, or as a ``password`` query parameter
    (Redis and libpq URLs take one there). Such a URL is refused wherever the config or the
    environment names a server: the password comes from a variable of its own."""
    parts = urlsplit(url)
    return bool(parts.password) or "password=" in parts.query
