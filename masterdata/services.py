"""Writes of master data. Every public function owns its transaction, validates with ``full_clean()`` (so the
models' ``clean()`` and constraints produce field-named errors) and stamps the history rows with the actor.

Conventions shared by all functions here:

- ``data`` holds model field values by field name (foreign keys as model instances); unknown names are a
  programming error (``ValueError``), invalid values a ``django.core.exceptions.ValidationError`` whose keys name
  the field — nested rows as ``"<relation>.<index>.<field>"``, e.g. ``"national_codes.0.value"``.
- Nested collections (prefixes, national codes, packaging levels) are the complete new set when given and left
  alone when ``None``: rows are matched on their natural key, updated in place, added or removed.
- Anything still referenced is never deleted or re-keyed: the caller gets :class:`ObjectInUse` (HTTP 409).
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, transaction
from django.db.models.deletion import ProtectedError, RestrictedError

from masterdata.exceptions import ObjectInUse
from masterdata.models import (
    Company,
    CompanyMembership,
    CompanyPrefix,
    Location,
    Market,
    PackagingLevel,
    Product,
    ProductNationalCode,
)
from masterdata.permissions import sync_company_group

COMPANY_FIELDS = frozenset({"name", "is_mah", "is_cmo", "is_3pl", "is_wholesaler", "country", "gln"})
LOCATION_FIELDS = frozenset(
    {"company", "kind", "name", "parent", "gln", "gln_extension", "address", "country", "is_active"}
)
MARKET_FIELDS = frozenset(
    {
        "code",
        "name",
        "serial_alphabet",
        "serial_length",
        "randomisation_required",
        "max_guess_probability",
        "national_number_ai",
        "extra_serial_parameters",
        "aggregation_required",
        "retention_years_after_expiry",
        "retention_years_after_release",
        "reporting_format",
    }
)
PRODUCT_FIELDS = frozenset(
    {
        "owner",
        "code_schema",
        "product_code",
        "company_prefix_length",
        "name",
        "common_name",
        "dosage_form",
        "strength",
        "pack_size",
        "pack_type",
        "is_active",
    }
)
# Fields that identify a product or location to the outside world (serials, EPCIS documents, regulators' hubs):
# once other records refer to the object they may no longer change.
PRODUCT_IDENTITY_FIELDS = ("owner", "code_schema", "product_code", "company_prefix_length")
LOCATION_IDENTITY_FIELDS = ("company", "gln", "gln_extension")


# --- helpers ------------------------------------------------------------------------------------------------------


def _assign(instance: models.Model, data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{type(instance).__name__} has no editable field(s) {', '.join(sorted(unknown))}.")
    for name, value in data.items():
        setattr(instance, name, value)


def _stamp(instance: models.Model, *, actor: AbstractBaseUser | None, reason: str) -> None:
    # simple-history reads these when it writes the history row, so the row names who did it and why even
    # outside a request (API token, management command, task).
    instance._history_user = actor
    if reason:
        instance._change_reason = reason


def _clean_and_save(instance: models.Model, *, actor, reason: str) -> None:
    _stamp(instance, actor=actor, reason=reason)
    instance.full_clean()
    instance.save()


def _clean_child(instance: models.Model, *, relation: str, index: int) -> None:
    """full_clean() a nested row, re-keying its errors to ``relation.index.field`` so the caller can point at it."""
    try:
        instance.full_clean()
    except ValidationError as exc:
        raise ValidationError(
            {
                (f"{relation}.{index}" if name == NON_FIELD_ERRORS else f"{relation}.{index}.{name}"): messages
                for name, messages in exc.message_dict.items()
            }
        ) from exc


def _describe(objects: Iterable[models.Model]) -> str:
    counts = Counter(type(obj) for obj in objects)
    return ", ".join(
        f"{count} {model._meta.verbose_name if count == 1 else model._meta.verbose_name_plural}"
        for model, count in sorted(counts.items(), key=lambda item: item[0]._meta.label)
    )


def _external_references(instance: models.Model) -> list[str]:
    """Records of *other* apps that point at ``instance`` (pools, batches, packs …), described for a message.

    Master data does not know those apps; it only asks the reverse relations Django knows about.
    """
    found = []
    for relation in instance._meta.related_objects:
        if relation.related_model._meta.app_label == instance._meta.app_label or relation.many_to_many:
            continue
        if not (relation.one_to_many or relation.one_to_one):
            continue
        count = relation.related_model._base_manager.filter(**{relation.field.name: instance}).count()
        if count:
            verbose = relation.related_model._meta.verbose_name
            found.append(f"{count} {verbose if count == 1 else relation.related_model._meta.verbose_name_plural}")
    return found


def check_identity_change(*, instance: models.Model, changed_fields: Iterable[str]) -> None:
    """Refuse (``ObjectInUse``) to change identifying fields of an object other apps' records already refer to.

    A product code or GLN that has gone into serials, EPCIS documents or a regulator's hub must keep meaning the
    same thing; a new product or location is the way to get a new code.
    """
    changed = list(changed_fields)
    if not changed or instance.pk is None:
        return
    references = _external_references(instance)
    if references:
        raise ObjectInUse(
            f"{instance._meta.verbose_name.capitalize()} {instance} is already used by {', '.join(references)}; "
            f"its {', '.join(changed)} can no longer change. Create a new record instead.",
            field=changed[0],
        )


def _refuse_identity_change(instance: models.Model, stored: models.Model, fields: Iterable[str]) -> None:
    attnames = {name: instance._meta.get_field(name).attname for name in fields}
    check_identity_change(
        instance=stored,
        changed_fields=[
            name for name, attname in attnames.items() if getattr(instance, attname) != getattr(stored, attname)
        ],
    )


def _delete(instance: models.Model, *, actor, reason: str, label: str) -> None:
    _stamp(instance, actor=actor, reason=reason)
    try:
        # A savepoint, so a refused delete leaves the caller's transaction usable.
        with transaction.atomic():
            instance.delete()
    except (ProtectedError, RestrictedError) as exc:
        blockers = exc.protected_objects if isinstance(exc, ProtectedError) else exc.restricted_objects
        raise ObjectInUse(
            f"{label} {instance} cannot be deleted: it is still referenced by {_describe(blockers)}. "
            "Remove those references first, or mark it inactive instead.",
            details={"referenced_by": _describe(blockers)},
        ) from exc


def _lock(instance: models.Model) -> models.Model:
    """Lock the row being edited (parent before its nested rows) and return its stored state."""
    return type(instance)._base_manager.select_for_update().get(pk=instance.pk)


# --- companies ------------------------------------------------------------------------------------------------------


def create_company(
    *, actor: AbstractBaseUser | None, data: Mapping[str, Any], prefixes: Iterable[str] = (), reason: str = ""
) -> Company:
    """Create a company and its GS1 company prefixes in one step."""
    company = Company()
    _assign(company, data, COMPANY_FIELDS)
    with transaction.atomic():
        _clean_and_save(company, actor=actor, reason=reason)
        _sync_prefixes(company, list(prefixes), actor=actor, reason=reason)
    return company


def update_company(
    *,
    company: Company,
    actor: AbstractBaseUser | None,
    data: Mapping[str, Any],
    prefixes: Iterable[str] | None = None,
    reason: str = "",
) -> Company:
    """Change a company's fields and, when ``prefixes`` is given, make its prefixes exactly that list."""
    _assign(company, data, COMPANY_FIELDS)
    with transaction.atomic():
        _lock(company)
        _clean_and_save(company, actor=actor, reason=reason)
        if prefixes is not None:
            _sync_prefixes(company, list(prefixes), actor=actor, reason=reason)
    return company


