"""Demo serial pools on top of the demo master data: what a steward sees after `make demo`.

Acme's EU/SA product gets a randomised generated pool (a million serials filled, one packaging order served),
a US product a sequential one, the Russian product a list pool imported with AI 91/92 crypto values the way the
operator delivers them, and Acme's prefix an SSCC pool for cases and pallets. Safe to run again: pools that exist
are left as they are.
"""

import io
import secrets
import string
from dataclasses import dataclass, field

from masterdata.models import CompanyPrefix, Product
from serialization.models import Allocation, SerialPool
from serialization.services import allocate_serials, create_generated_pool, create_list_pool, import_serials

EU_PRODUCT = "09521234543213"
US_PRODUCT = "00312345678906"
SSCC_PREFIX = "9521234"
RU_DEMO_SERIALS = 2_000
_CRYPTO_ALPHABET = string.ascii_letters + string.digits + "+/="


@dataclass
class DemoPools:
    created: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def load_demo_pools(*, actor) -> DemoPools:
    summary = DemoPools()
    eu = _product(EU_PRODUCT)
    if eu is not None:
        pool = _generated(
            summary, actor, product=eu, initial_fill=1_000_000, min_available=100_000, max_available=1_000_000
        )
        if pool is not None and not Allocation.objects.filter(pool=pool, request_id="demo-PO-1001").exists():
            allocate_serials(
                pool=pool,
                quantity=10_000,
                actor=actor,
                request_id="demo-PO-1001",
                purpose=Allocation.Purpose.PACKAGING_ORDER,
                reference="PO-1001 line 1",
            )
    us = _product(US_PRODUCT)
    if us is not None:
        _generated(summary, actor, product=us, randomised=False, initial_fill=100_000)
    ru = Product.objects.filter(markets__code="RU").select_related("owner").first()
    if ru is not None:
        _russian_list_pool(summary, actor, ru)
    prefix = CompanyPrefix.objects.filter(prefix=SSCC_PREFIX).first()
    if prefix is not None:
        if SerialPool.objects.filter(kind=SerialPool.Kind.SSCC, sscc_prefix=prefix.prefix).exists():
            summary.skipped.append(f"SSCC pool {prefix.prefix}")
        else:
            pool = create_generated_pool(
                owner=prefix.company,
                actor=actor,
                sscc_prefix=prefix,
                extension_digit="0",
                randomised=False,
                initial_fill=100_000,
            )
            summary.created.append(pool.name)
    return summary


def _product(code: str) -> Product | None:
    return Product.objects.filter(product_code=code).select_related("owner").first()


def _generated(summary: DemoPools, actor, *, product: Product, **options) -> SerialPool | None:
    existing = SerialPool.objects.filter(product_code=product.product_code, source=SerialPool.Source.GENERATOR)
    if existing.exists():
        summary.skipped.append(existing.first().name)
        return existing.first()
    pool = create_generated_pool(owner=product.owner, actor=actor, product=product, **options)
    summary.created.append(pool.name)
    return pool


def _russian_list_pool(summary: DemoPools, actor, product: Product) -> None:
    if SerialPool.objects.filter(product_code=product.product_code, source=SerialPool.Source.FILE).exists():
        summary.skipped.append(f"{product.product_code} imported list")
        return
    pool = create_list_pool(owner=product.owner, actor=actor, product=product, source=SerialPool.Source.FILE)
    # 13-character serials with the crypto key (AI 91, 4 characters) and crypto code (AI 92, 44 characters) the
    # operator issues with each code; made up here, which is all a demo can do.
    alphabet = string.ascii_letters + string.digits
    lines = ["serial,91,92"]
    for _ in range(RU_DEMO_SERIALS):
        serial = "".join(secrets.choice(alphabet) for _ in range(13))
        key = "".join(secrets.choice(alphabet) for _ in range(4))
        code = "".join(secrets.choice(_CRYPTO_ALPHABET) for _ in range(44))
        lines.append(f"{serial},{key},{code}")
    result = import_serials(pool=pool, layout="csv", stream=io.BytesIO("\n".join(lines).encode()), actor=actor)
    summary.created.append(f"{pool.name}: {result.imported} serials imported ({result.status})")
