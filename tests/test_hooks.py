"""Request and response hooks in real crawls: what the servers received decides.

The config's hooks are functions of the spider's own module (``spiders.<module>:<name>``): the
``spiders`` package is imported afresh for each test's project, so no test sees another's.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from rich.console import Console

from crawler.commands import run_command
from crawler.config import Config
from crawler.exceptions import ConfigError
from crawler.frontier.base import FailedRequest
from crawler.frontier.sqlite import Checkpoint
from crawler.practice import PracticeSite
from crawler.progress import print_summary
from crawler.request import Request
from crawler.runner import run_crawl
from recorder import Recorder
from serverproc import serve
from test_cli import assert_clean_failure, crawler_cli

NO_ROBOTS = "[robots]\nobey = false\n"
FAST_RETRIES = NO_ROBOTS + "[retry]\nattempts = 3\nbackoff = { initial = 0.01, max = 0.02, jitter = 0.0 }\n"

# A spider over ``urls`` (sent with Accept-Language: ``language``, if given) whose items say what
# reached the callback: the URL, the text of a practice-site page, the headers an echo endpoint
# received, and what response hooks left in the response's X-Seen header. Each test appends its
# hooks, and spiders of its own.
SPIDER = """
from crawler import Request, Response, Spider


def add_trail(request, spider):
    '''Appends to Accept-Language (harmless: it goes on to other origins) and sets X-Hooked.'''
    headers = dict(request.headers or {})
    trail = headers.get("Accept-Language")
    headers["Accept-Language"] = f"{trail},hooked" if trail else "hooked"
    headers["X-Hooked"] = "yes"
    return request.replace(headers=headers)


def _request_tag(name):
    def tag(request, spider):
        trail = (request.headers or {}).get("X-Trail")
        return request.replace(headers={"X-Trail": f"{trail},{name}" if trail else name})
    return tag


def _response_tag(name):
    def tag(response, spider):
        seen = response.headers.get("X-Seen")
        response.headers["X-Seen"] = f"{seen},{name}" if seen else name
        return response
    return tag


class Hooked(Spider):
    name = "hooked"
    urls = []
    language = ""
    follow_links = False

    def start_requests(self):
        headers = {"Accept-Language": self.language} if self.language else None
        for url in self.urls:
            yield Request(url, callback=self.parse, headers=headers)

    def parse(self, response):
        item = {"url": response.url, "text": None, "received": None, "seen": response.headers.get("X-Seen")}
        if response.headers.get("Content-Type", "").startswith("application/json"):
            item["received"] = response.json()["headers"]
        else:
            item["text"] = response.css("p.target::text").get()
        yield item
        if self.follow_links:
            yield from response.follow_all(response.css("a::attr(href)").getall(), self.parse)
"""


def hooked_config(
    spider_config, source: str = "", extra: str = NO_ROBOTS, *, entry: str = "", **args: object
) -> Config:
    """The ``hooked`` spider with ``source`` appended to its module."""
    return spider_config("hooked", SPIDER + source, extra, entry=entry, **args)


def items(config: Config, spider: str = "hooked") -> list[dict[str, object]]:
    path = config.output_path(spider)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def failed(config: Config) -> list[FailedRequest]:
    """The failed requests, as the checkpoint holds them, by URL."""
    with Checkpoint(config.resolve(config.checkpoint.path), owner="test") as checkpoint:
        return sorted(checkpoint.frontier("hooked").failed(100), key=lambda failure: failure.url)


def test_a_request_hook_adds_a_header_the_server_receives(spider_config) -> None:
    with serve("httpbin_server.py") as httpbin:
        config = hooked_config(
            spider_config, "", "", entry='request_hooks = ["spiders.hooked:add_trail"]',
            urls=[f"{httpbin}/headers"], language="en",
        )
        report = run_crawl(config)
    [item] = items(config)
    assert item["received"]["X-Hooked"] == "yes"
    assert item["received"]["Accept-Language"] == "en,hooked"
    assert report.results[0].counts.done == 1


def test_requests_a_hook_drops_are_counted_by_reason_and_never_sent(
    site: PracticeSite, spider_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = """

class Picky(Hooked):
    name = "picky"
    request_hooks = ["skip_odd_targets"]

    def skip_odd_targets(self, request, spider):
        if "/links/target/" in request.url and int(request.url.rsplit("/", 1)[1]) % 2:
            return None
        return request
