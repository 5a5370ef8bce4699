"""robots.txt: fetched once per origin, cached for the crawl, and asked about every URL.

One file governs one origin (scheme, host, port): ``http://h:8080/page`` is ruled by
``http://h:8080/robots.txt`` and by nothing else. What the fetch of that file decides, following
RFC 9309 and Google's documented practice:

=====================================  ==========================================  ==============
robots.txt fetch                       verdict for the origin's URLs               kept
=====================================  ==========================================  ==============
2xx                                    ALLOW / DISALLOW by the rules for our        for the crawl
                                       product token (else ``*``); Crawl-delay of
                                       that group, capped at ``max_crawl_delay``
2xx, not UTF-8 or not a robots.txt     lines that do not parse are ignored, so      for the crawl
                                       usually ALLOW
3xx after the fetcher's redirects,     ALLOW: as if the site had no robots.txt      for the crawl
4xx but 429 (401 and 403 included)
429, 5xx, TransportError               UNAVAILABLE: crawl nothing there for now     ``recheck_unavailable``
(unreachable, timeout, dropped),                                                    seconds
TLSError (handshake failed)
InvalidRequest (too many redirects,    ALLOW, with a warning                        for the crawl
body over the limit)
=====================================  ==========================================  ==============

429 counts as unavailable, not as 4xx: it is the server asking us to slow down (Google does the
same). The caller decides what UNAVAILABLE means for its request (RFC 9309: assume complete
disallow), typically by putting the request back for later.

Groups are chosen by the *product token* of our User-Agent (``crawler/0.1.0 (+https://...)`` →
``crawler``), as RFC 9309 says, not by the whole header: protego looks for each group's name
anywhere in the string it is given at a token boundary, so with the full header a
``User-agent: bot`` or ``User-agent: example`` group would match our contact URL. Two quirks of
protego remain: a group named by a *prefix* of our token (``User-agent: crawl``) still applies to
us, and a group named with a version (``User-agent: crawler/1.0``) does not.

Fetches are single-flight per origin: the first thread to ask about an origin fetches its file
while later askers about that origin wait for the result; askers about other origins go on,
since no lock common to all origins is held while fetching. Counters on ``stats``:
``robots:fetched`` per fetch made (where a ``SharedRobotsFetch`` shares fetches between caches,
by whoever makes one), ``robots:unavailable`` per fetch that ended UNAVAILABLE,
``robots:crawl_delay_capped`` per file whose Crawl-delay was over the cap. Logging stays at
DEBUG/INFO on the normal path; an origin whose file is unavailable or unfetchable is warned
about once.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

from protego import Protego

from ..exceptions import InvalidRequest, TLSError, TransportError
from ..request import DEFAULT_PORTS
from ..stats import Stats

logger = logging.getLogger(__name__)

# RFC 9309 §2.2.1: the name a crawler goes by in robots.txt is made of these characters only.
_PRODUCT_TOKEN = re.compile(r"[A-Za-z_-]+")


class RobotsDecision(enum.Enum):
    ALLOW = "allow"
    DISALLOW = "disallow"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class RobotsVerdict:
    """What robots.txt says about one URL.

    ``crawl_delay`` is the origin's Crawl-delay for our user agent in seconds, if it sets one;
    ``reason`` says why the file is UNAVAILABLE (e.g. ``"HTTP 503"``).
    """

    decision: RobotsDecision
    crawl_delay: float | None = None
    reason: str = ""


class RobotsFetch(Protocol):
    def __call__(self, url: str) -> tuple[int, bytes]:
        """Fetch ``url`` and return (final status, body).

        Follows at most 5 redirects and reads at most 512 KiB. Raises
        :class:`crawler.exceptions.TransportError` when no usable response came back and
        :class:`crawler.exceptions.InvalidRequest` when none can (too many redirects, TLS,
        body too large).
        """


def product_token(user_agent: str) -> str:
    """The name ``user_agent`` goes by in robots.txt: its leading product token."""
    match = _PRODUCT_TOKEN.match(user_agent.strip())
    if match is None:
        raise ValueError(f"user agent {user_agent!r} does not start with a product token")
    return match.group()


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> _Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"robots.txt rules only http and https URLs, not {url!r}")
        return cls(scheme, parts.hostname, parts.port or DEFAULT_PORTS[scheme])

    @property
    def robots_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        port = "" if self.port == DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{host}{port}/robots.txt"


@dataclass(frozen=True, slots=True)
class _Rules:
    """What one fetch of an origin's robots.txt decided, valid until ``expires``."""

    verdict: RobotsVerdict  # the answer for every URL the parser (if any) does not disallow
    parser: Protego | None = None
    expires: float = math.inf

    def decide(self, url: str, token: str) -> RobotsVerdict:
        # Threads share the parser unlocked: can_fetch only fills protego's memo of the matched
        # group and its rule index, which every thread would fill alike.
        if self.parser is None or self.parser.can_fetch(url, token):
            return self.verdict
        return RobotsVerdict(RobotsDecision.DISALLOW, self.verdict.crawl_delay)


