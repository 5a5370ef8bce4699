"""Logging in once, per-request token headers, and the crawl's shared cookie jar."""

from .cookies import CookieAudit, CrawlCookieJar
from .login import FormLogin, Login, LoginCoordinator, SpiderLogin
from .tokens import BearerToken, HeaderAuth, HostScope, TokenAuth

__all__ = [
    "BearerToken",
    "CookieAudit",
    "CrawlCookieJar",
    "FormLogin",
    "HeaderAuth",
    "HostScope",
    "Login",
    "LoginCoordinator",
    "SpiderLogin",
    "TokenAuth",
]