"""
    config = spider_config(
        "picky", SPIDER + source, NO_ROBOTS, module="hooked", urls=[f"{site.url}/links?n=10"], follow_links=True
    )
    report = run_crawl(config)

    assert [site.counters.hits(f"/links/target/{n}") for n in range(10)] == [1, 0] * 5
    texts = sorted(item["text"] for item in items(config, "picky") if item["text"])
    assert texts == [f"target {n}" for n in (0, 2, 4, 6, 8)]
    [result] = report.results
    assert report.stats["skipped:request_hook"] == 5 and result.reasons["skipped:request_hook"] == 5
    assert result.counts.done == 11 and result.counts.failed == 0  # dropped is done: nothing to retry
    summary = io.StringIO()
    print_summary(Console(file=summary, width=200), report, {})
    assert "Skipped: request_hook 5" in summary.getvalue().splitlines()
    capsys.readouterr()
    assert run_command(["status", str(tmp_path / "config.toml")]) == 0
    assert "  Skipped: request_hook 5" in capsys.readouterr().out.splitlines()


def test_response_hooks_change_responses_or_drop_them_before_the_callback(site: PracticeSite, spider_config) -> None:
    source = """

def rewrite_or_drop(response, spider):
    if response.url.endswith("/links/target/1"):
        return None
    if response.url.endswith("/links/target/2"):
        body = b'<p class="target">rewritten</p>'
        return Response(response.url, 200, {"Content-Type": "text/html"}, body, response.request)
    return response
"""
    config = hooked_config(
        spider_config, source, entry='response_hooks = ["spiders.hooked:rewrite_or_drop"]',
        urls=[f"{site.url}/links?n=4"], follow_links=True,
    )
    report = run_crawl(config)

    texts = {item["url"].rsplit("/", 1)[1]: item["text"] for item in items(config) if "/target/" in item["url"]}
    assert texts == {"0": "target 0", "2": "rewritten", "3": "target 3"}  # no callback for target 1
    assert site.counters.hits("/links/target/1") == 1  # fetched, then dropped
    assert report.stats["skipped:response_hook"] == 1
    assert report.results[0].counts.done == 5


def test_the_spiders_request_hooks_run_before_the_configs_and_its_response_hooks_after(
    site: PracticeSite, spider_config
) -> None:
    source = """
spider_1, spider_2 = _request_tag("spider_1"), _request_tag("spider_2")
config_1, config_2 = _request_tag("config_1"), _request_tag("config_2")
seen_by_config_1, seen_by_config_2 = _response_tag("config_1"), _response_tag("config_2")


class Ordered(Hooked):
    name = "ordered"
    request_hooks = [spider_1, "tag_as_spider_2"]
    response_hooks = ["seen_by_spider_1", _response_tag("spider_2")]

    def tag_as_spider_2(self, request, spider):
        return spider_2(request, spider)

    def seen_by_spider_1(self, response, spider):
        return _response_tag("spider_1")(response, spider)
