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

import re

from ada_url import URL

from .exceptions import MalformedURL

WEB_SCHEMES = frozenset({"http", "https"})

_SURROUNDING = "".join(map(chr, range(0x21)))  # C0 controls and space, which browsers strip
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUERY_OR_FRAGMENT = re.compile(r"[?#]")


def normalize_url(url: str, base: str | None = None) -> str:
    """``url`` (resolved against ``base`` if it is relative) in the crawl's one URL form.

    URLs of schemes other than http(s) are returned parsed but otherwise unchecked, so the
    caller can filter them by scheme. Raises MalformedURL for what cannot be read one way only.
    """
    text = url.strip(_SURROUNDING)
    if _CONTROL.search(text):
        raise MalformedURL(url, "control character")
    if "\\" in _QUERY_OR_FRAGMENT.split(text, 1)[0]:
        raise MalformedURL(url, "backslash")
    try:
        parsed = URL(text, base) if base is not None else URL(text)
    except ValueError:
        raise MalformedURL(url, "cannot be parsed") from None
    if parsed.protocol[:-1] not in WEB_SCHEMES:
        return parsed.href
    if parsed.username or parsed.password:
        raise MalformedURL(url, "userinfo")
    host = parsed.hostname
    if host.endswith("."):
        host = host[:-1]
        if not host or host.endswith("."):
            raise MalformedURL(url, "empty host label")
        parsed.hostname = host
    return parsed.href


def scheme_of(url: str) -> str:
    """The scheme of a URL in normal form (lowercase, without the colon)."""
    return url.partition(":")[0]
