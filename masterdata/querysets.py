"""Chainable, side-effect-free filters for master data."""

from django.apps import apps
from django.db import models


class CompanyQuerySet(models.QuerySet):
    def with_prefixes(self):
        return self.prefetch_related("prefixes")


class LocationQuerySet(models.QuerySet):
    def of_company(self, company_id: int):
        return self.filter(company_id=company_id)

    def with_sgln_data(self):
        # The SGLN needs the company's prefixes (the prefix length is not derivable from the GLN).
        return self.select_related("company", "parent").prefetch_related("company__prefixes")


class ProductQuerySet(models.QuerySet):
    def owned_by(self, company_id: int):
        return self.filter(owner_id=company_id)

    def for_market(self, market_code: str):
        return self.filter(markets__code=market_code)

    def with_details(self):
        national_code = apps.get_model("masterdata", "ProductNationalCode")
        return self.select_related("owner").prefetch_related(
            "markets",
            models.Prefetch("national_codes", queryset=national_code.objects.select_related("market")),
            "packaging_levels",
        )
