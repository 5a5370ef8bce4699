"""Logging in once for the whole crawl, and once again (by one thread) when the site logs us out.

A ``Login`` knows how to log in with a session and how to tell, from a response, that the
session was logged out. The ``LoginCoordinator`` makes that a single flight: the first worker
that needs the login performs it while the others wait, and after a logout only the first
worker to notice logs in again; the rest see the login generation has moved on and just replay.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar
from typing import NoReturn, Protocol
from urllib.parse import urljoin, urlsplit

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_incrementing
from parsel import Selector

from ..exceptions import LoginFailed, LoginInterrupted
from .cookies import CrawlCookieJar
from ..request import Request
from ..response import Response
from ..stats import Stats

logger = logging.getLogger(__name__)

# Answers to a login post that say it did not complete, not that the credentials are wrong:
# Django answers 400 when the session it was creating is deleted meanwhile (a revocation that
# lands during the login); 5xx too. Such a login is tried again, a refusal never is.
_PASSING_STATUSES = frozenset({400, 408, 409, 425, 429})
LOGIN_ATTEMPTS = 3
_RETRY_WAIT = 0.25  # seconds, times the attempt number


class Login(Protocol):
    def log_in(self, session: requests.Session) -> None:
        """Log in with ``session`` (whose cookie jar every worker shares); raise LoginFailed."""

    def is_logged_out(self, response: Response) -> bool:
        """Whether ``response`` shows that the session is not logged in."""


@dataclass(frozen=True)
class FormLogin:
    """The common case: a login form, maybe with a CSRF token, posted with credentials.

    ``secrets`` are the credential values (read from the environment by the caller) and
    ``secret_sources`` the variable names, which are what error messages show.
    """

    url: str
    fields: Mapping[str, str]
    secrets: Mapping[str, str]
    secret_sources: Mapping[str, str]
    csrf_field: str | None
    logged_out_url: str
    logged_out_statuses: frozenset[int]
    timeout: tuple[float, float]

    def log_in(self, session: requests.Session) -> None:
        try:
            page = session.get(self.url, timeout=self.timeout)
            form = self._form(page)
            data = {**self._hidden_inputs(form), **self.fields, **self.secrets}
            action = urljoin(page.url, form.attrib.get("action") or page.url)
            if self.csrf_field:
                token = form.css(f'input[name="{self.csrf_field}"]::attr(value)').get()
                if token is None:
                    raise LoginFailed(f"login form at {self.url} has no {self.csrf_field!r} field")
                data[self.csrf_field] = token
            # Judged on the post's own answer, not on where its redirects end: a session revoked
            # between the post and the landing page would make an accepted login look refused.
            answer = session.post(action, data=data, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as error:
            raise LoginInterrupted(f"cannot log in at {self.url}: {type(error).__name__}") from None
        status = answer.status_code
        if status in _PASSING_STATUSES or status >= 500:
            raise LoginInterrupted(f"login at {self.url} did not complete (HTTP {status})")
        if answer.is_redirect:
            landing = urljoin(answer.url, answer.headers["Location"])
            accepted = not self._is_login_url(landing)
            if accepted:
                self._visit(session, landing)
        else:
            response = Response(answer.url, status, answer.headers, answer.content, Request(answer.url))
            accepted = not (status >= 400 or self.is_logged_out(response) or self._is_form_again(answer))
        if not accepted:
            names = ", ".join(f"${name}" for name in self.secret_sources.values()) or "the configured fields"
            raise LoginFailed(
                f"login at {self.url} failed (HTTP {status}, at {answer.url}); check the credentials in {names}"
            )

    def _visit(self, session: requests.Session, landing: str) -> None:
        # Some sites set more cookies on the page a login lands on; whatever it answers, the
        # login itself was already accepted.
        try:
            session.get(landing, timeout=self.timeout).close()
        except requests.RequestException as error:
            logger.info("after logging in, %s could not be read: %s", landing, type(error).__name__)

    def _form(self, page: requests.Response) -> Selector:
        selector = Selector(text=page.text)
        forms = selector.css("form")
        if self.csrf_field:
            forms = forms.xpath(f'self::*[.//input[@name="{self.csrf_field}"]]') or forms
        if not forms:
            raise LoginFailed(f"no login form at {self.url} (HTTP {page.status_code})")
        return forms[0]

    @staticmethod
    def _hidden_inputs(form: Selector) -> dict[str, str]:
        return {
            hidden.attrib["name"]: hidden.attrib.get("value", "")
            for hidden in form.css('input[type="hidden"][name]')
        }

    def _is_form_again(self, answer: requests.Response) -> bool:
        # A site that answers a bad password with the login form again, at the same URL, status 200.
        return urlsplit(answer.url).path == urlsplit(self.url).path and b"<form" in answer.content

    def is_logged_out(self, response: Response) -> bool:
        return response.status in self.logged_out_statuses or self._is_login_url(response.url)

    def _is_login_url(self, url: str) -> bool:
        return urlsplit(url).path.startswith(urlsplit(self.logged_out_url).path)


@dataclass(frozen=True)
class SpiderLogin:
    """A spider's own ``login(session)`` and ``is_logged_out(response)`` methods."""

    log_in_with: Callable[[requests.Session], object]
    logged_out: Callable[[Response], bool]

    def log_in(self, session: requests.Session) -> None:
        try:
            self.log_in_with(session)
        except LoginFailed:
            raise
        except requests.RequestException as error:
            raise LoginInterrupted(f"the spider's login could not reach the site: {type(error).__name__}") from None
        except Exception as error:
            raise LoginFailed(f"the spider's login raised {type(error).__name__}: {error}") from None

    def is_logged_out(self, response: Response) -> bool:
        return self.logged_out(response)


def attempt_login(login: Login, new_session: Callable[[], requests.Session], stats: Stats) -> CookieJar:
    """Log in with a session of its own, trying again (a few times) a login that was
    interrupted; the cookies that login set. Counts ``login_retries``; raises LoginFailed when
    refused, or when still interrupted after ``LOGIN_ATTEMPTS``. Whoever calls it makes the
    login single-flight (``LoginCoordinator`` in one process, ``ClusterLogin`` across machines)."""

    def log_in_once() -> CookieJar:
        with new_session() as session:
            login.log_in(session)
            return session.cookies

    def note_retry(state: RetryCallState) -> None:
        stats.inc("login_retries")
        logger.warning("%s; trying again", state.outcome.exception() if state.outcome else "login interrupted")

    retrying = Retrying(
        stop=stop_after_attempt(LOGIN_ATTEMPTS),
        wait=wait_incrementing(_RETRY_WAIT, _RETRY_WAIT),
        retry=retry_if_exception_type(LoginInterrupted),
        before_sleep=note_retry,
        retry_error_callback=_give_up,
    )
    return retrying(log_in_once)


def _give_up(state: RetryCallState) -> NoReturn:
    error = state.outcome.exception() if state.outcome else None
    raise LoginFailed(f"{error}, {state.attempt_number} times: giving up") from None


class SharedLogin(Protocol):
    """The crawl's one login, as the fetcher uses it (see ``LoginCoordinator``)."""

    @property
    def generation(self) -> int:
        """Completed logins so far (0: not logged in)."""

    def ensure(self) -> None:
        """Log in, unless the crawl already has."""

    def relogin(self, seen: int) -> None:
        """The response to a request sent under login ``seen`` said logged out."""

    def is_logged_out(self, response: Response) -> bool: ...


class SingleFlightLogin:
    """What every ``SharedLogin`` of ours has in common: the jar every worker shares, whose
    generation is the login's, and one call at a time to ``log_in_unless_moved_on``, which
    logs in only if no login happened since the generation a request was sent under; a failed
    login is remembered and raised again."""

    def __init__(self, login: Login, stats: Stats, cookies: CrawlCookieJar) -> None:
        self.login = login
        self.stats = stats
        self.cookies = cookies
        self._failure: LoginFailed | None = None
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self.cookies.generation

    def ensure(self) -> None:
        """Log in, unless the crawl already has (or restored a saved login)."""
        if self.cookies.generation == 0 or self._failure is not None:
            self.log_in_unless_moved_on(seen=0)

    def relogin(self, seen: int) -> None:
        """The response to a request sent under generation ``seen`` said logged out."""
        self.stats.inc("logged_out_responses")
        self.log_in_unless_moved_on(seen)

    def is_logged_out(self, response: Response) -> bool:
        return self.login.is_logged_out(response)

    def log_in_unless_moved_on(self, seen: int) -> None:
        raise NotImplementedError


class LoginCoordinator(SingleFlightLogin):
    """Single-flight login and re-login for one crawl.

    Each login runs in a session of its own, with a private cookie jar, and only its result is
    merged into the jar the workers share: workers still being bounced to the login page while
    it runs would otherwise rotate its CSRF cookie between the form and the post.

    ``generation`` counts completed logins (1 after the first, or after restoring saved
    cookies); the jar keeps it, with the cookies of each login (see ``CrawlCookieJar``). A
    worker knows the generation its request was sent under; when the response says logged out,
    ``relogin`` logs in again only if nobody has since then.
    """

    def __init__(
        self,
        login: Login,
        stats: Stats,
        *,
        cookies: CrawlCookieJar,
        new_session: Callable[[], requests.Session],
        on_login: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(login, stats, cookies)
        self.new_session = new_session
        self.on_login = on_login

    def log_in_unless_moved_on(self, seen: int) -> None:
        """Log in, unless a login happened since generation ``seen`` (or the login failed)."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self.cookies.generation != seen:
                return  # another worker logged in since this request was sent
            try:
                cookies = attempt_login(self.login, self.new_session, self.stats)
            except LoginFailed as failure:
                self._failure = failure
                raise
            generation = self.cookies.adopt_login(cookies)
            self.stats.inc("logins")
            if seen:  # a login because the site logged us out
                self.stats.inc("relogins")
            logger.info("logged in (login %d)", generation)
            self.on_login()
