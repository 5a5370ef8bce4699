"""``config.toml``: pydantic models that reject unknown keys, and one readable line per problem.

Relative paths in the file are relative to the file's own folder, so a crawl behaves the same
whatever directory it is started from.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import __version__
from .exceptions import ConfigError
from .http.proxies import ProxyAddress
from .retry import TRANSIENT_STATUSES
from .urls import holds_password

# Durations are bounded: an infinite or astronomic one is accepted by a float but breaks the
# socket timeouts and the scheduler's clock arithmetic mid-crawl. A day is more than any wait here.
MAX_SECONDS = 86400.0
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]


class _Section(BaseModel):
    # allow_inf_nan=False: `inf` and `nan` are valid TOML floats, and valid for no setting here.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TimeoutConfig(_Section):
    connect: PositiveSeconds = 10.0
    """Seconds to wait for a TCP (and TLS) connection."""
    read: PositiveSeconds = 30.0
    """Seconds the server may go quiet: before the headers, or between two parts of the body."""
    total: PositiveSeconds = 300.0
    """Seconds a whole response may take, redirects and body included: a body that trickles in
    forever is cut off here."""


def _proxy_url(url: str) -> str:
    if ProxyAddress.parse(url).has_credentials:  # a ValueError says what else is wrong
        raise ValueError(
            "holds credentials: name the environment variables holding them in http.proxy_username_env "
            "and http.proxy_password_env (CRAWLER_PROXY_USERNAME, CRAWLER_PROXY_PASSWORD by default) instead"
        )
    return url


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


class HttpConfig(_Section):
    timeout: TimeoutConfig = TimeoutConfig()
    user_agent: str = Field(f"crawler/{__version__}", min_length=1)
    """Sent with every request."""
    max_redirects: int = Field(10, ge=0)
    max_host_pools: int = Field(1024, ge=1, le=1_000_000)
    """Hosts each worker keeps an open connection to. A crawl of more hosts evicts the least
    recently used (counted as pool evictions): each is a reconnect, not an error."""
    max_body_size: int = Field(16 * 1024 * 1024, gt=0)
    """Bytes; a larger response is refused (and the request failed) instead of read into memory."""
    verify_tls: StrictBool = True
    ca_bundle: Path | None = None
    """A PEM file of certificate authorities to trust instead of the system's."""
    proxy: list[Annotated[str, AfterValidator(_proxy_url)]] = []
    """A proxy URL (``http://host:port``; ``https://`` for TLS to the proxy) or a list of them,
    taken in turn (``proxy_rotation``); never with credentials in it (``proxy_username_env``)."""
    proxy_rotation: Literal["per_host", "per_request"] = "per_host"
    """How a list of proxies is used: each host always through the same one (its cookies see one
    exit), or each request through the next."""
    proxy_username_env: str = Field("CRAWLER_PROXY_USERNAME", min_length=1)
    proxy_password_env: str = Field("CRAWLER_PROXY_PASSWORD", min_length=1)
    """The environment variables holding the credentials for the proxies of ``proxy`` (set both,
    or neither: no credentials)."""
    no_proxy: list[str] = []
    """Hosts reached without a proxy, as ``NO_PROXY`` lists them: ``example.com`` (and its
    subdomains), ``host:port``, an IP address or network (``10.0.0.0/8``), ``*``."""
    trust_env: StrictBool = False
    """Honour the environment as requests does: ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and
    ``NO_PROXY`` (where ``proxy`` is not set), ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` (where
    ``ca_bundle`` is not set)."""
    max_proxy_failures: int = Field(5, ge=1, le=100)
    """Proxy failures a request may meet (each a proxy that could not carry it, or a wait for
    one to come back) before it fails as ProxyError; they do not spend ``retry.attempts``."""

    @field_validator("proxy", mode="before")
    @classmethod
    def _one_or_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("no_proxy")
    @classmethod
    def _hosts_only(cls, entries: list[str]) -> list[str]:
        if bad := [entry for entry in entries if "://" in entry or ("/" in entry and not _is_network(entry))]:
            raise ValueError(f"hosts, domains or networks, without scheme or path: {', '.join(map(repr, bad))}")
        return entries

    @field_validator("user_agent")
    @classmethod
    def _legal_header_value(cls, value: str) -> str:
        # A CR or LF would make every request fail as an invalid header, not the config.
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise ValueError("must not contain control characters (a line break, a tab...)")
        return value


