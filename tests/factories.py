"""Small ``make_<model>(**overrides)`` factories. Each creates valid rows with the fewest arguments."""

import itertools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

_user_numbers = itertools.count(1)


def make_user(*, username=None, roles=(), password="correct horse battery staple", **extra):
    """A user with a usable password, in the role groups named in ``roles`` (``audit.roles.Role`` values).

    ``extra`` goes to ``create_user`` (``is_staff=True``, ``email=…``, ``is_superuser=True``…).
    """
    from audit.roles import seed_roles

    user = get_user_model().objects.create_user(
        username=username or f"user{next(_user_numbers)}", password=password, **extra
    )
    if roles:
        groups = list(Group.objects.filter(name__in=roles))
        if len(groups) != len(set(roles)):  # the groups are seeded by migrate; a flushed database may lack them
            seed_roles()
            groups = list(Group.objects.filter(name__in=roles))
        missing = set(roles) - {group.name for group in groups}
        if missing:
            raise ValueError(f"Unknown roles {sorted(missing)}; use audit.roles.Role values.")
        user.groups.add(*groups)
    return user


# --- master data ------------------------------------------------------------------------------------------------------
# Codes are built from GS1's demonstration range 952 and carry correct check digits; every call gets new numbers.

_company_numbers = itertools.count(1)
_prefix_numbers = itertools.count(5000)
_item_numbers = itertools.count(10000)
_market_numbers = itertools.count(1)


def gs1_check_digit(body: str) -> str:
    from masterdata import gs1

    return gs1.check_digit(body)


def make_company(*, name=None, prefixes=None, **overrides):
    """An MAH (override the role flags for others) with one fresh 7-digit prefix, or exactly ``prefixes``."""
    from masterdata.models import Company

    fields = {"is_mah": True, "country": "IE", **overrides}
    company = Company.objects.create(name=name or f"Company {next(_company_numbers)}", **fields)
    for prefix in [f"952{next(_prefix_numbers)}"] if prefixes is None else prefixes:
        make_prefix(company=company, prefix=prefix)
    return company


def make_prefix(*, company=None, prefix=None):
    from masterdata.models import CompanyPrefix

    prefix = prefix or f"952{next(_prefix_numbers)}"
    return CompanyPrefix.objects.create(company=company or make_company(prefixes=[]), prefix=prefix, length=len(prefix))


def make_gtin(prefix: str, *, indicator: str = "0", item_reference: int | None = None) -> str:
    """A valid GTIN-14 in ``prefix``: indicator + prefix + item reference (fills to 12 digits) + check digit."""
    room = 12 - len(prefix)
    reference = str(next(_item_numbers) if item_reference is None else item_reference)[-room:].zfill(room)
    body = indicator + prefix + reference
    return body + gs1_check_digit(body)


def make_gln(prefix: str, *, location_reference: int | None = None) -> str:
    room = 12 - len(prefix)
    reference = str(next(_item_numbers) if location_reference is None else location_reference)[-room:].zfill(room)
    body = prefix + reference
    return body + gs1_check_digit(body)


def make_market(*, code=None, **overrides):
    """A new market with valid rules; the five seeded markets (EU, US, RU, SA, PK) exist already: use get_market."""
    from masterdata.models import Market

    fields = {
        "name": "Test market",
        "serial_length": 12,
        "retention_years_after_release": 5,
        "reporting_format": Market.ReportingFormat.EPCIS_20,
        **overrides,
    }
    return Market.objects.create(code=code or f"T{next(_market_numbers)}", **fields)


def get_market(code: str):
    from masterdata.models import Market

    return Market.objects.get(code=code)


def make_location(*, company=None, kind="site", gln=None, **overrides):
    from masterdata.models import Location

    company = company or make_company()
    if gln is None:
        gln = make_gln(company.prefixes.order_by("pk").first().prefix)
    fields = {"name": f"{kind.capitalize()} {next(_item_numbers)}", "country": company.country, **overrides}
    return Location.objects.create(company=company, kind=kind, gln=gln, **fields)


def make_product(*, owner=None, product_code=None, markets=(), **overrides):
    """A GTIN product of ``owner`` (a new MAH by default), in its first prefix, sold in ``markets`` (codes or rows)."""
    from masterdata.models import Market, Product

    owner = owner or make_company()
    prefix = owner.prefixes.order_by("pk").first() or make_prefix(company=owner)
    fields = {
        "code_schema": Product.CodeSchema.GTIN,
        "company_prefix_length": prefix.length if prefix else None,
        "name": f"Product {next(_item_numbers)}",
        "strength": "500 mg",
        "pack_size": 20,
        **overrides,
    }
    product = Product.objects.create(owner=owner, product_code=product_code or make_gtin(prefix.prefix), **fields)
    if markets:
        product.markets.set([m if isinstance(m, Market) else Market.objects.get(code=m) for m in markets])
    return product


def make_membership(*, user, company):
    from masterdata.services import assign_membership

    return assign_membership(user=user, company=company, actor=None)
