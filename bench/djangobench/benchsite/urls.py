"""URLs of the benchmark site."""

from django.urls import path

from . import views

urlpatterns = [
    path("rows", views.rows, name="rows"),
    path("rows-public", views.rows_public, name="rows-public"),
]
