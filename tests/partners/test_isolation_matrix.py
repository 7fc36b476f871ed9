"""Invariant 5 as a matrix: every API endpoint under /api/v1/ (read from the OpenAPI schema, so a new endpoint joins
by itself) and every portal page (the ``portal`` URL namespace), walked as CMO A, CMO B and the MAH's steward, with
the path's ids filled with CMO A's objects.

What must hold:

- CMO A reaches each of its objects (so the ids below are the right ones and the rows are visible to someone);
- CMO B — a user with every model permission a company user can hold, and a plain "CMO user" — gets for each of
  A's objects, whatever the method, exactly what it gets for an id that does not exist (404, or 403 where it lacks
  the model permission) and never a 5xx; list and query endpoints give B nothing of A's (no id of A's objects, and
  none of A's names, codes, numbers or keys anywhere in the body);
- the MAH's steward sees A's partnership and its assignments (the MAH's own contract) and nothing else of A's.

A path whose ids this test cannot fill fails with a message saying where to add the object: the matrix covers every
endpoint, including the ones added after it was written.
"""

import itertools
import json
import re
from dataclasses import dataclass, field

import pytest
from django.contrib.auth.models import Permission
from django.urls import get_resolver, reverse
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from audit.models import AccessEvent
from audit.services import raise_incident, record_access
from masterdata.models import Market
from partners import services as partner_services
from serialization.models import (
    Allocation,
    Batch,
    CaptureJob,
    EpcisExportJob,
    ExportJob,
    ImportJob,
    LineReport,
    Pack,
    PackagingOrder,
)
from serialization.outbox_models import Endpoint, Submission
from serialization.services import allocate_serials, create_generated_pool, create_list_pool
from serialization.services.batches import request_order_serials
from serialization.services.materialise import iter_serial_chunks
from tests.factories import make_location, make_membership, make_product, make_user
from tests.partners.test_services import make_cmo, make_mah, make_mah_pool, make_steward

pytestmark = pytest.mark.django_db

API_PREFIX = "/api/v1/"
MISSING_ID = 2_000_000_000
MISSING_KEY = "no-such-object"
METHODS = ("get", "post", "put", "patch", "delete")
# Apps whose model permissions a company user may hold, and the one audit permission scoped by company too: the
# access log (a company's users read only their own company's events, audit.selectors.scope_access_events).
COMPANY_APPS = ("masterdata", "serialization", "partners")
COMPANY_AUDIT_PERMISSIONS = ("view_accessevent",)
# Resources every authenticated user reads (reference data), and the B-side writes that would change them.
SHARED = {"markets"}
# Resources not scoped by company at all: readable by whoever holds the model permission. Listed so the matrix says
# so out loud; each entry is a known gap to close in its app (reported, not hidden).
UNSCOPED = {
    "incidents": "audit.view_incident (Steward, QA, Auditor): the operator's incidents, about every company's objects",
}
_numbers = itertools.count(1)


def power_user(company, *, username: str):
    """A user of ``company`` holding every add/change/view permission of the company apps, CMO user role too."""
    user = make_user(username=username, roles=["CMO user"])
    perms = Permission.objects.filter(content_type__app_label__in=COMPANY_APPS).exclude(codename__startswith="delete_")
    user.user_permissions.add(*perms)
    user.user_permissions.add(Permission.objects.get(codename="release_batch"))
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="audit", codename__in=COMPANY_AUDIT_PERMISSIONS)
    )
    make_membership(user=user, company=company)
    return user


@dataclass
class World:
    """CMO A with one object of every kind the API serves, CMO B with its own partnership, and the MAH."""

    objects: dict[str, list] = field(default_factory=dict)  # resource (first path segment) → A's objects
    markers: list[str] = field(default_factory=list)  # strings that appear only in A's data
    query: dict[str, dict] = field(default_factory=dict)  # query endpoint path → the query naming A's serial
    serial: str = ""
    own_product: object = None


