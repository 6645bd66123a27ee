"""``sync="auto"`` through the ``race`` fixture on real servers: single-packet where TLS ALPN picks
``h2``, last-byte everywhere else, last-byte whenever a hold point was given; an explicit
``single-packet`` never falls back."""

from __future__ import annotations

import pytest

from pytest_seatrace import RaceViolation
from pytest_seatrace.engine.plan import Attempt
from tests.support import INNER_INI


def order(a: Attempt) -> dict[str, object]:
    return {"seats": [a.resource], "user": f"vu-{a.client}"}


RACE = {"resources": 2, "concurrency": 20}


def test_auto_picks_single_packet_over_tls_h2(race, module_service):
    service = module_service(server="hypercorn", tls=True)
    result = race.post(service.url + "/orders", json=order, tls_verify=service.ca_path, **RACE)
    assert result.mode == "single-packet"
    assert result.raced is not None
    assert result.raced.http_version == "HTTP/2"
    assert result.to_dict()["raced"]["sync"] == "single-packet"
    assert (result.wins, result.rejections, result.errors) == (2, 38, 0)


@pytest.mark.parametrize(
    ("server", "tls"),
    [("uvicorn", True), ("uvicorn", False), ("hypercorn", False)],
    ids=["uvicorn-tls", "uvicorn-http", "hypercorn-h2c"],
)
def test_auto_picks_last_byte_without_alpn_h2(race, module_service, server, tls):
    """uvicorn speaks HTTP/1.1 only; over plain http ``auto`` never tries h2c prior knowledge."""
    service = module_service(server=server, tls=tls)
    result = race.post(service.url + "/orders", json=order, tls_verify=service.ca_path or True, **RACE)
    assert result.mode == "last-byte"
    assert result.raced is not None
    assert result.raced.http_version == "HTTP/1.1"
    assert (result.wins, result.rejections, result.errors) == (2, 38, 0)


@pytest.mark.parametrize("hold", ["headers", "body"])
def test_an_explicit_hold_makes_auto_pick_last_byte(race, module_service, hold):
    service = module_service(server="hypercorn", tls=True)
    result = race.post(service.url + "/orders", json=order, tls_verify=service.ca_path, hold=hold, **RACE)
    assert result.mode == "last-byte"
    assert result.config.hold == hold
    assert result.wins == 2


def test_a_hold_from_the_ini_makes_auto_pick_last_byte(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI + "race_hold = headers\n")
    pytester.makepyfile(
        """
        def test_hold(race, sample_service_factory):
            service = sample_service_factory(server="hypercorn", tls=True)
            result = race.post(
                service.url + "/orders",
                json=lambda a: {"seats": [a.resource], "user": f"u{a.client}"},
                tls_verify=service.ca_path,
                concurrency=5,
            )
            assert result.mode == "last-byte"
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_explicit_single_packet_against_http11_is_an_error_saying_so(race, module_service):
    service = module_service(server="uvicorn", tls=True)
    with pytest.raises(RaceViolation) as info:
        race.post(
            service.url + "/orders",
            json=order,
            tls_verify=service.ca_path,
            sync="single-packet",
            **RACE,
        )
    result = info.value.result
    assert result.mode == "single-packet"
    assert (result.wins, result.errors) == (0, 40)
    (reason,) = result.error_reasons
    assert "does not speak HTTP/2" in reason
    assert "use sync='last-byte'" in reason
    assert "does not speak HTTP/2" in str(info.value)
