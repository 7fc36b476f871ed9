"""Serial number pools, their allocations and the rows that exist per serial only when a serial needs one.

A pool's numbers form a sequence indexed 0, 1, 2, … . Indices ``[0, next_index)`` have been handed out at some
time; ``free`` of them were released back and wait in FreeRange rows to be handed out again; every other one of
them is in exactly one AllocationRange. So at every moment:

    assigned  = next_index - free          (= sum of AllocationRange.count)
    available = filled - assigned           (= filled - next_index + sum of FreeRange.count)

and available + assigned = filled holds by construction; tests check it against the range rows.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from simple_history.models import HistoricalRecords

from audit.history import AuthoredHistory
from masterdata.models import Company, Product


class SerialPool(models.Model):
    """The serial numbers of one product code (or, for logistic units, the SSCCs of one company prefix and extension
    digit) from one source. Generated pools store a cursor, not the numbers; list pools store one ListedSerial each."""

    class Kind(models.TextChoices):
        SGTIN = "sgtin", "Unit serials (product code + serial)"
        SSCC = "sscc", "SSCCs (cases and pallets)"

    class Source(models.TextChoices):
        GENERATOR = "generator", "Own generator"
        FILE = "file", "Imported file (CSV/JSON)"
        SAP_ATTP = "sap_attp", "SAP ATTP"
        SAP_ICH = "sap_ich", "SAP ICH"
        TRACELINK = "tracelink", "TraceLink"
        API = "api", "External system (API)"
        PARTNER = "partner", "Partner MAH"

    LIST_SOURCES = (Source.FILE, Source.SAP_ATTP, Source.SAP_ICH, Source.TRACELINK, Source.API)

    owner = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="serial_pools")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.SGTIN)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, null=True, blank=True, related_name="serial_pools")
    product_code = models.CharField(max_length=14, blank=True, db_index=True, help_text="GTIN/NTIN of a unit pool")
    sscc_prefix = models.CharField(
        "SSCC company prefix", max_length=12, blank=True, help_text="Company prefix of an SSCC pool"
    )
    sscc_extension_digit = models.CharField(max_length=1, blank=True)
    name = models.CharField(max_length=200)
    source = models.CharField(max_length=16, choices=Source.choices)
    alphabet = models.CharField(max_length=82, help_text="Characters of the serials, in numeral order")
    length = models.PositiveSmallIntegerField()
    no_leading_zero = models.BooleanField(default=False)
    randomised = models.BooleanField(default=False)
    issue_limit = models.BigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="Most serials this pool may ever issue (the market's guess bound × the format's domain)",
    )
    encrypted_key = models.TextField(blank=True, editable=False, help_text="Pool key wrapped by the master key")
    filled = models.BigIntegerField(default=0, editable=False, help_text="Serials in the pool (generated or listed)")
    next_index = models.BigIntegerField(default=0, editable=False, help_text="First index never handed out")
    free = models.BigIntegerField(default=0, editable=False, help_text="Released indices waiting below next_index")
    min_available = models.BigIntegerField(null=True, blank=True, help_text="Replenish when fewer are available")
    max_available = models.BigIntegerField(null=True, blank=True, help_text="Replenish up to this many available")
    max_per_request = models.PositiveIntegerField(default=500_000)
    blocked_reason = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Why new allocations are stopped (e.g. the partnership was revoked); empty while the pool is open",
    )
    parent_pool = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="partner_pools",
        editable=False,
        help_text="The MAH pool whose serials a partner pool holds (through its PartnerSegment rows)",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # The counters move with every allocation through UPDATE statements, which write no history row; the
    # Allocation and PoolFill rows are the trail of those moves.
    # The wrapped key stays out of history too: an old token kept there would outlive a master-key rotation.
    history = HistoricalRecords(excluded_fields=["filled", "next_index", "free", "encrypted_key"])

    class Meta:
        ordering = ["product_code", "sscc_prefix", "pk"]
        constraints = [
            models.CheckConstraint(
                name="pool_counters_consistent",
                condition=Q(free__gte=0) & Q(free__lte=F("next_index")) & Q(next_index__lte=F("filled")),
            ),
            models.CheckConstraint(
                name="pool_within_issue_limit", condition=Q(issue_limit__isnull=True) | Q(filled__lte=F("issue_limit"))
            ),
            models.CheckConstraint(name="pool_length_1_to_20", condition=Q(length__gte=1, length__lte=20)),
            models.CheckConstraint(
                name="pool_identifies_product_or_sscc_range",
                condition=(Q(kind="sgtin") & ~Q(product_code="") & Q(sscc_prefix=""))
                | (Q(kind="sscc") & Q(product_code="") & ~Q(sscc_prefix="") & ~Q(sscc_extension_digit="")),
            ),
            # Two generators over one product code would map different indices to the same serial.
            models.UniqueConstraint(
                fields=["product_code"],
                condition=Q(source="generator", kind="sgtin"),
                name="one_generated_pool_per_product_code",
                violation_error_message="This product code already has a generated pool.",
            ),
            models.UniqueConstraint(
                fields=["sscc_prefix", "sscc_extension_digit"],
                condition=Q(source="generator", kind="sscc"),
                name="one_generated_sscc_pool_per_prefix_and_extension",
                violation_error_message="This company prefix and extension digit already have an SSCC pool.",
            ),
            models.CheckConstraint(
                name="pool_parent_only_for_partner_pools",
                condition=Q(parent_pool__isnull=True) | Q(source="partner"),
            ),
            # Every share of one MAH pool with one partner lands in the same partner pool.
            models.UniqueConstraint(
                fields=["owner", "parent_pool"],
                condition=Q(source="partner"),
                name="one_partner_pool_per_owner_and_parent",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def assigned(self) -> int:
        return self.next_index - self.free

    @property
    def available(self) -> int:
        return self.filled - self.assigned

    @property
    def is_generated(self) -> bool:
        return self.source == self.Source.GENERATOR

    @property
    def code(self) -> str:
        """What identifies the pool's numbers: the product code, or extension digit + company prefix for SSCCs."""
        return self.product_code or f"{self.sscc_extension_digit}{self.sscc_prefix}"


