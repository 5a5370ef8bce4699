"""Which proxy each HTTP request goes through, and what a failing proxy costs.

A ``ProxyRoutes`` is made once per spider's processing (``crawler.runner.wiring``) and asked for
every request the crawl sends, each redirect hop on its own, with the URL it is really sent to:

- a request's own ``Request(proxy=...)`` wins: a proxy URL, or ``DIRECT`` for none;
- else a host listed in ``direct`` (``http.no_proxy``, and ``NO_PROXY`` with ``http.trust_env``)
  is reached directly;
- else the proxies for the URL's scheme, in turn: per host (each host always starts with the same
  proxy, so its cookies and sessions see one exit; the same in every process and every run), or
  per request (round robin).

A proxy that fails (cannot be reached, closes without answering, refuses a tunnel, asks for
credentials) is counted (``proxy_errors:<host:port>``) and set aside for a backoff that doubles
with each failure in a row; the next proxy is tried at once. Credentials never travel in a URL
here: a ``Proxy`` carries its ``Proxy-Authorization`` value apart, and only the proxies it was
configured for have one. There is no fall-back to a direct connection: a crawl that has proxies
never shows its own address because they failed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import itertools
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import unquote, urlsplit

from ..exceptions import MalformedURL
from ..stats import Stats
from ..urls import normalize_url

logger = logging.getLogger(__name__)

#: ``Request(proxy=DIRECT)``: that request goes to its origin without any proxy.
DIRECT = "direct"

PROXY_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Answers to CONNECT that say the proxy could not reach the origin, not that the proxy is broken:
# the request tries another proxy, but the proxy is not set aside (a dead origin would otherwise
# bench every proxy of the crawl).
_GATEWAY_STATUSES = frozenset({502, 504})


@dataclass(frozen=True, slots=True)
class ProxyAddress:
    """A proxy URL read once: ``scheme`` (http, or https for TLS to the proxy), ``host`` (in the
    crawl's URL form), ``port`` (the scheme's default if none was written), and the
    credentials written in it, if any (percent-decoded)."""

    scheme: str
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> ProxyAddress:
        """Raises ValueError, saying what is wrong without repeating any password."""
        if "://" not in text:
            raise ValueError("a proxy URL starts with http:// or https://")
        parts = urlsplit(text.strip())
        if parts.scheme not in PROXY_SCHEMES:
            raise ValueError(f"a proxy URL starts with http:// or https://, not {parts.scheme}://")
        userinfo, at, hostport = parts.netloc.rpartition("@")
        try:
            normal = urlsplit(normalize_url(f"{parts.scheme}://{hostport}"))
            port = normal.port
        except (MalformedURL, ValueError):
            raise ValueError(f"not a proxy address: {parts.scheme}://{hostport}") from None
        if not normal.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"a proxy URL is scheme://host:port, without a path: {parts.scheme}://{hostport}/…")
        username, _, password = userinfo.partition(":")
        host = f"[{normal.hostname}]" if ":" in normal.hostname else normal.hostname
        return cls(
            parts.scheme,
            host,
            port or _DEFAULT_PORTS[parts.scheme],
            unquote(username) if at else None,
            unquote(password) if at and ":" in userinfo else None,
        )

    @property
    def key(self) -> str:
        """``host:port``: what the stats and the logs call the proxy (never its credentials)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.key}"

    @property
    def has_credentials(self) -> bool:
        return self.username is not None