"""
    config = spider_config(
        "ordered", SPIDER + source, NO_ROBOTS, module="hooked",
        entry='request_hooks = ["spiders.hooked:config_1", "spiders.hooked:config_2"]\n'
              'response_hooks = ["spiders.hooked:seen_by_config_1", "spiders.hooked:seen_by_config_2"]',
        urls=[f"{site.url}/echo"],
    )
    run_crawl(config)
    [item] = items(config, "ordered")
    assert item["received"]["X-Trail"] == "spider_1,spider_2,config_1,config_2"  # as the server got it
    assert item["seen"] == "config_1,config_2,spider_1,spider_2"


def test_request_hooks_run_on_every_attempt_from_the_request_as_leased(spider_config) -> None:
    with Recorder() as server:
        answers = iter([503])
        server.handle("/flaky", lambda received: (next(answers, 200), {"Content-Type": "text/html"}, b"<p>ok</p>"))
        server.route("/down", 503)
        config = hooked_config(
            spider_config, "", FAST_RETRIES, entry='request_hooks = ["spiders.hooked:add_trail"]',
            urls=[server.url_for("/flaky"), server.url_for("/down")], language="en",
        )
        run_crawl(config)
        flaky, down = server.received("/flaky"), server.received("/down")

    # Each attempt went out with the hook's changes made once, to the request as it was leased.
    assert [hit.headers["Accept-Language"] for hit in flaky] == ["en,hooked"] * 2
    assert [hit.headers["Accept-Language"] for hit in down] == ["en,hooked"] * 3
    assert all(hit.headers["X-Hooked"] == "yes" for hit in flaky + down)
    assert len(items(config)) == 1
    # What the checkpoint keeps of the failed one is the request as the spider made it.
    [stored] = failed(config)
    assert stored.url == server.url_for("/down") and stored.error_kind == "HTTPStatusError"
    assert Request.from_json(stored.data).headers == {"Accept-Language": "en"}


def test_a_redirect_queued_as_its_own_request_is_hooked_afresh(site: PracticeSite, spider_config) -> None:
    with Recorder() as other_origin:
        other_origin.route("/landing", 200, {"Content-Type": "text/html"}, b'<p class="target">landed</p>')
        config = hooked_config(
            spider_config, "", entry='request_hooks = ["spiders.hooked:add_trail"]',
            urls=[f"{site.url}/redirect?to={other_origin.url_for('/landing')}"], language="en",
        )
        report = run_crawl(config)
        [landed] = other_origin.received("/landing")

    assert report.stats["redirects:requeued"] == 1
    # The hook ran on it (X-Hooked does not follow a redirect to another origin by itself), on the
    # redirect as made from the leased request: its Accept-Language is hooked once, not twice.
    assert landed.headers["X-Hooked"] == "yes"
    assert landed.headers["Accept-Language"] == "en,hooked"
    assert [item["text"] for item in items(config)] == ["landed"]


def test_a_hook_that_raises_or_misbehaves_fails_its_request_as_hookerror_and_the_crawl_goes_on(
    site: PracticeSite, spider_config, caplog: pytest.LogCaptureFixture
) -> None:
    source = """

def fragile(request, spider):
    if request.url.endswith("/0"):
        raise ValueError("boom")
    if request.url.endswith("/1"):
        return "not a request"
    if request.url.endswith("/2"):
        return request.replace(url=request.url + "?elsewhere")
    return request


def fragile_response(response, spider):
    if response.url.endswith("/3"):
        raise KeyError("no such thing")
    return response
"""
    urls = [f"{site.url}/links/target/{n}" for n in range(5)]
    caplog.set_level(logging.INFO, logger="crawler")
    config = hooked_config(
        spider_config, source, FAST_RETRIES,
        entry='request_hooks = ["spiders.hooked:fragile"]\nresponse_hooks = ["spiders.hooked:fragile_response"]',
        urls=urls,
    )
    report = run_crawl(config)

    assert [item["text"] for item in items(config)] == ["target 4"]
    assert report.stats["failed:HookError"] == report.stats["hook_errors"] == 4
    assert report.results[0].failed_kinds == {"HookError": 4}
    # Failed at once, not retried: three never sent, the fourth sent once.
    assert [site.counters.hits(f"/links/target/{n}") for n in range(5)] == [0, 0, 0, 1, 1]
    name = "spiders.hooked:fragile"
    assert [(failure.url, failure.error_kind, failure.error) for failure in failed(config)] == [
        (urls[0], "HookError", f"request hook {name} raised ValueError: boom"),
        (urls[1], "HookError", f"request hook {name} returned a str, not a Request or None"),
        (urls[2], "HookError", f"request hook {name} changed the URL to {urls[2]}?elsewhere: a hook may change "
                               "how a request is sent, not where (yield a new Request from a callback instead)"),
        (urls[3], "HookError", f"response hook {name}_response raised KeyError: 'no such thing'"),
    ]
    # One warning per failure, and its traceback at INFO (shown with -v), as for a callback.
    about_the_first = [record for record in caplog.records if urls[0] in record.getMessage()]
    assert [record.getMessage() for record in about_the_first if record.levelno == logging.WARNING] == [
        f"failed {urls[0]} (not sent): request hook {name} raised ValueError: boom"
    ]
    [where] = [record for record in about_the_first if record.exc_info]
    assert where.levelno == logging.INFO and isinstance(where.exc_info[1].__cause__, ValueError)


def test_a_bad_hook_is_one_line_each_from_crawler_check(tmp_path: Path) -> None:
    spiders = tmp_path / "spiders"
    spiders.mkdir()
    (spiders / "__init__.py").touch()
    (spiders / "hooked.py").write_text(
        SPIDER + "\nLIMIT = 3\n\n\nclass Forgetful(Hooked):\n    name = \"forgetful\"\n    request_hooks = [\"gone\"]\n"
    )
    (tmp_path / "config.toml").write_text(
        '[[spiders]]\nspider = "forgetful"\n'
        'request_hooks = ["spiders.hooked:add_trail", "spiders.hooked:nope", "nowhere.at_all:hook"]\n'
        'response_hooks = ["spiders.hooked:LIMIT"]\n'
    )
    lines = assert_clean_failure(crawler_cli("check", "config.toml", cwd=tmp_path), 2)
    assert lines == [
        "spiders[0].request_hooks[1]: cannot import spiders.hooked:nope: spiders.hooked has no nope",
        "spiders[0].request_hooks[2]: cannot import nowhere.at_all:hook: No module named 'nowhere'",
        "spiders[0].response_hooks[0]: spiders.hooked:LIMIT is not a function: 3",
        "spiders[0].spider: request_hooks[0]: spider 'forgetful' has no method 'gone'",
    ]


def test_a_hook_that_is_not_an_import_path_is_a_config_error(write_config) -> None:
    with pytest.raises(ConfigError) as error:
        write_config('[[spiders]]\nspider = "hooked"\nresponse_hooks = ["hooks.add_header"]\n')
    assert error.value.problems[0].endswith(
        "config.toml: spiders[0].response_hooks: import paths (module:function) only: 'hooks.add_header'"
    )


def test_hooks_run_in_each_worker_process(site: PracticeSite, spider_config) -> None:
    source = """