class BackoffConfig(_Section):
    initial: PositiveSeconds = 0.5
    max: PositiveSeconds = 30.0
    jitter: Seconds = 0.5


class RetryConfig(_Section):
    attempts: int = Field(4, ge=1, le=100)
    """Tries per request in all, the first included."""
    backoff: BackoffConfig = BackoffConfig()
    max_retry_after: Seconds = 120.0
    """The longest ``Retry-After`` the crawl will wait for; longer ones are cut to this."""
    statuses: frozenset[int] = TRANSIENT_STATUSES

    @field_validator("statuses")
    @classmethod
    def _statuses_are_errors(cls, statuses: frozenset[int]) -> frozenset[int]:
        if bad := sorted(status for status in statuses if not 400 <= status <= 599):
            raise ValueError(f"not error statuses: {bad}")
        return statuses


class OutputConfig(_Section):
    format: Literal["jsonl", "json", "csv", "parquet"] = "jsonl"
    """``jsonl`` and ``csv`` are appended as items are committed; ``json`` (one array) too, and
    is valid after every append; ``parquet`` is written whole each run and in place at its end."""
    path: str = "output/{spider}.{format}"
    """``{spider}`` and ``{format}`` are filled in; each spider gets its own file."""
    fields: list[str] | None = None
    """CSV columns, in this order; default: the spider's ``item_model`` fields, or else the first
    item's. With an ``item_model`` these must be among its fields (checked when the crawl starts)."""

    @field_validator("fields")
    @classmethod
    def _usable_columns(cls, fields: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if fields is None:
            return None
        # A setting that JSON lines would ignore is more likely a mistake than a wish.
        if "format" in info.data and info.data["format"] != "csv":
            raise ValueError('only used with format = "csv"')
        if not fields:
            raise ValueError("must name at least one field")
        if any(not name.strip() for name in fields):
            raise ValueError("field names must not be empty")
        if duplicates := sorted({name for name in fields if fields.count(name) > 1}):
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return fields

    @field_validator("path")
    @classmethod
    def _known_placeholders(cls, path: str) -> str:
        try:
            path.format(spider="spider", format="jsonl")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"only {{spider}} and {{format}} can be filled in ({error!r} cannot)") from None
        return path


class HttpCacheConfig(_Section):
    """Responses kept on disk, so that running a spider again while writing it does not fetch
    the site again. For developing spiders: a crawl of a site for real leaves it off."""

    enabled: bool = False
    """On for every run of this config (``crawler run --cache`` turns it on for one run)."""
    path: Path = Path(".crawler/http-cache.sqlite")
    """The cache file (beside the checkpoint by default); it outlives ``--fresh``."""
    expire_after: PositiveSeconds | None = None
    """Seconds a kept response is used without asking the site (default: until deleted)."""
    statuses: list[Annotated[int, Field(ge=100, le=599)]] = [200]
    """The statuses kept; retried statuses (``retry.statuses``) cannot be among them."""
    honour_headers: bool = False
    """The site's Cache-Control and Expires decide how long a response is kept (and no-store
    keeps it out), over ``expire_after``; off, they are ignored. Either way a stale response
    with an ETag or Last-Modified is revalidated: the site answers 304, without the body."""


