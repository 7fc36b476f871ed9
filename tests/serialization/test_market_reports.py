"""Market reports built from real production data (line reports through the services) and the master data each
market needs: the documents' contents, and every validation rule refused with its field and message before anything
could be sent."""

import datetime as dt
import io
import itertools
import json

import pytest
from lxml import etree

from masterdata import gs1
from masterdata.models import Market, PackagingLevel, ProductNationalCode
from serialization.models import Batch, LineReport, Pack, SerialPool
from serialization.reports import ReportRefused, build_report, check_report
from serialization.reports import eu_hub as eu_hub_module
from serialization.services import create_generated_pool, create_list_pool
from serialization.services.batches import (
    close_packaging_order,
    create_batch,
    create_packaging_order,
    request_order_serials,
    transition_batch,
)
from serialization.services.imports import import_serials
from serialization.services.line_reports import apply_line_report
from serialization.services.materialise import iter_serial_chunks
from tests.factories import get_market, make_company, make_location, make_market, make_product, make_user

pytestmark = pytest.mark.django_db

_numbers = itertools.count(1)
CRYPTO_CODE = "Qk3v9ZpL2mX8tR4wY7nC1bH6sD0fG5jK9eT2uV8aB3cD"  # 44 characters
NDC = "1234567890"


class Scene:
    """An MAH with a product fully described for the hub (name, INN, form, strength, pack), unit and case levels, a
    unit pool (generated, or a list pool imported from ``listed`` CSV text), an SSCC pool, and a site with a line.

    ``produce`` runs a batch through the real line-report services: commissioning of units and cases, aggregation
    ten units to a case, decommissioning, closing the order, completing the batch."""

    def __init__(self, *, markets=("EU",), owner=None, product_code=None, listed: str | None = None, **product):
        self.actor = make_user(username=f"planner{next(_numbers)}", roles=("Steward",), is_staff=True)
        self.owner = owner or make_company(country="IE")
        fields = {
            "name": "Paracetamol 500 mg tablets",
            "common_name": "paracetamol",
            "dosage_form": "tablet",
            "strength": "500 mg",
            "pack_type": "blister",
            "pack_size": 20,
            **product,
        }
        self.product = make_product(
            owner=self.owner, markets=markets, **({"product_code": product_code} if product_code else {}), **fields
        )
        PackagingLevel.objects.bulk_create(
            [
                PackagingLevel(product=self.product, level=0, quantity=1),
                PackagingLevel(product=self.product, level=2, quantity=10, uses_sscc=True),
            ]
        )
        if listed is None:
            self.unit_pool = create_generated_pool(
                owner=self.owner, actor=self.actor, product=self.product, initial_fill=500
            )
        else:
            self.unit_pool = create_list_pool(
                owner=self.owner, actor=self.actor, product=self.product, source=SerialPool.Source.FILE
            )
            result = import_serials(
                pool=self.unit_pool, layout="csv", stream=io.BytesIO(listed.encode()), actor=self.actor
            )
            assert result.status == "done", result.errors
        self.sscc_pool = create_generated_pool(
            owner=self.owner,
            actor=self.actor,
            sscc_prefix=self.owner.prefixes.order_by("pk").first(),
            extension_digit="3",
            initial_fill=100,
        )
        self.site = make_location(company=self.owner, kind="site")
        self.line = make_location(company=self.owner, kind="line", parent=self.site)

    def batch(self, **overrides) -> Batch:
        fields = {
            "lot": f"L{next(_numbers)}",
            "expiry": "271231",
            "manufactured_on": dt.date(2025, 3, 1),
            "site": self.site,
            "lines": [self.line],
            **overrides,
        }
        return create_batch(product=self.product, actor=self.actor, **fields)

    def report(self, order, kind: str, lines: list) -> LineReport:
        report = apply_line_report(
            report_id=f"R-{next(_numbers)}", kind=kind, order=order, lines=lines, actor=self.actor
        )
        assert report.status == LineReport.Status.APPLIED, report.result
        return report

    def produce(self, batch: Batch, *, units=30, cases=3, decommission=(), complete=True):
        """Commission ``units`` units and ``cases`` cases, pack ten units per case, decommission ``decommission``
        ((unit index, reason) pairs). Returns (order, unit serials, case SSCCs)."""
        order = create_packaging_order(
            batch=batch, line=self.line, number=f"PO-{next(_numbers)}", planned_quantity=units, actor=self.actor
        )
        granted = request_order_serials(
            order=order,
            quantity=units,
            actor=self.actor,
            request_id=f"req-{next(_numbers)}",
            sscc_quantities={2: cases} if cases else None,
        )
        serials = [s.decode() for chunk in iter_serial_chunks(granted.units) for s in chunk.tolist()]
        ssccs = [s.decode() for chunk in iter_serial_chunks(granted.ssccs[2]) for s in chunk.tolist()] if cases else []
        lines = [{"product_code": self.product.product_code, "serial": s} for s in serials]
        lines += [{"sscc": sscc, "level": 2} for sscc in ssccs]
        self.report(order, "commissioning", lines)
        for i, sscc in enumerate(ssccs):
            children = [{"product_code": self.product.product_code, "serial": s} for s in serials[i * 10 : i * 10 + 10]]
            if children:
                self.report(order, "aggregation", [{"parent_sscc": sscc, "children": children}])
        if decommission:
            self.report(
                order,
                "decommissioning",
                [
                    {"product_code": self.product.product_code, "serial": serials[i], "reason": reason}
                    for i, reason in decommission
                ],
            )
        if complete:
            close_packaging_order(order=order, actor=self.actor, reason="run finished")
            transition_batch(batch=batch, status=Batch.Status.COMPLETED, actor=self.actor)
        batch.refresh_from_db()
        return order, serials, ssccs

    def ship(self, order, ssccs) -> LineReport:
        return self.report(order, "shipping", [{"sscc": sscc} for sscc in ssccs])


