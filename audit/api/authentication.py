"""How API clients prove who they are.

- ``ApiTokenAuthentication``: system accounts (ERP, line systems) send ``Authorization: Token <key>`` (or
  ``Bearer <key>``). Only the key's SHA-256 is stored.
- ``VerifiedSessionAuthentication``: a browser session counts only once it has passed the second factor, so a
  password alone never reaches the API.
"""

from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header


class ApiTokenAuthentication(BaseAuthentication):
    keywords = ("token", "bearer")

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].decode("latin-1").lower() not in self.keywords:
            return None
        scheme = parts[0].decode("latin-1")
        if len(parts) == 1:
            raise exceptions.AuthenticationFailed(f"No API key after “{scheme}”. Send “Authorization: Token <key>”.")
        if len(parts) > 2:
            raise exceptions.AuthenticationFailed(
                "The API key must not contain spaces. Send “Authorization: Token <key>”."
            )
        try:
            raw_key = parts[1].decode("ascii")
        except UnicodeError:
            raise exceptions.AuthenticationFailed("The API key contains characters a key never has.") from None
        return self.authenticate_credentials(raw_key, request)

    def authenticate_credentials(self, raw_key: str, request=None):
        # Imported here: DRF loads authentication classes while building APIView, possibly before models are ready.
        from audit import selectors, services

        token = selectors.get_api_token_by_key(raw_key=raw_key)
        if token is None:
            raise exceptions.AuthenticationFailed("Unknown API key. Check it was copied whole, or ask for a new one.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed(
                f"This API key ({token.key_prefix}…) was revoked on {token.revoked_at:%Y-%m-%d %H:%M} UTC. "
                "Ask an administrator for a new one."
            )
        now = timezone.now()
        if token.is_expired(now):
            raise exceptions.AuthenticationFailed(
                f"This API key ({token.key_prefix}…) expired on {token.expires_at:%Y-%m-%d %H:%M} UTC. "
                "Ask an administrator for a new one."
            )
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(f"The account of this API key ({token.key_prefix}…) is deactivated.")
        services.mark_api_token_used(token=token, request=request)
        return token.user, token

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to requests without credentials.
        return 'Token realm="api"'


class VerifiedSessionAuthentication(SessionAuthentication):
    """Session authentication that accepts only sessions verified by a second factor (django-otp)."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, auth = result
        is_verified = getattr(user, "is_verified", None)
        if not callable(is_verified) or not is_verified():
            raise exceptions.AuthenticationFailed(
                "This session has not passed the second factor. Sign in at /accounts/login/ with your authenticator "
                "code, or use an API token."
            )
        return user, auth


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "audit.api.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "API key of a system account: `Authorization: Bearer <key>` (`Token <key>` also works).",
        }


class VerifiedSessionScheme(OpenApiAuthenticationExtension):
    target_class = "audit.api.authentication.VerifiedSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "Browser session after password and second factor (/accounts/login/).",
        }