def _sync_prefixes(company: Company, prefixes: list[str], *, actor, reason: str) -> None:
    existing = {p.prefix: p for p in CompanyPrefix.objects.filter(company=company)}
    for stale in [p for value, p in existing.items() if value not in prefixes]:
        check_prefix_removal(prefix=stale)
        _delete(stale, actor=actor, reason=reason, label="Company prefix")
    seen: set[str] = set()
    for index, value in enumerate(prefixes):
        if value in seen:
            raise ValidationError({f"prefixes.{index}.prefix": f"Prefix {value} is listed twice; list it once."})
        seen.add(value)
        if value in existing:
            continue
        prefix = CompanyPrefix(company=company, prefix=value)
        _stamp(prefix, actor=actor, reason=reason)
        _clean_child(prefix, relation="prefixes", index=index)
        prefix.save()
    # The company's own cached prefixes are stale now; prefix_of() must see the new set.
    if hasattr(company, "_prefetched_objects_cache"):
        company._prefetched_objects_cache.pop("prefixes", None)


def check_prefix_removal(*, prefix: CompanyPrefix) -> None:
    """Refuse (``ObjectInUse``) to remove a prefix that still carries the company's GTINs or GLNs: without it their
    EPC URNs cannot be formed."""
    company = prefix.company
    in_use = []
    codes = Product.objects.filter(owner=company, code_schema=Product.CodeSchema.GTIN).values_list(
        "product_code", flat=True
    )
    product_count = sum(1 for code in codes if code[1:].startswith(prefix.prefix))  # skip the indicator digit
    if product_count:
        in_use.append(f"{product_count} product(s)")
    location_count = Location.objects.filter(company=company, gln__startswith=prefix.prefix).count()
    if location_count:
        in_use.append(f"{location_count} location(s)")
    in_use += _external_references(prefix)
    if in_use:
        raise ObjectInUse(
            f"Company prefix {prefix.prefix} of {company} is still used by {', '.join(in_use)}; keep it in the list.",
            field="prefixes",
        )


