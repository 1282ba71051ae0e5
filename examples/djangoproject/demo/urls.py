"""URLs of the demo app."""

from django.urls import path

from . import views

app_name = "demo"

urlpatterns = [
    path("", views.index, name="index"),
    path("api/hello", views.api_hello, name="api-hello"),
    path("upload", views.upload, name="upload"),
    path("env", views.env, name="env"),
]