def build_world() -> tuple[World, dict]:
    n = next(_numbers)
    world = World()
    mah = make_mah(f"Mediq Holder {n}")
    steward = make_steward(mah, username=f"mah_steward_{n}")
    shared_product = make_product(owner=mah, name=f"Alphamycin shared {n}")
    b_product = make_product(owner=mah, name=f"Betacillin {n}")
    make_mah_pool(mah=mah, product=shared_product, actor=steward)
    make_mah_pool(mah=mah, product=b_product, actor=steward)

    cmo_a = make_cmo(f"Alpha Contract Pack {n}", is_mah=True)  # also holds own-label products
    cmo_b = make_cmo(f"Beta Contract Pack {n}", is_mah=True)
    user_a = power_user(cmo_a, username=f"alpha_user_{n}")
    user_b = power_user(cmo_b, username=f"beta_user_{n}")
    plain_b = make_user(username=f"beta_plain_{n}", roles=["CMO user"])
    make_membership(user=plain_b, company=cmo_b)

    partnership_a = partner_services.create_partnership(mah=mah, cmo=cmo_a, products=[shared_product], actor=steward)
    partnership_b = partner_services.create_partnership(mah=mah, cmo=cmo_b, products=[b_product], actor=steward)
    assignment_a = partner_services.assign_serials(
        partnership=partnership_a, product=shared_product, quantity=100, actor=steward, request_id=f"alpha-assign-{n}"
    )
    partner_services.assign_serials(
        partnership=partnership_b, product=b_product, quantity=100, actor=steward, request_id=f"beta-assign-{n}"
    )
    partner_pool_a = assignment_a.partner_pool
    partner_allocation_a = allocate_serials(
        pool=partner_pool_a, quantity=10, actor=user_a, request_id=f"alpha-line-{n}", purpose="packaging_order"
    )

    own_product = make_product(owner=cmo_a, name=f"Alphadol own label {n}")
    own_pool = create_generated_pool(owner=cmo_a, actor=user_a, product=own_product, randomised=False, initial_fill=500)
    list_pool = create_list_pool(owner=cmo_a, actor=user_a, product=own_product, source="file")
    line = make_location(company=cmo_a, kind="line", name=f"Alpha line {n}")
    batch = Batch.objects.create(product=own_product, lot=f"LALPHA{n}", expiry="281200")
    order = PackagingOrder.objects.create(number=f"PO-ALPHA-{n}", batch=batch, line=line, planned_quantity=100)
    request_order_serials(order=order, quantity=20, actor=user_a, request_id=f"alpha-order-{n}")
    order_allocation = Allocation.objects.get(packaging_order=order)
    first_index = order_allocation.ranges.order_by("first_index").first().first_index
    serial = next(iter_serial_chunks(order_allocation))[0].decode()
    Pack.objects.create(
        pool=own_pool,
        index=first_index,
        product_code=own_product.product_code,
        serial=serial,
        batch=batch,
        order=order,
        commissioned_at=timezone.now(),
    )
    export = ExportJob.objects.create(allocation=order_allocation, requested_by=user_a)
    import_job = ImportJob.objects.create(
        pool=list_pool, layout=ImportJob.Layout.CSV, file=f"imports/alpha-{n}.csv", original_name=f"alpha-{n}.csv"
    )
    report = LineReport.objects.create(
        report_id=f"alpha-report-{n}",
        kind=LineReport.Kind.COMMISSIONING,
        order=order,
        fingerprint="0" * 64,
        status=LineReport.Status.APPLIED,
        submitted_by=user_a,
    )
    event = record_access(kind=AccessEvent.Kind.DOWNLOAD, user=user_a, target=f"alpha download {n}")
    incident = raise_incident(kind="reconciliation", title=f"alpha incident {n}", subject=batch)
    epcis_export = EpcisExportJob.objects.create(batch=batch, requested_by=user_a)
    capture_job = CaptureJob.objects.create(
        document=f"epcis/capture/alpha-{n}.json",
        document_format=CaptureJob.Format.JSON,
        document_sha256="0" * 64,
        company=cmo_a,
        created_by=user_a,
    )
    endpoint = Endpoint.objects.create(
        name=f"EU hub {n}", market=Market.objects.get(code="EU"), kind=Endpoint.Kind.HTTP, url="https://hub.example/up"
    )
    submission = Submission.objects.create(
        market=endpoint.market,
        company=cmo_a,  # its own-label batch: CMO A reports it as the MAH
        batch=batch,
        endpoint=endpoint,
        kind=Submission.Kind.EU_HUB,
        file=f"submissions/alpha-{n}.json",
        content_type="application/json",
        sha256="0" * 64,
        size=2,
        created_by=user_a,
    )

    world.objects = {
        "access-events": [event],
        "allocations": [order_allocation, partner_allocation_a],
        "batches": [batch],
        "companies": [cmo_a],
        "epcis": [capture_job],
        "epcis-exports": [epcis_export],
        "exports": [export],
        "imports": [import_job],
        "incidents": [incident],
        "line-reports": [report],
        "locations": [line],
        "markets": [Market.objects.get(code="EU")],
        "orders": [order],
        "partnerships": [partnership_a],
        "pools": [partner_pool_a, own_pool],
        "products": [own_product],
        "submissions": [submission],
    }
    world.markers = [
        cmo_a.name,
        user_a.username,
        own_product.product_code,
        own_product.name,
        shared_product.product_code,
        shared_product.name,
        line.name,
        line.gln,
        batch.lot,
        order.number,
        report.report_id,
        order_allocation.request_id,
        partner_allocation_a.request_id,
        assignment_a.request_id,
        serial,
    ]
    query = {"product_code": own_product.product_code, "serial": serial}
    world.query = {"/api/v1/packs/history/": query, "/api/v1/serials/lookup/": query}
    actors = {"a": user_a, "b": user_b, "b_plain": plain_b, "mah": steward}
    world.serial = serial
    world.own_product = own_product
    return world, actors


