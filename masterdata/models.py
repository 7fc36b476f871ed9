"""Master data: companies and their GS1 prefixes, locations, markets with their rules, products and pack levels."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length
from simple_history.models import HistoricalRecords

from masterdata import gs1
from masterdata.querysets import CompanyQuerySet, LocationQuerySet, ProductQuerySet

NUMERIC = "0123456789"
UPPER_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def validate_serial_alphabet(alphabet: str) -> None:
    """An alphabet for generated serials: distinct characters of GS1 set 82, none of the URL-unsafe ones."""
    if len(alphabet) < 2:
        raise ValidationError("A serial alphabet needs at least 2 characters, e.g. 0123456789.")
    if len(set(alphabet)) != len(alphabet):
        raise ValidationError("Each character may appear only once in a serial alphabet; remove the repeats.")
    outside = sorted({c for c in alphabet if c not in gs1.CHARSET_82})
    if outside:
        raise ValidationError(f"{''.join(outside)!r} are not in GS1 character set 82; use only set-82 characters.")
    unsafe = sorted({c for c in alphabet if c in gs1.SERIAL_UNSAFE_CHARS})
    if unsafe:
        raise ValidationError(
            f"{''.join(unsafe)!r} must be avoided in generated serials (they need escaping in URNs and URIs); "
            "remove them."
        )


def validate_gln(value: str) -> None:
    """Field validator: 13 digits with a correct GS1 check digit (module-level so migrations can reference it)."""
    try:
        gs1.validate_gln(value)
    except gs1.GS1Error as exc:
        raise ValidationError(str(exc)) from exc


class Company(models.Model):
    """A legal entity in the supply chain: the MAH that owns products, a CMO that packs them, a 3PL, a wholesaler."""

    name = models.CharField(max_length=200, unique=True)
    is_mah = models.BooleanField("MAH", default=False, help_text="Marketing authorisation holder")
    is_cmo = models.BooleanField("CMO", default=False, help_text="Contract manufacturing organisation")
    is_3pl = models.BooleanField("3PL", default=False, help_text="Third-party logistics provider")
    is_wholesaler = models.BooleanField("wholesaler", default=False)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2")
    gln = models.CharField(
        "legal entity GLN", max_length=13, blank=True, validators=[validate_gln], help_text="13 digits, optional"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CompanyQuerySet.as_manager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "companies"
        constraints = [
            models.CheckConstraint(
                name="company_has_a_role",
                condition=Q(is_mah=True) | Q(is_cmo=True) | Q(is_3pl=True) | Q(is_wholesaler=True),
                violation_error_message="Tick at least one role: MAH, CMO, 3PL or wholesaler.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def roles(self) -> list[str]:
        flags = [("MAH", self.is_mah), ("CMO", self.is_cmo), ("3PL", self.is_3pl), ("wholesaler", self.is_wholesaler)]
        return [label for label, on in flags if on]

    def prefix_of(self, code: str, *, skip_first_digit: bool) -> "CompanyPrefix | None":
        """The company's GS1 prefix that ``code`` starts with (after its indicator/extension digit if asked)."""
        body = code[1:] if skip_first_digit else code
        for prefix in self.prefixes.all():
            if body.startswith(prefix.prefix):
                return prefix
        return None


class CompanyPrefix(models.Model):
    """A GS1 company prefix licensed to a company. Its length cannot be derived from a GTIN, so it is stored."""

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="prefixes")
    prefix = models.CharField(max_length=12, unique=True, help_text="6 to 12 digits, as licensed by GS1")
    length = models.PositiveSmallIntegerField(editable=False)

    history = HistoricalRecords()

    class Meta:
        ordering = ["prefix"]
        verbose_name_plural = "company prefixes"
        constraints = [
            models.CheckConstraint(
                # Also ties the stored length to the prefix itself; referencing `prefix` lets full_clean() skip
                # this check when the prefix field already failed, so the steward sees one clear error.
                name="company_prefix_length_6_to_12",
                condition=Q(length__gte=6, length__lte=12, length=Length("prefix")),
                violation_error_message="A GS1 company prefix has 6 to 12 digits.",
            ),
        ]

    def __str__(self) -> str:
        return self.prefix

    def clean(self) -> None:
        prefix = self.prefix or ""
        if not (prefix.isascii() and prefix.isdigit()) or not 6 <= len(prefix) <= 12:
            raise ValidationError(
                {"prefix": f"{prefix!r} is not a GS1 company prefix: enter 6 to 12 digits (found {len(prefix)})."}
            )
        # GS1 never licenses nested prefixes; allowing them would make "which prefix is this GTIN in" ambiguous.
        shorter = [prefix[:n] for n in range(6, len(prefix))]
        clash = (
            CompanyPrefix.objects.filter(Q(prefix__startswith=prefix) | Q(prefix__in=shorter))
            .exclude(pk=self.pk)
            .exclude(prefix=prefix)  # an exact duplicate is reported by the unique check on the field
            .select_related("company")
            .first()
        )
        if clash is not None:
            raise ValidationError(
                {"prefix": f"{prefix} overlaps prefix {clash.prefix} of {clash.company}; company prefixes cannot nest."}
            )
        self.length = len(prefix)


