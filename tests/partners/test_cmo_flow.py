"""The MAH → CMO flow end to end, across the apps: the MAH assigns serials, an order runs on the CMO's line, the CMO
draws serials from its partner pool (never from the MAH's own pool), commissions some, and the MAH sees them used.
Another CMO sees none of it."""

import pytest

from partners import selectors as partner_selectors
from partners import services as partner_services
from serialization.exceptions import PoolBlocked, UnknownSerial
from serialization.models import LineReport, Pack
from serialization.selectors import get_pack_history, list_batches, list_orders
from serialization.services import allocate_serials, create_generated_pool
from serialization.services.batches import (
    create_batch,
    create_packaging_order,
    request_order_serials,
)
from serialization.services.line_reports import apply_line_report
from serialization.services.materialise import iter_serial_chunks
from tests.factories import make_company, make_location, make_membership, make_product, make_user
from tests.serialization.test_services import ensure_eu_market

pytestmark = pytest.mark.django_db


def test_a_cmo_order_draws_from_the_cmo_partner_pool_and_its_packs_count_as_used_for_the_mah():
    ensure_eu_market()
    mah = make_company(name="MAH", is_mah=True, is_cmo=False)
    steward = make_user(username="mah-steward", roles=("Steward",))
    make_membership(user=steward, company=mah)
    product = make_product(owner=mah, markets=("EU",))
    mah_pool = create_generated_pool(owner=mah, actor=steward, product=product, initial_fill=10_000)
    cmo, other_cmo = (make_company(name=n, is_mah=False, is_cmo=True) for n in ("CMO A", "CMO B"))
    cmo_user, other_user = make_user(username="cmo-a"), make_user(username="cmo-b")
    make_membership(user=cmo_user, company=cmo)
    make_membership(user=other_user, company=other_cmo)
    site = make_location(company=cmo, kind="site")
    line = make_location(company=cmo, kind="line", parent=site, gln=site.gln, gln_extension="1")

    partnership = partner_services.create_partnership(mah=mah, cmo=cmo, products=[product], actor=steward)
    assignment = partner_services.assign_serials(
        partnership=partnership, product=product, quantity=1_000, actor=steward, request_id="assign-1"
    )
    batch = create_batch(product=product, lot="LOT-CMO-1", expiry="281200", actor=steward)
    order = create_packaging_order(batch=batch, line=line, number="CMO-PO-1", planned_quantity=100, actor=steward)

    got = request_order_serials(order=order, quantity=100, actor=cmo_user, request_id="cmo-req-1")

    assert got.units.pool == assignment.partner_pool
    assert got.units.pool.owner == cmo
    mah_serials = {s.decode() for chunk in iter_serial_chunks(assignment.allocation) for s in chunk.tolist()}
    cmo_serials = [s.decode() for chunk in iter_serial_chunks(got.units) for s in chunk.tolist()]
    assert len(cmo_serials) == 100 and set(cmo_serials) <= mah_serials
    mah_pool.refresh_from_db()
    assert (mah_pool.assigned, mah_pool.available) == (1_000, 9_000)  # the order took nothing more from the MAH

    report = apply_line_report(
        report_id="cmo-commission-1",
        kind=LineReport.Kind.COMMISSIONING,
        order=order,
        lines=[{"product_code": product.product_code, "serial": s} for s in cmo_serials[:10]],
        actor=cmo_user,
    )

    assert report.status == LineReport.Status.APPLIED, report.result
    assert Pack.objects.filter(order=order).count() == 10
    [usage] = partner_selectors.list_partner_usage(user=steward)
    assert (usage.cmo_name, usage.assigned, usage.used, usage.returned, usage.remaining) == ("CMO A", 1_000, 10, 0, 990)
    assert list(list_orders(user=cmo_user)) == [order]
    assert list(list_batches(user=cmo_user)) == [batch]
    assert list(list_orders(user=other_user)) == [] and list(list_batches(user=other_user)) == []
    history = get_pack_history(user=cmo_user, product_code=product.product_code, serial=cmo_serials[0])
    assert (history.pack.order, history.pack.status) == ("CMO-PO-1", "commissioned")
    unused = get_pack_history(user=cmo_user, product_code=product.product_code, serial=cmo_serials[50])
    assert unused.pack is None  # shared with the CMO, not commissioned yet: its pool history only
    with pytest.raises(UnknownSerial):
        get_pack_history(user=other_user, product_code=product.product_code, serial=cmo_serials[0])


def test_revoking_a_partnership_stops_the_cmo_allocating_but_not_returning():
    ensure_eu_market()
    mah = make_company(name="MAH", is_mah=True, is_cmo=False)
    steward = make_user(username="mah-steward", roles=("Steward",))
    make_membership(user=steward, company=mah)
    product = make_product(owner=mah, markets=("EU",))
    create_generated_pool(owner=mah, actor=steward, product=product, initial_fill=10_000)
    cmo = make_company(name="CMO A", is_mah=False, is_cmo=True)
    partnership = partner_services.create_partnership(mah=mah, cmo=cmo, products=[product], actor=steward)
    partner_pool = partner_services.assign_serials(
        partnership=partnership, product=product, quantity=500, actor=steward, request_id="assign-1"
    ).partner_pool
    allocate_serials(pool=partner_pool, quantity=100, actor=None, request_id="before", purpose="packaging_order")

    partner_services.revoke_partnership(partnership=partnership, actor=steward, reason="contract ended")

    with pytest.raises(PoolBlocked, match="takes no new allocations: partnership with MAH revoked"):
        allocate_serials(pool=partner_pool, quantity=1, actor=None, request_id="after", purpose="packaging_order")
    partner_pool.refresh_from_db()
    assert (partner_pool.assigned, partner_pool.available) == (100, 400)
    assert partner_pool.history.latest().history_change_reason == "partnership with MAH revoked"
    returned = partner_services.return_serials(
        partnership=partnership, product=product, actor=steward, reason="contract ended"
    )
    assert returned == 400