class PoolFill(models.Model):
    """One change of a pool's filled count: a generator ceiling raised, or a list of serials imported."""

    pool = models.ForeignKey(SerialPool, on_delete=models.PROTECT, related_name="fills")
    quantity = models.BigIntegerField()
    filled_after = models.BigIntegerField()
    reason = models.CharField(max_length=200)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    # Never updated, but the pool's own history leaves ``filled`` out: this row is the trail of fills, so it is chained.
    history = AuthoredHistory(user_field="actor", reason_field="reason")

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"+{self.quantity} to {self.pool}"


class Allocation(models.Model):
    """Serials handed out in one request: for a packaging order, a batch, a CMO or another system. The numbers are
    the index ranges in its AllocationRange rows; its cost does not grow with its size."""

    class Purpose(models.TextChoices):
        PACKAGING_ORDER = "packaging_order", "Packaging order / line"
        BATCH = "batch", "Batch"
        CMO = "cmo", "CMO"
        SYSTEM = "system", "External system request"
        PRINT = "print", "Print order"

    # Serials of a partner pool handed back to the MAH, held by such an allocation for good. Not a Purpose: nobody
    # asks allocate_serials for it; only services.partner_pools.return_partner_serials records one.
    RETURNED = "returned"

    pool = models.ForeignKey(SerialPool, on_delete=models.PROTECT, related_name="allocations")
    request_id = models.CharField(max_length=100, help_text="Caller's idempotency key")
    purpose = models.CharField(max_length=20, choices=[*Purpose.choices, (RETURNED, "Returned to the MAH")])
    reference = models.CharField(max_length=100, blank=True, help_text="Order, batch, partner or system reference")
    packaging_order = models.ForeignKey(
        "PackagingOrder", on_delete=models.PROTECT, null=True, blank=True, related_name="allocations"
    )
    requested_quantity = models.BigIntegerField()
    quantity = models.BigIntegerField(help_text="Serials granted")
    allow_partial = models.BooleanField(default=False)
    released = models.BigIntegerField(default=0, help_text="Serials released back to the pool since")
    fingerprint = models.CharField(max_length=64, editable=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords(excluded_fields=["fingerprint"])

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "request_id"], name="allocation_request_id_unique_per_pool"),
            models.CheckConstraint(
                name="allocation_quantities_consistent",
                condition=Q(quantity__gte=0)
                & Q(quantity__lte=F("requested_quantity"))
                & Q(released__gte=0)
                & Q(released__lte=F("quantity")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} from {self.pool} ({self.request_id})"

    @property
    def active_quantity(self) -> int:
        return self.quantity - self.released


class AllocationRange(models.Model):
    """Indices [first_index, first_index + count) of a pool, held by an allocation. Ranges never overlap."""

    allocation = models.ForeignKey(Allocation, on_delete=models.CASCADE, related_name="ranges")
    pool = models.ForeignKey(SerialPool, on_delete=models.PROTECT, related_name="+")
    first_index = models.BigIntegerField()
    count = models.BigIntegerField()

    class Meta:
        ordering = ["allocation", "first_index"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "first_index"], name="allocation_range_start_unique"),
            models.CheckConstraint(name="allocation_range_not_empty", condition=Q(count__gt=0) & Q(first_index__gte=0)),
        ]

    def __str__(self) -> str:
        return f"[{self.first_index}, {self.first_index + self.count})"


