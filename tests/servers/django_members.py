"""A real Django site with a members-only area, for testing log-in-once and re-login on revocation.

Run as a script (see ``tests/serverproc.py`` for the contract)::

    python tests/servers/django_members.py --host 127.0.0.1 [--pages N] [--revoke-every N]
        [--slow-every K --slow-reply S] [--db PATH]

It binds port 0, prints ``listening on PORT`` as its first line and serves until SIGTERM.

Everything that matters is Django's own machinery: database-backed sessions in SQLite,
SessionMiddleware, CsrfViewMiddleware, AuthenticationMiddleware, ``LoginView`` and
``@login_required``. So a request carrying a session that was revoked gets what any Django site
answers: a redirect to ``/accounts/login/?next=...`` with ``Set-Cookie: sessionid=""; ...
Max-Age=0`` (Django deletes the cookie of a session it cannot find).

Endpoints:

``/accounts/login/``   Django's LoginView (form: ``csrfmiddlewaretoken``, ``username``,
                       ``password``, hidden ``next``); success redirects to ``/accounts/profile/``.
``/accounts/profile/`` login required; "logged in as ...". Not a member page (not counted).
``/members/<n>/``      login required, n in 1..pages: ``<h1 data-page="n">`` and links
                       (``a.member``) to pages 2n, 2n+1 and n+1 that exist.
``/revoke/``           deletes every Session row now; counts a revocation.
``/stats/``            JSON counters (see ``Site.snapshot``).
``/reset/``            zeroes the counters, deletes all sessions (not counted as a revocation);
                       ``?revoke_every=``, ``?pages=``, ``?slow_every=`` and ``?slow_reply=``
                       change those settings (as the options of the same names);
                       ``?interrupt_logins=N``: the next N logins are revoked while Django is
                       still saving them (a revocation landing during a login), which Django
                       answers with 400 (``SessionInterrupted``) though the password was right.

With ``--revoke-every N`` every session is deleted right after each N-th member page served
(counted across sessions since the last reset). Checking that the request's session still
exists, counting the page and revoking happen under one lock, so exactly N pages are served per
revocation however requests race, and a page is only ever served to a session alive at that
moment. After a revocation no client can see another member page without logging in again.

``--slow-every K --slow-reply S`` holds back the replies to some member pages (see ``observe``):
that is how a reply to a request sent under the old login comes back after the new login.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

USERNAME = "demo"
PASSWORD = "demo-password"

LOGIN_TEMPLATE = """<!doctype html>
<html><head><title>Log in</title></head><body>
<h1>Log in</h1>
{% if form.errors %}<p class="errors">Please enter a correct username and password.</p>{% endif %}
<form method="post" action="{% url 'login' %}">
{% csrf_token %}
<p>{{ form.username.label_tag }} {{ form.username }}</p>
<p>{{ form.password.label_tag }} {{ form.password }}</p>
<input type="hidden" name="next" value="{{ next }}">
<button type="submit">Log in</button>
</form>
</body></html>
"""

urlpatterns: list[object] = []  # ROOT_URLCONF is this module; filled in by build_site()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pages", type=int, default=300, help="member pages /members/1/ .. /members/N/")
    parser.add_argument("--revoke-every", type=int, default=0, metavar="N",
                        help="delete every session after each N-th member page served (0: never)")
    parser.add_argument("--slow-every", type=int, default=0, metavar="K",
                        help="replies to member pages whose number is a multiple of K are slow (0: none)")
    parser.add_argument("--slow-reply", type=float, default=0.0, metavar="S",
                        help="seconds a slow reply is held after Django has made it")
    parser.add_argument("--db", default=None, metavar="PATH",
                        help="the SQLite database file (default: one in a temporary folder, removed at exit)")
    args = parser.parse_args(argv)
    if min(args.pages, args.revoke_every, args.slow_every, args.slow_reply) < 0:
        parser.error("--pages, --revoke-every, --slow-every and --slow-reply must be >= 0")
    return args


def configure(db_path: Path) -> None:
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="django-members-test-server-not-secret",
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            f"{__name__}.observe",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",  # sets Content-Length: keeps connections alive
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(db_path),
                "CONN_MAX_AGE": None,  # one connection per server thread, closed with its socket
                "OPTIONS": {
                    "timeout": 30,
                    "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
                },
            }
        },
        SESSION_ENGINE="django.contrib.sessions.backends.db",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],  # cheap logins
        LOGIN_URL="/accounts/login/",
        LOGIN_REDIRECT_URL="/accounts/profile/",
        CSRF_FAILURE_VIEW=f"{__name__}.csrf_failure",
        USE_TZ=True,
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": False,
                "OPTIONS": {
                    "loaders": [
                        (
                            "django.template.loaders.cached.Loader",
                            [("django.template.loaders.locmem.Loader", {"registration/login.html": LOGIN_TEMPLATE})],
                        )
                    ],
                },
            }
        ],
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
            "loggers": {
                # Per-request lines (and 4xx warnings) are noise; 5xx and tracebacks go to stderr.
                "django.server": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
                "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
            },
        },
    )


class Site:
    """The site's counters and settings, shared by every server thread."""

    def __init__(self, pages: int, revoke_every: int, slow_every: int, slow_reply: float) -> None:
        self.lock = threading.Lock()  # member-page check/count/revoke, /revoke/, and the counters
        self.pages = pages
        self.revoke_every = revoke_every
        self.slow_every = slow_every
        self.slow_reply = slow_reply
        self.interrupt_logins = 0
        self._zero()

    def _zero(self) -> None:
        self.counts: Counter[str] = Counter()
        self.member_hits: Counter[str] = Counter()  # path -> pages served
        self.revoked_at: list[int] = []  # member pages served (since reset) at each revocation

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def snapshot(self) -> dict[str, object]:
        from django.contrib.sessions.models import Session

        live = Session.objects.count()
        with self.lock:
            return {
                "logins": self.counts["logins"],  # user_logged_in signals
                "failed_logins": self.counts["failed_logins"],  # user_login_failed signals
                "revocations": self.counts["revocations"],  # automatic and /revoke/
                "revoked_at": list(self.revoked_at),
                "member_pages_served": sum(self.member_hits.values()),
                "member_hits": dict(self.member_hits),
                "member_redirects": self.counts["member_redirects"],  # turned away: not logged in
                "session_cookies_set": self.counts["session_cookies_set"],
                "session_cookie_deletions": self.counts["session_cookie_deletions"],
                "late_cookie_deletions": self.counts["late_cookie_deletions"],
                "csrf_failures": self.counts["csrf_failures"],
                "server_errors": self.counts["server_errors"],
                "live_sessions": live,
                "pages": self.pages,
                "revoke_every": self.revoke_every,
                "slow_every": self.slow_every,
                "slow_reply": self.slow_reply,
            }

    def reset(self, **settings: float | None) -> None:
        """Zero the counters and delete every session; settings given (not None) change."""
        from django.contrib.sessions.models import Session

        with self.lock:
            Session.objects.all().delete()
            self._zero()
            for name, value in settings.items():
                if value is not None:
                    setattr(self, name, value)

    def revoke_locked(self) -> int:
        from django.contrib.sessions.models import Session

        deleted, _ = Session.objects.all().delete()
        self.counts["revocations"] += 1
        self.revoked_at.append(sum(self.member_hits.values()))
        return deleted