def key_of(obj) -> str:
    return obj.report_id if isinstance(obj, LineReport) else str(obj.pk)


def resource_of(path: str) -> str:
    return path[len(API_PREFIX) :].split("/", 1)[0]


def fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def a_sees(resource: str) -> bool:
    return resource not in UNSCOPED  # A's power users hold no unscoped audit permission


def mah_sees(resource: str) -> bool:
    return resource in {"partnerships"} | SHARED | set(UNSCOPED)


def ids_in(body) -> set:
    items = body.get("results", body) if isinstance(body, dict) else body
    if not isinstance(items, list):
        items = [items]
    return {str(item.get("id")) for item in items if isinstance(item, dict) and "id" in item}


def leaked_markers(text: str, markers: list[str], *, asked: str = "") -> list[str]:
    """A's markers in ``text``, leaving out what the request itself named (a 404 page may echo the code asked for)."""
    return [m for m in markers if m and m in text and m not in asked]


@pytest.fixture
def matrix(make_api_client):
    """(CMO A's world, the actors by role, an API client per actor)."""
    world, actors = build_world()
    clients = {name: make_api_client(user) for name, user in actors.items()}
    return world, actors, clients


def api_paths() -> dict[str, dict]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {path: ops for path, ops in schema["paths"].items() if path.startswith(API_PREFIX)}


