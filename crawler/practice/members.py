"""The practice site's login area, members pages, bearer-token API and cookie helper.

For testing "log in once", "log in again when the site revokes the session" and
"a bearer token on every API request" against a real server. The demo
credentials are the site's ``demo_credentials``; state lives in
:class:`crawler.practice.accounts.Accounts`. Cookies set here carry
``Path=/; HttpOnly; SameSite=Lax``.

``GET /login[?next=<path>]``
    ``<form class="login" method="post" action="/login">`` with a hidden
    ``csrf_token`` (also set as the ``csrftoken`` cookie: double-submit CSRF, a
    new token per GET), ``username``, ``password`` and, if given, a hidden ``next``.
``POST /login`` (form: ``csrf_token``, ``username``, ``password``, ``next``)
    A CSRF token missing or unequal to the cookie is a 403; wrong credentials
    answer 200 with the form again and ``<p class="error">``; the right ones set
    the ``sessionid`` cookie and 302 to ``next`` (if it is a local path) or
    ``/members/page/1``.
``GET /logout``
    Ends that session (and expires its cookie); 302 to ``/login``.
``/members/page/<n>`` (``1..members``)
    Needs a live ``sessionid`` cookie, else 302 to ``/login?next=<path>`` (the
    logged-out signal). CSS hooks: ``h1.title``, ``span.secret``
    (``member-secret-<n>``), ``a.next``, ``a.member-link``. Slowed by ``latency``.
    ``revoke_after=N`` revokes all sessions after every N-th page served.
``/members/``
    302 to ``/members/page/1`` (same login rule as a member page).
``POST /api/token``
    The fields come as a form (``application/x-www-form-urlencoded``, or no body) or as a JSON
    object of strings (``application/json``), chosen by ``Content-Type``; any other type, or
    a body that does not parse, is a 400 ``{"error": "invalid_request"}``. The client
    authenticates with ``client_id`` + ``client_secret`` fields or with HTTP Basic
    (RFC 6749 §2.3.1: each part form-urlencoded, then ``id:secret`` base64-encoded; parts
    sent without that encoding are accepted too), not both (a 400 ``invalid_request``).
    200 ``{"access_token", "token_type": "Bearer", "expires_in"}`` (no ``expires_in`` when
    the site's ``send_expires_in`` is false); wrong client 401 ``{"error": "invalid_client"}``;
    with ``token_error=S`` set, status ``S`` and ``{"error": "server_error"}`` (5xx) or
    ``{"error": "invalid_request"}`` (4xx) whatever was sent. Each request is recorded in
    ``counters.token_requests`` (see :class:`crawler.practice.accounts.TokenRequest`).
``/api/items/<n>`` (``1..api_items``)
    Needs ``Authorization: Bearer <token>`` with a live token, else 401
    ``{"error": "invalid_token"}``; 200 ``{"id", "name", "next"}`` (see :func:`api_item`).
    Slowed by ``api_latency`` (before the token is checked).
``/api/redirect?to=<url>``
    Needs a live bearer token like an item; 302 to ``to`` verbatim.
``/set-cookie?name=N&value=V[&domain=D][&path=P]``
    200 with ``Set-Cookie: N=V[; Domain=D][; Path=P]`` exactly.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import random
import secrets
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote_plus

from crawler.practice.accounts import TokenRequest, same_secret
from crawler.practice.catalogue import layout, product

if TYPE_CHECKING:
    from crawler.practice.endpoints import Handler

Query = dict[str, list[str]]
_FLAGS = "Path=/; HttpOnly; SameSite=Lax"
_FIRST_PAGE = "/members/page/1"
_NO_STORE = ("Cache-Control", "no-store")
_BAD_TOKEN = ("WWW-Authenticate", 'Bearer error="invalid_token"')


def member_secret(page: int) -> str:
    """The text of ``span.secret`` on member page ``page``."""
    return f"member-secret-{page}"


def member_links(page: int, members: int) -> list[int]:
    """The 2-3 other member pages (fewer on a tiny site) page ``page`` links to."""
    rng = random.Random(f"member-links:{page}")  # str seeds hash the same in every process
    picks = rng.sample(range(1, members), min(rng.choice((2, 3)), members - 1))
    return [p + 1 if p >= page else p for p in picks]  # skips ``page`` itself


def api_item(item_id: int, items: int) -> dict[str, Any]:
    """The JSON body of ``/api/items/<item_id>`` on a site with ``items`` API items."""
    following = f"/api/items/{item_id + 1}" if item_id < items else None
    return {"id": item_id, "name": product(item_id)["name"], "next": following}


@functools.lru_cache(maxsize=4096)
def _member_page(page: int, members: int) -> bytes:
    others = "\n".join(f'<li><a class="member-link" href="/members/page/{other}">'
                       f"Member page {other}</a></li>" for other in member_links(page, members))
    following = (f'<p><a class="next" href="/members/page/{page + 1}">next</a></p>\n'
                 if page < members else "")
    body = (f'<h1 class="title">Member page {page}</h1>\n'
            f'<p>Your secret: <span class="secret">{member_secret(page)}</span></p>\n'
            f'<ul class="see-also">\n{others}\n</ul>\n{following}')
    return layout(f"Member page {page}", body).encode("utf-8")


def _number(text: str) -> int | None:
    """A canonical positive-or-zero integer path segment ("7", not "07"), like the catalogue's."""
    if text.isascii() and text.isdigit() and len(text) <= 9 and (text == "0" or text[0] != "0"):
        return int(text)
    return None


