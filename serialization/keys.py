"""Per-pool AES keys, wrapped by the master keys from the environment (SERIAL_MASTER_KEYS, newest first).

A pool key is 32 random bytes generated once; only its Fernet token is stored. Serials depend on the pool key
alone, so rotating the master key (re-wrapping every token) never changes a serial. Keys are never logged.
"""

import functools
import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _master() -> MultiFernet:
    keys = settings.SERIAL_MASTER_KEYS
    if not keys:
        raise ImproperlyConfigured(
            "SERIAL_MASTER_KEYS is not set: run `make env` for a local one, or set it in the environment to one or "
            "more comma-separated Fernet keys (cryptography.fernet.Fernet.generate_key())."
        )
    return MultiFernet([Fernet(key) for key in keys])


def new_wrapped_pool_key() -> str:
    return _master().encrypt(os.urandom(32)).decode()


def unwrap_pool_key(token: str) -> bytes:
    return _unwrap(token, tuple(settings.SERIAL_MASTER_KEYS))


@functools.lru_cache(maxsize=256)
def _unwrap(token: str, master_keys: tuple[str, ...]) -> bytes:
    # master_keys is part of the cache key so a rotation in settings is never answered from a stale entry.
    try:
        return _master().decrypt(token.encode())
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "A pool key cannot be unwrapped with SERIAL_MASTER_KEYS: the master key it was wrapped with is missing. "
            "Keep the old key in the list (after the new one) until `manage.py rotate_master_key` has run."
        ) from exc


def rewrap_pool_key(token: str) -> str:
    """The same pool key wrapped under the newest master key."""
    return _master().rotate(token.encode()).decode()
