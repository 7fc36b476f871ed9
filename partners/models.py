"""Partnerships between a marketing authorisation holder (MAH) and the contract manufacturers (CMOs) packing for it,
and the serials the MAH assigns to a CMO under one."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from simple_history.models import HistoricalRecords

from masterdata.models import Company, Market, Product


class Partnership(models.Model):
    """An MAH's contract with a CMO: which of the MAH's products the CMO may pack, and for which markets.

    Revoking stops new assignments and allocations; everything already assigned or reported stays on record."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        REVOKED = "revoked", "Revoked"

    mah = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="partnerships_as_mah", verbose_name="MAH")
    cmo = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="partnerships_as_cmo", verbose_name="CMO")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    products = models.ManyToManyField(Product, blank=True, related_name="partnerships")
    markets = models.ManyToManyField(Market, blank=True, related_name="+")
    started_on = models.DateField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoke_reason = models.TextField(blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords(m2m_fields=[products, markets])

    class Meta:
        ordering = ["mah__name", "cmo__name"]
        constraints = [
            models.UniqueConstraint(fields=["mah", "cmo"], name="partnership_unique_pair"),
            models.CheckConstraint(
                name="partnership_between_two_companies",
                condition=~Q(mah=F("cmo")),
                violation_error_message="An MAH cannot be its own CMO partner.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.mah} → {self.cmo}"

    def clean(self) -> None:
        errors = {}
        if self.mah_id and not self.mah.is_mah:
            errors["mah"] = f"{self.mah} is not a marketing authorisation holder; tick its MAH role first."
        if self.cmo_id and not self.cmo.is_cmo:
            errors["cmo"] = f"{self.cmo} is not a contract manufacturer; tick its CMO role first."
        if errors:
            raise ValidationError(errors)

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class SerialAssignment(models.Model):
    """Serials of one product that an MAH assigned to a CMO under a partnership: one allocation from the MAH's pool
    (Assigned there, for purpose "CMO"), shared into the CMO's partner pool (Available there). Never deleted; a
    return of unused serials leaves this row as it was and shows in the counts."""

    partnership = models.ForeignKey(Partnership, on_delete=models.PROTECT, related_name="assignments")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    allocation = models.OneToOneField(
        "serialization.Allocation",
        on_delete=models.PROTECT,
        related_name="partner_assignment",
        help_text="The allocation from the MAH's pool",
    )
    partner_pool = models.ForeignKey(
        "serialization.SerialPool",
        on_delete=models.PROTECT,
        related_name="partner_assignments",
        help_text="The CMO's pool the serials were shared into",
    )
    quantity = models.BigIntegerField()
    request_id = models.CharField(max_length=100, help_text="Caller's idempotency key")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["partnership", "request_id"],
                name="serial_assignment_request_id_unique_per_partnership",
                violation_error_message="This request id was already used for an assignment of this partnership.",
            ),
            models.CheckConstraint(name="serial_assignment_quantity_positive", condition=Q(quantity__gt=0)),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} serials of {self.product} to {self.partnership.cmo}"
