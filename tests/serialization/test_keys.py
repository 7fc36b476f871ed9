"""Master-key rotation: pool keys are re-wrapped, serials never change, keys never show."""

import io
import logging

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.urls import reverse

from serialization.keys import _unwrap, unwrap_pool_key
from serialization.models import SerialPool
from serialization.services import create_generated_pool, pool_permutation
from tests.factories import make_product, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def master_keys(settings):
    """Sets SERIAL_MASTER_KEYS and forgets unwrapped pool keys, as a restarted process would."""

    def use(*keys: str) -> None:
        settings.SERIAL_MASTER_KEYS = list(keys)
        _unwrap.cache_clear()

    yield use
    _unwrap.cache_clear()


def new_key() -> str:
    return Fernet.generate_key().decode()


def randomised_pool(fill=200) -> SerialPool:
    product = make_product(markets=("EU",))
    return create_generated_pool(owner=product.owner, actor=make_user(), product=product, initial_fill=fill)


def test_rotation_rewraps_every_key_and_changes_no_serial(master_keys, caplog):
    old, new = new_key(), new_key()
    master_keys(old)
    pools = [randomised_pool(), randomised_pool()]
    sequential = create_generated_pool(
        owner=(product := make_product(markets=("US",))).owner, actor=make_user(), product=product, randomised=False
    )
    before = {pool.pk: pool_permutation(pool).serials(0, 200) for pool in pools}
    tokens = {pool.pk: pool.encrypted_key for pool in pools}
    out = io.StringIO()

    master_keys(new, old)
    with caplog.at_level(logging.DEBUG):
        call_command("rotate_master_key", stdout=out)

    assert out.getvalue() == (
        "Re-wrapped 2 pool keys under the newest master key. Older keys can now be removed from SERIAL_MASTER_KEYS.\n"
    )
    master_keys(new)  # the old master key is retired
    for pool in pools:
        pool.refresh_from_db()
        assert pool.encrypted_key != tokens[pool.pk]
        assert pool_permutation(pool).serials(0, 200) == before[pool.pk]
        assert Fernet(new).decrypt(pool.encrypted_key.encode()) == Fernet(old).decrypt(tokens[pool.pk].encode())
        with pytest.raises(InvalidToken):
            Fernet(old).decrypt(pool.encrypted_key.encode())
    sequential.refresh_from_db()
    assert sequential.encrypted_key == ""
    for secret in (old, new, *tokens.values(), *(p.encrypted_key for p in pools)):
        assert secret not in out.getvalue()
        assert secret not in caplog.text


def test_old_master_key_alone_no_longer_unwraps_after_rotation(master_keys):
    old, new = new_key(), new_key()
    master_keys(old)
    pool = randomised_pool()

    master_keys(new, old)
    call_command("rotate_master_key", stdout=io.StringIO())
    pool.refresh_from_db()
    master_keys(old)

    with pytest.raises(ImproperlyConfigured, match="the master key it was wrapped with is missing"):
        unwrap_pool_key(pool.encrypted_key)


def test_rotation_without_the_old_key_changes_nothing(master_keys):
    old = new_key()
    master_keys(old)
    pool = randomised_pool()
    token = pool.encrypted_key

    master_keys(new_key())  # the old key was dropped too early
    with pytest.raises(CommandError, match="Nothing was changed"):
        call_command("rotate_master_key", stdout=io.StringIO())

    pool.refresh_from_db()
    assert pool.encrypted_key == token


def test_keys_never_appear_in_the_api_or_the_admin(master_keys, make_api_client, make_verified_client):
    old, new = new_key(), new_key()
    master_keys(new, old)
    pool = randomised_pool()
    steward = make_user(is_staff=True, roles=("Steward",))
    api = make_api_client(steward)
    admin = make_verified_client(steward)

    pages = [
        api.get("/api/v1/pools/").content.decode(),
        api.get(f"/api/v1/pools/{pool.pk}/").content.decode(),
        admin.get(reverse("admin:serialization_serialpool_changelist")).text,
        admin.get(reverse("admin:serialization_serialpool_change", args=[pool.pk])).text,
        admin.get(reverse("admin:serialization_serialpool_history", args=[pool.pk])).text,
    ]

    for page in pages:
        for secret in (pool.encrypted_key, old, new, unwrap_pool_key(pool.encrypted_key).hex()):
            assert secret not in page