def drop_the_first_three(request, spider):
    return None if request.url.endswith(("=0", "=1", "=2")) else request


def drop_the_last(response, spider):
    return None if response.url.endswith("=9") else response


class Stamped(Hooked):
    name = "stamped"
    request_hooks = ["stamp"]

    def stamp(self, request, spider):
        return request.replace(headers={"X-Stamped": spider.name})
"""
    config = spider_config(
        "stamped", SPIDER + source, NO_ROBOTS + "[crawl]\nworkers = 4\nprocesses = 2\n", module="hooked",
        entry='request_hooks = ["spiders.hooked:drop_the_first_three"]\n'
              'response_hooks = ["spiders.hooked:drop_the_last"]',
        urls=[f"{site.url}/echo?n={n}" for n in range(10)],
    )
    report = run_crawl(config)

    assert report.stats["worker_processes"] == 2
    assert site.counters.hits("/echo") == 7
    received = sorted((item["url"], item["received"]["X-Stamped"]) for item in items(config, "stamped"))
    assert received == [(f"{site.url}/echo?n={n}", "stamped") for n in range(3, 9)]
    assert report.stats["skipped:request_hook"] == 3 and report.stats["skipped:response_hook"] == 1


def test_crawler_fetch_and_parse_run_the_hooks_as_the_crawl_does(spider_config, tmp_path: Path) -> None:
    source = """

def refuse_robots_page(request, spider):
    return None if request.url.endswith("/robots.txt") else request
"""
    with serve("httpbin_server.py") as httpbin:
        hooked_config(
            spider_config, source, "",
            entry='request_hooks = ["spiders.hooked:add_trail", "spiders.hooked:refuse_robots_page"]', language="en",
        )
        fetched = crawler_cli("fetch", f"{httpbin}/headers", "config.toml", "-s", "robots.obey=false", cwd=tmp_path)
        assert fetched.code == 0, fetched
        assert json.loads(fetched.out)["headers"]["X-Hooked"] == "yes"
        parsed = crawler_cli("parse", f"{httpbin}/headers", "config.toml", "-s", "robots.obey=false", cwd=tmp_path)
        assert parsed.code == 0, parsed
        assert '"X-Hooked": "yes"' in parsed.out
        dropped = crawler_cli("fetch", f"{httpbin}/robots.txt", "config.toml", "-s", "robots.obey=false", cwd=tmp_path)
    (line,) = assert_clean_failure(dropped, 1)
    assert line == f"crawler: {httpbin}/robots.txt: a request hook dropped it, so it is not fetched"
