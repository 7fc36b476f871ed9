"""``manage.py load_demo``: demo master data and demo users, safe to run again.

Prints the sign-in URL, the demo logins with their password and how to set up the second factor. The password is
generated per run (or given with --password) and set on the demo users on every run, so the printed one always
works; it is stored only as Django's password hash. Nothing else secret is printed, except the API token of the
"line1" system account, which is newly created (and the previous demo token revoked) on each run.
"""

import secrets
import string

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from masterdata import demo, services
from masterdata.models import Company

DEMO_MARKER = "Demo"  # first_name of the accounts this command owns; other accounts are never touched
LINE_TOKEN_NAME = "demo line 1"  # noqa: S105 - the token's label, not a secret


class DemoUser:
    def __init__(self, username: str, role: str, *, company: str | None = None, staff: bool = True) -> None:
        self.username, self.role, self.company, self.staff = username, role, company, staff


DEMO_USERS = [
    DemoUser("steward", "Steward"),
    DemoUser("qa", "QA"),
    DemoUser("auditor", "Auditor"),
    DemoUser("cmo", "CMO user", company="Contract Pack GmbH", staff=False),
    DemoUser("line1", "Line system", company="Acme Pharma", staff=False),
]


class Command(BaseCommand):
    help = "Load demo companies, sites, lines, products and users (idempotent); prints the logins."

    def add_arguments(self, parser):
        parser.add_argument("--password", help="Password for every demo user (default: a new random one per run)")
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="Where the back-office runs, for the printed URLs"
        )

    def handle(self, *args, password=None, base_url="", **options):
        # Letters and digits only, so the password survives copy and paste from a terminal.
        password = password or "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16))
        try:
            validate_password(password)
        except ValidationError as exc:
            raise CommandError("The demo password is too weak: " + " ".join(exc.messages)) from exc
        missing_roles = {user.role for user in DEMO_USERS} - set(Group.objects.values_list("name", flat=True))
        if missing_roles:
            raise CommandError(f"Role groups {', '.join(sorted(missing_roles))} are missing; run `manage.py migrate`.")

        with transaction.atomic():
            summary = demo.load_demo_masterdata(actor=None)
            users, skipped = self._users(password)
        token = self._line_token(users.get("line1"))

        base_url = base_url.rstrip("/")
        out = self.stdout
        out.write(self.style.SUCCESS(f"Demo data ready ({summary.created} new master-data records)."))
        market_codes = ", ".join(sorted({code for product in demo.PRODUCTS for code in product.markets}))
        out.write(
            f"  {len(summary.companies)} companies, {len(summary.locations)} locations, "
            f"{len(summary.products)} products in markets {market_codes}"
        )
        out.write("")
        out.write(f"Sign in at {base_url}/accounts/login/ (the admin is at {base_url}/admin/)")
        out.write(f"  password for every demo user: {password}")
        for user in DEMO_USERS:
            if user.username in users:
                where = f", member of {user.company}" if user.company else ""
                out.write(f"  {user.username:<8} {user.role}{where}")
        for username in skipped:
            out.write(self.style.WARNING(f"  {username}: an account not created by load_demo exists; left untouched"))
        out.write("")
        out.write(
            "Second factor: the demo users have none yet. On the first sign-in the enrolment page shows a QR code;"
        )
        out.write(
            "scan it with an authenticator app (or type the key shown under it), enter the 6-digit code, and keep"
        )
        out.write("the backup codes shown once. Later sign-ins ask for a code from the app.")
        if token is not None:
            out.write("")
            out.write(f"API token for line1 (shown once, previous demo token revoked): {token}")
            out.write(f"  curl -H 'Authorization: Token {token}' {base_url}/api/v1/products/")

    def _users(self, password: str) -> tuple[dict, list[str]]:
        user_model = get_user_model()
        companies = {
            company.name: company for company in Company.objects.filter(name__in=["Acme Pharma", "Contract Pack GmbH"])
        }
        users, skipped = {}, []
        for spec in DEMO_USERS:
            user = user_model.objects.filter(username=spec.username).first()
            if user is not None and user.first_name != DEMO_MARKER:
                skipped.append(spec.username)
                continue
            if user is None:
                user = user_model(username=spec.username, first_name=DEMO_MARKER, last_name=spec.role)
            user.is_staff = spec.staff
            user.is_active = True
            user.set_password(password)
            user.save()
            user.groups.add(Group.objects.get(name=spec.role))
            if spec.company:
                services.assign_membership(user=user, company=companies[spec.company], actor=None, reason="demo user")
            users[spec.username] = user
        return users, skipped

    def _line_token(self, user) -> str | None:
        try:
            from audit.services import create_api_token, revoke_api_token
        except ImportError:  # the audit app predates API tokens
            return None
        if user is None:
            return None
        from audit.models import ApiToken

        for old in ApiToken.objects.filter(user=user, name=LINE_TOKEN_NAME, revoked_at__isnull=True):
            revoke_api_token(token=old, actor=None)  # revoked by this command, not by a person
        _token, raw_key = create_api_token(user=user, name=LINE_TOKEN_NAME)
        return raw_key
