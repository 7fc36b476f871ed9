"""Creating pools, raising a generated pool's ceiling, and the permutation that turns an index into a serial."""

from decimal import Decimal

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from masterdata.models import NUMERIC, CompanyPrefix, Market, Product
from serialization.exceptions import InvalidPoolDefinition, IssueLimitExceeded
from serialization.ff1 import SerialFormat, SerialPermutation
from serialization.keys import new_wrapped_pool_key, unwrap_pool_key
from serialization.models import ListedSerial, PoolFill, SerialPool

DEFAULT_ALPHABET = NUMERIC
DEFAULT_LENGTH = 12
# The counters are 64-bit columns: no pool can hold more, whatever its format's domain.
MAX_POOL_SIZE = 2**63 - 1


def serial_format(pool: SerialPool) -> SerialFormat:
    return SerialFormat(alphabet=pool.alphabet, length=pool.length, no_leading_zero=pool.no_leading_zero)


def pool_permutation(pool: SerialPool) -> SerialPermutation:
    """Index → serial for a generated pool (the SSCC serial reference for SSCC pools)."""
    key = unwrap_pool_key(pool.encrypted_key) if pool.randomised else None
    return SerialPermutation(serial_format(pool), key, randomised=pool.randomised)


def issue_limit_for(domain_size: int, bound: Decimal | None) -> int | None:
    """The most serials a randomised pool may ever issue so that guessing one stays below ``bound``.

    floor(domain × bound) in exact integer arithmetic: a Decimal product keeps 28 digits and rounds, which for
    formats above 10^28 (e.g. 36^20) gives a limit above the bound. Capped at what the 64-bit counters hold.
    """
    if bound is None:
        return None
    numerator, denominator = Decimal(bound).as_integer_ratio()
    return min(domain_size * numerator // denominator, MAX_POOL_SIZE)


def _market_rules(product: Product) -> tuple[list[Market], Market | None]:
    markets = list(product.markets.all())
    strict = [m for m in markets if m.randomisation_required]
    return strict, (strict or markets or [None])[0]


def create_generated_pool(
    *,
    owner,
    actor,
    product: Product | None = None,
    sscc_prefix: CompanyPrefix | None = None,
    extension_digit: str | None = None,
    name: str = "",
    alphabet: str | None = None,
    length: int | None = None,
    no_leading_zero: bool = False,
    randomised: bool | None = None,
    initial_fill: int = 0,
    min_available: int | None = None,
    max_available: int | None = None,
    max_per_request: int | None = None,
) -> SerialPool:
    """A pool filled by our own generator: sequential, or randomised by FF1 under a fresh per-pool key.

    Unit pools take their format from the product's markets (the strictest market wins: if any market requires
    randomisation the pool is randomised and bounded by the smallest guess probability). SSCC pools number the
    serial reference digits left after the extension digit and company prefix.
    """
    if (product is None) == (sscc_prefix is None):
        raise InvalidPoolDefinition("Give either a product (unit serials) or a company prefix (SSCCs), not both.")
    bound = None
    if product is not None:
        if product.owner_id != owner.pk:
            raise InvalidPoolDefinition(f"{product} belongs to {product.owner}, not {owner}.", field="product")
        strict, rules = _market_rules(product)
        alphabet = alphabet or (rules.serial_alphabet if rules else DEFAULT_ALPHABET)
        length = length or (rules.serial_length if rules else DEFAULT_LENGTH)
        if strict:
            if randomised is False:
                codes = ", ".join(m.code for m in strict)
                raise InvalidPoolDefinition(
                    f"Market {codes} requires randomised serials for {product.product_code}; create a randomised pool.",
                    field="randomised",
                )
            randomised = True
            bounds = [m.max_guess_probability for m in strict if m.max_guess_probability is not None]
            bound = min(bounds) if bounds else None
        randomised = True if randomised is None else randomised
        identity = {"kind": SerialPool.Kind.SGTIN, "product_code": product.product_code}
        name = name or f"{product.product_code} {product.name}"
    else:
        if sscc_prefix.company_id != owner.pk:
            raise InvalidPoolDefinition(f"Prefix {sscc_prefix} belongs to another company.", field="sscc_prefix")
        extension_digit = str(extension_digit if extension_digit is not None else "")
        if len(extension_digit) != 1 or not extension_digit.isdigit():
            raise InvalidPoolDefinition("The SSCC extension digit is one digit, 0–9.", field="extension_digit")
        alphabet, length = NUMERIC, 16 - sscc_prefix.length
        no_leading_zero = False
        randomised = bool(randomised)
        identity = {
            "kind": SerialPool.Kind.SSCC,
            "sscc_prefix": sscc_prefix.prefix,
            "sscc_extension_digit": extension_digit,
        }
        name = name or f"SSCC {extension_digit} {sscc_prefix.prefix}"

    try:
        fmt = SerialFormat(alphabet=alphabet, length=length, no_leading_zero=no_leading_zero)
        # Builds the FF1 plan, so a format too small for FF1 (radix^length < 1,000,000) is refused here.
        SerialPermutation(fmt, b"\0" * 32 if randomised else None, randomised=randomised)
    except ValueError as exc:
        raise InvalidPoolDefinition(str(exc), field="length") from exc

    if product is not None:
        existing = SerialPool.objects.filter(
            kind=SerialPool.Kind.SGTIN, source=SerialPool.Source.GENERATOR, product_code=product.product_code
        ).first()
        if existing is not None:
            raise InvalidPoolDefinition(
                f"{product.product_code} already has a generated pool ({existing}); a second generator would issue "
                "the same serials again. Fill the existing pool instead.",
                field="product",
            )
        _refuse_overlap_with_listed_serials(product.product_code, fmt)
    else:
        existing = SerialPool.objects.filter(
            kind=SerialPool.Kind.SSCC,
            source=SerialPool.Source.GENERATOR,
            sscc_prefix=sscc_prefix.prefix,
            sscc_extension_digit=extension_digit,
        ).first()
        if existing is not None:
            raise InvalidPoolDefinition(
                f"Company prefix {sscc_prefix.prefix} with extension digit {extension_digit} already has an SSCC "
                f"pool ({existing}); fill that pool instead.",
                field="sscc_prefix",
            )

    pool = SerialPool(
        owner=owner,
        product=product,
        name=name,
        source=SerialPool.Source.GENERATOR,
        alphabet=alphabet,
        length=length,
        no_leading_zero=no_leading_zero,
        randomised=randomised,
        issue_limit=issue_limit_for(fmt.domain_size, bound) if randomised else None,
        encrypted_key=new_wrapped_pool_key() if randomised else "",
        min_available=min_available,
        max_available=max_available,
        created_by=actor,
        **identity,
    )
    if max_per_request is not None:
        pool.max_per_request = max_per_request
    pool._history_user = actor
    _full_clean(pool)
    try:
        with transaction.atomic():
            pool.save()
            if initial_fill:
                fill_pool(pool=pool, quantity=initial_fill, actor=actor, reason="initial fill")
    except IntegrityError as exc:
        # Two stewards created the same generator at once; the partial unique constraints caught the second.
        raise InvalidPoolDefinition(
            "A generated pool for this product code (or SSCC prefix and extension digit) was created meanwhile; "
            "fill that pool instead.",
            field="product" if product is not None else "sscc_prefix",
        ) from exc
    pool.refresh_from_db()
    return pool


def _full_clean(pool: SerialPool) -> None:
    """Model validation as a domain error (400 with the field), not a bare ValidationError."""
    try:
        # created_by may be empty (a pool set up by a system task); the model allows it but the form default not.
        pool.full_clean(exclude=["encrypted_key", "created_by"])
    except ValidationError as exc:
        errors = exc.message_dict
        field = next(iter(errors))
        raise InvalidPoolDefinition(
            " ".join(m for msgs in errors.values() for m in msgs),
            field=None if field == NON_FIELD_ERRORS else field,
        ) from exc


def format_regex(fmt: SerialFormat) -> str:
    """A regular expression matching exactly the serials of ``fmt`` (Python ``re`` and PostgreSQL alike).

    Set-82 alphabets hold none of ``[ ] \\ ^``, so the only character with a meaning inside a bracket expression is
    ``-``, which is literal when it comes last.
    """
    chars = "".join(c for c in fmt.alphabet if c != "-") + ("-" if "-" in fmt.alphabet else "")
    if fmt.no_leading_zero:
        rest = "".join(c for c in fmt.alphabet[1:] if c != "-") + ("-" if "-" in fmt.alphabet[1:] else "")
        return f"^[{rest}][{chars}]{{{fmt.length - 1}}}$"
    return f"^[{chars}]{{{fmt.length}}}$"


def _refuse_overlap_with_listed_serials(product_code: str, fmt: SerialFormat) -> None:
    """A generator must never be able to issue a serial that an imported list already holds (one query)."""
    clash = (
        ListedSerial.objects.filter(product_code=product_code, serial__regex=format_regex(fmt))
        .values_list("serial", flat=True)
        .first()
    )
    if clash is not None:
        raise InvalidPoolDefinition(
            f"Imported serial {clash!r} of {product_code} lies in this format's range, so the generator could "
            "issue it again; choose another length or alphabet for the generated pool.",
            field="length",
        )


def block_pool(*, pool: SerialPool, actor, reason: str) -> SerialPool:
    """Stop new allocations from ``pool`` (e.g. a CMO's partner pool when its partnership is revoked). Allocations
    already made, releases and returns go on; the history row keeps who blocked it and why."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidPoolDefinition("Say why the pool is blocked.", field="reason")
    with transaction.atomic():
        locked = SerialPool.objects.select_for_update().get(pk=pool.pk)
        locked.blocked_reason = reason[:200]
        locked._history_user = actor
        locked._change_reason = reason[:100]
        locked.save(update_fields=["blocked_reason"])  # only this column: the counters move under other locks
    pool.refresh_from_db()
    return pool


def fill_pool(*, pool: SerialPool, quantity: int, actor, reason: str = "fill") -> SerialPool:
    """Raise a generated pool's ceiling by ``quantity`` serials (they become Available)."""
    if not pool.is_generated:
        raise InvalidPoolDefinition("Only generated pools are filled; import a list into a list pool instead.")
    if quantity <= 0:
        raise InvalidPoolDefinition("Fill with a positive number of serials.", field="quantity")
    domain = serial_format(pool).domain_size
    with transaction.atomic():
        locked = SerialPool.objects.select_for_update().get(pk=pool.pk)
        ceiling = min(domain, MAX_POOL_SIZE, locked.issue_limit if locked.issue_limit is not None else domain)
        if locked.filled + quantity > ceiling:
            what = "the market's guess bound allows" if locked.issue_limit is not None else "the format holds"
            raise IssueLimitExceeded(
                f"{pool} can hold at most {ceiling:,} serials ({what}); it has {locked.filled:,}, so at most "
                f"{ceiling - locked.filled:,} more can be filled. Fill fewer, or create a pool with a longer format.",
                field="quantity",
                details={"limit": ceiling, "filled": locked.filled, "max_fill": ceiling - locked.filled},
            )
        SerialPool.objects.filter(pk=pool.pk).update(filled=F("filled") + quantity)
        PoolFill.objects.create(
            pool=locked, quantity=quantity, filled_after=locked.filled + quantity, reason=reason, actor=actor
        )
    pool.refresh_from_db()
    return pool


def create_list_pool(*, owner, actor, product: Product, source: str, name: str = "") -> SerialPool:
    """An empty pool that imports fill with listed serials (from a file, SAP ATTP/ICH, TraceLink or an API)."""
    if source not in SerialPool.LIST_SOURCES:
        allowed = ", ".join(SerialPool.LIST_SOURCES)
        raise InvalidPoolDefinition(f"A list pool's source is one of {allowed}.", field="source")
    if product.owner_id != owner.pk:
        raise InvalidPoolDefinition(f"{product} belongs to {product.owner}, not {owner}.", field="product")
    _, rules = _market_rules(product)
    pool = SerialPool(
        owner=owner,
        product=product,
        product_code=product.product_code,
        name=name or f"{product.product_code} {product.name} ({SerialPool.Source(source).label})",
        source=source,
        alphabet=rules.serial_alphabet if rules else DEFAULT_ALPHABET,
        length=20,
        created_by=actor,
    )
    pool._history_user = actor
    _full_clean(pool)
    pool.save()
    return pool