_ALLOW_ALL = _Rules(RobotsVerdict(RobotsDecision.ALLOW))


class _Entry:
    """One origin's rules, and the lock its fetching thread holds while the others wait."""

    __slots__ = ("lock", "rules", "warned")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: _Rules | None = None  # replaced whole, so readers need no lock
        self.warned = False


def says_try_later(status: int) -> bool:
    """A robots.txt answer that means "try later" (RFC 9309: 5xx; and a 429 asks as much)."""
    return status >= 500 or status == 429


class RobotsCache:
    """The robots.txt of every origin the crawl visits, each fetched once through ``fetch``.

    ``user_agent`` is the crawl's User-Agent header; its product token picks the group.
    ``recheck_unavailable``: seconds after which an UNAVAILABLE file is fetched again.
    ``max_crawl_delay``: the most seconds of Crawl-delay honoured; a site asking for more gets this.
    ``clock``: monotonic seconds, injectable so tests need not sleep.
    ``counts_fetches``: False where ``fetch`` asks a ``SharedRobotsFetch`` first, and counts only
    the fetches it is told to make.
    """

    def __init__(self, fetch: RobotsFetch, user_agent: str, stats: Stats, *,
                 recheck_unavailable: float = 60.0, max_crawl_delay: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, counts_fetches: bool = True) -> None:
        if recheck_unavailable < 0 or max_crawl_delay < 0:
            raise ValueError("recheck_unavailable and max_crawl_delay must be >= 0")
        self._fetch_robots = fetch
        self._token = product_token(user_agent)
        self._stats = stats
        self._recheck_unavailable = recheck_unavailable
        self._max_crawl_delay = max_crawl_delay
        self._clock = clock
        self._counts_fetches = counts_fetches
        self._entries: dict[_Origin, _Entry] = {}
        self._entries_lock = threading.Lock()  # held only to find or add an entry, never to fetch

    def check(self, url: str) -> RobotsVerdict:
        """What the robots.txt of ``url``'s origin says about it; fetches that file first if needed.

        Raises ValueError for a URL that is not http(s) with a host.
        """
        origin = _Origin.of(url)
        entry = self._entry(origin)
        rules = entry.rules
        if rules is None or rules.expires <= self._clock():
            with entry.lock:
                # Whoever held the lock before us may have just fetched it.
                rules = entry.rules
                if rules is None or rules.expires <= self._clock():
                    rules = entry.rules = self._fetch(origin.robots_url, entry)
        return rules.decide(url, self._token)

    def _entry(self, origin: _Origin) -> _Entry:
        with self._entries_lock:
            entry = self._entries.get(origin)
            if entry is None:
                entry = self._entries[origin] = _Entry()
            return entry

    def _fetch(self, robots_url: str, entry: _Entry) -> _Rules:
        if self._counts_fetches:
            self._stats.inc("robots:fetched")
        try:
            status, body = self._fetch_robots(robots_url)
        except (TransportError, TLSError) as error:
            # A failed TLS handshake is a server we cannot reach, not a missing file.
            return self._unavailable(robots_url, entry, str(error))
        except InvalidRequest as error:
            self._warn(entry, "cannot use %s (%s); allowing everything there", robots_url, error)
            return _ALLOW_ALL
        logger.debug("fetched %s: HTTP %d", robots_url, status)
        if 200 <= status < 300:
            return self._parse(robots_url, body)
        if says_try_later(status):
            return self._unavailable(robots_url, entry, f"HTTP {status}")
        return _ALLOW_ALL

    def _parse(self, robots_url: str, body: bytes) -> _Rules:
        # RFC 9309 files are UTF-8. A BOM would otherwise glue itself to the first directive and
        # hide it; bytes that are not UTF-8 become U+FFFD, and protego skips lines it cannot read.
        parser = Protego.parse(body.decode("utf-8-sig", errors="replace"))
        delay = parser.crawl_delay(self._token)
        if delay is not None and delay > self._max_crawl_delay:
            self._stats.inc("robots:crawl_delay_capped")
            logger.info("%s asks for a crawl delay of %gs; using the cap of %gs",
                        robots_url, delay, self._max_crawl_delay)
            delay = self._max_crawl_delay
        return _Rules(RobotsVerdict(RobotsDecision.ALLOW, delay), parser)

    def _unavailable(self, robots_url: str, entry: _Entry, reason: str) -> _Rules:
        self._stats.inc("robots:unavailable")
        self._warn(entry, "%s is unavailable (%s); crawling nothing there until it answers",
                   robots_url, reason)
        verdict = RobotsVerdict(RobotsDecision.UNAVAILABLE, reason=reason)
        return _Rules(verdict, expires=self._clock() + self._recheck_unavailable)

    @staticmethod
    def _warn(entry: _Entry, message: str, *args: object) -> None:
        # Once per origin: a site that stays down would otherwise warn at every recheck.
        level = logging.DEBUG if entry.warned else logging.WARNING
        entry.warned = True
        logger.log(level, message, *args)