class CheckpointConfig(_Section):
    backend: Literal["sqlite", "redis"] = "sqlite"
    """Where the crawl's state is kept: ``sqlite``, one file on this machine (``path``); or
    ``redis``, a Redis or Valkey server (``url``) that every process of the crawl, on any
    machine, shares."""
    path: Path = Path(".crawler/checkpoint.db")
    """The SQLite file; with ``redis``, the place beside which this machine keeps what is its
    own (the login's cookies, which process slot it runs as)."""
    lease_time: PositiveSeconds = 30.0
    """Seconds a leased request stays its holder's without a heartbeat (renewed every third of
    it while the work runs). A holder that stops answering gives its work back after this; on one
    machine, a dead process's work comes back at once."""
    url: str | None = None
    """With ``redis``: the server, ``redis://host:6379/0`` (``rediss://`` for TLS). Never with a
    password in it: that comes from the environment (``password_env``)."""
    password_env: str = "CRAWLER_REDIS_PASSWORD"
    """With ``redis``: the environment variable that holds the server's password, if it has one."""
    crawl: str | None = None
    """With ``redis``: the crawl's name on the server; every process that names it joins it.
    Default: the name of the folder the config file is in."""
    machine: str | None = None
    """With ``redis``: the name this machine goes by among the crawl's processes (default: its
    host name); two machines must not share one (containers started from one image may)."""
    wait_for_server: Seconds = 120.0
    """With ``redis``: how long the crawl waits for an unreachable server (trying again, with
    backoff) before it stops; what was committed stays."""

    @model_validator(mode="after")
    def _redis_has_a_server(self) -> CheckpointConfig:
        if self.backend != "redis":
            return self
        if not self.url:
            raise ValueError('backend = "redis" needs url = "redis://host:port/db"')
        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"url: not a Redis URL (redis://, rediss:// or unix://): {parts.scheme}://...")
        if holds_password(self.url):
            raise ValueError(f"url: holds a password; set it in the environment variable {self.password_env} instead")
        if self.crawl is not None and (not self.crawl or "{" in self.crawl or "}" in self.crawl):
            raise ValueError("crawl: must be a non-empty name without braces")
        return self


class CrawlConfig(_Section):
    workers: int = Field(16, ge=1, le=1024)
    """Requests in flight at once, over all processes."""
    processes: int = Field(1, ge=1, le=256)
    """Processes that fetch and parse (``--processes``). With more than one, this process
    coordinates (checkpoint, scheduling, login, output) and each of the others runs its share
    of the workers, so a crawl can use every core."""
    shutdown_grace: Seconds = 10.0
    """Seconds in-flight requests get to finish after the first Ctrl-C or SIGTERM."""


class PolitenessConfig(_Section):
    """Per-host limits: every host the crawl visits gets these, and its own delay."""

    concurrency: int = Field(8, ge=1, le=1024)
    """Requests in flight to one host at most."""
    delay: Seconds = 0.0
    """Seconds between the starts of two requests to one host (the starting point when adaptive)."""
    jitter: float = Field(0.0, ge=0, le=1)
    """Randomise each delay within delay × (1 ± jitter)."""
    adaptive: StrictBool = False
    """Follow each host's latency (like AutoThrottle), between min_delay and max_delay."""
    min_delay: Seconds = 0.0
    max_delay: PositiveSeconds = 60.0
    target_concurrency: float = Field(1.0, gt=0)
    """Adaptive mode aims at this many requests in flight at each host, on average."""

    @model_validator(mode="after")
    def _bounds_in_order(self) -> PolitenessConfig:
        if self.min_delay > self.max_delay:
            raise ValueError("min_delay must not be greater than max_delay")
        return self


class RobotsConfig(_Section):
    obey: StrictBool = True
    """Fetch each host's robots.txt and obey it. Turn it off only for sites you own."""
    recheck_unavailable: PositiveSeconds = 60.0
    """A robots.txt that answered 5xx or could not be reached disallows its host until it is
    fetched again, this many seconds later."""
    max_crawl_delay: Seconds = 60.0
    """The longest Crawl-delay honoured; a longer one is cut to this (and counted)."""


class PracticeSiteConfig(_Section):
    serve: StrictBool = False
    """Serve the bundled practice site on 127.0.0.1 for the duration of the run."""
    demo_credentials: StrictBool = True
    """While serving it, environment variables PRACTICE_USERNAME, PRACTICE_PASSWORD,
    PRACTICE_CLIENT_ID and PRACTICE_CLIENT_SECRET default to the site's demo account."""
    port: int = Field(0, ge=0, le=65535)
    """0: any free port (a resumed crawl gets the one it started on, which its queued URLs name);
    another number pins it. Spider entries say ``{practice_site}`` for the site's URL."""
    products: int = Field(1000, ge=1)
    latency: Seconds = 0.0


#: Stands for the served practice site's URL (``http://127.0.0.1:43121``) in a spider entry's
#: ``args`` (any string in them), login ``url`` and ``logged_out_url``, token ``url`` and ``hosts``.
PRACTICE_SITE = "{practice_site}"
# The URL fields, by section, where it is filled in; args are walked whole.
_PRACTICE_SITE_FIELDS = {"login": ("url", "logged_out_url"), "token": ("url", "hosts")}
# A URL field starts with a scheme, or with the placeholder that brings one.
_URL_START = r"^(?:https?://|\{practice_site\})"


