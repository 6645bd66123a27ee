"""``POST /book/<seat>`` (correct), ``POST /unsafe/book/<seat>`` (check-then-act), ``GET /health``."""

from __future__ import annotations

from django.urls import path

from examples.recipes.django_project.booking import views

urlpatterns = [
    path("book/<str:seat>", views.book),
    path("unsafe/book/<str:seat>", views.book_unsafe),
    path("health", views.health),
]
