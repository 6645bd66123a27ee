"""A verdict to believe on every kind of handler: early answers, hold points, all-rejection
races, hung services, forgotten gates, unreachable expectations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from pytest_seatrace import RaceUsageError, RaceViolation
from tests.support import INNER_INI, Receive, Scope, Send, hung_server, respond, serve_app


class HeaderCoupons:
    """Hands out coupon ``/coupons/{id}`` to the first ``X-User`` who asks: it acts on the
    request's headers and never reads the JSON body the client sends (as a token-and-path
    handler does). ``window_s > 0`` is the check-then-act bug: check, wait, then take."""

    def __init__(self, window_s: float = 0.0) -> None:
        self.window_s = window_s
        self.holders: dict[str, list[str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        user = headers.get(b"x-user", b"?").decode()
        coupon = scope["path"].rsplit("/", 1)[-1]
        if scope["path"] == "/reset":
            self.holders.clear()
            await respond(send, 200, {"ok": True})
            return
        if self.window_s:
            free = not self.holders.get(coupon)
            await anyio.sleep(self.window_s)
            if not free:
                await respond(send, 409, {"error": "taken"})
                return
        elif self.holders.get(coupon):
            await respond(send, 409, {"error": "taken"})
            return
        self.holders.setdefault(coupon, []).append(user)
        await respond(send, 201, {"coupon": coupon, "user": user})


def claim(race: Any, base: str, **kwargs: Any) -> Any:
    """Every client claims the attempt's coupon; the body (never read by the service) is sent."""
    return race.post(
        lambda a: f"{base}/coupons/{a.resource}",
        headers=lambda a: {"X-User": f"u{a.client}"},
        json=lambda a: {"note": "x" * 200, "client": a.client},
        **kwargs,
    )


@pytest.fixture
def correct_coupons() -> Iterator[tuple[str, HeaderCoupons]]:
    app = HeaderCoupons()
    with serve_app(app) as url:
        yield url, app


@pytest.fixture
def racy_coupons() -> Iterator[str]:
    with serve_app(HeaderCoupons(window_s=0.001)) as url:
        yield url


def test_header_acting_correct_service_passes_with_the_default_hold(race, correct_coupons):
    url, app = correct_coupons
    result = claim(race, url, resources=4, concurrency=40)
    assert result.passed
    assert result.early == 0
    assert result.wins == 4
    assert result.settings["hold"] == "headers"
    assert all(len(users) == 1 for users in app.holders.values())


def test_header_acting_service_with_hold_body_keeps_its_early_answers(race, correct_coupons):
    """Held at the body, the service answers before the gate: those answers are kept and
    classified by their real status, never thrown away as errors (the old behaviour)."""
    url, app = correct_coupons
    result = claim(race, url, resources=2, concurrency=20, hold="body", check=False)
    assert result.errors == 0
    assert all(rec.status in (201, 409) for rec in result.history)
    assert result.wins == 2
    assert sum(len(users) for users in app.holders.values()) == 2
    early = [rec for rec in result.history if rec.early]
    assert len(early) == result.early
    assert result.latency.all.count == result.requests  # early answers count in latency too


def test_a_resource_answered_wholly_early_is_not_raced_with_the_hint():
    """The rule itself, over records: all early is a violation; some early is only a note."""
    from pytest_seatrace.core.config import HoldPoint, RaceConfig
    from pytest_seatrace.core.records import Outcome, RaceRun, Record
    from pytest_seatrace.core.result import RaceResult

    def rec(resource: int, client: int, outcome: Outcome, *, early: bool) -> Record:
        status = 201 if outcome is Outcome.WIN else 409
        return Record(resource, client, 1, sent_ns=10, end_ns=20, status=status, outcome=outcome, early=early)

    records = [rec(0, 1, Outcome.WIN, early=True), rec(0, 2, Outcome.REJECTION, early=True)]
    records += [rec(1, 1, Outcome.WIN, early=True), rec(1, 2, Outcome.REJECTION, early=False)]
    holds: tuple[tuple[HoldPoint, str], ...] = (("body", 'hold="headers"'), ("headers", 'sync="gate"'))
    for hold, hint in holds:
        config = RaceConfig(resources=("A", "B"), concurrency=2, sync="last-byte", hold=hold)
        result = RaceResult.from_run("t", config, RaceRun(records=tuple(records), duration=1.0))
        assert [(v.kind, v.resource) for v in result.violations] == [("not-raced", "A")]
        assert hint in result.violations[0].detail
        assert result.early == 3
        assert set(result.spread.by_resource) == {"B"}