class FreeRange(models.Model):
    """Released indices [first_index, first_index + count) that are Available again and handed out first."""

    pool = models.ForeignKey(SerialPool, on_delete=models.PROTECT, related_name="free_ranges")
    first_index = models.BigIntegerField()
    count = models.BigIntegerField()

    class Meta:
        ordering = ["pool", "first_index"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "first_index"], name="free_range_start_unique"),
            models.CheckConstraint(name="free_range_not_empty", condition=Q(count__gt=0) & Q(first_index__gte=0)),
        ]

    def __str__(self) -> str:
        return f"[{self.first_index}, {self.first_index + self.count})"


class Release(models.Model):
    """Unused serials of an allocation given back to Available: who, why, how many."""

    allocation = models.ForeignKey(Allocation, on_delete=models.PROTECT, related_name="releases")
    quantity = models.BigIntegerField()
    reason = models.CharField(max_length=500)
    released_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    history = AuthoredHistory(user_field="released_by", reason_field="reason")

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.quantity} released from {self.allocation_id}"


class ListedSerial(models.Model):
    """One serial of a list pool (imported from a file, SAP ATTP/ICH, TraceLink or an API), at a dense ordinal.
    Extra per-serial parameters (Russian AI 91/92 crypto values) are stored here and never shown in lists."""

    # A row is its pool's serial at one ordinal, and that pair is the key: a surrogate id cost every imported row a
    # sequence value and a third index entry (0.5 s of a million-row import's 5).
    pk = models.CompositePrimaryKey("pool", "ordinal")
    # The primary key's index serves every lookup by pool, so the column gets no index of its own. The database
    # checks that the pool exists with triggers (migration listed_serial_pool_checked_per_statement) instead of a
    # foreign key: PostgreSQL checks a foreign key once per row, which cost a million-row import 3.5 s; the trigger
    # checks once per statement, with the same lock, and pools holding listed serials cannot be deleted.
    pool = models.ForeignKey(
        SerialPool, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    ordinal = models.BigIntegerField()
    product_code = models.CharField(max_length=14)
    serial = models.CharField(max_length=20)
    parameters = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            # Invariant 1: a product code + serial exists once across every list pool.
            models.UniqueConstraint(fields=["product_code", "serial"], name="listed_serial_unique_per_product_code"),
        ]

    def __str__(self) -> str:
        return f"{self.product_code} {self.serial}"