def test_every_api_endpoint_answers_cmo_b_as_if_cmo_a_objects_did_not_exist(matrix):
    world, _actors, clients = matrix
    problems: list[str] = []
    paths = api_paths()
    assert len(paths) > 20

    def call(who: str, method: str, url: str, data=None):
        client = clients[who]
        if method == "get":
            return client.get(url, data)
        return getattr(client, method)(url, data or {}, format="json")

    for path, operations in sorted(paths.items()):
        methods = [m for m in METHODS if m in operations]
        resource = resource_of(path)
        if "{" not in path:
            if "get" not in methods:
                continue  # collection POSTs create things; nothing of A's is named
            query = world.query.get(path)
            if query is not None:
                for who in ("a", "b", "b_plain", "mah"):
                    response = call(who, "get", path, query)
                    expected_visible = who == "a"
                    if response.status_code >= 500:
                        problems.append(f"{who} GET {path}?{query}: {response.status_code}")
                    elif expected_visible and response.status_code != 200:
                        problems.append(f"a GET {path}: {response.status_code}, expected 200 for its own serial")
                    elif not expected_visible and response.status_code not in (403, 404):
                        problems.append(f"{who} GET {path} with A's serial: {response.status_code}, expected 404")
                continue
            # A list of the resource itself (not a count or a search under it) must show A its own objects.
            own_ids = {key_of(obj) for obj in world.objects.get(resource, [])}
            is_list = path == f"{API_PREFIX}{resource}/"
            for who in ("a", "b", "b_plain", "mah"):
                response = call(who, "get", path)
                if response.status_code >= 500:
                    problems.append(f"{who} GET {path}: {response.status_code}")
                    continue
                if response.status_code != 200:
                    continue
                body = response.json()
                text = json.dumps(body, ensure_ascii=False)
                if who in ("b", "b_plain") and resource not in SHARED:
                    if ids_in(body) & own_ids:
                        problems.append(f"{who} GET {path} lists A's ids {sorted(ids_in(body) & own_ids)}")
                    leaked = leaked_markers(text, world.markers)
                    if leaked:
                        problems.append(f"{who} GET {path} shows A's data: {leaked}")
                if who == "a" and is_list and own_ids and resource not in SHARED and not own_ids <= ids_in(body):
                    problems.append(f"a GET {path} misses its own {sorted(own_ids - ids_in(body))}")
                if who == "mah" and is_list and resource == "partnerships" and not own_ids <= ids_in(body):
                    problems.append(f"mah GET {path} misses its partnership with A")
            continue

        objects = world.objects.get(resource)
        if not objects:
            problems.append(
                f"{path}: no CMO A object to fill it with — add one for {resource!r} to build_world() in "
                "tests/partners/test_isolation_matrix.py"
            )
            continue
        for obj in objects:
            url, missing_url = fill(path, key_of(obj)), fill(path, str(MISSING_ID) if "{id}" in path else MISSING_KEY)
            for method in methods:
                if method == "get":
                    a = call("a", "get", url)
                    if a_sees(resource) and (a.status_code in (403, 404) or a.status_code >= 500):
                        problems.append(f"a GET {url}: {a.status_code}, expected to reach its own object")
                    mah = call("mah", "get", url)
                    if mah_sees(resource) and mah.status_code != 200:
                        problems.append(f"mah GET {url}: {mah.status_code}, expected 200")
                    if not mah_sees(resource) and mah.status_code != 404:
                        problems.append(f"mah GET {url}: {mah.status_code}, expected 404 (A's object)")
                if resource in SHARED or resource in UNSCOPED:
                    if method == "get":
                        for who in ("b", "b_plain"):
                            status = call(who, "get", url).status_code
                            if status >= 500:
                                problems.append(f"{who} GET {url}: {status}")
                    continue  # reference data, or a known unscoped resource: B's writes would change it
                for who in ("b", "b_plain"):
                    seen = call(who, method, url)
                    nothing = call(who, method, missing_url)
                    if seen.status_code >= 500 or nothing.status_code >= 500:
                        problems.append(
                            f"{who} {method.upper()} {url}: {seen.status_code} / missing {nothing.status_code}"
                        )
                    elif seen.status_code != nothing.status_code:
                        problems.append(
                            f"{who} {method.upper()} {url}: {seen.status_code}, but {nothing.status_code} for an "
                            "object that does not exist — A's object is distinguishable"
                        )
                    elif seen.status_code not in (403, 404, 405):
                        problems.append(f"{who} {method.upper()} {url}: {seen.status_code}, expected 404")
                    elif who == "b" and method == "get" and seen.status_code != 404:
                        problems.append(f"b GET {url}: {seen.status_code}, expected 404 (B holds the view permission)")
                    text = seen.content.decode(errors="replace")
                    leaked = leaked_markers(text, world.markers, asked=url)
                    if leaked:
                        problems.append(f"{who} {method.upper()} {url} shows A's data: {leaked}")

    assert problems == [], "\n".join(problems)


