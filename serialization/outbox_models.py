"""The outbox: where each market's documents go (Endpoint) and each document on its way there (Submission).

Kept beside ``serialization.models`` (which imports this module, so Django registers both models with the app) to
leave that shared module untouched but for one line.
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

ENV_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class Endpoint(models.Model):
    """Where the documents of one market are delivered: an HTTP(S) URL that takes a POST, or a folder files are
    dropped into. A credential is never stored here: ``credential_env`` names the environment variable that holds
    it (a token, an API key or a password), read only when a document is sent."""

    class Kind(models.TextChoices):
        HTTP = "http", "HTTP(S) POST"
        FILE_DROP = "file_drop", "File drop folder"

    class AuthKind(models.TextChoices):
        NONE = "none", "None"
        BEARER = "bearer", "Bearer token (Authorization: Bearer …)"
        BASIC = "basic", "HTTP basic (user name + password)"
        API_KEY = "api_key", "API key in a header"

    name = models.CharField(max_length=100, unique=True)
    market = models.ForeignKey("masterdata.Market", on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.HTTP)
    url = models.URLField("URL", max_length=500, blank=True, help_text="https://… for HTTP(S) endpoints")
    folder = models.CharField(
        max_length=255,
        blank=True,
        help_text="For a file drop: a folder inside OUTBOX_DROP_ROOT (relative, e.g. eu-hub/outgoing)",
    )
    auth_kind = models.CharField(max_length=16, choices=AuthKind.choices, default=AuthKind.NONE)
    username = models.CharField(max_length=150, blank=True, help_text="For HTTP basic only")
    api_key_header = models.CharField(
        "API key header", max_length=100, blank=True, default="X-API-Key", help_text="For an API key only"
    )
    credential_env = models.CharField(
        "credential environment variable",
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the token, API key or password (never the secret itself)",
    )
    timeout_seconds = models.PositiveSmallIntegerField(
        default=30, help_text="How long one attempt may wait for the receiver before it counts as failed"
    )
    is_active = models.BooleanField(default=True, help_text="New submissions of the market go to its active endpoint")
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["market__code", "name"]
        constraints = [
            # New submissions pick "the" endpoint of their market: two active ones would make that a guess.
            models.UniqueConstraint(
                fields=["market"],
                condition=Q(is_active=True),
                name="one_active_endpoint_per_market",
                violation_error_message="This market already has an active endpoint; deactivate it first.",
            ),
            models.CheckConstraint(
                name="endpoint_timeout_1_to_600", condition=Q(timeout_seconds__gte=1, timeout_seconds__lte=600)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.kind == self.Kind.HTTP:
            if not self.url:
                errors["url"] = "An HTTP endpoint needs the URL documents are POSTed to."
            elif not self.url.lower().startswith(("https://", "http://")):
                errors["url"] = "Use an http:// or https:// URL."
            elif "@" in self.url.split("//", 1)[1].split("/", 1)[0]:
                errors["url"] = (
                    "Remove the user name and password from the URL; choose an authentication kind and put the "
                    "secret in the environment variable named below."
                )
        if self.kind == self.Kind.FILE_DROP:
            if not self.folder:
                errors["folder"] = "A file drop endpoint needs the folder files are written to."
            elif self.folder.startswith(("/", "\\")) or ".." in self.folder.replace("\\", "/").split("/"):
                errors["folder"] = "Give a folder inside OUTBOX_DROP_ROOT, relative and without “..”."
            if self.auth_kind != self.AuthKind.NONE:
                errors["auth_kind"] = "A file drop takes no authentication; choose None."
        if self.auth_kind != self.AuthKind.NONE:
            if not self.credential_env:
                errors["credential_env"] = (
                    "Name the environment variable that holds the credential (e.g. EU_HUB_TOKEN) and set it on the "
                    "workers."
                )
            elif not set(self.credential_env) <= ENV_NAME_CHARS or self.credential_env[0].isdigit():
                errors["credential_env"] = (
                    "An environment variable name has upper-case letters, digits and _ only (e.g. EU_HUB_TOKEN); "
                    "give its name, never the secret itself."
                )
        if self.auth_kind == self.AuthKind.BASIC and not self.username:
            errors["username"] = "HTTP basic needs the user name (the password comes from the environment variable)."
        if self.auth_kind == self.AuthKind.API_KEY and not self.api_key_header:
            errors["api_key_header"] = "Name the header the API key is sent in, e.g. X-API-Key."
        if errors:
            raise ValidationError(errors)

    @property
    def target(self) -> str:
        """Where documents go, for people: the URL or the drop folder."""
        return self.url if self.kind == self.Kind.HTTP else f"{{OUTBOX_DROP_ROOT}}/{self.folder}"


class Submission(models.Model):
    """One document for one market — built and validated from a batch (or a shipment), stored with its SHA-256 —
    and its delivery: every attempt, the last error, the receiver's answer, and what happens next.

    pending → sending → accepted | rejected | failed; failed → sending again at ``next_attempt_at`` (exponential
    back-off) until OUTBOX_MAX_ATTEMPTS, then dead. Rejected and dead raise an incident; a steward may resubmit
    either (with a reason). Every change is in the history with its reason."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        FAILED = "failed", "Failed (will retry)"
        DEAD = "dead", "Dead (gave up)"

    class Kind(models.TextChoices):
        EU_HUB = "eu_hub", "EU hub: product master data and batch pack data"
        US_DSCSA = "us_dscsa", "US DSCSA: EPCIS 1.2 shipment"
        RU_MDLP = "ru_mdlp", "RU MDLP: serials with crypto codes"
        PK_DRAP = "pk_drap", "PK DRAP: batch production data"
        SA_RSD = "sa_rsd", "SA RSD: EPCIS with SSCC aggregation"

    # Still on its way: the dashboard's "pending" and, past OUTBOX_LATE_AFTER_MINUTES, "late".
    OPEN_STATUSES = (Status.PENDING, Status.SENDING, Status.FAILED)
    RESUBMITTABLE_STATUSES = (Status.REJECTED, Status.DEAD, Status.FAILED)

    market = models.ForeignKey("masterdata.Market", on_delete=models.PROTECT, related_name="+")
    company = models.ForeignKey(
        "masterdata.Company",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The MAH the document reports for (the product's owner); its users see the submission",
    )
    batch = models.ForeignKey("serialization.Batch", on_delete=models.PROTECT, related_name="submissions")
    shipping_report = models.ForeignKey(
        "serialization.LineReport",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The shipment reported (US DSCSA)",
    )
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="submissions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    file = models.FileField(upload_to="submissions/", max_length=255)
    content_type = models.CharField(max_length=100)
    sha256 = models.CharField("SHA-256", max_length=64)
    size = models.BigIntegerField(help_text="Bytes")
    items = models.BigIntegerField(default=0, help_text="Serials (units and containers) in the document")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="When the next try is due")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    response_status = models.PositiveSmallIntegerField("response status code", null=True, blank=True)
    response_body = models.TextField("response body (excerpt)", blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, help_text="Accepted, rejected or dead at")
    incident = models.ForeignKey(
        "audit.Incident", on_delete=models.PROTECT, null=True, blank=True, related_name="+", editable=False
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="submission_due"),
            models.Index(fields=["company", "status"], name="submission_company_status"),
        ]
        constraints = [
            models.CheckConstraint(
                name="submission_status_known",
                condition=Q(status__in=["pending", "sending", "accepted", "rejected", "failed", "dead"]),
            ),
            # One live submission per batch, market and document: a second one would upload the batch twice.
            # Rejected and dead ones do not count: a new submission may replace them.
            models.UniqueConstraint(
                fields=["batch", "market", "kind"],
                condition=Q(status__in=["pending", "sending", "failed", "accepted"], shipping_report__isnull=True),
                name="one_live_submission_per_batch_and_market",
                violation_error_message="This batch already has a live submission to this market.",
            ),
            models.UniqueConstraint(
                fields=["shipping_report", "market", "kind"],
                condition=Q(status__in=["pending", "sending", "failed", "accepted"], shipping_report__isnull=False),
                name="one_live_submission_per_shipment_and_market",
                violation_error_message="This shipment already has a live submission to this market.",
            ),
            models.CheckConstraint(
                name="submission_retry_has_a_time",
                condition=~Q(status="failed") | Q(next_attempt_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} for {self.market.code}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES
