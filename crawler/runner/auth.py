"""The runner's wiring of a spider's login, token headers and cookie jar, from its config entry
and its methods, and of where credentials come from. Here, not in ``crawler.auth``: the
mechanism there knows nothing of the config."""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from ..config import Config, SpiderConfig
from ..exceptions import ConfigError
from ..http.fetcher import Auth
from ..request import DEFAULT_PORTS
from ..spider import Spider
from ..stats import Stats
from ..urls import normalize_url
from ..auth.cookies import CrawlCookieJar
from ..auth.login import FormLogin, Login, LoginCoordinator, SharedLogin, SpiderLogin
from ..auth.tokens import BearerToken, TokenAuth

#: The practice site's demo account, offered as environment defaults while the CLI serves it.
PRACTICE_ENVIRONMENT = {
    "PRACTICE_USERNAME": "username",
    "PRACTICE_PASSWORD": "password",
    "PRACTICE_CLIENT_ID": "client_id",
    "PRACTICE_CLIENT_SECRET": "client_secret",
}


def environment(config: Config, demo_credentials: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """Where credentials are read from: the process environment, over the practice site's demo
    account when the config serves the site and allows it."""
    if demo_credentials and config.practice_site.serve and config.practice_site.demo_credentials:
        defaults = {variable: demo_credentials[key] for variable, key in PRACTICE_ENVIRONMENT.items()}
        return ChainMap(dict(os.environ), defaults)
    return dict(os.environ)


def resolve_secrets(env_fields: Mapping[str, str], environ: Mapping[str, str], where: str) -> dict[str, str]:
    """Each field's value from its environment variable; one ConfigError line per missing one."""
    missing = [
        f"{where}.env_fields.{field}: environment variable {variable} is not set"
        for field, variable in env_fields.items()
        if not environ.get(variable)
    ]
    if missing:
        raise ConfigError(missing)
    return {field: environ[variable] for field, variable in env_fields.items()}


def check_secrets(config: Config, environ: Mapping[str, str]) -> None:
    """Fail, naming every field, if any credential's environment variable is unset."""
    problems: list[str] = []
    for index, entry in enumerate(config.spiders):
        for section in ("login", "token"):
            settings = getattr(entry, section)
            if settings is not None:
                try:
                    resolve_secrets(settings.env_fields, environ, f"spiders[{index}].{section}")
                except ConfigError as error:
                    problems.extend(error.problems)
    if problems:
        raise ConfigError(problems)


#: Makes a spider's login shared with others: given the login (which tells a logged-out response),
#: the jar every worker of this process shares, and a way to make a session to log in with.
LoginVia = Callable[[Login, CrawlCookieJar, Callable[[], requests.Session]], SharedLogin]


@dataclass(frozen=True)
class SpiderAuth:
    auth: Auth
    cookies: CrawlCookieJar
    cookie_file: Path | None  # where the login's cookies are kept between runs

    def save_cookies(self) -> None:
        if self.cookie_file is not None:
            self.cookies.save(self.cookie_file)


def cookie_file(config: Config, spider: str) -> Path:
    checkpoint = config.resolve(config.checkpoint.path)
    return checkpoint.with_name(f"{checkpoint.name}.{spider}.cookies")


def build_spider_auth(
    config: Config,
    index: int,
    spider: Spider,
    stats: Stats,
    environ: Mapping[str, str],
    new_session: Callable[[CrawlCookieJar], requests.Session],
    *,
    login_via: LoginVia | None = None,
) -> SpiderAuth:
    """A spider's login, tokens and cookie jar. The login is this process's own single flight,
    its cookies kept in the checkpoint's cookie file, unless ``login_via`` makes it another's (a
    worker process's login is its coordinator's)."""
    entry = config.spiders[index]
    timeout = (config.http.timeout.connect, config.http.timeout.read)
    jar = CrawlCookieJar(entry.cookie_domain)
    login = _login(entry, index, spider, environ, timeout)
    coordinator: SharedLogin | None = None
    path = None
    if login is not None and login_via is not None:
        coordinator = login_via(login, jar, lambda: new_session(CrawlCookieJar(entry.cookie_domain)))
    elif login is not None:
        path = cookie_file(config, spider.name)
        jar.load(path)
        coordinator = LoginCoordinator(
            login,
            stats,
            cookies=jar,
            new_session=lambda: new_session(CrawlCookieJar(entry.cookie_domain)),
            on_login=lambda: jar.save(path),
        )
    tokens: list[TokenAuth] = []
    if entry.token is not None:
        tokens.append(_bearer(entry, index, environ, stats, timeout))
    if (own := spider.token_auth()) is not None:
        tokens.append(own)
    return SpiderAuth(Auth(coordinator, tuple(tokens), jar), jar, path)


def _login(
    entry: SpiderConfig, index: int, spider: Spider, environ: Mapping[str, str], timeout: tuple[float, float]
) -> Login | None:
    own_login = getattr(spider, "login", None)
    if callable(own_login):
        return SpiderLogin(own_login, spider.is_logged_out)
    settings = entry.login
    if settings is None:
        return None
    form = FormLogin(
        url=settings.url,
        fields=settings.fields,
        secrets=resolve_secrets(settings.env_fields, environ, f"spiders[{index}].login"),
        secret_sources=settings.env_fields,
        csrf_field=settings.csrf_field,
        logged_out_url=settings.logged_out_url or settings.url,
        logged_out_statuses=settings.logged_out_statuses,
        timeout=timeout,
    )
    if type(spider).is_logged_out is not Spider.is_logged_out:
        return SpiderLogin(form.log_in, spider.is_logged_out)
    return form


def _bearer(
    entry: SpiderConfig, index: int, environ: Mapping[str, str], stats: Stats, timeout: tuple[float, float]
) -> BearerToken:
    settings = entry.token
    assert settings is not None
    url = normalize_url(settings.url)
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    default_scope = f"{parts.scheme}://{host}:{parts.port or DEFAULT_PORTS[parts.scheme]}"
    return BearerToken(
        url,
        {**settings.fields, **resolve_secrets(settings.env_fields, environ, f"spiders[{index}].token")},
        hosts=settings.hosts or [default_scope],
        stats=stats,
        timeout=timeout,
        secret_sources=settings.env_fields.values(),
        token_field=settings.token_field,
        expires_field=settings.expires_field,
        header=settings.header,
        scheme=settings.scheme,
        refresh_margin=settings.refresh_margin,
        default_lifetime=settings.default_lifetime,
        body=settings.body,
        client_auth=settings.client_auth,
    )
