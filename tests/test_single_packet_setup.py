"""``setup=`` with a single-packet start: the roster is raced exactly as in last-byte mode.

Set-up values reach the request callables, clients whose set-up failed do not race (errors
with the reason), and set-up cookies go with the raced request, over h2c and TLS (ALPN h2).
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_seatrace import RaceViolation, ServiceHandle
from tests.support import bearer, login, order

TRANSPORTS = pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])


def h2_service(factory: Any, tls: bool, **kwargs: Any) -> ServiceHandle:
    service: ServiceHandle = factory(server="hypercorn", auth=True, tls=tls, **kwargs)
    return service


def trust(service: ServiceHandle) -> Any:
    return service.ca_path if service.ca_path is not None else True


@TRANSPORTS
def test_login_then_book_single_packet_passes_on_safe(race, module_service, tls):
    service = h2_service(module_service, tls, seats=4)
    race.base_url = service.url
    result = race.post(
        "/orders", setup=login, headers=bearer, json=order, resources=4, concurrency=25,
        sync="single-packet", tls_verify=trust(service),
    )  # fmt: skip
    assert result.mode == "single-packet"
    assert result.raced is not None
    assert result.raced.http_version == "HTTP/2"
    assert result.status_counts == {201: 4, 409: 96}  # no 401: every token reached its request
    assert result.early == 0
    for seat in range(1, 5):
        assert service.holders(seat) == [f"u{result.winners[seat][0].client}-{seat}"]


@TRANSPORTS
def test_login_then_book_single_packet_is_caught_on_unsafe(race, module_service, tls):
    service = h2_service(module_service, tls, seats=4, strategy="unsafe", window_ms=2)
    race.base_url = service.url
    with pytest.raises(RaceViolation) as info:
        race.post(
            "/orders", setup=login, headers=bearer, json=order, resources=4, concurrency=25,
            sync="single-packet", tls_verify=trust(service),
        )  # fmt: skip
    result = info.value.result
    assert result.mode == "single-packet"
    assert 401 not in result.status_counts
    assert result.wins > 4
    assert "too-many" in {v.kind for v in result.violations}


def test_failed_setups_do_not_race_and_say_why(race, module_service):
    service = h2_service(module_service, False, seats=2)
    race.base_url = service.url
    sent: list[tuple[Any, int]] = []

    async def flaky(a: Any) -> str:
        if a.client in (2, 5):
            raise RuntimeError("no such user")
        return await login(a)

    def headers(a: Any) -> dict[str, str]:
        sent.append((a.resource, a.client))
        return bearer(a)

    result = race.post(
        "/orders", setup=flaky, headers=headers, json=order, resources=2, concurrency=6,
        sync="single-packet", check=False,
    )  # fmt: skip
    assert result.mode == "single-packet"
    assert result.requests == 12
    assert result.errors == 4
    assert result.error_reasons == {"set-up raised RuntimeError: no such user": 4}
    assert sorted(sent) == [(r, c) for r in (1, 2) for c in (1, 3, 4, 6)]  # failed clients never built
    assert result.status_counts == {201: 2, 409: 6}
    assert [v.kind for v in result.violations] == ["error", "error"]


def test_setup_cookies_go_with_the_single_packet_request(race, module_service):
    """No header: the login's session cookie is the raced request's only credential."""
    service = h2_service(module_service, False, seats=2)
    race.base_url = service.url
    result = race.post("/orders", setup=login, json=order, resources=2, concurrency=10, sync="single-packet")
    assert result.status_counts == {201: 2, 409: 18}


def test_auto_with_a_setup_dependent_url_picks_single_packet_over_tls(race, module_service):
    """``auto`` decides before any set-up ran: a URL that needs ``attempt.setup`` is probed at
    the base URL's origin instead of failing."""
    service = h2_service(module_service, True, seats=1)
    race.base_url = service.url

    async def setup(a: Any) -> dict[str, str]:
        return {"token": await login(a), "path": "/orders"}

    result = race.post(
        lambda a: a.setup["path"],
        setup=setup,
        headers=lambda a: {"Authorization": f"Bearer {a.setup['token']}"},
        json=order,
        concurrency=10,
        tls_verify=trust(service),
    )
    assert result.mode == "single-packet"
    assert result.status_counts == {201: 1, 409: 9}
