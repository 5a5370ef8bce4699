"""``crawler.crawl``: a crawl run from Python, with the report back."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

import crawler
from crawler.exceptions import ConfigError
from crawler.practice import PracticeSite

REPO = Path(__file__).resolve().parent.parent


def test_a_config_file_with_settings_arguments_and_output(tmp_path: Path) -> None:
    (tmp_path / "spiders").mkdir()
    (tmp_path / "spiders" / "__init__.py").touch()
    (tmp_path / "spiders" / "products.py").write_text((REPO / "spiders" / "products.py").read_text())
    (tmp_path / "config.toml").write_text('[[spiders]]\nspider = "products"\n')
    with PracticeSite(products=25, per_page=10) as site:
        report = crawler.crawl(
            tmp_path / "config.toml", settings={"crawl.workers": 2, "robots.obey": False},
            args={"start_url": f"{site.url}/"}, output="items/{spider}.jsonl",
        )
    assert report.results[0].finished and report.whole_crawl.items == 25
    assert report.stats.get("robots:fetched", 0) == 0
    lines = (tmp_path / "items" / "products.jsonl").read_text().splitlines()
    assert sorted(int(json.loads(line)["id"]) for line in lines) == list(range(1, 26))


def test_a_spider_class_runs_with_the_defaults_beside_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    module = tmp_path / "notebook_spiders.py"
    module.write_text(textwrap.dedent(
        """
        from crawler import Request, Spider

        class Titles(Spider):
            name = "titles"
            start_url = ""

            def start_requests(self):
                yield Request(self.start_url)

            def parse(self, response):
                yield {"title": response.css("title::text").get()}
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    from notebook_spiders import Titles  # type: ignore[import-not-found]

    try:
        with PracticeSite(products=5) as site:
            report = crawler.crawl(Titles, args={"start_url": f"{site.url}/"})
    finally:
        sys.modules.pop("notebook_spiders", None)
    assert report.whole_crawl.items == 1
    assert (tmp_path / "output" / "titles.jsonl").exists() and (tmp_path / ".crawler" / "checkpoint.db").exists()


def test_a_bad_setting_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[[spiders]]\nspider = "products"\n')
    with pytest.raises(ConfigError) as refused:
        crawler.crawl(tmp_path / "config.toml", settings={"crawl.workers": 0})
    assert refused.value.problems == ["crawl(): crawl.workers: must be greater than or equal to 1"]
