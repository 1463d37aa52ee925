"""The Django app of keyward: its system checks and its management
command (``keyward_import_drf_api_key``)."""

from django.apps import AppConfig


class KeywardConfig(AppConfig):
    name = "keyward.django"
    label = "keyward"
    verbose_name = "keyward API keys"

    def ready(self) -> None:
        from keyward.django import checks  # noqa: F401  (registers them)
