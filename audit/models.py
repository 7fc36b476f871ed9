import hashlib

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords


class AccessEvent(models.Model):
    """One security-relevant access: a sign-in step, a sign-out, an API token in use, a download or an export.

    Rows are only ever added (``audit.services.record_access``); nothing in the UI changes or deletes them.
    ``username`` keeps the name as typed or as it was at the time, so failed sign-ins of unknown names are kept too.
    """

    class Kind(models.TextChoices):
        LOGIN = "login", "Signed in"
        LOGIN_FAILED = "login_failed", "Sign-in failed"
        LOCKED_OUT = "locked_out", "Locked out"
        OTP_VERIFIED = "otp_verified", "Second factor verified"
        OTP_FAILED = "otp_failed", "Second factor failed"
        MFA_ENROLLED = "mfa_enrolled", "Authenticator enrolled"
        LOGOUT = "logout", "Signed out"
        TOKEN_CREATED = "token_created", "API token created"
        TOKEN_REVOKED = "token_revoked", "API token revoked"
        TOKEN_USED = "token_used", "API token used"
        DOWNLOAD = "download", "Download"
        EXPORT = "export", "Export"
        PURGE = "purge", "Records purged past retention"

    class Door(models.TextChoices):
        """Which front door the request came through (from its URL), or none for commands and workers."""

        ADMIN = "admin", "Admin"
        PORTAL = "portal", "Partner portal"
        API = "api", "API"
        SIGN_IN = "sign_in", "Sign-in pages"
        WEB = "web", "Other web page"
        SYSTEM = "system", "System (command or worker)"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    # PROTECT: accounts are deactivated, never deleted, so the trail keeps pointing at the person.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="access_events"
    )
    username = models.CharField(max_length=150, blank=True)
    ip = models.GenericIPAddressField("IP address", null=True, blank=True)
    user_agent = models.CharField(max_length=255, blank=True)
    target = models.CharField(max_length=255, blank=True, help_text="What was touched, e.g. “allocation 42”.")
    quantity = models.PositiveBigIntegerField(null=True, blank=True, help_text="How many serials, rows or files.")
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    door = models.CharField(max_length=10, choices=Door.choices, blank=True)
    api_token = models.ForeignKey(
        "ApiToken",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="access_events",
        help_text="The API key the request was authenticated with.",
    )
    counted_serials = models.PositiveBigIntegerField(
        default=0,
        help_text="Serials this event put in the account's hands that count towards SERIAL_EXPORT_LIMIT_PER_HOUR "
        "(0 for a repeat download of the account's own export file: its serials counted when it was requested).",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "created_at"], name="audit_access_user_created"),
            models.Index(fields=["kind", "created_at"], name="audit_access_kind_created"),
        ]

    def __str__(self) -> str:
        who = self.username or "anonymous"
        what = f" {self.target}" if self.target else ""
        return f"{self.get_kind_display()}: {who}{what} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class ApiToken(models.Model):
    """One API key of a (usually system) user, e.g. the account of packaging line 1.

    Only the SHA-256 of the key is stored; the key itself is shown once when the token is created. Tokens are
    revoked, never deleted, so the access log can always say which token a request used.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses this key, e.g. “line 1” or “ERP”.")
    key_prefix = models.CharField(max_length=8, db_index=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Leave empty for a key that does not expire.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["key_hash"], name="audit_apitoken_key_hash_unique"),
            # A replacement key can reuse the name once the old one is revoked.
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=Q(revoked_at__isnull=True),
                name="audit_apitoken_active_name_unique",
            ),
            models.CheckConstraint(
                condition=Q(revoked_at__isnull=True) | Q(revoked_at__gte=models.F("created_at")),
                name="audit_apitoken_revoked_after_created",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    @staticmethod
    def hash_key(raw_key: str) -> str:
        """SHA-256 hex of a raw key. Keys are 256 random bits, so a fast unsalted hash is enough to store them."""
        return hashlib.sha256(raw_key.encode()).hexdigest()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, at=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (at or timezone.now())

    def is_active(self, at=None) -> bool:
        return not self.is_revoked and not self.is_expired(at)


class ExportBlock(models.Model):
    """An account barred from getting serials out (downloads, exports, serial lists) because it took more than
    SERIAL_EXPORT_LIMIT_PER_HOUR serials within an hour (``audit.pilferage``). Active until a steward lifts it with a
    reason; lifted blocks stay as the record of what happened."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="export_blocks")
    api_token = models.ForeignKey(
        ApiToken,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="export_blocks",
        help_text="The API key of the request that crossed the limit, if it came through the API.",
    )
    reason = models.TextField()
    serials_in_hour = models.PositiveBigIntegerField(help_text="Serials the account had taken plus those it asked for.")
    limit = models.PositiveBigIntegerField(help_text="SERIAL_EXPORT_LIMIT_PER_HOUR when the block was made.")
    incident = models.ForeignKey(
        "Incident", null=True, blank=True, on_delete=models.PROTECT, related_name="export_blocks"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    lifted_at = models.DateTimeField(null=True, blank=True)
    lift_reason = models.TextField(blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("lift_exportblock", "Can lift an export block")]
        constraints = [
            # Two requests crossing the limit at once make one block, not two.
            models.UniqueConstraint(
                fields=["user"], condition=Q(lifted_at__isnull=True), name="audit_exportblock_one_active_per_user"
            ),
            models.CheckConstraint(
                condition=Q(lifted_at__isnull=True, lifted_by__isnull=True, lift_reason="")
                | (Q(lifted_at__isnull=False, lifted_by__isnull=False) & ~Q(lift_reason="")),
                name="audit_exportblock_lifted_with_who_and_why",
            ),
        ]

    def __str__(self) -> str:
        state = "lifted" if self.lifted_at else "active"
        return f"Export block of {self.user} since {self.created_at:%Y-%m-%d %H:%M} ({state})"

    @property
    def is_active(self) -> bool:
        return self.lifted_at is None


class Incident(models.Model):
    """Something QA, security or operations must look at: a reconciliation discrepancy, a failed submission, a break
    in the audit chain, a security anomaly, a pool running dry, or a manual report. Raised by the features that find
    them (``audit.services.raise_incident``); worked open → investigating → resolved → closed."""

    class Kind(models.TextChoices):
        RECONCILIATION = "reconciliation", "Reconciliation discrepancy"
        SUBMISSION = "submission", "Submission failure"
        AUDIT_CHAIN = "audit_chain", "Audit-chain break"
        SECURITY = "security", "Security anomaly"
        SERIAL_SUPPLY = "serial_supply", "Serial supply"
        MANUAL = "manual", "Manual"

    class Severity(models.TextChoices):
        LOW = "low", "Low"
        MEDIUM = "medium", "Medium"
        HIGH = "high", "High"
        CRITICAL = "critical", "Critical"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        INVESTIGATING = "investigating", "Investigating"
        RESOLVED = "resolved", "Resolved"
        CLOSED = "closed", "Closed"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.MEDIUM)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    title = models.CharField(max_length=255)
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    # What the incident is about, by label and id, so audit needs no import of the domain apps.
    subject_type = models.CharField(max_length=100, blank=True, help_text="e.g. serialization.serialpool")
    subject_id = models.CharField(max_length=64, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="incidents"
    )
    raised_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "kind"], name="audit_incident_status_kind")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.title}"


