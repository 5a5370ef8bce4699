"""Shared fixtures: a real practice site on 127.0.0.1 and a way to write a config for it."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from crawler.config import Config, load_config
from crawler.practice import PracticeSite

# A real redis-server per session (and per test where asked): see tests/redis_server.py.
pytest_plugins = ["redis_server", "postgres_server"]


@pytest.fixture
def site() -> Iterator[PracticeSite]:
    with PracticeSite(products=120, per_page=20) as practice_site:
        yield practice_site


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.fixture
def write_config(tmp_path: Path):
    """Write ``config.toml`` (and optional spider modules) into a project folder; return the Config."""

    def write(toml: str, spiders: dict[str, str] | None = None) -> Config:
        for name, source in (spiders or {}).items():
            folder = tmp_path / "spiders"
            folder.mkdir(exist_ok=True)
            (folder / "__init__.py").touch()
            (folder / f"{name}.py").write_text(textwrap.dedent(source))
        path = tmp_path / "config.toml"
        path.write_text(textwrap.dedent(toml))
        return load_config(path)

    return write


PROBE_SPIDER = """
from crawler import Request, Spider


class Probe(Spider):
    '''Fetches the given URLs and records what came back; follows links when asked.'''

    name = "probe"
    urls = []
    method = "GET"
    idempotent = None
    follow_links = False

    def start_requests(self):
        for url in self.urls:
            yield Request(url, callback=self.parse, method=self.method, idempotent=self.idempotent)

    def parse(self, response):
        yield {"url": response.url, "status": response.status}
        if self.follow_links:
            for href in response.css("a::attr(href)").getall():
                yield response.follow(href, self.parse)
"""


def toml_value(value: object) -> str:
    """A TOML literal for the simple values tests pass (JSON's forms are valid TOML for these)."""
    import json

    return json.dumps(value)


@pytest.fixture
def spider_config(write_config, tmp_path: Path):
    """A config running the spider ``spider``, from a module (named ``module``, default the
    spider's name) whose source is ``source``: ``args`` are its arguments, ``entry`` more keys of
    its ``[[spiders]]`` table, ``extra`` TOML sections appended."""

    def make(
        spider: str, source: str, extra: str = "", *, entry: str = "", module: str | None = None, **args: object
    ) -> Config:
        arg_text = ", ".join(f"{key} = {toml_value(value)}" for key, value in args.items())
        return write_config(
            f"""
            [[spiders]]
            spider = "{spider}"
            args = {{ {arg_text} }}
            {entry}

            [checkpoint]
            path = "{tmp_path / 'checkpoint.db'}"

            [output]
            path = "{tmp_path / 'out'}/{{spider}}.{{format}}"
            """
            + textwrap.dedent(extra),
            spiders={module or spider: source},
        )

    return make


@pytest.fixture
def probe_config(spider_config):
    """A config running the probe spider over ``urls`` (the other arguments are ``spider_config``'s)."""

    def make(urls: list[str], extra: str = "", *, entry: str = "", **args: object) -> Config:
        return spider_config("probe", PROBE_SPIDER, extra, entry=entry, urls=urls, **args)

    return make