def _header_safe(text: str) -> bool:
    # http.server encodes headers as strict Latin-1, and CR/LF would inject headers.
    return text.isascii() and text.isprintable()


def route(handler: Handler, path: str, query: Query, body: bytes) -> bool:
    """Answer a login, members, API or cookie request; ``False`` when ``path`` is none of them."""
    match path.split("/")[1:]:
        case ["login"]:
            if handler.command == "POST":
                _log_in(handler, body)
            elif handler.command in ("GET", "HEAD"):
                _login_form(handler, query.get("next", [""])[-1])
            else:
                _not_allowed(handler, "GET, HEAD, POST")
        case ["logout"]:
            handler.server.accounts.close_session(_cookies(handler, "sessionid"))
            expired = ("Set-Cookie", f"sessionid=; Max-Age=0; {_FLAGS}")
            handler._redirect(302, "/login", headers=(expired,))
        case ["members"] | ["members", ""]:
            if handler.server.accounts.has_session(_cookies(handler, "sessionid")):
                handler._redirect(302, _FIRST_PAGE)
            else:
                _to_login(handler, path)
        case ["members", "page", number] if (page := _number(number)) is not None:
            _members_page(handler, path, page)
        case ["api", "token"]:
            _grant_token(handler, body)
        case ["api", "items", number] if (item := _number(number)) is not None:
            _api_item(handler, item)
        case ["api", "redirect"]:
            to = query.get("to", [""])[-1].strip()
            if not _bearer_ok(handler):
                _json(handler, 401, {"error": "invalid_token"}, _BAD_TOKEN)
            elif not to or not _header_safe(to):
                handler._send_text(400, "need to=<url> (printable ASCII)\n")
            else:
                handler.server.counters.record("api_requests")
                handler._redirect(302, to)
        case ["set-cookie"]:
            _set_cookie(handler, query)
        case _:
            return False
    return True


# -- helpers --------------------------------------------------------------


def _cookies(handler: Handler, name: str) -> list[str]:
    """Every value the request's Cookie headers give ``name`` (a client may send several)."""
    values = []
    for header in handler.headers.get_all("Cookie") or ():
        for pair in header.split(";"):
            key, sep, value = pair.partition("=")
            if sep and key.strip() == name:
                values.append(value.strip())
    return values


