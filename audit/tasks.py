"""django-q2 entry points of the audit app."""

from audit import chain, services


def seal_audit_chain() -> str:
    """Seal history rows whose links are still pending (scheduled every minute; commits usually seal their own)."""
    return f"{chain.seal_chain()} links sealed"


def verify_audit_chain() -> str:
    """Verify the whole audit chain; a break raises an audit-chain incident (scheduled every hour)."""
    report, incident = services.verify_audit_chain()
    return report.summary() + (f" Incident {incident.pk}." if incident is not None else "")