class Pack(models.Model):
    """One commissioned unit or container (identified by product code + serial, or by SSCC): a serial that got a
    life of its own on a packaging line. Designed for billions of rows: big integer keys, written and read in bulk."""

    class Status(models.TextChoices):
        COMMISSIONED = "commissioned", "Commissioned"
        PACKED = "packed", "Packed"
        SHIPPED = "shipped", "Shipped"
        DECOMMISSIONED = "decommissioned", "Decommissioned"

    id = models.BigAutoField(primary_key=True)
    # The foreign keys of Pack and PackEvent are checked per statement by triggers (migration 0010), not per row:
    # a line report writes a million rows in one COPY. Every index is paid for on each of those rows, so Pack keeps
    # only the B-trees its lookups need — the primary key, the unique (product code, serial) and the parent — and
    # finds the packs of an order or a batch through BRIN indexes (migration 0016, plain indexes on SQLite): packs are
    # written report by report, so an order's rows lie together and a block-range summary finds them at almost no
    # cost per insert. (pool, index) needs no constraint of its own: a pool's serial at an index is fixed and a pool
    # belongs to one product code (or SSCC prefix), so the unique (product code, serial) already refuses a repeat.
    pool = models.ForeignKey(
        SerialPool, on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )
    index = models.BigIntegerField(help_text="The serial's index in its pool")
    product_code = models.CharField(max_length=14, blank=True, help_text="Empty for an SSCC")
    serial = models.CharField(max_length=20, help_text="The serial, or the 18-digit SSCC of a container")
    level = models.PositiveSmallIntegerField(default=0, help_text="0 unit, 1 bundle, 2 case, 3 pallet")
    batch = models.ForeignKey(
        "Batch",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="packs",
        db_constraint=False,
        db_index=False,
    )
    order = models.ForeignKey(
        "PackagingOrder",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="packs",
        db_constraint=False,
        db_index=False,
    )
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="children", db_constraint=False
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMMISSIONED)
    reason = models.CharField(max_length=20, blank=True, help_text="Why it was decommissioned")
    eu_state = models.CharField("EU hub state", max_length=20, blank=True)
    commissioned_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product_code", "serial"], name="pack_unique_product_code_serial"),
            models.CheckConstraint(name="pack_not_its_own_parent", condition=~Q(parent=F("id"))),
        ]

    def __str__(self) -> str:
        return f"{self.product_code} {self.serial}".strip()