def delete_company(*, company: Company, actor: AbstractBaseUser | None, reason: str = "") -> None:
    """Delete a company that nothing refers to any more (its own unused prefixes go with it)."""
    with transaction.atomic():
        _lock(company)
        for prefix in CompanyPrefix.objects.filter(company=company):
            if _external_references(prefix):
                break  # the company delete below reports every blocker in one message
            _delete(prefix, actor=actor, reason=reason, label="Company prefix")
        _delete(company, actor=actor, reason=reason, label="Company")


def assign_membership(
    *, user: AbstractBaseUser, company: Company, actor: AbstractBaseUser | None, reason: str = ""
) -> CompanyMembership:
    """Confine ``user`` to ``company`` (a CMO's staff, an MAH's staff); replaces any earlier membership. The user
    moves into the company's group at once, so what partners shared with the company (object permissions on the
    group) reaches them, and what their former company was granted no longer does."""
    with transaction.atomic():
        membership = CompanyMembership.objects.select_for_update().filter(user=user).first()
        if membership is None:
            membership = CompanyMembership(user=user)
        elif membership.company_id == company.pk:
            sync_company_group(company)
            return membership
        former = membership.company if membership.company_id else None
        membership.company = company
        _clean_and_save(membership, actor=actor, reason=reason)
        for changed in filter(None, (former, company)):
            sync_company_group(changed)
    return membership


def remove_membership(*, membership: CompanyMembership, actor: AbstractBaseUser | None, reason: str = "") -> None:
    """End ``membership``: the user leaves the company's group and with it everything shared with the company.

    A user without a membership is the operator's own staff, who see every company; so a partner's user (not
    ``is_staff``) who leaves a company is deactivated as well — to move them, assign the new company instead."""
    with transaction.atomic():
        company, user = membership.company, membership.user
        _stamp(membership, actor=actor, reason=reason)
        membership.delete()
        sync_company_group(company)
        if not user.is_staff and user.is_active:
            user.is_active = False
            user.save(update_fields=["is_active"])


# --- locations ------------------------------------------------------------------------------------------------------


def create_location(*, actor: AbstractBaseUser | None, data: Mapping[str, Any], reason: str = "") -> Location:
    location = Location()
    _assign(location, data, LOCATION_FIELDS)
    with transaction.atomic():
        _clean_and_save(location, actor=actor, reason=reason)
    return location


def update_location(
    *, location: Location, actor: AbstractBaseUser | None, data: Mapping[str, Any], reason: str = ""
) -> Location:
    _assign(location, data, LOCATION_FIELDS)
    with transaction.atomic():
        stored = _lock(location)
        _stamp(location, actor=actor, reason=reason)
        location.full_clean()  # first, so the comparison below sees normalised codes
        _refuse_identity_change(location, stored, LOCATION_IDENTITY_FIELDS)
        location.save()
    return location


def delete_location(*, location: Location, actor: AbstractBaseUser | None, reason: str = "") -> None:
    with transaction.atomic():
        _delete(location, actor=actor, reason=reason, label="Location")


# --- markets --------------------------------------------------------------------------------------------------------


def create_market(*, actor: AbstractBaseUser | None, data: Mapping[str, Any], reason: str = "") -> Market:
    market = Market()
    _assign(market, data, MARKET_FIELDS)
    with transaction.atomic():
        _clean_and_save(market, actor=actor, reason=reason)
    return market


def update_market(
    *, market: Market, actor: AbstractBaseUser | None, data: Mapping[str, Any], reason: str = ""
) -> Market:
    _assign(market, data, MARKET_FIELDS)
    with transaction.atomic():
        _lock(market)
        _clean_and_save(market, actor=actor, reason=reason)
    return market


def delete_market(*, market: Market, actor: AbstractBaseUser | None, reason: str = "") -> None:
    with transaction.atomic():
        _lock(market)
        # Products reach markets through a many-to-many, which Django would silently unlink: refuse explicitly.
        product_count = market.products.count()
        if product_count:
            raise ObjectInUse(
                f"Market {market.code} cannot be deleted: {product_count} product(s) are sold there. "
                "Remove the market from those products first.",
                details={"referenced_by": f"{product_count} products"},
            )
        _delete(market, actor=actor, reason=reason, label="Market")


# --- products -------------------------------------------------------------------------------------------------------


