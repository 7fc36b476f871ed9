from django.apps import AppConfig


class SerializationConfig(AppConfig):
    name = "serialization"
    verbose_name = "Serialization"

    def ready(self) -> None:
        from serialization.retention import register_retention

        register_retention()  # batches and what is kept with them, for audit.retention's guards and purge
