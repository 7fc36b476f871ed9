"""History for records that name their own author and reason (django-simple-history, chained by ``audit.chain``)."""

from simple_history.models import HistoricalRecords


class AuthoredHistory(HistoricalRecords):
    """``HistoricalRecords`` for a record whose fields say who made it and why (a pool fill's ``actor`` and ``reason``,
    a release's ``released_by``…). Its history rows carry them as user and change reason wherever the write happened —
    also in a background task or a command, where no request names the user. A user or reason set on the instance
    (``_history_user``, ``_change_reason``) or taken from the request still comes first."""

    def __init__(self, *args, user_field: str, reason_field: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user_field = user_field
        self.reason_field = reason_field

    def get_history_user(self, instance):
        user = super().get_history_user(instance)
        return user if user is not None else getattr(instance, self.user_field)

    def get_change_reason_for_object(self, instance, history_type, using):
        reason = super().get_change_reason_for_object(instance, history_type, using)
        if reason is None and self.reason_field:
            reason = (getattr(instance, self.reason_field) or "")[:100] or None  # the history column keeps 100
        return reason