def _strings(value: Any, field: str) -> Iterator[tuple[str, str]]:
    """Every string in a TOML value (tables and arrays walked), with its field's name."""
    if isinstance(value, str):
        yield field, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{field}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{field}[{index}]")


def _filled_in(value: Any, url: str) -> Any:
    # str.replace, not str.format: any other brace in the user's strings stays as written.
    if isinstance(value, str):
        return value.replace(PRACTICE_SITE, url)
    if isinstance(value, dict):
        return {key: _filled_in(item, url) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled_in(item, url) for item in value]
    return value


# A literal value under one of these names is almost certainly a credential in a committed file.
_SECRET_LOOKING = re.compile(r"pass|secret|token|api.?key|credential", re.IGNORECASE)


class _CredentialFields(_Section):
    fields: dict[str, str] = {}
    """Form fields sent as written: nothing secret (use ``env_fields``)."""
    env_fields: dict[str, str] = {}
    """Form field -> the environment variable holding its value. Credentials go here, never in the file."""

    @field_validator("fields")
    @classmethod
    def _no_literal_secrets(cls, fields: dict[str, str]) -> dict[str, str]:
        if secret := sorted(name for name in fields if _SECRET_LOOKING.search(name)):
            raise ValueError(
                f"{', '.join(secret)} looks like a credential: name an environment variable "
                "in env_fields instead of writing it in the file"
            )
        return fields

    @model_validator(mode="after")
    def _fields_given_once(self) -> _CredentialFields:
        if both := sorted(self.fields.keys() & self.env_fields.keys()):
            raise ValueError(f"env_fields: {', '.join(both)} also given in fields")
        return self


class FormLoginConfig(_CredentialFields):
    url: str = Field(pattern=_URL_START)
    """The page with the login form."""
    csrf_field: str | None = None
    """The form's hidden anti-CSRF input, read from the form before posting."""
    logged_out_url: str | None = None
    """A response that ends at this URL's path means logged out (default: the login URL)."""
    logged_out_statuses: frozenset[int] = frozenset({401, 403})


class TokenConfig(_CredentialFields):
    url: str = Field(pattern=_URL_START)
    """The token endpoint, posted ``fields`` and ``env_fields``."""
    body: Literal["form", "json"] = "form"
    """How the fields are posted: a form (``application/x-www-form-urlencoded``) or a JSON object."""
    client_auth: Literal["body", "basic"] = "body"
    """Where ``client_id`` and ``client_secret`` go: in the body, or in HTTP Basic (RFC 6749
    ``client_secret_basic``)."""
    hosts: list[Annotated[str, Field(pattern=r"^(?:https?://)?[^/\s@]+$")]] = []
    """Where the token is sent: ``host`` (any port), ``host:port``, either after ``https://``
    or ``http://`` (that scheme only); default: the token URL's scheme, host and port. A token
    from an https endpoint is sent over https only."""
    token_field: str = "access_token"
    expires_field: str = "expires_in"
    header: str = "Authorization"
    scheme: str = "Bearer"
    refresh_margin: Seconds = 5.0
    """Seconds before the announced expiry at which the token is refreshed: at most a quarter
    of the token's lifetime (a token living 2 s is refreshed after 1.5 s)."""
    default_lifetime: PositiveSeconds = 300.0
    """Seconds a token lives when the endpoint's answer has no ``expires_field``."""

    @model_validator(mode="after")
    def _basic_has_both_parts(self) -> TokenConfig:
        if self.client_auth == "basic":
            given = self.fields.keys() | self.env_fields.keys()
            if missing := [name for name in ("client_id", "client_secret") if name not in given]:
                raise ValueError(
                    f"client_auth = \"basic\" needs {' and '.join(missing)} in fields or env_fields"
                )
        return self


_IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
_TABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"


class _SinkFields(_Section):
    table: str = Field(pattern=_TABLE_NAME)
    """The table items go to: made from the spider's item model (columns named after its
    fields) if it does not exist; if it does, it must have those columns."""
    key: str | None = None
    """The column to upsert by (unique in the table): a crawl resumed after a crash writes
    again the items past the sink's last recorded position, which then replace themselves.
    Without it rows are inserted, and after a crash a few may be there twice."""


class SqliteSinkConfig(_SinkFields):
    type: Literal["sqlite"]
    path: Path
    """The database file (made if missing)."""


