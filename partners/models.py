"""Partnerships between a marketing authorisation holder (MAH) and the contract manufacturers (CMOs) packing for it."""

from django.conf import settings
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
