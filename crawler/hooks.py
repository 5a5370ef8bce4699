"""Request and response hooks: plain callables that see each request before it is sent and each
response before its callback, to add a header, pick a proxy, drop a request or count something.

A request hook is called as ``hook(request, spider)`` and returns the request to send (the same,
or ``request.replace(...)``), or None to drop it. A response hook is called as ``hook(response,
spider)`` and returns the response for the callback (the same, changed, or another), or None to
drop it: the callback does not run. A spider names its own in ``request_hooks`` and
``response_hooks`` (callables, or names of its methods); its config entry adds more by import
path. They run in this order, each list in its own order, the config's nearer the site::

    spider's request_hooks -> config's request_hooks -> fetch
        -> config's response_hooks -> spider's response_hooks -> callback

Request hooks run before every attempt (a retry runs them again), on the request as it was
leased: what they return is sent, never stored in the checkpoint, so nothing they do builds up
over retries, a resumed crawl, or a redirect queued as a request of its own (which they then see
as any other request). They may change how a request is sent, not where: a different URL fails
the request, as robots.txt, the per-host limits and dedupe were decided on the leased one.

A hook that raises, or returns something other than a request (a response) or None, fails its
request as ``HookError``; the crawl goes on. Nothing here knows the config: the runner passes
resolved callables (see ``crawler.loader.configured_hooks``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .request import Request
from .response import Response
from .spider import Spider

logger = logging.getLogger(__name__)

RequestHook = Callable[[Request, Spider], Request | None]
ResponseHook = Callable[[Response, Spider], Response | None]


class HookFailed(Exception):
    """A hook raised, or returned what it may not; the message names the hook. Raised from the
    hook's own exception, if it raised one, so its traceback goes with it."""


@dataclass(frozen=True, slots=True)
class Hooks:
    """A spider's hooks, each tuple in the order it runs."""

    request: tuple[RequestHook, ...] = ()
    response: tuple[ResponseHook, ...] = ()

    def before_sending(self, request: Request, spider: Spider) -> Request | None:
        """``request`` as the request hooks leave it (itself if there are none), or None if one
        dropped it. Raises HookFailed."""
        for hook in self.request:
            changed = _called(hook, "request hook", request, spider)
            if changed is None:
                logger.info("request hook %s dropped %s", hook_name(hook), request.url)
                return None
            if not isinstance(changed, Request):
                raise HookFailed(_wrong_type("request hook", hook, changed, "a Request"))
            if changed.url != request.url:
                raise HookFailed(
                    f"request hook {hook_name(hook)} changed the URL to {changed.url[:200]}: a hook may change "
                    "how a request is sent, not where (yield a new Request from a callback instead)"
                )
            request = changed
        return request

    def before_callback(self, response: Response, spider: Spider) -> Response | None:
        """``response`` as the response hooks leave it (itself if there are none), or None if
        one dropped it. Raises HookFailed."""
        for hook in self.response:
            changed = _called(hook, "response hook", response, spider)
            if changed is None:
                logger.info("response hook %s dropped the response of %s", hook_name(hook), response.url)
                return None
            if not isinstance(changed, Response):
                raise HookFailed(_wrong_type("response hook", hook, changed, "a Response"))
            response = changed
        return response


def hooks_for(
    spider: Spider, config_request: Sequence[RequestHook] = (), config_response: Sequence[ResponseHook] = ()
) -> Hooks:
    """The hooks around ``spider``'s requests and responses, in the order they run: its own
    request hooks, then the config's; the config's response hooks, then its own. Raises
    LookupError for a method name the spider does not have."""
    own_request = _own(spider, "request_hooks")
    own_response = _own(spider, "response_hooks")
    return Hooks((*own_request, *config_request), (*config_response, *own_response))


def hook_name(hook: Callable[..., Any]) -> str:
    """``module:qualname``, the way the config names hooks (``myproject.hooks:add_header``)."""
    qualname = getattr(hook, "__qualname__", None) or type(hook).__qualname__
    module = getattr(hook, "__module__", None)
    return f"{module}:{qualname}" if module else qualname


def _own(spider: Spider, attribute: str) -> list[Callable[..., Any]]:
    """The hooks the spider's ``attribute`` lists: callables as given, names as its methods."""
    hooks = []
    for position, hook in enumerate(getattr(spider, attribute)):
        if isinstance(hook, str):
            method = getattr(spider, hook, None)
            if not callable(method):
                raise LookupError(f"{attribute}[{position}]: spider {spider.name!r} has no method {hook!r}")
            hook = method
        elif not callable(hook):
            raise LookupError(f"{attribute}[{position}]: {hook!r:.60} is neither callable nor a method's name")
        hooks.append(hook)
    return hooks


def _called(hook: Callable[..., Any], role: str, value: Request | Response, spider: Spider) -> Any:
    try:
        return hook(value, spider)
    except BaseException as error:  # noqa: BLE001 - sys.exit() in a hook must not kill the worker
        # (KeyboardInterrupt is only ever raised in the main thread, never in a worker.)
        raise HookFailed(f"{role} {hook_name(hook)} raised {type(error).__name__}: {error}") from error


def _wrong_type(role: str, hook: Callable[..., Any], returned: object, expected: str) -> str:
    return f"{role} {hook_name(hook)} returned a {type(returned).__name__}, not {expected} or None"
