"""One seat, one holder: ``""`` while free."""

from __future__ import annotations

from django.db import models


class Seat(models.Model):
    # Annotated for mypy without django-stubs' plugin (which needs the settings at check time).
    number: models.CharField[str, str] = models.CharField(primary_key=True, max_length=16)
    holder: models.CharField[str, str] = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        app_label = "booking"
