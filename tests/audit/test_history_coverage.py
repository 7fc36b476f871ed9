"""Every regulated record keeps its history (who, when, what, why), or is exempt here for a stated reason.

A model added to masterdata, serialization, partners or audit without ``history = HistoricalRecords()`` fails
``test_every_model_has_history_or_a_justified_exemption`` until it gets history or a line in ``HISTORY_EXEMPT``.
"""

import pytest
from django.apps import apps
from simple_history.models import HistoricalChanges, registered_models

from audit import chain
from serialization.models import Allocation, PoolFill, Reconciliation, Release
from serialization.services import allocate_serials, create_generated_pool, fill_pool, release_serials
from tests.factories import make_product, make_user

REGULATED_APPS = ("masterdata", "serialization", "partners", "audit")

# label → why it has no history of its own. One line each; say what records its changes instead.
HISTORY_EXEMPT: dict[str, str] = {
    # serialization: per-serial and per-range rows, written set-based in bulk; their owners carry the history
    "serialization.allocationrange": "Index range of an allocation, written with it set-based; Allocation has history.",
    "serialization.freerange": "Released index range, derived bookkeeping; each release is a Release row with history.",
    "serialization.listedserial": "Imported serials, written by COPY; each import is a PoolFill with history.",
    "serialization.pack": "Per-unit rows written set-based by line reports; every change is a PackEvent row.",
    "serialization.packevent": "Append-only event log of packs (itself the history), written set-based by COPY.",
    "serialization.partnersegment": "Append-only mapping written with its MAH allocation, which has history.",
    "serialization.exportjob": "Work item of the export queue; who exported what is in the access log (record_access).",
    "serialization.importjob": "Work item of the import queue; what it imported is a PoolFill row with history.",
    "serialization.capturejob": "Work item of the EPCIS capture queue; what it applied are LineReport rows.",
    "serialization.epcisexportjob": "Work item of the EPCIS export queue; the download is in the access log.",
    "serialization.linereport": "Written by its services only (read-only in admin, API); PackEvents trail the packs.",
    # audit: logs and the chain itself
    "audit.accessevent": "Itself an append-only log; rows are never changed or deleted.",
    "audit.apitoken": "Creation and revocation are access-log events with the actor; the key hash must not be copied.",
    "audit.incidentnote": "Append-only notes with author and time; never edited (the service offers no edit).",
    "audit.incidentlink": "Append-only links of an incident; added with the incident or by a service, never edited.",
    "audit.chainlink": "The tamper-evidence over history rows; a history of it would chain itself.",
    "audit.chainlayout": "Column lists the chain hashes over; append-only, part of the chain.",
    "audit.chainhead": "The chain's end pointer, rewritten by every seal; verified against the links.",
}


def concrete_models(app_label: str) -> list:
    return [
        model
        for model in apps.get_app_config(app_label).get_models()
        if not model._meta.proxy and not issubclass(model, HistoricalChanges)
    ]


def has_history(model) -> bool:
    return registered_models.get(model._meta.db_table) is model


def test_every_model_has_history_or_a_justified_exemption():
    missing = [
        model._meta.label_lower
        for app in REGULATED_APPS
        for model in concrete_models(app)
        if not has_history(model) and model._meta.label_lower not in HISTORY_EXEMPT
    ]

    assert missing == [], (
        f"{missing} keep no history: add `history = HistoricalRecords()` (and its migration), or add each to "
        "HISTORY_EXEMPT in tests/audit/test_history_coverage.py with one line saying what records its changes."
    )


def test_exemptions_name_existing_models_that_really_have_no_history():
    labels = {model._meta.label_lower: model for app in REGULATED_APPS for model in concrete_models(app)}

    stale = [label for label in HISTORY_EXEMPT if label not in labels or has_history(labels[label])]

    assert stale == [], f"{stale}: gone, or has history now — remove from HISTORY_EXEMPT"


def test_every_exemption_is_justified_in_one_line():
    assert [label for label, why in HISTORY_EXEMPT.items() if len(why) < 20 or "\n" in why] == []


def test_every_history_row_records_user_time_and_reason():
    # Many-to-many history rows hang off their parent's history row, which holds who, when and why.
    history_models = [m for m in chain.history_models() if not chain.is_m2m_history_model(m)]

    assert history_models
    for model in history_models:
        fields = {f.name for f in model._meta.concrete_fields}
        assert {"history_user", "history_date", "history_change_reason", "history_type"} <= fields, model


@pytest.mark.django_db
def test_fills_and_releases_are_kept_in_history_with_their_author_and_reason_outside_a_request():
    steward = make_user()
    product = make_product()
    pool = create_generated_pool(owner=product.owner, actor=steward, product=product, initial_fill=100)
    fill_pool(pool=pool, quantity=50, actor=steward, reason="campaign 7")
    allocation = allocate_serials(pool=pool, quantity=20, actor=steward, request_id="r1", purpose="batch")

    release_serials(allocation=allocation, actor=steward, reason="line stopped early")

    fill = PoolFill.objects.filter(pool=pool).order_by("-pk").first().history.get()
    assert (fill.history_type, fill.history_user, fill.history_change_reason, fill.quantity) == (
        "+",
        steward,
        "campaign 7",
        50,
    )
    release = Release.objects.get(allocation=allocation).history.get()
    assert (release.history_user, release.history_change_reason, release.quantity) == (
        steward,
        "line stopped early",
        20,
    )
    assert Allocation.objects.get(pk=allocation.pk).history.count() == 2  # granted, then partly released


@pytest.mark.django_db
def test_a_reconciliation_is_kept_in_history_with_who_performed_it():
    from serialization.services.reconciliation import reconcile_batch
    from tests.serialization.test_batches import Plant
    from tests.serialization.test_reconciliation import produce

    plant = Plant()
    batch, _, _ = produce(plant)

    reconciliation = reconcile_batch(batch=batch, actor=plant.actor)

    created = Reconciliation.objects.get(pk=reconciliation.pk).history.earliest()
    assert (created.history_type, created.history_user, created.passed) == ("+", plant.actor, True)