def build(market, batch, **kwargs) -> tuple[dict | bytes, object]:
    out = io.BytesIO()
    built = build_report(market=market, batch=batch, out=out, **kwargs)
    data = out.getvalue()
    return (json.loads(data) if built.content_type == "application/json" else data), built


def messages(exc: ReportRefused) -> list[tuple[str, str]]:
    return [(p.field, p.message) for p in exc.problems]


def refused(market, batch, **kwargs) -> list[tuple[str, str]]:
    with pytest.raises(ReportRefused) as caught:
        build_report(market=market, batch=batch, out=io.BytesIO(), **kwargs)
    assert caught.value.details["problems"] == [{"field": f, "message": m} for f, m in messages(caught.value)]
    return messages(caught.value)


def checked(**kwargs) -> list[tuple[str, str]]:
    return [(p.field, p.message) for p in check_report(**kwargs)]


def de_market(**overrides) -> Market:
    """A member state served by the EU hub whose packs print a national number (Germany: PZN under AI 710)."""
    return make_market(
        code="DE", name="Germany", reporting_format=Market.ReportingFormat.EU_HUB, national_number_ai="710", **overrides
    )


# --- EU hub -----------------------------------------------------------------------------------------------------------


def test_eu_hub_document_has_master_data_the_printed_expiry_and_each_serial_once_with_its_state():
    de = de_market()
    scene = Scene(markets=("EU", de))
    ProductNationalCode.objects.create(product=scene.product, market=de, ai="710", value="03752864")
    batch = scene.batch(expiry="261200")  # day 00: end of month, printed as such
    _, serials, _ = scene.produce(batch, decommission=[(3, "line_reject"), (4, "sample")])
    eu = get_market("EU")

    document, built = build(eu, batch)

    assert document["productMasterData"] == {
        "productCode": scene.product.product_code,
        "productCodeScheme": "GTIN",
        "productName": "Paracetamol 500 mg tablets",
        "commonName": "paracetamol",
        "pharmaForm": "tablet",
        "strength": "500 mg",
        "packType": "blister",
        "packSize": 20,
        "mah": {"name": scene.owner.name, "country": "IE", "gln": None},
        "targetMarkets": ["EU", "DE"],
        "nationalCodes": [{"market": "DE", "ai": "710", "value": "03752864"}],
    }
    assert document["batch"]["batchId"] == batch.lot
    assert document["batch"]["expiryDate"] == "261200"
    packs = document["batch"]["packs"]
    # The line reject never left the line; the sample is uploaded as such; every other unit is Active, each once.
    assert [p["serialNumber"] for p in packs] == sorted(set(serials) - {serials[3]})
    states = {p["serialNumber"]: p["state"] for p in packs}
    assert states[serials[4]] == "Sample"
    assert sorted(set(states.values())) == ["Active", "Sample"]
    assert document["batch"]["packCount"] == built.items == 29
    assert (built.kind, built.content_type, len(built.sha256)) == ("eu_hub", "application/json", 64)


