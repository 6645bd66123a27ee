"""``X-Arrival-Ns`` on every answer: when the request reached Django (the server-side start spread)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


def stamp_arrival(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        arrived = time.perf_counter_ns()
        response = get_response(request)
        response["X-Arrival-Ns"] = str(arrived)
        return response

    return middleware
