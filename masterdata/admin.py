"""The master-data steward's admin. Validation is the models' own (ModelForm → full_clean), so a wrong check digit,
a GTIN outside the company's prefixes or a character outside GS1 set 82 is an error on the field that holds it;
the admin saves a change and its inlines in one transaction, so nothing is ever half-saved. History per object comes
from SimpleHistoryAdmin (the user from HistoryRequestMiddleware); object permissions for companies and products from
guardian. Rows are scoped by the same selectors as the API."""

from django import forms
from django.contrib import admin
from django.db import models
from guardian.admin import GuardedModelAdminMixin
from simple_history.admin import SimpleHistoryAdmin

from audit.exceptions import DomainError
from masterdata import selectors, services
from masterdata.models import (
    Company,
    CompanyMembership,
    CompanyPrefix,
    Location,
    Market,
    PackagingLevel,
    Product,
    ProductNationalCode,
)

# --- companies ------------------------------------------------------------------------------------------------------


class CompanyPrefixFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        for form in self.deleted_forms:
            if form.instance.pk is None:
                continue
            try:
                services.check_prefix_removal(prefix=form.instance)
            except DomainError as exc:
                form.add_error(None, exc.message)
                raise forms.ValidationError(exc.message) from exc


class CompanyPrefixInline(admin.TabularInline):
    model = CompanyPrefix
    formset = CompanyPrefixFormSet
    fields = ["prefix", "length"]
    readonly_fields = ["length"]
    extra = 1


@admin.register(Company)
class CompanyAdmin(GuardedModelAdminMixin, SimpleHistoryAdmin):
    list_display = ["name", "role_list", "country", "gln", "prefix_list"]
    list_filter = ["is_mah", "is_cmo", "is_3pl", "is_wholesaler", "country"]
    search_fields = ["name", "gln", "prefixes__prefix"]
    fieldsets = [
        (None, {"fields": ["name", "country", "gln"]}),
        ("Roles", {"fields": [("is_mah", "is_cmo", "is_3pl", "is_wholesaler")]}),
    ]
    inlines = [CompanyPrefixInline]

    def get_queryset(self, request):
        return selectors.list_companies(user=request.user)

    @admin.display(description="roles")
    def role_list(self, obj: Company) -> str:
        return ", ".join(obj.roles)

    @admin.display(description="GS1 company prefixes")
    def prefix_list(self, obj: Company) -> str:
        return ", ".join(prefix.prefix for prefix in obj.prefixes.all())