def test_eu_hub_lists_every_master_data_problem_by_field_with_the_fix():
    de = de_market()
    owner = make_company(country="")
    scene = Scene(markets=("EU", de), owner=owner, common_name="", dosage_form="", pack_size=None)
    batch = scene.batch()
    scene.produce(batch)
    code = scene.product.product_code

    problems = refused(get_market("EU"), batch)

    assert problems == [
        ("product.common_name", f"product {code}: common name (INN) missing — EU needs it; fill it in Products."),
        ("product.dosage_form", f"product {code}: pharmaceutical form missing — EU needs it; fill it in Products."),
        ("product.pack_size", f"product {code}: pack size missing — EU needs it; fill it in Products."),
        (
            "product.owner.country",
            f"MAH {owner.name}: country missing — the EU hub registers the MAH with its country; set it in Companies.",
        ),
        (
            "product.national_codes.DE",
            f"product {code}: national code for DE (AI 710) missing — add it in Products → National codes.",
        ),
    ]


def test_eu_hub_refuses_a_national_code_outside_the_ai_syntax():
    de = de_market()
    scene = Scene(markets=("EU", de))
    ProductNationalCode.objects.create(product=scene.product, market=de, ai="710", value="0375 2864")
    batch = scene.batch()
    scene.produce(batch)

    ((field, message),) = refused(get_market("EU"), batch)

    assert field == "product.national_codes.DE"
    assert message.startswith(f"product {scene.product.product_code}: national code for DE: AI (710)")
    assert "' ' (U+0020) at position 5" in message
    assert message.endswith("Correct it in Products → National codes.")


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (
            "2612",
            "batch {lot}: expiry 2612 is not YYMMDD — enter the expiry exactly as printed on the pack, six digits "
            "(day 00 = end of month).",
        ),
        (
            "261301",
            "batch {lot}: AI (17) expiry date 261301 has month 13 — use YYMMDD with a month from 01 to 12. Enter the "
            "expiry exactly as printed on the pack.",
        ),
        (
            "270231",
            "batch {lot}: AI (17) expiry date 270231 has day 31, which does not exist in month 02 — use a day from 00 "
            "(end of month) or 01 to 28. Enter the expiry exactly as printed on the pack.",
        ),
    ],
)
def test_eu_hub_refuses_an_expiry_that_is_not_the_printed_yymmdd(stored, expected):
    scene = Scene()
    batch = scene.batch()
    scene.produce(batch)
    # Master data that slipped in before the checks existed (or was loaded by SQL): the report must not pass it on.
    Batch.objects.filter(pk=batch.pk).update(expiry=stored)
    batch.refresh_from_db()

    assert refused(get_market("EU"), batch) == [("batch.expiry", expected.format(lot=batch.lot))]


def test_eu_hub_refuses_a_serial_reported_twice_in_the_batch():
    scene = Scene()
    batch = scene.batch()
    _, serials, _ = scene.produce(batch, cases=0)
    # A pack of another product with the same serial recorded into this batch (a mis-keyed import): the upload
    # would carry that serial twice under the batch's product code.
    other = make_product(owner=scene.owner, markets=("EU",))
    Pack.objects.create(
        pool=scene.unit_pool,
        index=999,
        product_code=other.product_code,
        serial=serials[0],
        batch=batch,
        commissioned_at=batch.created_at,
    )

    assert refused(get_market("EU"), batch) == [
        (
            "packs.product_code",
            f"serial {serials[0]} of batch {batch.lot} carries product code {other.product_code}, not "
            f"{scene.product.product_code}",
        ),
        ("packs.serial", f"serial {serials[0]} appears 2 times in batch {batch.lot}"),
    ]


def test_eu_hub_writer_refuses_a_document_that_would_carry_a_serial_twice(monkeypatch):
    scene = Scene()
    batch = scene.batch()
    _, serials, _ = scene.produce(batch, cases=0)
    real_rows = eu_hub_module.stream_rows

    def rows_with_a_repeat(queryset, *fields):
        rows = list(real_rows(queryset, *fields))
        return iter(rows[:2] + rows[1:])  # the second serial comes twice, as a broken cursor would repeat it

    monkeypatch.setattr(eu_hub_module, "stream_rows", rows_with_a_repeat)

    second = sorted(serials)[1]
    assert refused(get_market("EU"), batch) == [
        ("packs.serial", f"serial {second} appears twice in the EU hub upload; each serial is reported once")
    ]