class PostgresSinkConfig(_SinkFields):
    type: Literal["postgres"]
    url_env: str = Field(min_length=1)
    """The environment variable holding the server's URL, ``postgresql://user@host:5432/db``
    (never in this file, which is committed; without a password in it)."""
    password_env: str | None = None
    """The environment variable holding the password, if the server wants one."""


SinkConfig = Annotated[SqliteSinkConfig | PostgresSinkConfig, Field(discriminator="type")]


class SpiderConfig(_Section):
    spider: str = Field(min_length=1)
    """A spider name found in the ``spiders/`` folder beside the config, or ``module:Class``."""
    args: dict[str, Any] = {}
    login: FormLoginConfig | None = None
    token: TokenConfig | None = None
    cookie_domain: str | None = None
    """A parent domain (``example.com``) whose subdomains share every cookie the crawl receives."""
    request_hooks: list[str] = []
    """Functions by import path (``module:function``) called as ``hook(request, spider)`` before
    each attempt at a request, after the spider's own (see ``crawler.hooks``)."""
    response_hooks: list[str] = []
    """Functions by import path called as ``hook(response, spider)`` before the callback, before
    the spider's own."""
    allowed_domains: list[str] | None = None
    """Domains (each with its subdomains) followed links may go to; default: the spider's own
    ``allowed_domains``, and if it has none, any."""
    allow: list[str] = []
    """Regular expressions: a followed link must match one of them."""
    deny: list[str] = []
    """Regular expressions: a followed link matching any of them is dropped."""
    max_depth: int | None = Field(None, ge=0)
    """Links followed from a start request at most (start requests are depth 0)."""
    max_pages: int | None = Field(None, ge=1)
    """Requests to complete at most (done or failed); the crawl then counts as finished."""
    max_items: int | None = Field(None, ge=1)
    """Stop taking new requests once this many items are committed (pages in flight still
    finish, so a few more may come)."""
    pipelines: list[Annotated[str, Field(pattern=_IMPORT_PATH)]] = []
    """Item pipelines by import path (``module:Class``, made with no arguments, or ``module:object``),
    run in this order on every committed item before the output file and the sinks get it."""
    sinks: list[SinkConfig] = []
    """Databases the items are written to as well (``[[spiders.sinks]]``), each from its own
    position recorded in the checkpoint."""

    @field_validator("allow", "deny")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {error}") from None
        return patterns

    @field_validator("allowed_domains")
    @classmethod
    def _bare_domains(cls, domains: list[str] | None) -> list[str] | None:
        if bad := [domain for domain in domains or () if "/" in domain or ":" in domain or not domain.strip(". ")]:
            raise ValueError(f"domains only, without scheme, port or path: {', '.join(map(repr, bad))}")
        return domains

    @field_validator("request_hooks", "response_hooks")
    @classmethod
    def _import_paths(cls, references: list[str]) -> list[str]:
        # Imported when the spiders are loaded (crawler.loader), where the project is on the path.
        if bad := [reference for reference in references if not re.fullmatch(_IMPORT_PATH, reference)]:
            raise ValueError(f"import paths (module:function) only: {', '.join(map(repr, bad))}")
        return references

    def practice_site_fields(self) -> list[str]:
        """The fields (``args.start_url``, ``login.url``...) that say ``{practice_site}``."""
        fields = list(_strings(self.args, "args"))
        for section, names in _PRACTICE_SITE_FIELDS.items():
            if (settings := getattr(self, section)) is not None:
                fields += [item for name in names for item in _strings(getattr(settings, name), f"{section}.{name}")]
        return [field for field, text in fields if PRACTICE_SITE in text]

    def with_practice_site(self, url: str) -> SpiderConfig:
        update: dict[str, Any] = {"args": _filled_in(self.args, url)}
        for section, names in _PRACTICE_SITE_FIELDS.items():
            if (settings := getattr(self, section)) is not None:
                filled = {name: _filled_in(getattr(settings, name), url) for name in names}
                update[section] = settings.model_copy(update=filled)
        return self.model_copy(update=update)


