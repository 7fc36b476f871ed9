"""Fixtures every app's tests may use.

- ``make_verified_client(user)`` → a ``django.test.Client`` signed in with password *and* second factor.
- ``make_api_client(user, name=None)`` → a DRF ``APIClient`` sending a real API token.
- autouse: django-q2 runs tasks synchronously; passwords use a fast hasher; rate-limit counts start empty.

Sign in with ``client.force_login(user)`` or these fixtures, not ``client.login(...)``: django-axes' backend needs a
request, which ``Client.login`` does not pass. A session from ``force_login`` alone is *not* verified: the admin
and the API refuse it (that is the point of the MFA requirement).
"""

import uuid

import django_otp
import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def _django_q_runs_tasks_synchronously(monkeypatch):
    """``async_task`` runs the task in-process, before it returns (django-q2 reads ``Conf.SYNC`` at call time).

    Caveats of django-q2 1.11: ``Iter``/``Chain``/``async_chain`` bind ``sync`` as a default argument at import, so
    pass ``sync=True`` to them explicitly; a task that raises is recorded as a failed ``Task``, not re-raised; and a
    task enqueued from inside ``transaction.on_commit`` runs only when the callbacks run
    (``django_capture_on_commit_callbacks(execute=True)``).
    """
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture(autouse=True)
def _rate_limits_count_in_memory_per_test(settings):
    """Rate-limit counters (audit.limits) live in an in-memory cache that starts empty in every test, so counts of
    one test never throttle another (production shares Redis or the database cache between processes)."""
    from django.core.cache import cache

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "tests"}}
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """PBKDF2 costs ~0.3 s per user; tests do not need slow hashes."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_verified_client(db):
    """Factory: ``make_verified_client(user) -> django.test.Client`` signed in as ``user`` with a verified session.

    Gives ``user`` a confirmed TOTP device (or reuses one), logs in with ``force_login`` and marks the session as
    verified by that device (``django_otp.DEVICE_ID_SESSION_KEY``), exactly what the real sign-in leaves behind.
    Staff users reach /admin/; the API accepts the session (with CSRF, as for any browser session).
    """

    def make(user) -> Client:
        device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
        if device is None:
            device = TOTPDevice.objects.create(user=user, name="Test authenticator", confirmed=True)
        client = Client()
        client.force_login(user)
        session = client.session
        session[django_otp.DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
        return client

    return make


@pytest.fixture
def make_api_client(db):
    """Factory: ``make_api_client(user, name=None) -> rest_framework.test.APIClient`` authenticated by a real token.

    The token is created through ``audit.services.create_api_token`` and sent as ``Authorization: Token <key>``.
    The client carries ``client.api_token`` (the ``ApiToken`` row) for tests that revoke or inspect it.
    """
    from audit.services import create_api_token

    def make(user, name: str | None = None) -> APIClient:
        token, raw_key = create_api_token(user=user, name=name or f"test client {uuid.uuid4().hex[:8]}")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {raw_key}")
        client.api_token = token
        return client

    return make