def test_eu_hub_refuses_a_batch_still_in_production_and_one_without_packs():
    scene = Scene()
    running = scene.batch()
    scene.produce(running, complete=False)
    empty = scene.batch()
    order = create_packaging_order(
        batch=empty, line=scene.line, number="PO-EMPTY", planned_quantity=5, actor=scene.actor
    )
    transition_batch(batch=empty, status=Batch.Status.IN_PRODUCTION, actor=scene.actor)
    close_packaging_order(order=order, actor=scene.actor, reason="line down, nothing packed")
    transition_batch(batch=empty, status=Batch.Status.COMPLETED, actor=scene.actor)
    empty.refresh_from_db()

    assert refused(get_market("EU"), running) == [
        (
            "batch.status",
            f"batch {running.lot} is in production; EU reports are sent for a batch that is completed or reconciled "
            "or released.",
        )
    ]
    assert refused(get_market("EU"), empty) == [
        ("packs", f"batch {empty.lot} has no commissioned units to report — apply its commissioning reports first.")
    ]


def test_report_refuses_a_market_the_batch_is_not_for():
    scene = Scene(markets=("EU",))
    batch = scene.batch()
    scene.produce(batch)
    pk = get_market("PK")

    problems = checked(market=pk, batch=batch)

    assert problems[:2] == [
        (
            "product.markets",
            f"product {scene.product.product_code} is not registered for market PK — add PK to the product's markets "
            "in Products.",
        ),
        ("batch.markets", f"batch {batch.lot} is not meant for market PK — add PK to the batch's markets."),
    ]


def test_report_for_a_format_without_a_builder_is_refused_with_the_formats_that_have_one():
    market = make_market(code="XX", reporting_format=Market.ReportingFormat.EPCIS_20)
    scene = Scene(markets=(market,))
    batch = scene.batch()

    assert refused(market, batch) == [
        (
            "market.reporting_format",
            "market XX reports as EPCIS 2.0 JSON-LD, for which no report is built here; choose one of: EU hub (EMVS) "
            "upload, EPCIS 1.2 XML, MDLP / Chestny Znak operator reports, DRAP portal, RSD (Saudi) reporting.",
        )
    ]


# --- RU MDLP ----------------------------------------------------------------------------------------------------------


def ru_serials(count: int, *, crypto: bool = True) -> str:
    rows = [f"RU{i:011d}" for i in range(count)]
    if not crypto:
        return "serial\n" + "\n".join(rows) + "\n"
    return "serial,91,92\n" + "".join(f"{s},K{i:03d},{CRYPTO_CODE}\n" for i, s in enumerate(rows))


def test_ru_report_carries_each_unit_with_its_crypto_key_code_and_case():
    scene = Scene(markets=("RU",), listed=ru_serials(40))
    batch = scene.batch()
    _, serials, ssccs = scene.produce(batch, units=20, cases=2, decommission=[(19, "destroyed")])
    # The destroyed unit left its case and is withdrawn by another report: 19 units enter circulation.

    document, built = build(get_market("RU"), batch)

    assert {k: v for k, v in document.items() if k != "sgtins"} == {
        "format": "mdlp-introduction",
        "formatVersion": "1.0",
        "market": "RU",
        "gtin": scene.product.product_code,
        "productName": "Paracetamol 500 mg tablets",
        "batch": batch.lot,
        "expirationDate": "271231",
        "productionDate": "2025-03-01",
        "unitCount": 19,
    }
    first = document["sgtins"][0]
    assert first == {
        "sgtin": f"{scene.product.product_code}{serials[0]}",
        "serial": serials[0],
        "cryptoKey": "K000",
        "cryptoCode": CRYPTO_CODE,
        "parentSscc": ssccs[0],
    }
    assert [s["serial"] for s in document["sgtins"]] == serials[:19]
    assert built.items == 19