def test_cmo_a_objects_are_unchanged_after_cmo_b_tried_every_write(matrix):
    # Every write of B's on A's objects (the walk above, again) leaves A's rows exactly as they were.
    world, _actors, clients = matrix
    before = {
        resource: [type(o).objects.filter(pk=o.pk).values().get() for o in objs]
        for resource, objs in world.objects.items()
    }
    for path, operations in api_paths().items():
        resource = resource_of(path)
        if "{" not in path or resource in SHARED or resource in UNSCOPED:
            continue
        for obj in world.objects.get(resource, []):
            for method in ("post", "put", "patch", "delete"):
                if method in operations:
                    response = getattr(clients["b"], method)(fill(path, key_of(obj)), {}, format="json")
                    assert response.status_code < 500, (method, path, response.status_code)
    after = {
        resource: [type(o).objects.filter(pk=o.pk).values().get() for o in objs]
        for resource, objs in world.objects.items()
    }
    assert after == before


# --- the portal ---------------------------------------------------------------------------------------------------


def portal_patterns() -> list:
    namespace = get_resolver().namespace_dict.get("portal")
    if namespace is None:
        return []
    return list(namespace[1].url_patterns)


def portal_kwargs(name: str, converters: dict, world: World, *, missing: bool) -> dict | None:
    kwargs = {}
    for key in converters:
        if key == "product_code":
            kwargs[key] = "09999999999999" if missing else world.own_product.product_code
        elif key == "pk" and name.startswith("order"):
            kwargs[key] = MISSING_ID if missing else world.objects["orders"][0].pk
        elif key == "pk" and name.startswith("allocation"):
            kwargs[key] = MISSING_ID if missing else world.objects["allocations"][0].pk
        else:
            return None
    return kwargs


def test_every_portal_page_answers_cmo_b_as_if_cmo_a_objects_did_not_exist(matrix, make_verified_client):
    patterns = portal_patterns()
    if not patterns:
        pytest.skip("No portal pages yet (the portal namespace has no URL patterns)")
    world, actors, _ = matrix
    browsers = {who: make_verified_client(user) for who, user in actors.items()}
    problems: list[str] = []
    for pattern in patterns:
        name = pattern.name
        converters = pattern.pattern.converters
        kwargs = portal_kwargs(name, converters, world, missing=False)
        if kwargs is None:
            problems.append(f"portal:{name}: no CMO A object for {sorted(converters)} — add it to portal_kwargs()")
            continue
        url = reverse(f"portal:{name}", kwargs=kwargs)
        if not converters:
            for who in ("b", "b_plain"):
                response = browsers[who].get(url, {"q": ""})
                if response.status_code >= 500:
                    problems.append(f"{who} GET {url}: {response.status_code}")
                leaked = leaked_markers(response.content.decode(errors="replace"), world.markers)
                if leaked:
                    problems.append(f"{who} GET {url} shows A's data: {leaked}")
            continue
        missing_url = reverse(f"portal:{name}", kwargs=portal_kwargs(name, converters, world, missing=True))
        a = browsers["a"].get(url)
        if a.status_code in (403, 404) or a.status_code >= 500:
            problems.append(f"a GET {url}: {a.status_code}, expected to reach its own object")
        for who in ("b", "b_plain", "mah"):
            for method in ("get", "post"):
                seen = getattr(browsers[who], method)(url)
                nothing = getattr(browsers[who], method)(missing_url)
                if seen.status_code >= 500 or seen.status_code != nothing.status_code:
                    problems.append(
                        f"{who} {method.upper()} {url}: {seen.status_code}, missing object {nothing.status_code}"
                    )
                elif seen.status_code not in (404, 405):
                    problems.append(f"{who} {method.upper()} {url}: {seen.status_code}, expected 404")
                leaked = leaked_markers(seen.content.decode(errors="replace"), world.markers, asked=url)
                if leaked:
                    problems.append(f"{who} {method.upper()} {url} shows A's data: {leaked}")
    assert problems == [], "\n".join(problems)