SITE: Site | None = None


def observe(get_response):
    """Outermost middleware: holds back slow replies, and counts session cookies and errors.

    ``--slow-every K --slow-reply S``: the reply to a member page whose number is a multiple of
    K is held S seconds after Django has made it (as a slow network path or proxy would). Whether
    the request's session was alive is decided when it arrives, so a slow page is never starved
    by revocations; but a request that arrived with a session revoked just before gets Django's
    deletion of the session cookie S seconds late, after the client may have logged in again.
    Such a deletion, sent after a login completed that had not when the request arrived, is
    counted as ``late_cookie_deletions``.
    """
    import re
    import time

    from django.conf import settings

    member = re.compile(r"^/members/(\d+)/$")

    def middleware(request):
        logins_before = SITE.counts["logins"]
        response = get_response(request)
        if SITE.slow_every and SITE.slow_reply and (match := member.match(request.path)) is not None:
            if int(match.group(1)) % SITE.slow_every == 0:
                time.sleep(SITE.slow_reply)
        morsel = response.cookies.get(settings.SESSION_COOKIE_NAME)
        if morsel is not None:
            deletion = morsel.value == ""
            SITE.count("session_cookie_deletions" if deletion else "session_cookies_set")
            if deletion and SITE.counts["logins"] > logins_before:
                SITE.count("late_cookie_deletions")
        if response.status_code >= 500:
            SITE.count("server_errors")
        return response

    return middleware


def csrf_failure(request, reason=""):
    from django.http import HttpResponseForbidden

    SITE.count("csrf_failures")
    return HttpResponseForbidden(f"CSRF verification failed: {reason}", content_type="text/plain")