#: What a ``SharedRobotsFetch`` tells an asker: the answer of the fetch (final status, body),
#: the error it raised, or None: fetch the file yourself, then ``tell`` what came of it.
RobotsOutcome = tuple[int, bytes] | BaseException | None


class _Flight:
    """A robots.txt being fetched: by which asker's group, and who waits for it."""

    __slots__ = ("group", "waiting")

    def __init__(self, group: Hashable) -> None:
        self.group = group
        self.waiting: list[tuple[Hashable, Callable[[RobotsOutcome], None]]] = []


class SharedRobotsFetch:
    """One fetch of each robots.txt for the ``RobotsCache``s of many askers (a crawl's worker
    processes), made by the first to ask, over a connection it already has: whoever holds
    this opens none of its own. Askers about a file being fetched wait for its answer, which is
    kept for later askers while it is one a cache keeps (an unavailable file is asked again at
    the recheck, so it is not kept).

    An asker belongs to a ``group`` (its process): when a group is gone, each fetch it was
    making passes to the first asker still waiting for it, so nobody waits on the dead.
    """

    def __init__(self) -> None:
        self._answers: dict[str, tuple[int, bytes]] = {}
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()

    def ask(self, url: str, group: Hashable, reply: Callable[[RobotsOutcome], None]) -> None:
        """``reply`` is called once, at once or when the file's fetch ends (from the thread that
        tells it): with the outcome, or with None when the asker is to fetch it."""
        with self._lock:
            answer = self._answers.get(url)
            flight = self._flights.get(url) if answer is None else None
            if flight is not None:
                flight.waiting.append((group, reply))
                return
            if answer is None:
                self._flights[url] = _Flight(group)
        reply(answer)

    def tell(self, url: str, outcome: tuple[int, bytes] | BaseException) -> None:
        """What the fetch of ``url`` that an asker was told to make came to."""
        with self._lock:
            flight = self._flights.pop(url, None)
            if not isinstance(outcome, BaseException) and not says_try_later(outcome[0]):
                self._answers[url] = outcome
        for _, reply in flight.waiting if flight is not None else ():
            reply(outcome)

    def drop(self, group: Hashable) -> None:
        """``group``'s askers are gone: forget their waiting, and hand their fetches on."""
        handed_on = []
        with self._lock:
            for url, flight in list(self._flights.items()):
                flight.waiting = [(other, reply) for other, reply in flight.waiting if other != group]
                if flight.group != group:
                    continue
                if not flight.waiting:
                    del self._flights[url]
                    continue
                flight.group, reply = flight.waiting.pop(0)
                handed_on.append(reply)
        for reply in handed_on:
            reply(None)
