"""The correct view books with one conditional ``UPDATE``; the check-then-act view reads, waits, writes.

``Seat.objects.filter(pk=seat, holder="").update(holder=user)`` is a single ``UPDATE ... WHERE
holder = ''``: the database decides who gets the seat, whatever the number of threads,
processes or replicas, on SQLite as on PostgreSQL (where ``select_for_update()`` inside
``transaction.atomic()`` is the other correct way; SQLite ignores it). The check-then-act view
is the bug teams ship: ``get``, ``if not seat.holder``, some work, ``save()``.
"""

from __future__ import annotations

import json
import time

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from examples.recipes.django_project.booking.models import Seat

WINDOW_S = 0.05
"""Between check and act. Wider than the widest start spread of the recipes' races (tens of ms
with live_server or in process on a loaded machine), so the check-then-act test fails on every
run; a shorter window makes the race rarer, not harmless (docs/recipes.md)."""


def _user(request: HttpRequest) -> str:
    try:
        body = json.loads(request.body)
    except ValueError:
        return "anonymous"
    return str(body.get("user", "anonymous")) if isinstance(body, dict) else "anonymous"


def _answer(booked: bool, seat: str, user: str) -> JsonResponse:
    if booked:
        return JsonResponse({"seat": seat, "user": user}, status=201)
    if not Seat.objects.filter(pk=seat).exists():
        return JsonResponse({"error": f"no seat {seat}"}, status=404)
    return JsonResponse({"error": f"seat {seat} is taken"}, status=409)


@require_POST
def book(request: HttpRequest, seat: str) -> JsonResponse:
    user = _user(request)
    updated = Seat.objects.filter(pk=seat, holder="").update(holder=user)
    return _answer(updated == 1, seat, user)


@require_POST
def book_unsafe(request: HttpRequest, seat: str) -> JsonResponse:
    user = _user(request)
    found = Seat.objects.filter(pk=seat).first()
    if found is None or found.holder:
        return _answer(False, seat, user)
    time.sleep(WINDOW_S)  # the window: another request reads the seat as free meanwhile
    found.holder = user
    found.save(update_fields=["holder"])
    return _answer(True, seat, user)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})