class IncidentNote(models.Model):
    """One note on an incident: what someone found or did, with who and when. Notes are added, never edited."""

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"Note on incident {self.incident_id} at {self.created_at:%Y-%m-%d %H:%M}"


class IncidentLink(models.Model):
    """One object an incident is about, by model label and primary key (audit imports no domain app)."""

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="links")
    object_type = models.CharField(max_length=100, help_text="Model label, e.g. serialization.batch")
    object_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["incident", "object_type", "object_id"], name="audit_incidentlink_unique")
        ]

    def __str__(self) -> str:
        return f"{self.object_type} {self.object_id}"


# --- The tamper-evident chain over history rows (audit.chain) ------------------------------------------------------

CHAIN_GENESIS_HASH = "0" * 64


class ChainLink(models.Model):
    """One history row (of any django-simple-history table, many-to-many history included) in the audit chain.

    Written unsealed (no sequence, no hash) in the same transaction as the history row, so a history row without a
    link was not written by the application. ``audit.chain.seal_chain`` seals links moments later, one at a time in
    ``sequence`` order: ``hash = SHA-256(previous link's hash + canonical content of the row)``.
    """

    history_label = models.CharField(
        max_length=100, help_text="Label of the history model, e.g. serialization.historicalbatch"
    )
    history_id = models.BigIntegerField(help_text="Primary key of the history row")
    sequence = models.BigIntegerField(null=True, blank=True, editable=False)
    hash = models.CharField(max_length=64, blank=True, editable=False)
    layout = models.ForeignKey("ChainLayout", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    sealed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["history_label", "history_id"], name="audit_chainlink_row_unique"),
            models.UniqueConstraint(fields=["sequence"], name="audit_chainlink_sequence_unique"),
            models.CheckConstraint(
                condition=Q(sequence__isnull=True, hash="", layout__isnull=True)
                | (Q(sequence__gte=1, layout__isnull=False) & ~Q(hash="")),
                name="audit_chainlink_sealed_consistently",
            ),
        ]
        indexes = [
            # The sealer's queue: only the few links not sealed yet.
            models.Index(fields=["id"], condition=Q(sequence__isnull=True), name="audit_chainlink_unsealed"),
        ]

    def __str__(self) -> str:
        where = f"#{self.sequence}" if self.sequence is not None else "unsealed"
        return f"{where}: {self.history_label} {self.history_id}"