def create_product(
    *,
    actor: AbstractBaseUser | None,
    data: Mapping[str, Any],
    markets: Iterable[Market] = (),
    national_codes: Iterable[Mapping[str, Any]] = (),
    packaging_levels: Iterable[Mapping[str, Any]] = (),
    reason: str = "",
) -> Product:
    """Create a product with its markets, national codes (``market``, ``ai``, ``value``) and packaging levels
    (``level``, ``gtin``, ``quantity``, ``uses_sscc``)."""
    product = Product()
    _assign(product, data, PRODUCT_FIELDS)
    with transaction.atomic():
        _clean_and_save(product, actor=actor, reason=reason)
        markets = list(markets)
        if markets:
            product.markets.set(markets)
        _sync_national_codes(product, list(national_codes), actor=actor, reason=reason)
        _sync_packaging_levels(product, list(packaging_levels), actor=actor, reason=reason)
    return product


def update_product(
    *,
    product: Product,
    actor: AbstractBaseUser | None,
    data: Mapping[str, Any],
    markets: Iterable[Market] | None = None,
    national_codes: Iterable[Mapping[str, Any]] | None = None,
    packaging_levels: Iterable[Mapping[str, Any]] | None = None,
    reason: str = "",
) -> Product:
    """Change a product; nested collections given are made exactly so, those left ``None`` are untouched.

    The product code and what it depends on are frozen once another app's records (pools, batches …) use it.
    """
    _assign(product, data, PRODUCT_FIELDS)
    with transaction.atomic():
        stored = _lock(product)
        _stamp(product, actor=actor, reason=reason)
        product.full_clean()  # first, so the comparison below sees normalised codes
        _refuse_identity_change(product, stored, PRODUCT_IDENTITY_FIELDS)
        product.save()
        if markets is not None:
            product.markets.set(list(markets))
        if national_codes is not None:
            _sync_national_codes(product, list(national_codes), actor=actor, reason=reason)
        if packaging_levels is not None:
            _sync_packaging_levels(product, list(packaging_levels), actor=actor, reason=reason)
    return product


def _sync_children(
    product: Product,
    items: list[Mapping[str, Any]],
    *,
    model: type[models.Model],
    relation: str,
    key: tuple[str, ...],
    fields: frozenset[str],
    actor,
    reason: str,
) -> None:
    def natural_key(values: Mapping[str, Any] | models.Model) -> tuple:
        get = values.get if isinstance(values, Mapping) else lambda name: getattr(values, name)
        return tuple(get(name).pk if isinstance(get(name), models.Model) else get(name) for name in key)

    existing = {natural_key(row): row for row in model.objects.filter(product=product)}
    wanted = {}
    for index, item in enumerate(items):
        item_key = natural_key(item)
        if item_key in wanted:
            raise ValidationError({f"{relation}.{index}": f"This {relation.replace('_', ' ')[:-1]} is listed twice."})
        wanted[item_key] = index
    # Removals first, so a value (e.g. a GTIN) can move from a removed row to a new one within one edit.
    for item_key, row in existing.items():
        if item_key not in wanted:
            _delete(row, actor=actor, reason=reason, label=model._meta.verbose_name.capitalize())
    for index, item in enumerate(items):
        row = existing.get(natural_key(item)) or model(product=product)
        before = {name: getattr(row, name) for name in fields} if row.pk else None
        _assign(row, item, fields)
        _stamp(row, actor=actor, reason=reason)
        _clean_child(row, relation=relation, index=index)
        # Unchanged rows are not saved again, so the history shows only real edits.
        if before is None or any(getattr(row, name) != value for name, value in before.items()):
            row.save()
    getattr(product, "_prefetched_objects_cache", {}).pop(relation, None)


def _sync_national_codes(product: Product, items: list[Mapping[str, Any]], *, actor, reason: str) -> None:
    _sync_children(
        product,
        items,
        model=ProductNationalCode,
        relation="national_codes",
        key=("market", "ai"),
        fields=frozenset({"market", "ai", "value"}),
        actor=actor,
        reason=reason,
    )


def _sync_packaging_levels(product: Product, items: list[Mapping[str, Any]], *, actor, reason: str) -> None:
    _sync_children(
        product,
        items,
        model=PackagingLevel,
        relation="packaging_levels",
        key=("level",),
        fields=frozenset({"level", "gtin", "quantity", "uses_sscc"}),
        actor=actor,
        reason=reason,
    )


def delete_product(*, product: Product, actor: AbstractBaseUser | None, reason: str = "") -> None:
    """Delete a product nothing else uses; its national codes and packaging levels go with it, each with history."""
    with transaction.atomic():
        _lock(product)
        references = _external_references(product)
        if references:
            raise ObjectInUse(
                f"Product {product} cannot be deleted: it is still referenced by {', '.join(references)}. "
                "Mark it inactive instead.",
                details={"referenced_by": ", ".join(references)},
            )
        # Delete the nested rows one by one so each history row carries the actor (a cascade would not).
        for row in [*product.national_codes.all(), *product.packaging_levels.all()]:
            _delete(row, actor=actor, reason=reason, label=row._meta.verbose_name.capitalize())
        _delete(product, actor=actor, reason=reason, label="Product")