class Location(models.Model):
    """A physical place of a company: a site, a packaging line at a site, or a warehouse; identified by a GLN."""

    class Kind(models.TextChoices):
        SITE = "site", "Site"
        LINE = "line", "Packaging line"
        WAREHOUSE = "warehouse", "Warehouse"

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="locations")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200)
    parent = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="children",
        help_text="The site a packaging line belongs to",
    )
    gln = models.CharField("GLN", max_length=13, validators=[validate_gln])
    gln_extension = models.CharField(
        "GLN extension",
        max_length=20,
        default="0",
        help_text="SGLN extension: 0 for the location itself, another value for a sub-location such as a line",
    )
    address = models.TextField(blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2")
    is_active = models.BooleanField(default=True)

    objects = LocationQuerySet.as_manager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["company__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["gln", "gln_extension"],
                name="location_gln_extension_unique",
                violation_error_message="Another location already has this GLN and extension.",
            ),
            models.UniqueConstraint(fields=["company", "name"], name="location_name_unique_per_company"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self) -> None:
        errors = {}
        if self.kind == self.Kind.LINE and self.parent_id is None:
            errors["parent"] = "A packaging line belongs to a site: choose its site."
        if self.parent_id and self.parent.kind != self.Kind.SITE:
            errors["parent"] = "The parent of a location must be a site."
        if self.parent_id and self.company_id and self.parent.company_id != self.company_id:
            errors["parent"] = "The parent site must belong to the same company."
        if not self.gln_extension or any(c not in gs1.CHARSET_82 for c in self.gln_extension):
            errors["gln_extension"] = "The GLN extension is 1 to 20 characters of GS1 set 82 (use 0 for none)."
        if self.gln and self.company_id and "gln" not in errors:
            try:
                gs1.validate_gln(self.gln)
            except gs1.GS1Error:
                pass  # the field validator reports it
            else:
                if self.company.prefix_of(self.gln, skip_first_digit=False) is None:
                    prefixes = ", ".join(p.prefix for p in self.company.prefixes.all()) or "none registered"
                    errors["gln"] = (
                        f"GLN {self.gln} does not start with a company prefix of {self.company} ({prefixes}); "
                        "register the prefix on the company first or correct the GLN."
                    )
        if errors:
            raise ValidationError(errors)

    @property
    def sgln(self) -> str:
        """EPC URN of the location; derived, because it depends on the prefix length registered for the GLN."""
        prefix = self.company.prefix_of(self.gln, skip_first_digit=False)
        if prefix is None:
            return ""
        return gs1.sgln_urn(self.gln, prefix.length, self.gln_extension)


class Market(models.Model):
    """A regulated market and the rules its regulator sets for serials, identifiers, reporting and records."""

    class NationalNumberAI(models.TextChoices):
        NONE = "", "none"
        AI_710 = "710", "710 — Germany (PZN)"
        AI_711 = "711", "711 — France (CIP)"
        AI_712 = "712", "712 — Spain (CN)"
        AI_713 = "713", "713 — Brazil (DRN)"
        AI_714 = "714", "714 — Portugal (AIM)"
        AI_715 = "715", "715 — United States (NDC)"

    class ReportingFormat(models.TextChoices):
        EU_HUB = "eu_hub", "EU hub (EMVS) upload"
        EPCIS_12 = "epcis_1_2", "EPCIS 1.2 XML"
        EPCIS_20 = "epcis_2_0", "EPCIS 2.0 JSON-LD"
        MDLP = "mdlp", "MDLP / Chestny Znak operator reports"
        RSD = "rsd", "RSD (Saudi) reporting"
        DRAP = "drap", "DRAP portal"

    EXTRA_SERIAL_PARAMETERS = {"91": "crypto key (4 characters)", "92": "crypto code (44 characters)"}

    code = models.CharField(max_length=8, unique=True, help_text="Short code, e.g. EU, US, RU, SA, PK")
    name = models.CharField(max_length=100)
    serial_alphabet = models.CharField(
        max_length=82,
        default=NUMERIC,
        validators=[validate_serial_alphabet],
        help_text="Characters generated serials are drawn from (numeric, upper-case alphanumeric, or another subset "
        'of GS1 set 82 without " % & / < > ?)',
    )
    serial_length = models.PositiveSmallIntegerField(
        default=12, validators=[MinValueValidator(1), MaxValueValidator(20)], help_text="1 to 20 characters"
    )
    randomisation_required = models.BooleanField(default=False)
    max_guess_probability = models.DecimalField(
        max_digits=12,
        decimal_places=10,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Upper bound on issued ÷ possible serials per product code (EU: 0.0001); empty for no bound",
    )
    national_number_ai = models.CharField(
        "national number AI", max_length=3, choices=NationalNumberAI.choices, blank=True, default=""
    )
    extra_serial_parameters = models.JSONField(
        default=list, blank=True, help_text='Extra per-serial AIs required, e.g. ["91", "92"] for Russia'
    )
    aggregation_required = models.BooleanField(default=False)
    retention_years_after_expiry = models.PositiveSmallIntegerField(null=True, blank=True)
    retention_years_after_release = models.PositiveSmallIntegerField(null=True, blank=True)
    reporting_format = models.CharField(max_length=16, choices=ReportingFormat.choices)

    history = HistoricalRecords()

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                name="market_serial_length_1_to_20",
                condition=Q(serial_length__gte=1, serial_length__lte=20),
                violation_error_message="Serial length must be 1 to 20 characters.",
            ),
            models.CheckConstraint(
                name="market_has_retention_rule",
                condition=Q(retention_years_after_expiry__isnull=False)
                | Q(retention_years_after_release__isnull=False),
                violation_error_message="Give a retention period after expiry, after release, or both.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} — {self.name}"

    def clean(self) -> None:
        params = self.extra_serial_parameters
        if not isinstance(params, list) or any(p not in self.EXTRA_SERIAL_PARAMETERS for p in params):
            known = ", ".join(f'"{ai}"' for ai in self.EXTRA_SERIAL_PARAMETERS)
            raise ValidationError(
                {"extra_serial_parameters": f'Give a JSON list of AIs from {known}, e.g. ["91", "92"].'}
            )


class Product(models.Model):
    """A trade item at its smallest saleable level, identified by its product code (GTIN-14, NTIN or PPN)."""

    class CodeSchema(models.TextChoices):
        GTIN = "GTIN", "GTIN-14"
        NTIN = "NTIN", "NTIN (national code in a GTIN)"
        PPN = "PPN", "PPN (IFA pharmacy product number)"

    owner = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="products", help_text="The MAH")
    code_schema = models.CharField(max_length=4, choices=CodeSchema.choices, default=CodeSchema.GTIN)
    product_code = models.CharField(
        max_length=14,
        unique=True,
        error_messages={"unique": "Another product already has this product code; a code identifies one product."},
        help_text="GTIN-8/12/13/14 (stored as 14 digits), NTIN, or 12-character PPN",
    )
    company_prefix_length = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(6), MaxValueValidator(12)],
        help_text="Digits of the GS1 company prefix inside the code (6–12); needed for EPC URNs. Empty for PPN.",
    )
    name = models.CharField(max_length=200)
    common_name = models.CharField(max_length=200, blank=True, help_text="INN / common name")
    dosage_form = models.CharField(max_length=100, blank=True)
    strength = models.CharField(max_length=100, blank=True)
    pack_size = models.PositiveIntegerField(null=True, blank=True)
    pack_type = models.CharField(max_length=100, blank=True)
    markets = models.ManyToManyField(Market, blank=True, related_name="products")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProductQuerySet.as_manager()
    history = HistoricalRecords(m2m_fields=[markets])

    class Meta:
        ordering = ["name", "product_code"]
        constraints = [
            models.CheckConstraint(
                name="product_prefix_length_6_to_12",
                condition=Q(company_prefix_length__isnull=True)
                | Q(company_prefix_length__gte=6, company_prefix_length__lte=12),
                violation_error_message="The company prefix length is 6 to 12 digits.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.product_code})"

    def clean(self) -> None:
        if self.owner_id and not self.owner.is_mah:
            raise ValidationError(
                {"owner": f"{self.owner} is not an MAH: products are owned by their marketing authorisation holder."}
            )
        if not self.product_code:
            return
        try:
            if self.code_schema == self.CodeSchema.PPN:
                self.product_code = gs1.validate_ppn(self.product_code)
                self.company_prefix_length = None
                return
            self.product_code = gs1.normalise_gtin(self.product_code)
        except gs1.GS1Error as exc:
            raise ValidationError({"product_code": str(exc)}) from exc
        if self.company_prefix_length is None:
            raise ValidationError({"company_prefix_length": "Enter the company prefix length (6–12 digits)."})
        if self.code_schema == self.CodeSchema.GTIN and self.owner_id:
            prefix = self.owner.prefix_of(self.product_code, skip_first_digit=True)
            if prefix is None:
                prefixes = ", ".join(p.prefix for p in self.owner.prefixes.all()) or "none registered"
                raise ValidationError(
                    {
                        "product_code": (
                            f"GTIN {self.product_code} is outside the company prefixes of {self.owner} "
                            f"({prefixes}); use a GTIN from one of them or register the prefix on the company."
                        )
                    }
                )
            if prefix.length != self.company_prefix_length:
                raise ValidationError(
                    {
                        "company_prefix_length": (
                            f"GTIN {self.product_code} lies in company prefix {prefix.prefix}, which has "
                            f"{prefix.length} digits; set the company prefix length to {prefix.length}."
                        )
                    }
                )


class ProductNationalCode(models.Model):
    """A product's national number for one market (PZN, CIP, CN, DRN, AIM, NDC), printed under AI 710–715."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="national_codes")
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="+")
    ai = models.CharField("AI", max_length=3, choices=Market.NationalNumberAI.choices[1:])
    value = models.CharField(max_length=20)

    history = HistoricalRecords()

    class Meta:
        ordering = ["market__code", "ai"]
        constraints = [models.UniqueConstraint(fields=["product", "market", "ai"], name="national_code_unique")]

    def __str__(self) -> str:
        return f"({self.ai}) {self.value}"

    def clean(self) -> None:
        errors = {}
        if self.ai and self.value:
            try:
                gs1.validate_ai_value(self.ai, self.value)
            except gs1.GS1Error as exc:
                errors["value"] = str(exc)
        if self.ai and self.market_id and self.market.national_number_ai and self.ai != self.market.national_number_ai:
            errors["ai"] = (
                f"Market {self.market.code} prints its national number under AI ({self.market.national_number_ai}); "
                f"choose that AI instead of ({self.ai})."
            )
        if errors:
            raise ValidationError(errors)


class PackagingLevel(models.Model):
    """One level of a product's packaging hierarchy (unit, bundle, case, pallet) and how many of the level below
    it holds. Cases and pallets are usually identified by SSCC rather than a GTIN of their own."""

    class Level(models.IntegerChoices):
        UNIT = 0, "Unit"
        BUNDLE = 1, "Bundle"
        CASE = 2, "Case"
        PALLET = 3, "Pallet"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="packaging_levels")
    level = models.PositiveSmallIntegerField(choices=Level.choices)
    gtin = models.CharField("GTIN", max_length=14, blank=True, help_text="GTIN of this level, if it has one")
    quantity = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1)], help_text="Items of the next lower level in one of these"
    )
    uses_sscc = models.BooleanField("identified by SSCC", default=False)

    history = HistoricalRecords()

    class Meta:
        ordering = ["product", "level"]
        constraints = [
            models.UniqueConstraint(fields=["product", "level"], name="packaging_level_unique_per_product"),
            models.UniqueConstraint(
                fields=["gtin"],
                condition=~Q(gtin=""),
                name="packaging_level_gtin_unique",
                violation_error_message="Another packaging level already uses this GTIN.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product.product_code} {self.get_level_display()}"

    def clean(self) -> None:
        if self.gtin:
            try:
                self.gtin = gs1.normalise_gtin(self.gtin)
            except gs1.GS1Error as exc:
                raise ValidationError({"gtin": str(exc)}) from exc
        if self.level == self.Level.UNIT and self.quantity != 1:
            raise ValidationError({"quantity": "The unit level holds exactly 1 unit."})
        if not self.gtin and not self.uses_sscc and self.level != self.Level.UNIT:
            raise ValidationError({"gtin": "Give this level a GTIN or mark it as identified by SSCC."})
        product = self._product_or_none()
        if not self.gtin or product is None or product.code_schema == Product.CodeSchema.PPN:
            return
        if self.level == self.Level.UNIT and self.gtin != product.product_code:
            raise ValidationError(
                {"gtin": f"The unit level is the product itself: leave the GTIN empty or use {product.product_code}."}
            )
        if self.level != self.Level.UNIT and self.gtin == product.product_code:
            raise ValidationError(
                {"gtin": "Only the unit level carries the product code; give this level its own GTIN or use SSCC."}
            )

    def _product_or_none(self) -> "Product | None":
        try:
            return self.product
        except Product.DoesNotExist:  # an inline form on an unsaved product
            return None


class CompanyMembership(models.Model):
    """The company a user works for. A user with a membership sees only their company's objects."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="memberships")

    history = HistoricalRecords()

    class Meta:
        ordering = ["company__name"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.company}"