class Batch(models.Model):
    """A production lot of one product: lot number, expiry exactly as printed, where and for which markets.

    Statuses run planned → in production → completed → reconciled → released; recalled is final."""

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        IN_PRODUCTION = "in_production", "In production"
        COMPLETED = "completed", "Completed"
        RECONCILED = "reconciled", "Reconciled"
        RELEASED = "released", "Released"
        RECALLED = "recalled", "Recalled"

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="batches")
    lot = models.CharField(max_length=20, help_text="AI 10: up to 20 characters of GS1 set 82")
    expiry = models.CharField(
        max_length=6, help_text="AI 17 YYMMDD exactly as printed; day 00 means end of month and is kept as given"
    )
    manufactured_on = models.DateField(null=True, blank=True)
    site = models.ForeignKey("masterdata.Location", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    lines = models.ManyToManyField("masterdata.Location", blank=True, related_name="+")
    markets = models.ManyToManyField("masterdata.Market", blank=True, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLANNED)
    released_at = models.DateTimeField(null=True, blank=True, editable=False)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", editable=False
    )
    release_reason = models.TextField(blank=True, editable=False)
    keep_until = models.DateField(
        null=True,
        blank=True,
        editable=False,
        db_index=True,
        help_text="Last day of retention as last stored by serialization.retention (empty: not known yet, kept); the "
        "admin and the API show the date computed now",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # keep_until is derived from the markets' rules and refreshed in bulk; a history row per refresh would be noise.
    history = HistoricalRecords(m2m_fields=[lines, markets], excluded_fields=["keep_until"])

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "batches"
        constraints = [models.UniqueConstraint(fields=["product", "lot"], name="batch_lot_unique_per_product")]
        # Release is QA's electronic signature: its own permission, not implied by being allowed to edit batches.
        permissions = [("release_batch", "Can release a batch (QA electronic signature)")]

    def __str__(self) -> str:
        return f"{self.product.product_code} lot {self.lot}"


class PackagingOrder(models.Model):
    """A run of one batch on one packaging line: the quantity planned and the serials it was given."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    number = models.CharField(max_length=40, unique=True)
    batch = models.ForeignKey(Batch, on_delete=models.PROTECT, related_name="orders")
    line = models.ForeignKey("masterdata.Location", on_delete=models.PROTECT, related_name="+")
    planned_quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.number


class LineReport(models.Model):
    """One report from a packaging line (L3): applied all-or-nothing, and idempotent by its id — a replay gets the
    first result back. A report captured through EPCIS (``source`` epcis) is one EPCIS event: it keeps the event's
    id, content hash and fields, and an error declaration received for it."""

    class Kind(models.TextChoices):
        COMMISSIONING = "commissioning", "Commissioning"
        DECOMMISSIONING = "decommissioning", "Decommissioning"
        AGGREGATION = "aggregation", "Aggregation"
        UNPACKING = "unpacking", "Unpacking"
        SHIPPING = "shipping", "Shipping"

    class Status(models.TextChoices):
        APPLIED = "applied", "Applied"
        REJECTED = "rejected", "Rejected"

    class Source(models.TextChoices):
        LINE = "line", "Line report (API)"
        EPCIS = "epcis", "EPCIS capture"

    report_id = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    order = models.ForeignKey(PackagingOrder, on_delete=models.PROTECT, null=True, blank=True, related_name="reports")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the report's content")
    status = models.CharField(max_length=8, choices=Status.choices)
    lines = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True, help_text="Counts when applied; every problem when rejected")
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    received_at = models.DateTimeField(auto_now_add=True)
    occurred_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the line did it (the EPCIS eventTime); null only for reports older than it",
    )
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.LINE)
    capture_job = models.ForeignKey(
        "CaptureJob", on_delete=models.PROTECT, null=True, blank=True, related_name="reports"
    )
    event_id = models.CharField(
        max_length=255, blank=True, default="", help_text="eventID of the captured EPCIS event (given, or assigned)"
    )
    event_hash = models.CharField(
        max_length=64, blank=True, default="", help_text="SHA-256 of the captured event's canonical content"
    )
    event = models.JSONField(
        null=True, blank=True, help_text="The captured event's fields other than its EPCs (readPoint, bizLocation…)"
    )
    error_declaration = models.JSONField(
        null=True, blank=True, help_text="EPCIS errorDeclaration received for this event (time, reason, corrections)"
    )
    corrects = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="corrections",
        help_text="The report declared erroneous whose effect this report reverses",
    )

    class Meta:
        ordering = ["-received_at", "-pk"]
        indexes = [models.Index(fields=["occurred_at", "id"], name="line_report_occurred")]
        constraints = [
            # An EPCIS event is applied once: by its eventID and by its content (a resend under a new id).
            models.UniqueConstraint(
                fields=["event_id"],
                condition=Q(status="applied") & ~Q(event_id=""),
                name="line_report_event_id_applied_once",
            ),
            models.UniqueConstraint(
                fields=["event_hash"],
                condition=Q(status="applied") & ~Q(event_hash=""),
                name="line_report_event_hash_applied_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} report {self.report_id}"


class CaptureJob(models.Model):
    """One EPCIS document posted to the capture interface (GS1 REST binding ``POST /capture``) and what became of
    its events: each event applied as one LineReport through the line-report rulebook, or refused with a reason."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class ErrorBehaviour(models.TextChoices):
        ROLLBACK = "rollback", "Roll back the whole document on any error"
        PROCEED = "proceed", "Apply the good events, report the bad"

    class Format(models.TextChoices):
        JSON = "json", "EPCIS 2.0 JSON / JSON-LD"
        XML = "xml", "EPCIS 1.2 / 2.0 XML"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    error_behaviour = models.CharField(max_length=8, choices=ErrorBehaviour.choices, default=ErrorBehaviour.ROLLBACK)
    document = models.FileField(upload_to="epcis/capture/", help_text="The document as received")
    document_format = models.CharField(max_length=4, choices=Format.choices)
    document_sha256 = models.CharField(max_length=64)
    event_count = models.PositiveIntegerField(default=0)
    applied_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="One RFC 7807 problem per refused event")
    events = models.JSONField(default=list, blank=True, help_text="Per event: its id, outcome and line report")
    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="The sender's company"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"capture job {self.pk} ({self.status})"