def build_site() -> None:
    """Views and URLs; needs Django set up."""
    from django.contrib.auth import views as auth_views
    from django.contrib.auth.decorators import login_required
    from django.contrib.auth.signals import user_logged_in, user_login_failed
    from django.contrib.auth.views import redirect_to_login
    from django.contrib.sessions.models import Session
    from django.http import Http404, HttpResponse, JsonResponse
    from django.urls import path
    from django.utils import timezone
    from django.utils.html import escape
    from django.views.decorators.csrf import csrf_exempt

    def logged_in(**kwargs: object) -> None:
        SITE.count("logins")
        with SITE.lock:
            if SITE.interrupt_logins:
                # login() has made the new session row; deleting it now makes the session
                # middleware's save fail, as when a revocation lands in the middle of a login.
                SITE.interrupt_logins -= 1
                SITE.revoke_locked()

    user_logged_in.connect(logged_in, weak=False)
    user_login_failed.connect(lambda **kwargs: SITE.count("failed_logins"), weak=False)

    def member_page(request, n: int):
        if not 1 <= n <= SITE.pages:
            raise Http404("no such member page")
        key = request.session.session_key
        with SITE.lock:
            # The middleware loaded the session before this lock was taken; it may have been
            # revoked since. Serve, count and maybe revoke only for a session alive right now.
            alive = Session.objects.filter(session_key=key, expire_date__gt=timezone.now()).exists()
            if alive:
                SITE.member_hits[request.path] += 1
                served = sum(SITE.member_hits.values())
                if SITE.revoke_every and served % SITE.revoke_every == 0:
                    SITE.revoke_locked()
        if not alive:
            request.session.flush()  # empty: SessionMiddleware deletes the cookie, as for any dead session
            SITE.count("member_redirects")
            return redirect_to_login(request.get_full_path())
        links = sorted({m for m in (2 * n, 2 * n + 1, n + 1) if m <= SITE.pages})
        body = "".join(f'<li><a class="member" href="/members/{m}/">Member page {m}</a></li>' for m in links)
        return HttpResponse(
            f"<!doctype html><html><head><title>Member page {n}</title></head><body>"
            f'<h1 data-page="{n}">Member page {n}</h1>'
            f"<p>Only for members, {escape(request.user.get_username())}.</p><ul>{body}</ul></body></html>"
        )

    guarded = login_required(member_page)

    def counted_members(request, n: int):
        # login_required turns a logged-out request away before member_page runs: count it here.
        authenticated = request.user.is_authenticated
        response = guarded(request, n)
        if not authenticated:
            SITE.count("member_redirects")
        return response

    @login_required
    def profile(request):
        return HttpResponse(f"<!doctype html><h1>Logged in as {escape(request.user.get_username())}</h1>")

    @csrf_exempt
    def revoke(request):
        with SITE.lock:
            deleted = SITE.revoke_locked()
        return JsonResponse({"revoked": True, "sessions_deleted": deleted})

    def stats(request):
        return JsonResponse(SITE.snapshot())

    @csrf_exempt
    def reset(request):
        def number(name: str, kind=int):
            value = request.GET.get(name)
            return None if value is None else max(0, kind(value))

        SITE.reset(
            revoke_every=number("revoke_every"),
            pages=number("pages"),
            slow_every=number("slow_every"),
            slow_reply=number("slow_reply", float),
            interrupt_logins=number("interrupt_logins"),
        )
        return JsonResponse(SITE.snapshot())

    urlpatterns[:] = [
        path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
        path("accounts/profile/", profile),
        path("members/<int:n>/", counted_members),
        path("revoke/", revoke),
        path("stats/", stats),
        path("reset/", reset),
    ]


def make_server(host: str):
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    class Server(ThreadedWSGIServer):
        request_queue_size = 128  # 64+ workers connecting at once must not be refused

    class QuietHandler(WSGIRequestHandler):
        # wsgiref sends the headers and the body in two writes: with Nagle's algorithm on, the
        # body then waits for the client's delayed ACK, 40 ms a request on a kept-alive connection.
        disable_nagle_algorithm = True

        def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
            pass  # no line per request; errors still reach stderr through django.request

    ipv6 = ":" in host
    server = Server((host, 0), QuietHandler, ipv6=ipv6, allow_reuse_address=False)
    server.set_app(WSGIHandler())
    return server


def main(argv: list[str]) -> None:
    global SITE
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # runs the clean-up below
    args = parse_args(argv)
    folder = None
    if args.db is None:
        folder = Path(tempfile.mkdtemp(prefix="django-members-"))
        db_path = folder / "db.sqlite3"
    else:
        db_path = Path(args.db)
    try:
        configure(db_path)
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
        from django.contrib.auth.models import User

        if not User.objects.filter(username=USERNAME).exists():
            User.objects.create_user(USERNAME, password=PASSWORD)
        SITE = Site(args.pages, args.revoke_every, args.slow_every, args.slow_reply)
        build_site()
        from django.db import connections

        connections.close_all()  # the main thread's connection is not needed any more

        server = make_server(args.host)
        print(f"listening on {server.server_address[1]}", flush=True)
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
