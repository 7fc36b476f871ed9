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
    notes = models.TextField(blank=True)
    raised_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "kind"], name="audit_incident_status_kind")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.title}"
