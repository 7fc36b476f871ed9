"""Rate limits on allocation and export, per account and per API client (DRF throttles).

A view names its scope (``throttle_scope = "allocation"`` or ``"export"``) and lists ``RATE_LIMITS`` as its
throttle classes. Two counters apply to every request of that scope:

- per account (``AccountRateThrottle``, rate ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope]``): the user, through
  whichever door or key;
- per API client (``ApiClientRateThrottle``, rate ``…[scope + "_client"]``): one API token, so one of several
  systems sharing an account cannot starve the others.

Requests are counted in the default cache, which production shares between processes and hosts (Redis, or the
database cache; see config/settings.py). Over the limit the answer is 429 with a ``Retry-After`` header and a message
that names the limit. The portal, which is not DRF, applies the same counters through ``check_rate_limit``.
"""

from dataclasses import dataclass

from django.http import HttpRequest
from rest_framework.exceptions import Throttled
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from audit.models import ApiToken
from audit.services import api_token_of

SCOPE_LABELS = {"allocation": "serial allocation", "export": "serial download and export"}
_PERIODS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


class RateLimited(Throttled):
    """429 whose message says which limit was reached; DRF adds the wait and the Retry-After header."""


class _ScopedThrottle(SimpleRateThrottle):
    """A throttle whose scope (hence rate) comes from the view, counted per ``identity`` of the request."""

    scope_suffix = ""

    def __init__(self) -> None:
        # The rate depends on the view's scope, known only in allow_request.
        self.rate = None

    def identity(self, request) -> tuple[str, str] | None:
        """(cache key part, words for the message), or None when this throttle does not apply to ``request``."""
        raise NotImplementedError

    def get_rate(self) -> str | None:
        # Read at request time (not at import like DRF's default), so a changed setting applies at once.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view) -> str | None:
        found = self.identity(request)
        return None if found is None else self.cache_format % {"scope": self.scope, "ident": found[0]}

    def allow_request(self, request, view) -> bool:
        base_scope = getattr(view, "throttle_scope", None)
        if not base_scope:
            return True
        self.scope = base_scope + self.scope_suffix
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if super().allow_request(request, view):
            return True
        # Raised here rather than returning False, so the 429 can say whose limit it is and how large.
        _, who = self.identity(request)
        what = SCOPE_LABELS.get(base_scope, base_scope)
        period = _PERIODS.get(self.duration, f"{self.duration} seconds")
        wait = self.wait()
        raise RateLimited(
            # DRF has no estimate when the history outgrew a lowered rate: then a whole period is a safe wait.
            wait=self.duration if wait is None else wait,
            detail=f"Too many {what} requests from {who}: the limit is {self.num_requests} per {period}.",
        )


class AccountRateThrottle(_ScopedThrottle):
    """Requests of one user account in the view's scope, whatever the door or API key."""

    def identity(self, request) -> tuple[str, str] | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None  # unauthenticated requests are refused before they cost anything
        return f"user-{user.pk}", f"account “{user.get_username()}”"


class ApiClientRateThrottle(_ScopedThrottle):
    """Requests made with one API token in the view's scope (rate ``<scope>_client``); sessions are not counted."""

    scope_suffix = "_client"

    def identity(self, request) -> tuple[str, str] | None:
        token: ApiToken | None = api_token_of(request)
        if token is None:
            return None
        return f"token-{token.pk}", f"API client “{token.name}” ({token.key_prefix}…)"


RATE_LIMITS = [AccountRateThrottle, ApiClientRateThrottle]


@dataclass(frozen=True)
class _Scope:
    throttle_scope: str


def check_rate_limit(*, request: HttpRequest, scope: str) -> None:
    """Count ``request`` against ``scope``'s limits outside DRF (portal pages); raises RateLimited (429) when over."""
    for throttle_class in RATE_LIMITS:
        throttle_class().allow_request(request, _Scope(scope))
