from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate


class AuditConfig(AppConfig):
    # Explicit, because this module also defines the admin's AppConfig (listed as "audit.apps.BackofficeAdminConfig").
    default = True
    name = "audit"
    verbose_name = "Audit and access"

    def ready(self) -> None:
        from audit import chain
        from audit.roles import seed_roles_after_migrate

        # Every history row written from now on gets its link in the audit chain, in the same transaction.
        chain.connect_receivers()
        post_migrate.connect(chain.adopt_after_migrate, sender=self, dispatch_uid="audit.chain.adopt")

        # Once per migrate (sender=self); seed_roles creates any missing permissions itself, so the order in which
        # the other apps' post_migrate handlers run does not matter.
        post_migrate.connect(seed_roles_after_migrate, sender=self, dispatch_uid="audit.seed_roles")


class BackofficeAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin whose default site demands a verified second factor (see audit.admin_site)."""

    default = False
    default_site = "audit.admin_site.BackofficeAdminSite"