def test_ru_report_lists_serials_without_their_crypto_tail_and_the_missing_production_date():
    # The serials were imported while the product was sold in Pakistan only; RU was added to it afterwards, so they
    # came without the operator's crypto key and code.
    scene = Scene(markets=("PK",), listed=ru_serials(40, crypto=False))
    ru = get_market("RU")
    scene.product.markets.add(ru)
    batch = scene.batch(markets=[ru], manufactured_on=None)
    _, serials, _ = scene.produce(batch, units=10, cases=1)

    problems = refused(ru, batch)

    assert problems[0] == (
        "batch.manufactured_on",
        f"batch {batch.lot}: manufacturing date missing — RU reports carry it; set it on the batch.",
    )
    assert problems[1:] == [
        (
            "packs.crypto",
            f"serial {serial}: crypto key (AI 91) and crypto code (AI 92) missing — the serial came without it; import "
            "the operator's codes with their crypto tail into the list pool",
        )
        for serial in serials
    ]


def test_ru_report_refuses_serials_of_the_wrong_length_and_unaggregated_units():
    scene = Scene(
        markets=("RU",), listed="serial,91,92\n" + "".join(f"R{i:05d},K{i:03d},{CRYPTO_CODE}\n" for i in range(20))
    )
    batch = scene.batch()
    _, serials, _ = scene.produce(batch, units=2, cases=0)

    assert refused(get_market("RU"), batch) == [
        *[
            (
                "packs.serial",
                f"serial {serial} is not 13 characters of GS1 set 82 — RU serials are issued by the operator with "
                "exactly that length",
            )
            for serial in serials
        ],
        *[
            (
                "packs.parent",
                f"serial {serial} of batch {batch.lot} is in no SSCC case — RU requires aggregation: report its "
                "packing before reporting the batch",
            )
            for serial in serials
        ],
    ]


# --- PK DRAP ----------------------------------------------------------------------------------------------------------


def test_pk_report_has_the_batch_production_data_and_every_serial():
    scene = Scene(markets=("PK",))
    batch = scene.batch()
    _, serials, _ = scene.produce(batch, units=12, cases=0, decommission=[(0, "line_reject"), (1, "sample")])

    document, built = build(get_market("PK"), batch)

    assert document["product"] == {
        "gtin": scene.product.product_code,
        "name": "Paracetamol 500 mg tablets",
        "genericName": "paracetamol",
        "dosageForm": "tablet",
        "strength": "500 mg",
        "packSize": 20,
    }
    assert document["manufacturer"] == {"name": scene.owner.name, "site": scene.site.name, "siteGln": scene.site.gln}
    assert document["batch"] == {"batchNo": batch.lot, "manufacturingDate": "2025-03-01", "expiryDate": "271231"}
    assert document["production"] == {
        "commissioned": 12,
        "inCirculation": 10,
        "decommissioned": {"line_reject": 1, "sample": 1},
    }
    statuses = {s["serial"]: s["status"] for s in document["serials"]}
    assert sorted(statuses) == sorted(serials)
    assert (statuses[serials[0]], statuses[serials[2]]) == ("decommissioned", "commissioned")
    assert built.items == 12


def test_pk_report_needs_the_manufacturing_date_and_site():
    scene = Scene(markets=("PK",), strength="")
    batch = scene.batch(manufactured_on=None, site=None, lines=[])
    # Without a site on the batch the line may be any of the owner's lines.
    scene.produce(batch, units=3, cases=0)

    assert refused(get_market("PK"), batch) == [
        (
            "product.strength",
            f"product {scene.product.product_code}: strength missing — PK needs it; fill it in Products.",
        ),
        (
            "batch.manufactured_on",
            f"batch {batch.lot}: manufacturing date missing — DRAP batch production data starts with it; set it on "
            "the batch.",
        ),
        (
            "batch.site",
            f"batch {batch.lot}: manufacturing site missing — set the site the batch was made at on the batch.",
        ),
    ]


# --- US DSCSA: the master-data checks (the document itself is tested with the EPCIS writer below) -----------------


def us_scene(**kwargs) -> Scene:
    owner = make_company(prefixes=["0312345"], country="US")
    return Scene(markets=("US",), owner=owner, product_code=gs1.gtin_from_ndc(NDC), **kwargs)


def test_us_report_needs_the_ndc_and_a_shipment():
    scene = us_scene()
    batch = scene.batch()
    scene.produce(batch)
    code = scene.product.product_code

    assert checked(market=get_market("US"), batch=batch) == [
        (
            "product.national_codes.US",
            f"product {code}: national code for US (AI 715) missing — add it in Products → National codes.",
        ),
        ("shipping_report", f"US reports a shipment: give the shipping report (its report id) of batch {batch.lot}."),
    ]


