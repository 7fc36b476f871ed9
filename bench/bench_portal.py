"""The partner portal's SN/SSCC pool tab with 200 products whose pools hold 10⁸ serials each, beside a naive N+1 page.

Target (issue 5): the pool tab renders in < 300 ms server time with 200 products of 10⁸ serials each.

What runs, per backend (a scratch database created and dropped by the bench):
  1. fixtures: an MAH with --products products, a CMO with an active partnership for all of them (created by
     ``partners.services.create_partnership``, which grants the CMO's users the right to see it), and per product
     one partner pool of the CMO (``source = partner``) whose counters are set directly — ``filled`` = --serials,
     a different ``next_index`` / ``free`` per pool — so nothing exists per serial (2 × 10¹⁰ serials in all with
     the defaults); a CMO user with a company membership and a confirmed TOTP device;
  2. measured: ``GET /portal/pools/`` through Django's test client with a verified session, i.e. the whole server
     side — middleware, session, OTP check, the selectors, 200 server-drawn SVG donuts and the template — --renders
     times after --warmup renders; p50 / p95 / max, the queries per render, and a check of the page: every product
     row, and the exact available / assigned figures of a sample of products against the pools' counters;
  3. the naive baseline in the same run and the same page: ``partners.selectors.list_portal_products`` swapped for
     a per-product ORM walk (the company's products, then per product a query for its pools summed in Python and a
     query for its partnerships' MAHs) — what an unoptimised view does; same renders, same checks. Counting serial
     rows is not a baseline anyone could run here: the pools hold 2 × 10¹⁰ serials and no row for any of them.

Run:  .venv/bin/python bench/bench_portal.py [--products 200] [--serials 100000000] [--renders 50] [--backend all]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    add_backend_argument,
    line,
    machine,
    ms,
    percentile,
    run_backends,
    scratch_database,
    verdict,
)

TARGET_P95 = 0.300
PREFIX = "9527777"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=200, help="products, one partner pool each (default 200)")
    parser.add_argument("--serials", type=int, default=10**8, help="serials per pool (default 100,000,000)")
    parser.add_argument("--renders", type=int, default=50, help="measured renders per variant (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="renders before measuring (default 3)")
    add_backend_argument(parser)
    return parser.parse_args(argv)


# --- fixtures -----------------------------------------------------------------------------------------------------


def handed_out(i: int, serials: int) -> int:
    """A different cursor per pool, spread over the whole pool."""
    return (i * 7_919_993) % (serials + 1)


def build(args):
    """The MAH, the CMO, its user, the products, the partnership and the partner pools; returns (user, pools)."""
    import django_otp  # noqa: F401 - the device model below needs the app loaded
    from django.contrib.auth import get_user_model
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from masterdata import gs1
    from masterdata.models import NUMERIC, Company, CompanyMembership, CompanyPrefix, Product
    from partners.services import create_partnership
    from serialization.models import SerialPool

    mah = Company.objects.create(name="Bench MAH", is_mah=True, country="IE")
    CompanyPrefix.objects.create(company=mah, prefix=PREFIX, length=len(PREFIX))
    cmo = Company.objects.create(name="Bench CMO", is_cmo=True, country="DE")
    user = get_user_model().objects.create_user(username="bench-cmo", password="unused-in-bench")
    CompanyMembership.objects.create(user=user, company=cmo)
    TOTPDevice.objects.create(user=user, name="bench", confirmed=True)

    products = []
    for i in range(args.products):
        body = "0" + PREFIX + str(i).zfill(12 - len(PREFIX))
        products.append(
            Product(
                owner=mah,
                product_code=body + gs1.check_digit(body),
                company_prefix_length=len(PREFIX),
                name=f"Bench product {i:03d} {'tablets' if i % 2 else 'capsules'}",
            )
        )
    products = Product.objects.bulk_create(products)
    steward = get_user_model().objects.create_user(username="bench-steward", is_staff=True)
    # Through the service: the CMO's users see the partnership by the object permission it grants.
    create_partnership(mah=mah, cmo=cmo, products=products, actor=steward)
    pools = SerialPool.objects.bulk_create(
        SerialPool(
            owner=cmo,
            kind=SerialPool.Kind.SGTIN,
            product=product,
            product_code=product.product_code,
            name=f"{product.product_code} from {mah.name}",
            source=SerialPool.Source.PARTNER,
            alphabet=NUMERIC,
            length=12,
            filled=args.serials,
            next_index=handed_out(i, args.serials),
            free=handed_out(i, args.serials) // 10 if i % 3 == 0 else 0,  # some released back to Available
        )
        for i, product in enumerate(products)
    )
    return user, pools


def verified_client(user):
    import django_otp
    from django.test import Client
    from django_otp.plugins.otp_totp.models import TOTPDevice

    client = Client()
    client.force_login(user)
    session = client.session
    session[django_otp.DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.get(user=user).persistent_id
    session.save()
    return client


# --- the naive page -----------------------------------------------------------------------------------------------


def naive_list_portal_products(*, user, search: str = ""):
    """The pool tab's rows the way an unoptimised view builds them: per product, a query for its pools (summed in
    Python) and one for the MAHs of its partnerships."""
    from django.db.models import Q

    from masterdata.models import Product
    from masterdata.selectors import get_user_company_id
    from partners.models import Partnership
    from partners.selectors import Counts, PortalProduct, SourceCounts
    from serialization.models import SerialPool

    company_id = get_user_company_id(user=user)
    products = Product.objects.filter(
        Q(serial_pools__owner_id=company_id)
        | Q(partnerships__cmo_id=company_id, partnerships__status=Partnership.Status.ACTIVE)
    ).distinct()
    if search:
        products = products.filter(Q(product_code__icontains=search) | Q(name__icontains=search))
    rows = []
    for product in products:
        row = PortalProduct(product_code=product.product_code, code_schema=product.code_schema, name=product.name)
        by_source: dict[str, list] = {}
        for pool in SerialPool.objects.filter(owner_id=company_id, kind=SerialPool.Kind.SGTIN, product=product):
            by_source.setdefault(pool.source, []).append(pool)
        row.sources = [
            SourceCounts(source, len(group), Counts(sum(p.filled for p in group), sum(p.assigned for p in group)))
            for source, group in sorted(by_source.items())
        ]
        row.partners = [
            p.mah.name
            for p in Partnership.objects.filter(cmo_id=company_id, status="active", products=product).select_related(
                "mah"
            )
        ]
        rows.append(row)
    return sorted(rows, key=lambda p: (p.name.casefold(), p.product_code))


# --- measuring ----------------------------------------------------------------------------------------------------


def render_times(client, args) -> tuple[list[float], int, bytes]:
    from django.db import connection, reset_queries

    for _ in range(args.warmup):
        assert client.get("/portal/pools/").status_code == 200
    times = []
    queries = 0
    content = b""
    for _ in range(args.renders):
        reset_queries()
        start = time.perf_counter()
        response = client.get("/portal/pools/")
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, response.status_code
        queries = len(connection.queries)
        content = response.content
    return times, queries, content


def check_page(content: bytes, pools, args) -> tuple[bool, str]:
    """Every product row, and the exact figures of every 20th product against its pool's counters."""
    html = content.decode()
    rows = re.findall(r'<tr id="product-(\d{14})"', html)
    problems = []
    if len(rows) != args.products:
        problems.append(f"{len(rows)} product rows instead of {args.products}")
    for pool in pools[:: max(1, len(pools) // 10)]:
        summary = f"Available {pool.available:,} (" if pool.filled else "No serials yet"
        start = html.find(f'<tr id="product-{pool.product_code}"')
        row = html[start : html.find("</tr>", start)]
        if summary not in row or f'class="count-assigned">{pool.assigned:,}</dd>' not in row:
            problems.append(f"{pool.product_code}: wrong figures")
    ok = not problems
    return ok, f"{len(rows)} product rows, figures of {len(pools[:: max(1, len(pools) // 10)])} sampled products " + (
        "match their pools' counters" if ok else "WRONG: " + "; ".join(problems)
    )


def run(args) -> int:
    from django.conf import settings
    from django.test.utils import setup_test_environment

    import partners.selectors as portal_selectors

    setup_test_environment()  # the test client's host name and an in-memory mail backend
    settings.DEBUG = True  # connection.queries for the query count (the timings below are without it)
    user, pools = build(args)
    print(
        f"  {args.products} products, one partner pool each of {args.serials:,} serials "
        f"({args.products * args.serials:,} in all, no row per serial); {args.renders} renders after {args.warmup}",
        flush=True,
    )
    client = verified_client(user)

    _, queries, content = render_times(client, argparse.Namespace(renders=1, warmup=1))
    ok, summary = check_page(content, pools, args)
    print(f"  page: {len(content) / 1024:,.0f} KiB, {queries} queries per render; {summary}", flush=True)

    original = portal_selectors.list_portal_products
    portal_selectors.list_portal_products = naive_list_portal_products
    try:
        _, naive_queries, naive_content = render_times(client, argparse.Namespace(renders=1, warmup=1))
        naive_ok, naive_summary = check_page(naive_content, pools, args)
        print(f"  naive page: {naive_queries} queries per render; {naive_summary}", flush=True)
    finally:
        portal_selectors.list_portal_products = original

    settings.DEBUG = False
    fast, _, _ = render_times(client, args)
    portal_selectors.list_portal_products = naive_list_portal_products
    try:
        naive, _, _ = render_times(client, args)
    finally:
        portal_selectors.list_portal_products = original

    p50, p95 = percentile(fast, 50), percentile(fast, 95)
    n50, n95 = percentile(naive, 50), percentile(naive, 95)
    line("pool tab p50 (server time)", ms(p50), ms(n50), n50 / p50)
    line("pool tab p95 (server time)", ms(p95), ms(n95), n95 / p95, "< 300 ms", p95 < TARGET_P95)
    line("pool tab max", ms(max(fast)), ms(max(naive)), max(naive) / max(fast))
    line("queries per render", f"{queries}", f"{naive_queries}", naive_queries / queries)
    print(f"  target p95 < 300 ms: {verdict(p95 < TARGET_P95)}; page checks: {verdict(ok and naive_ok)}", flush=True)
    return 0 if ok and naive_ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.backend == "all":
        return run_backends(Path(__file__), sys.argv[1:] if argv is None else argv)
    with scratch_database(args.backend) as database:
        print(f"  {database}\n  {machine()}", flush=True)
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
