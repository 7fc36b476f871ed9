"""Settings for the serialization back-office: one module, every difference comes from the environment.

Variables (see README): DJANGO_DEBUG, SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL, REDIS_URL, SERIAL_MASTER_KEYS,
CSRF_TRUSTED_ORIGINS, DJANGO_SECURE (production HTTPS hardening). A local, git-ignored ``var/local.env`` written
by ``make env`` supplies the demo's own generated keys; real deployments set real environment variables.
"""

import os
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def _load_local_env(path: Path) -> None:
    """Fill os.environ from KEY=VALUE lines without overriding what the environment already says."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            os.environ.setdefault(key.strip(), value.strip())


_load_local_env(Path(os.environ.get("LOCAL_ENV_FILE", VAR_DIR / "local.env")))


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment (production) or run `make env` to write var/local.env."
        )
    SECRET_KEY = "debug-only-insecure-key"  # noqa: S105 - only ever used with DJANGO_DEBUG=1
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "audit.apps.BackofficeAdminConfig",  # django.contrib.admin with the OTP-enforcing admin site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "simple_history",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "django_q",
    "axes",
    "csp",
    "audit",
    "masterdata",
    "serialization",
    "partners",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------------------
# SQLite is the embedded default (demo, tests); PostgreSQL through DATABASE_URL in production and in CI.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), conn_max_age=60, conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN, so two writers queue instead of failing on lock upgrade;
    # WAL lets the web server read while the django-q2 worker writes.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASE_IS_POSTGRES = DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql")

# --- Authentication, MFA, lockout -----------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first, so a locked-out account is refused before its password is tried
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "/admin/"
LOGOUT_REDIRECT_URL = "accounts:login"
OTP_TOTP_ISSUER = os.environ.get("OTP_TOTP_ISSUER", "Serialization back-office")
AXES_FAILURE_LIMIT = int(os.environ.get("AXES_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = float(os.environ.get("AXES_COOLOFF_HOURS", "1"))
# Each parameter locks on its own: repeated failures lock the account (whatever address they come from) and the
# address (whatever account it tries).
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_SENSITIVE_PARAMETERS = ["password", "code", "otp_token", "token"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
ANONYMOUS_USER_NAME = None  # guardian: no anonymous object permissions
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = int(os.environ.get("SESSION_COOKIE_AGE", str(8 * 3600)))

# --- Security headers (production hardening switched on by DJANGO_SECURE=1 behind HTTPS) -------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content security policy (django-csp): only this site's own scripts, styles, images and fonts. Inline <script> and
# <style> elements run only with the per-response nonce ({{ CSP_NONCE }}); inline event handlers never run. Style
# attributes are allowed (django-simple-history's admin pages use them): an attribute styles its own element and
# has no selectors, so it cannot read the page. The Redoc page widens style-src for itself (config/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        # The hash allows an empty inline <style> (django-guardian's object-permissions page has one).
        "style-src": [SELF, NONCE, "'sha256-AbpHGcgLb+kRsJGnwFEktk7uzpZOCcBY74+YBdrKVGs='"],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
if env_bool("DJANGO_SECURE"):
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- API ------------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "audit.api.authentication.ApiTokenAuthentication",
        "audit.api.authentication.VerifiedSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["audit.api.permissions.ModelPermissions"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "audit.api.exceptions.exception_handler",
    # Scopes of audit.limits.RATE_LIMITS: "<scope>" counts per user account, "<scope>_client" per API token.
    "DEFAULT_THROTTLE_RATES": {
        "allocation": os.environ.get("RATE_LIMIT_ALLOCATION", "120/minute"),
        "allocation_client": os.environ.get("RATE_LIMIT_ALLOCATION_CLIENT", "60/minute"),
        "export": os.environ.get("RATE_LIMIT_EXPORT", "300/hour"),
        "export_client": os.environ.get("RATE_LIMIT_EXPORT_CLIENT", "120/hour"),
    },
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Serialization back-office API",
    "DESCRIPTION": "Master data, serial pools, production reports and regulatory exchange.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs page must work offline: UI assets come from drf-spectacular-sidecar, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Serial and EPCIS export jobs share one status list: one enum, under the name it always had.
    "ENUM_NAME_OVERRIDES": {"ExportJobStatusEnum": "serialization.models.ExportJob.Status"},
}

# --- Background tasks (django-q2): ORM broker by default, Redis when REDIS_URL is set ----------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
Q_CLUSTER = {
    "name": "backoffice",
    "workers": int(os.environ.get("Q_WORKERS", "2")),
    "timeout": 3600,
    "retry": 3700,
    "max_attempts": 1,
    "catch_up": False,
    "sync": env_bool("Q_SYNC"),
    "label": "Background tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Cache: rate-limit counters must be shared by every web process and host --------------------------------------
# Redis when REDIS_URL is set; otherwise the database cache (its table is made by `migrate`, audit 0005).
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "django_cache"}}

# --- Serial engine ----------------------------------------------------------------------------------------------
# Fernet keys (comma-separated, newest first) that wrap each pool's own AES key. Rotation re-wraps pool keys;
# it never changes a serial, because serials depend only on the pool key.
SERIAL_MASTER_KEYS = env_list("SERIAL_MASTER_KEYS")
SERIAL_MAX_PER_REQUEST = int(os.environ.get("SERIAL_MAX_PER_REQUEST", "500000"))
# Larger allocations are not streamed in the request; the client creates a background export job instead.
SERIAL_STREAM_MAX = int(os.environ.get("SERIAL_STREAM_MAX", "200000"))
# Anomaly rule (audit.pilferage): an account that takes more serials than this within an hour (downloads, exports,
# serial lists) is blocked from taking more until a steward lifts the block, and a security incident is raised.
SERIAL_EXPORT_LIMIT_PER_HOUR = int(os.environ.get("SERIAL_EXPORT_LIMIT_PER_HOUR", "1000000"))
# Whom a blocked account is told to contact.
SECURITY_CONTACT = os.environ.get("SECURITY_CONTACT", "your security officer or a master-data steward")

# --- Outbox: submissions to regulators and partners (serialization.services.outbox) ------------------------------
# A failed attempt is tried again after BASE × 2^(attempts − 1) seconds (at most MAX); after MAX_ATTEMPTS the
# submission is dead and an incident is raised. Open submissions older than LATE_AFTER_MINUTES show as late.
OUTBOX_MAX_ATTEMPTS = int(os.environ.get("OUTBOX_MAX_ATTEMPTS", "6"))
OUTBOX_RETRY_BASE_SECONDS = int(os.environ.get("OUTBOX_RETRY_BASE_SECONDS", "60"))
OUTBOX_RETRY_MAX_SECONDS = int(os.environ.get("OUTBOX_RETRY_MAX_SECONDS", str(6 * 3600)))
OUTBOX_LATE_AFTER_MINUTES = int(os.environ.get("OUTBOX_LATE_AFTER_MINUTES", "60"))
# File drop endpoints write into folders below this one (never elsewhere).
OUTBOX_DROP_ROOT = Path(os.environ.get("OUTBOX_DROP_ROOT", VAR_DIR / "outbox"))

# --- EPCIS ----------------------------------------------------------------------------------------------------------
# The official EPCIS JSON schema and XSDs (and GS1 tables) every document written or read is checked against.
STANDARDS_DIR = Path(os.environ.get("STANDARDS_DIR", BASE_DIR.parent / "shared" / "standards"))
# Largest EPCIS document (in EPCs) answered in the request; larger scopes go through a background export job.
EPCIS_SYNC_MAX_EPCS = int(os.environ.get("EPCIS_SYNC_MAX_EPCS", "20000"))
# The capture interface (POST /api/v1/epcis/capture/): largest document in bytes and in events (GS1-EPCIS-Capture-
# File-Size-Limit / GS1-EPCIS-Capture-Limit); larger ones are refused with 413 and nothing is captured.
EPCIS_CAPTURE_MAX_BYTES = int(os.environ.get("EPCIS_CAPTURE_MAX_BYTES", str(64 * 1024 * 1024)))
EPCIS_CAPTURE_MAX_EVENTS = int(os.environ.get("EPCIS_CAPTURE_MAX_EVENTS", "10000"))

# --- Files, static, i18n -----------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # the demo serves admin assets without a collectstatic step
# manage.py backup writes its archives here by default; PG_BIN_DIR points at pg_dump/pg_restore of the server's version
# when they are not in /usr/lib/postgresql/<version>/bin or on PATH.
BACKUP_DIR = Path(os.environ.get("BACKUP_DIR", VAR_DIR / "backups"))
PG_BIN_DIR = os.environ.get("PG_BIN_DIR", "")
LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