def _json(handler: Handler, status: int, payload: dict[str, Any], *headers: tuple[str, str]) -> None:
    handler._send(status, json.dumps(payload).encode("utf-8"), "application/json", headers)


def _not_allowed(handler: Handler, allow: str) -> None:
    page = layout("405 Method Not Allowed", f"<h1>405 Method Not Allowed</h1>\n<p>Use {allow}.</p>")
    handler._send(405, page.encode("utf-8"), headers=(("Allow", allow),))


def _to_login(handler: Handler, path: str) -> None:
    handler._redirect(302, "/login?next=" + quote(path, safe="/"))


def _local_path(target: str) -> str:
    """``target`` if it is a path on this site, else the first member page (no open redirect)."""
    if target.startswith("/") and not target.startswith(("//", "/\\")) and _header_safe(target):
        return target
    return _FIRST_PAGE


# -- login ----------------------------------------------------------------


def _login_form(handler: Handler, next_path: str, error: str = "") -> None:
    token = secrets.token_urlsafe(32)
    hidden_next = (f'\n<input type="hidden" name="next" value="{escape(next_path)}">'
                   if next_path else "")
    problem = f'<p class="error">{escape(error)}</p>\n' if error else ""
    body = (
        f"<h1>Log in</h1>\n{problem}"
        '<form class="login" method="post" action="/login">\n'
        f'<input type="hidden" name="csrf_token" value="{token}">{hidden_next}\n'
        '<label>Username <input name="username"></label>\n'
        '<label>Password <input type="password" name="password"></label>\n'
        '<button type="submit">Log in</button>\n</form>'
    )
    headers = (("Set-Cookie", f"csrftoken={token}; {_FLAGS}"), _NO_STORE)
    handler._send(200, layout("Log in", body).encode("utf-8"), headers=headers)


def _log_in(handler: Handler, body: bytes) -> None:
    form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)

    def field(name: str) -> str:
        return form.get(name, [""])[-1]

    counters, accounts = handler.server.counters, handler.server.accounts
    token = field("csrf_token")
    if not token or not any(same_secret(token, cookie) for cookie in _cookies(handler, "csrftoken")):
        counters.record("failed_logins")
        page = layout("CSRF check failed", '<p class="error">CSRF check failed</p>\n'
                      '<p><a href="/login">Back to the login form</a></p>')
        handler._send(403, page.encode("utf-8"))
    elif not accounts.check_login(field("username"), field("password")):
        counters.record("failed_logins")
        _login_form(handler, field("next"), "Invalid username or password")
    else:
        session = ("Set-Cookie", f"sessionid={accounts.open_session()}; {_FLAGS}")
        counters.record("logins")
        handler._redirect(302, _local_path(field("next")), headers=(session,))


def _members_page(handler: Handler, path: str, page: int) -> None:
    server = handler.server
    if not 1 <= page <= server.accounts.members:
        handler._not_found(path)
        return
    if server.latency:
        server.stopping.wait(server.latency)
    if not server.accounts.serve_member_page(_cookies(handler, "sessionid")):
        _to_login(handler, path)
        return
    server.counters.record("member_pages")
    handler._send(200, _member_page(page, server.accounts.members),
                  headers=(("Cache-Control", "private, no-store"),))


# -- token API ------------------------------------------------------------