class ChainLayout(models.Model):
    """The columns of one history table that its links hash, as they were when sealed. A column added later (a new
    field) does not change what older rows were hashed over, so a migration never breaks the chain."""

    history_label = models.CharField(max_length=100)
    columns = models.JSONField(help_text="Attribute names, in hashing order")
    digest = models.CharField(max_length=64, help_text="SHA-256 of label and columns")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["digest"], name="audit_chainlayout_digest_unique")]

    def __str__(self) -> str:
        return f"{self.history_label} ({len(self.columns)} columns)"


class ChainHead(models.Model):
    """The end of the audit chain (one row, pk 1): the last sealed sequence and hash, and the last verification.

    Every sealer locks this row, so links are appended one at a time in one order; a truncated chain (links deleted
    from the end) no longer reaches the sequence and hash kept here."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    sequence = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=CHAIN_GENESIS_HASH)
    updated_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_sequence = models.BigIntegerField(
        null=True, blank=True, help_text="Links checked by the last verification"
    )
    verified_ok = models.BooleanField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="audit_chainhead_single_row")]

    def __str__(self) -> str:
        return f"Audit chain head #{self.sequence}"


class AuditTrail(ChainLink):
    """The audit-trail page of the admin (a proxy, so it has its own place and view permission in the admin)."""

    class Meta:
        proxy = True
        verbose_name = "audit trail"
        verbose_name_plural = "audit trail"


# --- Retention: legal holds and purges (audit.retention) -------------------------------------------------------------


class LegalHold(models.Model):
    """A legal hold on one record, named by model label and primary key (a batch, a product, or any record a domain
    app registered with ``audit.retention``). While a hold is in force the record cannot be deleted or purged,
    whatever its retention date; a hold on a batch or a product also holds everything kept with it. Holds are
    released with a reason, never deleted."""

    target_type = models.CharField(max_length=100, help_text="Model label, e.g. serialization.batch")
    target_id = models.CharField(max_length=64, help_text="Primary key of the held record")
    target_label = models.CharField(max_length=255, blank=True, help_text="The record as it read when it was held")
    reason = models.TextField(help_text="Why the record is held, e.g. the case or the authority's request")
    placed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    placed_at = models.DateTimeField(default=timezone.now, editable=False)
    released_at = models.DateTimeField(null=True, blank=True, editable=False)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    release_reason = models.TextField(blank=True, editable=False)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-placed_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_legalhold_target")]
        constraints = [
            models.CheckConstraint(condition=~Q(reason=""), name="audit_legalhold_reason_given"),
            models.CheckConstraint(
                condition=Q(released_at__isnull=True, released_by__isnull=True, release_reason="")
                | (Q(released_at__isnull=False, released_by__isnull=False) & ~Q(release_reason="")),
                name="audit_legalhold_released_with_who_and_why",
            ),
        ]

    def __str__(self) -> str:
        state = f"released {self.released_at:%Y-%m-%d}" if self.released_at else "in force"
        return f"Legal hold {self.pk} on {self.target_type} {self.target_id} ({state})"

    @property
    def is_active(self) -> bool:
        return self.released_at is None


class PurgeRecord(models.Model):
    """One purge of records past their retention (``manage.py purge_expired``, or the deletion of one record past
    its retention through the admin or the API): which records went, how many rows of each table, who, when, why."""

    performed_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    performed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    reason = models.TextField()
    kept_until_before = models.DateField(
        help_text="The purge's day: records whose keep-until date was before it, and not on hold, were removed"
    )
    removed = models.JSONField(
        default=list, blank=True, encoder=DjangoJSONEncoder, help_text="[{type, id, label, keep_until}] per record"
    )
    counts = models.JSONField(
        default=dict, blank=True, help_text="Rows deleted per table (model label); “label.field” = links cleared"
    )
    skipped = models.JSONField(
        default=list,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text="Records past their retention that stayed: on legal hold, or still referenced by kept records",
    )

    history = HistoricalRecords()

    class Meta:
        ordering = ["-performed_at", "-id"]

    def __str__(self) -> str:
        return f"Purge {self.pk} on {self.performed_at:%Y-%m-%d %H:%M}: {sum(self.counts.values())} rows"
