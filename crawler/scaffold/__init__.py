"""``crawler new`` and ``crawler genspider``: a project that runs at once, and a spider to start
from. The project's files ship in ``project/`` beside this module, so they are there in an
installed package too; its example spider is the repository's ``spiders/products.py``."""

from __future__ import annotations

import keyword
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from ..exceptions import CrawlerError
from ..practice.catalogue import Catalogue

PROJECT = Path(__file__).parent / "project"
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def new_project(folder: Path) -> list[Path]:
    """Write a project into ``folder`` (new, or empty); the files written."""
    if folder.exists() and any(folder.iterdir()):
        raise CrawlerError(f"{folder} is not empty: crawler new writes a project into a new or empty folder")
    shutil.copytree(PROJECT, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    pages = folder / "tests" / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    # The page the example test reads, as the practice site serves it.
    page = Catalogue().render_product(1)
    assert page is not None  # product 1 is in every catalogue but an empty one
    (pages / "product-1.html").write_text(page, encoding="utf-8")
    return sorted(path for path in folder.rglob("*") if path.is_file())


def new_spider(name: str, url: str, folder: Path) -> Path:
    """Write ``spiders/NAME.py`` in ``folder``: a spider for the site at ``url``; and name it in
    ``folder/config.toml`` when there is one."""
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise CrawlerError(f"{name!r}: a spider's name is lowercase letters, digits and _, starting with a letter")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CrawlerError(f"{url!r}: the start URL is an http or https URL with a host")
    path = folder / "spiders" / f"{name}.py"
    if path.exists():
        raise CrawlerError(f"{path} exists already")
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "__init__.py").touch()
    class_name = "".join(part.capitalize() for part in name.split("_")) + "Spider"
    path.write_text(_SPIDER.format(name=name, url=url, host=parts.hostname, class_name=class_name), encoding="utf-8")
    config = folder / "config.toml"
    if config.exists():
        with config.open("a", encoding="utf-8") as handle:
            handle.write(f'\n[[spiders]]\nspider = "{name}"\n')
    return path


_SPIDER = '''"""A spider for {host}."""

from collections.abc import Iterator

from crawler import Request, Response, Spider


class {class_name}(Spider):
    name = "{name}"
    start_urls = ("{url}",)
    allowed_domains = ("{host}",)  # links to other hosts are not followed

    def parse(self, response: Response) -> Iterator[Request | dict]:
        yield {{"url": response.url, "title": response.css("title::text").get()}}
        for link in response.css("a::attr(href)").getall():
            yield response.follow(link, self.parse)
'''