def _basic_credentials(handler: Handler) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` from an ``Authorization: Basic`` header, as sent, if any."""
    scheme, _, encoded = handler.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _media_type(handler: Handler) -> str:
    return handler.headers.get("Content-Type", "").partition(";")[0].strip().lower()


def _token_fields(media_type: str, body: bytes) -> dict[str, Any] | None:
    """The token request's fields, from a form or a JSON object; None if they do not parse."""
    if media_type in ("", "application/x-www-form-urlencoded"):
        form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        return {name: values[-1] for name, values in form.items()}
    if media_type == "application/json" or (media_type.startswith("application/")
                                             and media_type.endswith("+json")):
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        return data if isinstance(data, dict) else None
    return None


def _check_basic(handler: Handler, basic: tuple[str, str]) -> tuple[bool, str]:
    """Whether Basic credentials are right, and how they were encoded (see TokenRequest)."""
    accounts = handler.server.accounts
    decoded = (unquote_plus(basic[0]), unquote_plus(basic[1]))
    as_sent = accounts.check_client(*basic)
    as_decoded = accounts.check_client(*decoded)
    if decoded == basic or not (as_sent or as_decoded):
        return as_sent, ""
    return True, "form-urlencoded" if as_decoded else "plain"


def _grant_token(handler: Handler, body: bytes) -> None:
    if handler.command != "POST":
        _not_allowed(handler, "POST")
        return
    server = handler.server
    accounts = server.accounts
    media_type = _media_type(handler)
    fields = _token_fields(media_type, body)
    basic = _basic_credentials(handler)
    in_body = fields is not None and ("client_id" in fields or "client_secret" in fields)
    credentials = {(True, True): "both", (True, False): "basic",
                   (False, True): "body", (False, False): "none"}[basic is not None, in_body]
    encoding = ""

    def answer(status: int, payload: dict[str, Any], *headers: tuple[str, str]) -> None:
        server.counters.record_token_request(TokenRequest(
            credentials, media_type, tuple(sorted(fields or ())), encoding, status))
        _json(handler, status, payload, _NO_STORE, *headers)

    failure = accounts.token_error
    if failure is not None:
        answer(failure, {"error": "server_error" if failure >= 500 else "invalid_request"})
        return
    if (fields is None or credentials == "both"
            or not all(isinstance(value, str) for value in fields.values())):
        answer(400, {"error": "invalid_request"})
        return
    if basic is None:
        granted = accounts.check_client(str(fields.get("client_id", "")),
                                        str(fields.get("client_secret", "")))
    else:
        granted, encoding = _check_basic(handler, basic)
    if not granted:
        challenge = (("WWW-Authenticate", 'Basic realm="practice-site"'),) if basic else ()
        answer(401, {"error": "invalid_client"}, *challenge)
        return
    token = accounts.grant_token()
    server.counters.record("token_grants")
    payload: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
    if accounts.send_expires_in:
        ttl = accounts.token_ttl
        payload["expires_in"] = int(ttl) if ttl.is_integer() else ttl
    answer(200, payload, ("Pragma", "no-cache"))


def _bearer_ok(handler: Handler) -> bool:
    scheme, _, token = handler.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    return scheme.lower() == "bearer" and bool(token) and handler.server.accounts.token_valid(token)


def _api_item(handler: Handler, item: int) -> None:
    items = handler.server.accounts.api_items
    if not 1 <= item <= items:
        _json(handler, 404, {"error": "not_found"})
        return
    if handler.server.api_latency:
        handler.server.stopping.wait(handler.server.api_latency)
    if not _bearer_ok(handler):
        _json(handler, 401, {"error": "invalid_token"}, _BAD_TOKEN)
    else:
        handler.server.counters.record("api_requests")
        _json(handler, 200, api_item(item, items))


# -- cookies --------------------------------------------------------------


def _set_cookie(handler: Handler, query: Query) -> None:
    given = {key: query[key][-1].strip() for key in ("name", "value", "domain", "path") if key in query}
    name = given.get("name", "")
    if (not name or any(char in name for char in "=,; \t")
            or not all(_header_safe(text) and ";" not in text for text in given.values())):
        handler._send_text(400, "need name=N&value=V[&domain=D][&path=P]: printable ASCII, no ';'\n")
        return
    cookie = f"{name}={given.get('value', '')}"
    if given.get("domain"):
        cookie += f"; Domain={given['domain']}"
    if given.get("path"):
        cookie += f"; Path={given['path']}"
    page = layout("Cookie set", f'<p class="ok">cookie {escape(name)} set</p>')
    handler._send(200, page.encode("utf-8"), headers=(("Set-Cookie", cookie),))
