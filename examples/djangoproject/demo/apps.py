from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo app: a template page, JSON views and a file upload."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "demo"