@admin.register(CompanyPrefix)
class CompanyPrefixAdmin(SimpleHistoryAdmin):
    list_display = ["prefix", "length", "company"]
    list_filter = ["length"]
    search_fields = ["prefix", "company__name"]
    readonly_fields = ["length"]
    list_select_related = ["company"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(company__in=selectors.list_companies(user=request.user))

    def get_deleted_objects(self, objs, request):
        # Products and locations do not point at their prefix by a foreign key, so Django's own protected-object
        # check cannot see them: add them, and the admin shows its "cannot delete" page instead of deleting.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for prefix in objs:
            try:
                services.check_prefix_removal(prefix=prefix)
            except DomainError as exc:
                protected = [*protected, exc.message]
        return deleted, counts, perms_needed, protected


@admin.register(CompanyMembership)
class CompanyMembershipAdmin(SimpleHistoryAdmin):
    list_display = ["user", "company"]
    list_filter = ["company"]
    search_fields = ["user__username", "company__name"]
    raw_id_fields = ["user"]
    list_select_related = ["user", "company"]

    # Through the services, so the company groups (and what partners shared with them) follow every change.
    def save_model(self, request, obj, form, change):
        if change and "user" in form.changed_data:
            services.remove_membership(membership=CompanyMembership.objects.get(pk=obj.pk), actor=request.user)
        saved = services.assign_membership(user=obj.user, company=obj.company, actor=request.user)
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        services.remove_membership(membership=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for membership in queryset.select_related("company"):
            services.remove_membership(membership=membership, actor=request.user)


# --- locations ------------------------------------------------------------------------------------------------------


@admin.register(Location)
class LocationAdmin(SimpleHistoryAdmin):
    list_display = ["name", "kind", "company", "parent", "gln", "gln_extension", "sgln", "is_active"]
    list_filter = ["kind", "is_active", "company", "country"]
    search_fields = ["name", "gln", "company__name"]
    fields = ["company", "kind", "name", "parent", "gln", "gln_extension", "sgln", "address", "country", "is_active"]
    readonly_fields = ["sgln"]
    formfield_overrides = {models.TextField: {"widget": forms.Textarea(attrs={"rows": 3, "cols": 60})}}

    def get_queryset(self, request):
        return selectors.list_locations(user=request.user)

    @admin.display(description="SGLN (derived)")
    def sgln(self, obj: Location) -> str:
        return obj.sgln if obj.pk else "—"


# --- markets --------------------------------------------------------------------------------------------------------


class MarketForm(forms.ModelForm):
    extra_serial_parameters = forms.TypedMultipleChoiceField(
        choices=[(ai, f"({ai}) {label}") for ai, label in Market.EXTRA_SERIAL_PARAMETERS.items()],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Extra per-serial AIs the market requires (Russia: 91 and 92)",
    )

    class Meta:
        model = Market
        fields = sorted(services.MARKET_FIELDS)  # the admin's fieldsets decide the order


@admin.register(Market)
class MarketAdmin(SimpleHistoryAdmin):
    form = MarketForm
    list_display = [
        "code",
        "name",
        "serial_length",
        "randomisation_required",
        "max_guess_probability",
        "national_number_ai",
        "aggregation_required",
        "reporting_format",
    ]
    list_filter = ["randomisation_required", "aggregation_required", "reporting_format"]
    search_fields = ["code", "name"]
    fieldsets = [
        (None, {"fields": ["code", "name"]}),
        (
            "Serial numbers",
            {"fields": ["serial_alphabet", "serial_length", "randomisation_required", "max_guess_probability"]},
        ),
        ("Identifiers on the pack", {"fields": ["national_number_ai", "extra_serial_parameters"]}),
        ("Packaging", {"fields": ["aggregation_required"]}),
        (
            "Reporting and records",
            {"fields": ["reporting_format", "retention_years_after_expiry", "retention_years_after_release"]},
        ),
    ]


# --- products -------------------------------------------------------------------------------------------------------


class ProductNationalCodeInline(admin.TabularInline):
    model = ProductNationalCode
    fields = ["market", "ai", "value"]
    extra = 0


class PackagingLevelInline(admin.TabularInline):
    model = PackagingLevel
    fields = ["level", "gtin", "quantity", "uses_sscc"]
    extra = 0


class ProductForm(forms.ModelForm):
    class Meta:
        model = Product
        fields = [*sorted(services.PRODUCT_FIELDS), "markets"]  # the admin's fieldsets decide the order
        widgets = {"markets": forms.CheckboxSelectMultiple}

    def clean(self):
        cleaned_data = super().clean()
        changed = [name for name in services.PRODUCT_IDENTITY_FIELDS if name in self.changed_data]
        try:
            services.check_identity_change(instance=self.instance, changed_fields=changed)
        except DomainError as exc:
            self.add_error(exc.field, exc.message)
        return cleaned_data


@admin.register(Product)
class ProductAdmin(GuardedModelAdminMixin, SimpleHistoryAdmin):
    form = ProductForm
    list_display = ["product_code", "name", "strength", "owner", "code_schema", "market_list", "is_active"]
    list_filter = ["markets", "owner", "code_schema", "is_active"]
    search_fields = ["product_code", "name", "common_name", "national_codes__value"]
    fieldsets = [
        (None, {"fields": ["owner", "code_schema", "product_code", "company_prefix_length", "is_active"]}),
        ("Description", {"fields": ["name", "common_name", "dosage_form", "strength", "pack_size", "pack_type"]}),
        ("Markets", {"fields": ["markets"]}),
    ]
    inlines = [ProductNationalCodeInline, PackagingLevelInline]

    def get_queryset(self, request):
        return selectors.list_products(user=request.user)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "owner":
            kwargs["queryset"] = selectors.list_companies(user=request.user).filter(is_mah=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="markets")
    def market_list(self, obj: Product) -> str:
        return ", ".join(market.code for market in obj.markets.all())


class _ProductChildAdmin(SimpleHistoryAdmin):
    list_select_related = ["product"]
    search_fields = ["product__product_code", "product__name"]

    def get_queryset(self, request):
        visible = selectors.list_products(user=request.user).values("pk")
        return super().get_queryset(request).filter(product__in=visible)


@admin.register(ProductNationalCode)
class ProductNationalCodeAdmin(_ProductChildAdmin):
    list_display = ["product", "market", "ai", "value"]
    list_filter = ["market", "ai"]
    list_select_related = ["product", "market"]
    search_fields = [*_ProductChildAdmin.search_fields, "value"]


@admin.register(PackagingLevel)
class PackagingLevelAdmin(_ProductChildAdmin):
    list_display = ["product", "level", "gtin", "quantity", "uses_sscc"]
    list_filter = ["level", "uses_sscc"]
    search_fields = [*_ProductChildAdmin.search_fields, "gtin"]
