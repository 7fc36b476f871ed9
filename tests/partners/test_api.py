"""The partners API as an MAH steward (API token) and as CMO users: partnerships, assignments, returns, revocation
and the usage overview — with the exact counts, the error shapes, and 404 for anything outside the caller's scope."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import get_perms

from masterdata.permissions import company_group_name
from partners import services
from partners.models import Partnership, SerialAssignment
from serialization.models import SerialPool
from tests.factories import make_product
from tests.partners.test_services import Scene, make_cmo, make_mah, make_mah_pool, make_steward, pool_state

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


@pytest.fixture
def scene():
    return Scene()


@pytest.fixture
def steward_api(scene, make_api_client):
    return make_api_client(scene.steward)


@pytest.fixture
def api_a(scene, make_api_client):
    return make_api_client(scene.user_a)


@pytest.fixture
def api_b(scene, make_api_client):
    return make_api_client(scene.user_b)


def assign(client, partnership, product, quantity, request_id):
    return client.post(
        f"{BASE}/partnerships/{partnership.pk}/assignments/",
        {"product": product.pk, "quantity": quantity, "request_id": request_id},
    )


# --- as the MAH's steward --------------------------------------------------------------------------------------------


def test_steward_creates_a_partnership_and_the_cmo_group_gets_view(scene, steward_api):
    response = steward_api.post(
        f"{BASE}/partnerships/",
        {"mah": scene.mah.pk, "cmo": scene.cmo_b.pk, "products": [scene.product.pk], "markets": []},
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    partnership = Partnership.objects.get(pk=body["id"])
    assert {k: body[k] for k in ("mah", "mah_name", "cmo", "cmo_name", "status", "products", "created_by")} == {
        "mah": scene.mah.pk,
        "mah_name": scene.mah.name,
        "cmo": scene.cmo_b.pk,
        "cmo_name": scene.cmo_b.name,
        "status": "active",
        "products": [scene.product.pk],
        "created_by": scene.steward.username,
    }
    assert get_perms(Group.objects.get(name=company_group_name(scene.cmo_b)), partnership) == ["view_partnership"]


def test_create_partnership_errors_name_the_field(scene, steward_api):
    other_mah = make_mah()
    foreign = make_product(owner=other_mah)

    not_mine = steward_api.post(f"{BASE}/partnerships/", {"mah": other_mah.pk, "cmo": scene.cmo_b.pk})
    not_a_cmo = steward_api.post(f"{BASE}/partnerships/", {"mah": scene.mah.pk, "cmo": other_mah.pk})
    foreign_product = steward_api.post(
        f"{BASE}/partnerships/", {"mah": scene.mah.pk, "cmo": scene.cmo_b.pk, "products": [foreign.pk]}
    )
    twice = steward_api.post(f"{BASE}/partnerships/", {"mah": scene.mah.pk, "cmo": scene.cmo_a.pk})
    revoked = steward_api.post(
        f"{BASE}/partnerships/", {"mah": scene.mah.pk, "cmo": scene.cmo_b.pk, "status": "revoked"}
    )

    assert [r.status_code for r in (not_mine, not_a_cmo, foreign_product, twice, revoked)] == [400] * 5
    assert list(not_mine.json()["error"]["fields"]) == ["mah"]
    assert list(not_a_cmo.json()["error"]["fields"]) == ["cmo"]
    assert list(foreign_product.json()["error"]["fields"]) == ["products"]  # not visible to the steward
    assert twice.json()["error"]["message"].endswith("already exists.")
    assert revoked.json()["error"]["fields"] == {
        "status": ["Set active or suspended here; revoke with POST …/revoke/ {reason}."]
    }
    assert Partnership.objects.count() == 1


def test_steward_lists_changes_assigns_returns_and_revokes(scene, steward_api):
    listed = steward_api.get(f"{BASE}/partnerships/")
    assert [p["id"] for p in listed.json()["results"]] == [scene.partnership.pk]

    patched = steward_api.patch(
        f"{BASE}/partnerships/{scene.partnership.pk}/",
        {"products": [scene.product.pk, scene.other_product.pk], "cmo": scene.cmo_b.pk},
    )
    assert patched.status_code == 200, patched.json()
    assert (patched.json()["cmo"], sorted(patched.json()["products"])) == (
        scene.cmo_a.pk,  # fixed once created: the input is ignored
        sorted([scene.product.pk, scene.other_product.pk]),
    )

    created = assign(steward_api, scene.partnership, scene.product, 250, "erp-1")
    replay = assign(steward_api, scene.partnership, scene.product, 250, "erp-1")
    conflict = assign(steward_api, scene.partnership, scene.product, 251, "erp-1")

    assert (created.status_code, replay.status_code, conflict.status_code) == (201, 200, 409)
    assert created.json() == replay.json()
    assignment = SerialAssignment.objects.get()
    assert created.json() == {
        "id": assignment.pk,
        "partnership": scene.partnership.pk,
        "product": scene.product.pk,
        "product_code": scene.product.product_code,
        "quantity": 250,
        "request_id": "erp-1",
        "allocation": assignment.allocation_id,
        "partner_pool": assignment.partner_pool_id,
        "created_by": scene.steward.username,
        "created_at": created.json()["created_at"],
    }
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert pool_state(scene.pool) == {"filled": 1_000, "assigned": 250, "available": 750}
    assert pool_state(assignment.partner_pool) == {"filled": 250, "assigned": 0, "available": 250}

    listed = steward_api.get(f"{BASE}/partnerships/{scene.partnership.pk}/assignments/")
    assert [a["id"] for a in listed.json()["results"]] == [assignment.pk]

    returned = steward_api.post(
        f"{BASE}/partnerships/{scene.partnership.pk}/returns/",
        {"product": scene.product.pk, "reason": "over-assigned", "quantity": 50},
    )
    assert returned.status_code == 200, returned.json()
    assert returned.json() == {"partnership": scene.partnership.pk, "product": scene.product.pk, "returned": 50}
    assert pool_state(scene.pool)["assigned"] == 200

    usage = steward_api.get(f"{BASE}/partner-usage/")
    assert usage.status_code == 200
    assert [
        (r["cmo"], r["product_code"], r["assigned"], r["used"], r["returned"], r["remaining"]) for r in usage.json()
    ] == sorted(
        [
            (scene.cmo_a.pk, scene.product.product_code, 250, 0, 50, 200),
            (scene.cmo_a.pk, scene.other_product.product_code, 0, 0, 0, 0),
        ],
        key=lambda row: row[1],
    )

    revoked = steward_api.post(f"{BASE}/partnerships/{scene.partnership.pk}/revoke/", {"reason": "contract ended"})
    assert revoked.status_code == 200, revoked.json()
    assert (revoked.json()["status"], revoked.json()["revoke_reason"]) == ("revoked", "contract ended")

    refused = assign(steward_api, scene.partnership, scene.product, 10, "erp-2")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "partnership_inactive"
    assert pool_state(scene.pool)["assigned"] == 200
    again = steward_api.post(f"{BASE}/partnerships/{scene.partnership.pk}/revoke/", {"reason": "again"})
    assert again.status_code == 409
    no_reason = steward_api.post(f"{BASE}/partnerships/{scene.partnership.pk}/revoke/", {})
    assert no_reason.status_code == 400
    assert list(no_reason.json()["error"]["fields"]) == ["reason"]


def test_assignment_errors_are_4xx_naming_the_field(scene, steward_api):
    foreign = make_product(owner=make_mah())
    outside = assign(steward_api, scene.partnership, scene.other_product, 5, "a")
    stranger = assign(steward_api, scene.partnership, foreign, 5, "b")
    zero = assign(steward_api, scene.partnership, scene.product, 0, "c")
    short = assign(steward_api, scene.partnership, scene.product, 5_000, "d")

    assert outside.status_code == 400
    assert outside.json()["error"]["fields"] == {
        "product": [
            f"Product {scene.other_product.pk} is not in partnership {scene.partnership.pk}; use one of its products."
        ]
    }
    assert stranger.status_code == 400
    assert list(stranger.json()["error"]["fields"]) == ["product"]
    assert zero.status_code == 400
    assert list(zero.json()["error"]["fields"]) == ["quantity"]
    assert short.status_code == 409
    assert short.json()["error"]["details"]["pools"] == [
        {"pool": scene.pool.pk, "name": scene.pool.name, "source": "generator", "available": 1_000}
    ]
    assert not SerialAssignment.objects.exists()


def test_partnership_list_query_count_does_not_grow(scene, steward_api):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert steward_api.get(f"{BASE}/partnerships/").status_code == 200
        return len(queries)

    count_queries()  # the first request also records the token's use
    before = count_queries()
    for _ in range(5):
        services.create_partnership(
            mah=scene.mah, cmo=make_cmo(), products=[scene.product, scene.other_product], actor=scene.steward
        )
    assert count_queries() == before


# --- as CMO users ------------------------------------------------------------------------------------------------


def test_a_cmo_user_sees_only_its_own_partnership_and_assignments(scene, api_a, api_b, steward_api):
    partnership_b = services.create_partnership(
        mah=scene.mah, cmo=scene.cmo_b, products=[scene.product], actor=scene.steward
    )
    assignment = scene.assign(40)
    scene.assign(60, partnership=partnership_b)

    mine = api_a.get(f"{BASE}/partnerships/")
    assert [p["id"] for p in mine.json()["results"]] == [scene.partnership.pk]
    assert api_a.get(f"{BASE}/partnerships/{scene.partnership.pk}/").status_code == 200
    assert api_a.get(f"{BASE}/partnerships/{partnership_b.pk}/").status_code == 404
    assert api_a.get(f"{BASE}/partnerships/{partnership_b.pk}/assignments/").status_code == 404
    listed = api_a.get(f"{BASE}/partnerships/{scene.partnership.pk}/assignments/")
    assert [a["id"] for a in listed.json()["results"]] == [assignment.pk]
    assert [(r["cmo"], r["assigned"]) for r in api_a.get(f"{BASE}/partner-usage/").json()] == [(scene.cmo_a.pk, 40)]
    assert [(r["cmo"], r["assigned"]) for r in api_b.get(f"{BASE}/partner-usage/").json()] == [(scene.cmo_b.pk, 60)]
    # CMO A's partner pool is CMO A's: the engine's pool endpoints show it to A only.
    assert api_a.get(f"{BASE}/pools/{assignment.partner_pool_id}/").status_code == 200
    assert api_b.get(f"{BASE}/pools/{assignment.partner_pool_id}/").status_code == 404
    assert SerialPool.objects.filter(source=SerialPool.Source.PARTNER).count() == 2


def test_a_cmo_user_gets_404_for_the_other_cmos_partnership_whatever_the_method(scene, api_b):
    pk = scene.partnership.pk
    for response in (
        api_b.get(f"{BASE}/partnerships/{pk}/"),
        api_b.get(f"{BASE}/partnerships/{pk}/assignments/"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    # Revoking needs a permission a CMO user does not hold: refused before anything is looked up (the same answer
    # for a partnership that does not exist); the assignments view scopes first, like its GET.
    assert api_b.post(f"{BASE}/partnerships/{pk}/revoke/", {"reason": "x"}).status_code == 403
    assert api_b.post(f"{BASE}/partnerships/999999/revoke/", {"reason": "x"}).status_code == 403
    assert assign(api_b, scene.partnership, scene.product, 5, "x").status_code == 404
    assert Partnership.objects.get(pk=pk).status == Partnership.Status.ACTIVE


def test_a_cmo_user_may_not_assign_or_revoke_even_its_own(scene, api_a):
    assert assign(api_a, scene.partnership, scene.product, 5, "x").status_code == 403
    assert api_a.post(f"{BASE}/partnerships/{scene.partnership.pk}/revoke/", {"reason": "x"}).status_code == 403
    assert api_a.patch(f"{BASE}/partnerships/{scene.partnership.pk}/", {"status": "suspended"}).status_code == 403
    assert not SerialAssignment.objects.exists()


def test_another_mahs_steward_gets_404(scene, make_api_client):
    other = make_api_client(make_steward(make_mah()))

    assert other.get(f"{BASE}/partnerships/{scene.partnership.pk}/").status_code == 404
    assert other.post(f"{BASE}/partnerships/{scene.partnership.pk}/revoke/", {"reason": "x"}).status_code == 404
    assert assign(other, scene.partnership, scene.product, 5, "x").status_code == 404
    assert other.get(f"{BASE}/partnerships/").json()["results"] == []
    assert other.get(f"{BASE}/partner-usage/").json() == []


def test_an_mah_pool_of_another_product_is_never_used(scene, steward_api):
    make_mah_pool(mah=scene.mah, product=scene.other_product, actor=scene.steward, fill=5_000)

    short = assign(steward_api, scene.partnership, scene.product, 2_000, "x")

    assert short.status_code == 409
    assert [p["pool"] for p in short.json()["error"]["details"]["pools"]] == [scene.pool.pk]