class PackEvent(models.Model):
    """One step in one pack's life, as a line reported it: commissioned, packed into a parent, unpacked, shipped,
    decommissioned with a reason. The pack history is these rows in time order."""

    class Action(models.TextChoices):
        COMMISSIONED = "commissioned", "Commissioned"
        PACKED = "packed", "Packed"
        UNPACKED = "unpacked", "Unpacked"
        SHIPPED = "shipped", "Shipped"
        DECOMMISSIONED = "decommissioned", "Decommissioned"

    id = models.BigAutoField(primary_key=True)
    # Indexes as on Pack (see there): the report's events through a BRIN index (migration 0016), the parent through a
    # partial B-tree, since most events (commissioning, shipping) name none.
    pack = models.ForeignKey(Pack, on_delete=models.PROTECT, related_name="events", db_index=False, db_constraint=False)
    report = models.ForeignKey(
        LineReport, on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    parent = models.ForeignKey(
        Pack, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_constraint=False, db_index=False
    )
    reason = models.CharField(max_length=20, blank=True)
    occurred_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["pack", "occurred_at"], name="pack_event_pack_time"),
            models.Index(fields=["parent"], name="pack_event_parent", condition=Q(parent__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.pack_id}"


class Reconciliation(models.Model):
    """One reconciliation of a batch: assigned = commissioned + decommissioned (by reason) + returned, aggregation
    completeness where required, and every discrepancy found. A failed one raises an incident QA must resolve."""

    batch = models.ForeignKey(Batch, on_delete=models.PROTECT, related_name="reconciliations")
    passed = models.BooleanField()
    counts = models.JSONField(default=dict)
    discrepancies = models.JSONField(default=list, blank=True)
    incident = models.ForeignKey("audit.Incident", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    performed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    performed_at = models.DateTimeField(auto_now_add=True)

    history = AuthoredHistory(user_field="performed_by")

    class Meta:
        ordering = ["-performed_at", "-pk"]

    def __str__(self) -> str:
        return f"{'passed' if self.passed else 'failed'} reconciliation of {self.batch}"


class ExportJob(models.Model):
    """A serial list materialised into a file in the background, with progress, for a download link."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSON = "json", "JSON"
        TEXT = "txt", "Plain text"

    class Notation(models.TextChoices):
        SERIAL = "serial", "Serial only"
        ELEMENT_STRING = "element_string", "GS1 element string"
        DIGITAL_LINK = "digital_link", "GS1 Digital Link URI"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    allocation = models.ForeignKey(Allocation, on_delete=models.PROTECT, related_name="exports")
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.CSV)
    notation = models.CharField(max_length=16, choices=Notation.choices, default=Notation.SERIAL)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    total = models.BigIntegerField(default=0)
    written = models.BigIntegerField(default=0)
    file = models.FileField(upload_to="exports/", blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"export {self.pk} of allocation {self.allocation_id}"

    @property
    def progress(self) -> float:
        if self.total == 0:
            return 1.0 if self.status == self.Status.DONE else 0.0
        return self.written / self.total


class EpcisExportJob(models.Model):
    """An EPCIS document of one batch, packaging order or shipment (a shipping line report), written into a file in
    the background with progress (EPCs written of the EPCs in scope), for a download link."""

    class Version(models.TextChoices):
        V2_0 = "2.0", "EPCIS 2.0"
        V1_2 = "1.2", "EPCIS 1.2"

    class Syntax(models.TextChoices):
        JSON = "json", "JSON-LD"
        XML = "xml", "XML"

    Status = ExportJob.Status

    batch = models.ForeignKey(Batch, on_delete=models.PROTECT, null=True, blank=True, related_name="epcis_exports")
    order = models.ForeignKey(
        PackagingOrder, on_delete=models.PROTECT, null=True, blank=True, related_name="epcis_exports"
    )
    shipping_report = models.ForeignKey(
        LineReport, on_delete=models.PROTECT, null=True, blank=True, related_name="epcis_exports"
    )
    version = models.CharField(max_length=3, choices=Version.choices, default=Version.V2_0)
    syntax = models.CharField(max_length=4, choices=Syntax.choices, default=Syntax.JSON)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    total = models.BigIntegerField(default=0, help_text="EPCs in scope, counted when the job starts")
    written = models.BigIntegerField(default=0, help_text="EPCs written so far")
    events = models.BigIntegerField(default=0, help_text="EPCIS events in the finished document")
    validated = models.BooleanField(default=False, help_text="The file was checked against the official schema")
    file = models.FileField(upload_to="epcis/", blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                name="epcis_export_has_one_scope",
                condition=Q(batch__isnull=False, order__isnull=True, shipping_report__isnull=True)
                | Q(batch__isnull=True, order__isnull=False, shipping_report__isnull=True)
                | Q(batch__isnull=True, order__isnull=True, shipping_report__isnull=False),
            ),
            models.CheckConstraint(name="epcis_export_1_2_is_xml", condition=~Q(version="1.2") | Q(syntax="xml")),
        ]

    def __str__(self) -> str:
        return f"EPCIS {self.version} {self.syntax} export {self.pk}"

    @property
    def progress(self) -> float:
        if self.total == 0:
            return 1.0 if self.status == self.Status.DONE else 0.0
        return min(self.written / self.total, 1.0)


class ImportJob(models.Model):
    """An uploaded serial list and the all-or-nothing import of it into a list pool, with its error report."""

    class Layout(models.TextChoices):
        CSV = "csv", "CSV (serial[,91,92])"
        JSON = "json", "JSON"
        SAP_ATTP = "sap_attp", "SAP ATTP"
        SAP_ICH = "sap_ich", "SAP ICH"
        TRACELINK = "tracelink", "TraceLink"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Imported"
        REJECTED = "rejected", "Rejected"
        FAILED = "failed", "Failed"

    pool = models.ForeignKey(SerialPool, on_delete=models.PROTECT, related_name="imports")
    layout = models.CharField(max_length=16, choices=Layout.choices)
    file = models.FileField(upload_to="imports/")
    original_name = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    rows = models.BigIntegerField(default=0)
    imported = models.BigIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="[{line, serial, problem}] — the whole report")
    error_count = models.BigIntegerField(default=0)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"import {self.pk} into {self.pool}"


class PartnerSegment(models.Model):
    """Indices [first_index, first_index + count) of a partner pool (a CMO's share of an MAH pool) are the indices
    [parent_first_index, parent_first_index + count) of its parent pool, shared with the partner by ``allocation``
    (the MAH's allocation for that CMO). One row per index range of that allocation, however many serials it holds.
    Rows are only ever appended: a partner index means the same parent index for good, even after it is returned."""

    pool = models.ForeignKey(SerialPool, on_delete=models.PROTECT, related_name="segments")
    first_index = models.BigIntegerField(help_text="First index in the partner pool")
    count = models.BigIntegerField()
    parent_first_index = models.BigIntegerField(help_text="The same serial's index in the parent (MAH) pool")
    allocation = models.ForeignKey(
        Allocation, on_delete=models.PROTECT, related_name="partner_segments", help_text="The MAH allocation shared"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pool", "first_index"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "first_index"], name="partner_segment_start_unique"),
            # Also the index of the lookup "which segment of this allocation covers parent index i".
            models.UniqueConstraint(
                fields=["allocation", "parent_first_index"], name="partner_segment_parent_start_unique"
            ),
            models.CheckConstraint(
                name="partner_segment_not_empty",
                condition=Q(count__gt=0) & Q(first_index__gte=0) & Q(parent_first_index__gte=0),
            ),
        ]

    def __str__(self) -> str:
        return (
            f"[{self.first_index}, {self.first_index + self.count}) = parent "
            f"[{self.parent_first_index}, {self.parent_first_index + self.count})"
        )


# The outbox's models live in their own module; importing them here registers them with the app.
from serialization.outbox_models import Endpoint, Submission  # noqa: E402, F401