# A request's own proxy is read again for each hop of each request that names it: a few
# proxies, named by many requests.
_address_of = functools.lru_cache(maxsize=256)(ProxyAddress.parse)


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy to send requests through: ``url`` (``scheme://host:port``, never credentials) and
    the ``Proxy-Authorization`` value for it alone, if it has credentials."""

    url: str
    key: str
    authorization: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def at(cls, address: ProxyAddress, credentials: tuple[str, str] | None = None) -> Proxy:
        """``address`` with ``credentials`` (username, password), else those written in it."""
        if credentials is None and address.has_credentials:
            credentials = (address.username or "", address.password or "")
        return cls(address.url, address.key, basic_authorization(*credentials) if credentials else None)


def basic_authorization(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
    return f"Basic {token}"


class DirectHosts:
    """Hosts reached without a proxy, as ``NO_PROXY`` lists them (curl's and Python's reading):
    ``example.com`` or ``.example.com`` (that domain and its subdomains), either with ``:port``
    (that port only), an IP address or network (``10.0.0.0/8``), or ``*`` (every host)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._everything = False
        self._domains: list[tuple[str, int | None]] = []
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in (item.strip().lower() for item in entries):
            if entry == "*":
                self._everything = True
            elif entry:
                self._add(entry)

    def _add(self, entry: str) -> None:
        try:
            self._networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            return
        except ValueError:
            pass
        name, colon, port = entry.rpartition(":") if entry.count(":") == 1 else ("", "", "")
        if colon and port.isdigit():
            self._domains.append((name.lstrip(".").rstrip("."), int(port)))
        else:
            self._domains.append((entry.lstrip(".").rstrip("."), None))

    def __bool__(self) -> bool:
        return self._everything or bool(self._domains or self._networks)

    def matches(self, host: str, port: int) -> bool:
        """Whether ``host`` (as in a URL in normal form) on ``port`` is reached directly."""
        if self._everything:
            return True
        bare = host.strip("[]")
        try:
            address = ipaddress.ip_address(bare)
        except ValueError:
            address = None
        if address is not None and any(address in network for network in self._networks):
            return True
        return any(
            (bare == name or bare.endswith("." + name)) and (wanted is None or wanted == port)
            for name, wanted in self._domains
        )


def environment_proxies(environ: Mapping[str, str]) -> dict[str, list[Proxy]]:
    """The proxies the environment names, as requests reads them: ``HTTP_PROXY`` for http URLs,
    ``HTTPS_PROXY`` for https, ``ALL_PROXY`` for either where that is unset (``http_proxy`` over
    ``HTTP_PROXY``); one without a scheme is an http one. Credentials in them are the
    environment's, for that proxy only. Raises ValueError naming the variable."""
    fallback = _variable(environ, "all_proxy")
    by_scheme = {}
    for scheme in ("http", "https"):
        if (variable := _variable(environ, f"{scheme}_proxy") or fallback) is None:
            continue
        name, value = variable
        try:
            address = ProxyAddress.parse(value if "://" in value else f"http://{value}")
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        by_scheme[scheme] = [Proxy.at(address)]
    return by_scheme


def environment_direct_hosts(environ: Mapping[str, str]) -> list[str]:
    """The entries of ``NO_PROXY`` (or ``no_proxy``), for ``DirectHosts``."""
    variable = _variable(environ, "no_proxy")
    return variable[1].split(",") if variable else []


def _variable(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """The variable ``name`` (lowercase, which curl and Python's urllib prefer) or ``NAME``,
    and its value stripped; None if it is unset or empty."""
    for variable in (name, name.upper()):
        if variable in environ:
            value = environ[variable].strip()
            return (variable, value) if value else None
    return None


class Rotation(Enum):
    PER_HOST = "per_host"
    PER_REQUEST = "per_request"


@dataclass(frozen=True, slots=True)
class ProxyFailure:
    """How a proxy failed a request: ``status`` is its answer (407, 502...), None if it gave
    none (it could not be reached, or closed the connection)."""

    status: int | None = None

    @property
    def benches_the_proxy(self) -> bool:
        """Whether the proxy is set aside for a while: not when it only says it could not reach
        the origin, which is about the origin as much as about the proxy."""
        return self.status not in _GATEWAY_STATUSES

    def __str__(self) -> str:
        if self.status is None:
            return "cannot be reached, or closed the connection without answering"
        if self.status == 407:
            return "asks for credentials (407): none were sent, or they were refused"
        if self.status in _GATEWAY_STATUSES:
            return f"could not reach the origin ({self.status})"
        return f"refused the request ({self.status})"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds a proxy is set aside after failures in a row: ``initial``, doubling up to ``max``."""

    initial: float
    max: float

    def after(self, failures: int) -> float:
        return min(self.initial * 2 ** max(failures - 1, 0), self.max)


class ProxyRoutes:
    """The proxies of one spider's crawl (in one process), their health, and what their failures
    cost each request. Safe to share between worker threads.

    ``by_scheme`` lists the proxies for URLs of each scheme (a scheme not listed goes direct),
    with their credentials; a ``Request(proxy=...)`` naming one of them gets its credentials, any
    other proxy a request names gets none. A request may meet ``max_failures`` proxy failures
    (each proxy that failed it, and each time it found every proxy for it set aside) before it
    fails.
    """

    def __init__(
        self,
        by_scheme: Mapping[str, Sequence[Proxy]],
        *,
        rotation: Rotation,
        direct: DirectHosts,
        stats: Stats,
        max_failures: int,
        backoff: Backoff,
    ) -> None:
        self._by_scheme = {scheme: tuple(proxies) for scheme, proxies in by_scheme.items() if proxies}
        self._known = {proxy.url: proxy for proxies in self._by_scheme.values() for proxy in proxies}
        self.rotation = rotation
        self.direct = direct
        self.stats = stats
        self.max_failures = max_failures
        self.backoff = backoff
        self._turns = itertools.count()
        self._lock = threading.Lock()
        self._failures_in_a_row: dict[str, int] = {}
        self._benched_until: dict[str, float] = {}  # time.monotonic()
        self._spent: dict[object, int] = {}  # by request: proxy failures met so far

    @property
    def proxy_count(self) -> int:
        """Proxies the crawl's routes go through (a request's own may add to them)."""
        return len(self._known)

    def candidates(self, url: str, override: str | None) -> Iterator[Proxy] | None:
        """The proxies to try ``url`` through, in order, those set aside left out; None: send
        it directly. ``override`` is the request's own ``proxy``."""
        if override is not None:
            return None if override == DIRECT else self._healthy((self._named(override),))
        proxies, start = self._route(url)
        if not proxies:
            return None
        return self._healthy(proxies[(start + turn) % len(proxies)] for turn in range(len(proxies)))

    def first(self, url: str) -> Proxy | None:
        """The proxy for a request sent without the fetcher (a login, a token grant): the one it
        would try first, set aside or not, since going direct instead would show the crawl's
        own address."""
        proxies, start = self._route(url)
        return proxies[start % len(proxies)] if proxies else None

    def _route(self, url: str) -> tuple[tuple[Proxy, ...], int]:
        if not self._by_scheme:
            return (), 0  # a crawl without proxies: no URL to take apart, hop after hop
        parts = urlsplit(url)
        proxies = self._by_scheme.get(parts.scheme, ())
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
        if not proxies or (self.direct and self.direct.matches(host, port)):
            return (), 0
        if self.rotation is Rotation.PER_HOST:
            # A stable hash (not hash(), which differs per process): every process and every run
            # sends a host through the same proxy.
            return proxies, int.from_bytes(hashlib.blake2b(host.encode(), digest_size=4).digest(), "big")
        return proxies, next(self._turns)

    def _named(self, override: str) -> Proxy:
        address = _address_of(override)  # checked when the Request was made
        return self._known.get(address.url) or Proxy(address.url, address.key)

    def _healthy(self, proxies: Iterable[Proxy]) -> Iterator[Proxy]:
        for proxy in proxies:
            if self._benched_until.get(proxy.key, 0.0) <= time.monotonic():
                yield proxy

    def worked(self, proxy: Proxy) -> None:
        """``proxy`` carried a request: whatever failed before is forgotten."""
        if proxy.key in self._failures_in_a_row:
            with self._lock:
                self._failures_in_a_row.pop(proxy.key, None)
                self._benched_until.pop(proxy.key, None)

    def failed(self, proxy: Proxy, failure: ProxyFailure) -> None:
        """Count ``failure`` against ``proxy``, and set the proxy aside if it says so."""
        self.stats.inc(f"proxy_errors:{proxy.key}")
        if not failure.benches_the_proxy:
            logger.info("proxy %s %s", proxy.key, failure)
            return
        with self._lock:
            failures = self._failures_in_a_row[proxy.key] = self._failures_in_a_row.get(proxy.key, 0) + 1
            seconds = self.backoff.after(failures)
            self._benched_until[proxy.key] = time.monotonic() + seconds
        hint = ""
        if failure.status == 407 and proxy.authorization is None:
            hint = " (no credentials are configured for it: see http.proxy_username_env and http.proxy_password_env)"
        log = logger.warning if failures == 1 else logger.info
        log("proxy %s %s%s; set aside for %.1fs", proxy.key, failure, hint, seconds)

    def charge(self, request: object) -> bool:
        """One more proxy failure for ``request`` (any hashable key for it); False once it has
        met ``max_failures`` of them (and then it is forgotten)."""
        with self._lock:
            spent = self._spent[request] = self._spent.get(request, 0) + 1
            if spent < self.max_failures:
                return True
            del self._spent[request]
            return False

    def forget(self, request: object) -> None:
        """``request`` was answered, or failed otherwise: its proxy failures no longer matter."""
        if request in self._spent:
            with self._lock:
                self._spent.pop(request, None)

    def retry_in(self, url: str, override: str | None, request: object) -> float:
        """Seconds until ``request`` may try again: until the first of its proxies is back, and
        no less than the backoff for the proxy failures it met."""
        if override is not None:
            proxies: Sequence[Proxy] = (self._named(override),)
        else:
            proxies = self._route(url)[0]
        now = time.monotonic()
        back = min((self._benched_until.get(proxy.key, now) - now for proxy in proxies), default=0.0)
        return max(back, self.backoff.after(self._spent.get(request, 1)))
