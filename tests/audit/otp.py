"""Helpers for tests that go through the real sign-in."""

import time

from django.urls import reverse
from django_otp.oath import TOTP

PASSWORD = "correct horse battery staple"


def totp_code(device, *, at: float | None = None) -> str:
    """The code an authenticator app shows for ``device`` at ``at`` (default: now), computed from the device key."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() if at is None else at
    return f"{totp.token():0{device.digits}d}"


def wrong_code(device) -> str:
    """A 6-digit code that is not accepted now (none of the codes in the tolerance window)."""
    accepted = {totp_code(device, at=time.time() + offset * device.step) for offset in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in accepted)


def submit_password(client, user, *, password=PASSWORD, next_url=None):
    data = {"username": user.get_username(), "password": password}
    if next_url is not None:
        data["next"] = next_url
    return client.post(reverse("accounts:login"), data)


def submit_code(client, code):
    return client.post(reverse("accounts:verify"), {"code": code})