def test_header_acting_check_then_act_is_caught_with_the_default_hold(race, racy_coupons):
    with pytest.raises(RaceViolation) as info:
        claim(race, racy_coupons, resources=4, concurrency=40)
    result = info.value.result
    assert result.early == 0
    assert {v.kind for v in result.violations} >= {"too-many"}
    assert result.double_bookings > 0


def test_header_acting_check_then_act_with_hold_body_still_fails(race, racy_coupons):
    """Where it cannot be raced it still cannot pass: too many winners, or not raced at all."""
    with pytest.raises(RaceViolation, match=r"too-many|not-raced"):
        claim(race, racy_coupons, resources=2, concurrency=20, hold="body")


@pytest.mark.parametrize("hold", ["headers", "body"])
def test_post_to_a_missing_route_names_the_404(race, sample_service, hold):
    """Starlette answers 404 before reading the body: early under hold=body, yet the hint stays."""
    with pytest.raises(
        RaceViolation, match=r"every response was 404 Not Found \(wrong URL, method or body\?\)"
    ):
        race.post(
            sample_service.url + "/no-such-route",
            json={"seats": ["1"], "user": "u"},
            concurrency=10,
            hold=hold,
        )


def test_everyone_must_be_refused_passes_with_the_tests_own_reject(race, module_service):
    service = module_service(auth=True)
    order = {"seats": ["1"], "user": "u"}
    result = race.post(service.url + "/orders", json=order, concurrency=10, expect=0, reject=401)
    assert result.passed
    assert result.status_counts == {401: 10}


def test_everyone_refused_without_reject_still_gets_the_wrong_url_hint(race, module_service):
    service = module_service(auth=True)
    order = {"seats": ["1"], "user": "u"}
    with pytest.raises(RaceViolation, match="every response was 401"):
        race.post(service.url + "/orders", json=order, concurrency=10, expect=0)


@pytest.mark.parametrize("sync", ["last-byte", "gate"])
def test_a_hung_service_stops_the_race_and_names_the_timeout(race, sync):
    with hung_server() as url:
        result = race.post(
            url + "/orders",
            json={"a": 1},
            resources=3,
            rounds=2,
            concurrency=5,
            timeout=0.5,
            sync=sync,
            check=False,
        )
    assert result.requests == 5  # one wave ran, and no other
    assert all(rec.timed_out for rec in result.history)  # gate mode: stuck before the gate
    assert result.not_run == [(1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    hung = [v for v in result.violations if v.kind == "hung"]
    assert len(hung) == 1
    assert "timeout=0.5s" in hung[0].detail
    assert "5 (round, resource) pairs were not run" in hung[0].detail
    doc = result.to_dict()
    assert doc["not_run"][0] == {"round": 1, "resource": "2"}


def test_a_slow_last_wave_is_indeterminate_and_names_the_timeout(race):
    with hung_server() as url:
        result = race.post(url + "/x", json={"a": 1}, concurrency=3, timeout=0.3, check=False)
    assert result.not_run == []
    assert [v.kind for v in result.violations] == ["indeterminate"]
    assert "timeout=0.3s" in result.violations[0].detail


def test_unreachable_expect_is_a_marker_error_naming_both(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.race(concurrency=2, expect=3)
        def test_never(race):
            pass

        def test_other():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_never*", "*expect=3*concurrency=2*"])


def test_unreachable_expect_at_the_call_names_both(race, sample_service):
    with pytest.raises(RaceUsageError, match=r"expect=range\(3, 5\).*concurrency=2"):
        race.post(
            sample_service.url + "/orders",
            json={"seats": ["1"], "user": "u"},
            concurrency=2,
            expect=range(3, 5),
        )


def test_a_hold_point_on_run_is_an_error(race, sample_service):
    race.base_url = sample_service.url

    async def attempt(a):
        await a.gate()
        return await a.http.get("/health")

    with pytest.raises(RaceUsageError, match=r"hold='body'.*start through the gate"):
        race.run(attempt, hold="body", concurrency=2)


def test_hold_option_reaches_the_race_and_the_header(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        """
        def test_hold(race):
            assert race._settings.hold == "body"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--race-hold", "body")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["seatrace: *hold=body*"])
    bad = pytester.runpytest("-p", "no:cacheprovider", "--race-hold", "middle")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--race-hold*invalid choice*'middle'*"])