class Config(_Section):
    spiders: list[SpiderConfig] = Field(min_length=1)
    crawl: CrawlConfig = CrawlConfig()
    http: HttpConfig = HttpConfig()
    retry: RetryConfig = RetryConfig()
    politeness: PolitenessConfig = PolitenessConfig()
    robots: RobotsConfig = RobotsConfig()
    output: OutputConfig = OutputConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    http_cache: HttpCacheConfig = HttpCacheConfig()
    practice_site: PracticeSiteConfig = PracticeSiteConfig()
    # The config file's folder, set by load_config: not something the file itself can say.
    _base_dir: Path = PrivateAttr(Path("."))

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def resolve(self, path: Path | str) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.base_dir / path

    def output_path(self, spider: str) -> Path:
        return self.resolve(self.output.path.format(spider=spider, format=self.output.format))

    @field_validator("spiders")
    @classmethod
    def _unique_spiders(cls, spiders: list[SpiderConfig]) -> list[SpiderConfig]:
        names = [entry.spider for entry in spiders]
        if duplicates := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return spiders

    @model_validator(mode="after")
    def _one_output_file_per_spider(self) -> Config:
        # Each file's progress is tracked per spider; two spiders appending to one file would
        # each cut the other's items off on resume.
        # Standard output ("-") keeps no progress: every spider's items go to it as they come.
        if len(self.spiders) > 1 and "{spider}" not in self.output.path and self.output.path != "-":
            raise ValueError("output.path: must contain {spider} when several spiders are configured")
        return self

    @model_validator(mode="after")
    def _cached_statuses_not_retried(self) -> Config:
        # A retried status fails the attempt before it could be kept: listing it would promise a
        # cache of 503s that never fills.
        if retried := sorted(set(self.http_cache.statuses) & self.retry.statuses):
            listed = ", ".join(map(str, retried))
            raise ValueError(f"http_cache.statuses: {listed} retried (retry.statuses), so never cached")
        return self

    @model_validator(mode="after")
    def _practice_site_served(self) -> Config:
        # Nothing else fills it in: the crawl would fetch the placeholder's text as a URL.
        used = [
            f"spiders[{index}].{field}"
            for index, entry in enumerate(self.spiders)
            for field in entry.practice_site_fields()
        ]
        if used and not self.practice_site.serve:
            raise ValueError(f"{', '.join(used)}: {PRACTICE_SITE} needs practice_site.serve = true")
        return self

    def with_practice_site(self, url: str) -> Config:
        """This config with ``{practice_site}`` replaced by ``url``, the served site's address."""
        return self.model_copy(update={"spiders": [entry.with_practice_site(url) for entry in self.spiders]})

    @classmethod
    def with_base_dir(cls, data: Mapping[str, Any], base_dir: Path, source: str) -> Config:
        """A config from ``data`` (sections of keys, as in a file) whose relative paths are
        relative to ``base_dir``; ``source`` names where it came from in the errors."""
        try:
            config = cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(describe_errors(source, error)) from None
        config._base_dir = base_dir
        return config

    def with_overrides(self, overrides: Mapping[str, Any], source: str) -> Config:
        """This config with ``overrides`` (sections of keys, as in the file) laid over it,
        validated like the file; ``source`` names where they came from in the errors."""
        try:
            config = Config.model_validate(_laid_over(self.model_dump(), overrides))
        except ValidationError as error:
            raise ConfigError(describe_errors(source, error)) from None
        config._base_dir = self._base_dir
        return config


def _laid_over(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _laid_over(merged[key], value)
        else:
            merged[key] = value
    return merged


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required, but missing"
    message = str(error["msg"])
    for prefix in ("Input should be ", "Value error, "):
        if message.startswith(prefix):
            message = ("must be " if prefix == "Input should be " else "") + message[len(prefix) :]
    return message


def describe_errors(source: str, error: ValidationError) -> list[str]:
    """``config.toml: http.timeout.read: must be greater than 0``, one line per problem.

    A check across fields (a model validator) has no location of its own, so its message starts
    with the field it is about: ``output.path: must contain {spider} ...``.
    """
    lines = []
    for problem in error.errors(include_url=False):
        if problem["loc"]:
            lines.append(f"{source}: {_location(problem['loc'])}: {_message(problem)}")
        else:
            lines.append(f"{source}: {_message(problem)}")
    return lines


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: cannot read: {error}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_errors(str(path), error)) from None
    config._base_dir = path.resolve().parent
    if config.http.ca_bundle is not None and not (bundle := config.resolve(config.http.ca_bundle)).is_file():
        raise ConfigError([f"{path}: http.ca_bundle: no such file: {bundle}"])
    return config
