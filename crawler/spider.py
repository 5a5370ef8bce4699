"""The spider API: what users subclass."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, get_args, get_origin, get_type_hints

from pydantic import BaseModel, PydanticSchemaGenerationError, TypeAdapter, ValidationError

from .auth.tokens import TokenAuth
from .request import Request
from .response import Response

#: What a callback may yield.
CallbackOutput = Request | BaseModel | dict[str, Any]


def _argument(cls: type, key: str, value: Any) -> Any:
    """``value`` for the class attribute ``key``, checked against what the class declares: its
    annotation if it has one, else the type of its default (``urls = []`` takes a list). A value
    of the wrong type would otherwise only fail inside the crawl, as a TypeError."""
    annotation = _annotations(cls).get(key)
    if annotation is not None:
        if get_origin(annotation) is ClassVar:
            annotation = get_args(annotation)[0] if get_args(annotation) else Any
        try:
            return TypeAdapter(annotation).validate_python(value)
        except ValidationError as error:
            problem = error.errors(include_url=False)[0]["msg"]
            raise TypeError(f"argument {key!r} of spider {cls.__name__}: {problem[0].lower()}{problem[1:]}") from None
        except PydanticSchemaGenerationError:
            return value  # an annotation pydantic cannot check: taken as given
    default = getattr(cls, key)
    expected = _LIKE.get(type(default), type(default))
    if default is not None and not callable(default) and not isinstance(value, expected):
        raise TypeError(
            f"argument {key!r} of spider {cls.__name__} must be {type(default).__name__}, "
            f"not {type(value).__name__} ({value!r:.40})"
        )
    return value


# Defaults whose type stands for a family: a float default takes an int, a tuple a list.
_LIKE: dict[type, type | tuple[type, ...]] = {float: (int, float), tuple: (tuple, list), list: (list, tuple)}


def _annotations(cls: type) -> dict[str, Any]:
    try:
        return get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a forward reference the user's module cannot resolve
        return {}


class Spider:
    """Subclass this, give it a ``name`` and ``start_urls`` (or ``start_requests``), and write callbacks.

    A callback receives a :class:`Response` and yields :class:`Request` objects to follow and items
    (pydantic models or dicts). When ``item_model`` is set, dict items are validated against it, and
    an item that fails goes to the checkpoint's rejected-items store instead of the output.

    Arguments from ``config.toml`` (``args = {...}``) set class attributes of the same name; an
    argument the spider does not declare is an error, so a typo cannot pass silently, and so is
    one of another type than the attribute's annotation (or, without one, its default) says.
    """

    name: ClassVar[str]
    start_urls: ClassVar[tuple[str, ...] | list[str]] = ()
    item_model: ClassVar[type[BaseModel] | None] = None
    #: Domains followed links may go to, each with its subdomains (empty: any); the config's
    #: ``allowed_domains`` replaces it. Requests to other hosts are counted as ``filtered:offsite``.
    allowed_domains: ClassVar[tuple[str, ...] | list[str]] = ()
    #: Error statuses (>= 400) that still reach the callback instead of failing the request.
    handle_statuses: ClassVar[frozenset[int]] = frozenset()

    def __init__(self, **args: Any) -> None:
        for key, value in args.items():
            if key.startswith("_") or not hasattr(type(self), key):
                raise TypeError(f"unknown argument {key!r} for spider {self.name!r}")
            setattr(self, key, _argument(type(self), key, value))

    def start_requests(self) -> Iterable[Request]:
        for url in self.start_urls:
            yield Request(url, callback=self.parse)

    def parse(self, response: Response) -> Iterator[CallbackOutput]:
        raise NotImplementedError(f"{type(self).__name__}.parse is not defined")

    # Logging in. A spider that needs a login either gets ``login`` in its config entry (a form
    # login), or defines ``login(self, session)``, which logs in with a ``requests.Session``
    # whose cookie jar every worker shares, and raises ``LoginFailed`` if it cannot.

    def is_logged_out(self, response: Response) -> bool:
        """Whether ``response`` shows the session was logged out (then: log in again, replay).

        By default a 401 or 403; a form login from config also treats landing on its login page
        as logged out. Override for sites that say it another way.
        """
        return response.status in (401, 403)

    def token_auth(self) -> TokenAuth | None:
        """Headers computed for each request as it is sent (e.g. ``HeaderAuth``), or None."""
        return None
