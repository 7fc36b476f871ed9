from django.apps import AppConfig


class SerializationConfig(AppConfig):
    name = "serialization"
    verbose_name = "Serialization"