def test_us_report_refuses_a_gtin_that_does_not_carry_the_ndc_and_a_shipment_of_another_batch():
    scene = us_scene()
    ProductNationalCode.objects.create(product=scene.product, market=get_market("US"), ai="715", value="1234567891")
    batch, other = scene.batch(), scene.batch()
    scene.produce(batch)
    order, _, ssccs = scene.produce(other, complete=False)
    shipment = scene.ship(order, ssccs)

    problems = checked(market=get_market("US"), batch=batch, shipping_report=shipment)

    assert problems == [
        (
            "product.product_code",
            f"product {scene.product.product_code}: the GTIN does not carry the product's NDC 1234567891 (its GTIN "
            f"would be {gs1.gtin_from_ndc('1234567891')}) — correct the NDC in Products → National codes or the "
            "product code.",
        ),
        ("shipping_report", f"shipping report {shipment.report_id} did not ship batch {batch.lot}."),
    ]


# --- SA RSD: the master-data and aggregation checks ---------------------------------------------------------------


def test_sa_report_needs_every_unit_in_an_sscc_case_and_randomised_serials():
    scene = Scene(markets=("SA",))
    SerialPool.objects.filter(pk=scene.unit_pool.pk).update(randomised=False)
    batch = scene.batch()
    _, serials, _ = scene.produce(batch, units=12, cases=1)  # ten units in the case, two left out

    problems = checked(market=get_market("SA"), batch=batch)

    assert problems == [
        (
            "packs.serial",
            f"12 serials of batch {batch.lot} come from sequential pools ({scene.unit_pool.name}); SA requires "
            "randomised serials — pack the batch with serials from a randomised pool.",
        ),
        *[
            (
                "packs.parent",
                f"serial {serial} of batch {batch.lot} is in no SSCC case — SA requires aggregation: report its "
                "packing before reporting the batch",
            )
            for serial in sorted(serials[10:])
        ],
    ]


# --- the EPCIS documents (US DSCSA shipment, SA RSD batch), validated against the official XSDs -------------------

EPCIS_12 = "{urn:epcglobal:epcis:xsd:1}"


def test_us_report_is_the_epcis_1_2_document_of_the_shipment():
    scene = us_scene()
    us = get_market("US")
    ProductNationalCode.objects.create(product=scene.product, market=us, ai="715", value=NDC)
    batch = scene.batch()
    order, serials, ssccs = scene.produce(batch, units=20, cases=2, complete=False)
    shipment = scene.ship(order, ssccs[:1])  # one case of ten units leaves
    close_packaging_order(order=order, actor=scene.actor, reason="run finished")
    transition_batch(batch=batch, status=Batch.Status.COMPLETED, actor=scene.actor)
    batch.refresh_from_db()

    data, built = build(us, batch, shipping_report=shipment)

    root = etree.fromstring(data)
    assert root.tag == f"{EPCIS_12}EPCISDocument"
    steps = [step.text for step in root.iter("bizStep")]
    assert "urn:epcglobal:cbv:bizstep:shipping" in steps
    assert "urn:epcglobal:cbv:bizstep:commissioning" in steps
    epcs = {epc.text for epc in root.iter("epc")}
    prefix = scene.product.company_prefix_length
    assert gs1.sgtin_urn(scene.product.product_code, serials[0], prefix) in epcs
    assert gs1.sgtin_urn(scene.product.product_code, serials[15], prefix) not in epcs  # in the case left behind
    assert (built.kind, built.content_type, built.items) == ("us_dscsa", "application/xml", 11)


def test_sa_report_is_an_epcis_document_with_the_sscc_aggregation():
    scene = Scene(markets=("SA",))
    batch = scene.batch()
    _, _, ssccs = scene.produce(batch, units=20, cases=2)

    data, built = build(get_market("SA"), batch)

    root = etree.fromstring(data)
    assert root.tag == f"{EPCIS_12}EPCISDocument"
    parents = {parent.text for parent in root.iter("parentID")}
    prefix_length = len(scene.sscc_pool.sscc_prefix)
    assert parents == {gs1.sscc_urn(sscc, prefix_length) for sscc in ssccs}
    assert built.items == 22  # 20 units and 2 cases
