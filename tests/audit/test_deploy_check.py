"""``manage.py check --deploy`` under production settings, run as production runs it: a fresh process whose only
configuration is the environment (DJANGO_SECURE=1 behind HTTPS, a real SECRET_KEY, no DJANGO_DEBUG, no var/local.env).
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def production_env(**overrides) -> dict[str, str]:
    own_configuration = ("DJANGO_", "SECURE_", "RATE_LIMIT_", "SERIAL_", "SECRET_KEY", "REDIS_URL")
    # Nothing of the developer's own configuration leaks in; the database may stay (check does not open it).
    env = {key: value for key, value in os.environ.items() if not key.startswith(own_configuration)}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        LOCAL_ENV_FILE=str(ROOT / "var" / "no-such-local.env"),
        DJANGO_SECURE="1",
        SECRET_KEY=secrets.token_urlsafe(50),
        SERIAL_MASTER_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="serials.example.com",
        CSRF_TRUSTED_ORIGINS="https://serials.example.com",
    )
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_under_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


def test_production_settings_switch_on_https_hardening_and_the_headers():
    script = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({name: getattr(s, name) for name in ["
        "'DEBUG', 'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS',"
        "'SECURE_HSTS_PRELOAD', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY',"
        "'SECURE_CONTENT_TYPE_NOSNIFF', 'SECURE_REFERRER_POLICY', 'SECURE_CROSS_ORIGIN_OPENER_POLICY',"
        "'X_FRAME_OPTIONS']}))"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=production_env(), capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "DEBUG": False,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "SECURE_CROSS_ORIGIN_OPENER_POLICY": "same-origin",
        "X_FRAME_OPTIONS": "DENY",
    }


@pytest.mark.parametrize(
    ("setting", "warning"),
    [
        ({"DJANGO_SECURE": "0"}, "security.W004"),  # no HSTS without the HTTPS switch: the check notices
        ({"SECRET_KEY": "short"}, "security.W009"),
    ],
)
def test_check_deploy_reports_what_a_bad_production_environment_lacks(setting, warning):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(**setting))

    assert result.returncode != 0
    assert warning in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("redis_url", "backend"),
    [
        ("redis://cache.internal:6379/1", "django.core.cache.backends.redis.RedisCache"),
        (None, "django.core.cache.backends.db.DatabaseCache"),
    ],
)
def test_rate_limit_counters_live_in_a_cache_every_process_shares(redis_url, backend):
    env = production_env(**({"REDIS_URL": redis_url} if redis_url else {}))
    script = "import django, json; django.setup(); from django.conf import settings; print(json.dumps(settings.CACHES))"

    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    default = json.loads(result.stdout)["default"]
    assert default["BACKEND"] == backend
    assert default["LOCATION"] == (redis_url or "django_cache")
