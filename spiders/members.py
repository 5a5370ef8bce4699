"""Crawls the practice site's members-only area (form login) and its token API (bearer token).

Nothing here logs in or handles tokens: `config.toml` declares the login form and the token
endpoint, and the framework logs in once, re-logs in when the site logs us out, and puts a fresh
token on every API request.
"""

from collections.abc import Iterator
from typing import Literal
from urllib.parse import urljoin

from pydantic import BaseModel

from crawler import Request, Response, Spider


class Member(BaseModel):
    """Both kinds of item this spider yields, so that every field has a column in CSV output
    (each item has the fields of its kind; the others are null)."""

    kind: Literal["member_page", "api_item"]
    url: str | None = None
    title: str | None = None
    secret: str | None = None
    id: int | None = None
    name: str | None = None


class MembersSpider(Spider):
    name = "members"
    item_model = Member
    # config.toml passes the URL it serves the site on; by default, where
    # `python -m crawler.practice` serves it.
    start_url = "http://127.0.0.1:8650/"

    def start_requests(self) -> Iterator[Request]:
        yield Request(urljoin(self.start_url, "/members/page/1"), callback=self.parse_member_page)
        yield Request(urljoin(self.start_url, "/api/items/1"), callback=self.parse_api_item)

    def parse_member_page(self, response: Response) -> Iterator[Request | dict]:
        yield {
            "kind": "member_page",
            "url": response.url,
            "title": response.css("h1.title::text").get(),
            "secret": response.css("span.secret::text").get(),
        }
        for link in response.css("a.next, a.member-link"):
            yield response.follow(link, self.parse_member_page)

    def parse_api_item(self, response: Response) -> Iterator[Request | dict]:
        data = response.json()
        yield {"kind": "api_item", "id": data["id"], "name": data["name"]}
        if data.get("next"):
            yield response.follow(data["next"], self.parse_api_item)
