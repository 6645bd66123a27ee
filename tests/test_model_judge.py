"""A race with ``model=`` judged by its history (``core.linearizability``): records built here, as
the engine will stamp them, so no service runs."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import pytest

from pytest_seatrace.core import linearizability
from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.operations import AMBIGUOUS
from pytest_seatrace.core.records import Outcome, RaceRun, Record, ShardInfo
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.core.violations import ViolationKind
from pytest_seatrace.history import Verdict, check
from pytest_seatrace.models import Seats
from pytest_seatrace.report.files import json_document
from pytest_seatrace.report.message import violation_message
from pytest_seatrace.report.summary import summary_lines
from tests.test_reports import validate

MS = 1_000_000
BOOK, CANCEL, READ = "POST /seats/{resource}/book", "POST /seats/{resource}/cancel", "GET /seats/{resource}"
MIXED = Seats(book=BOOK, cancel=CANCEL, read=(READ, lambda response: response.json()["holders"]))


def op(
    client: int,
    call: float,
    end: float | None,
    outcome: Outcome = Outcome.REJECTION,
    *,
    operation: str = BOOK,
    resource: int = 0,
    **kw: Any,
) -> Record:
    """A sent request: called at ``call`` ms, answered at ``end`` ms (None: timed out, unknown)."""
    status = {Outcome.WIN: 201, Outcome.REJECTION: 409}.get(outcome, 0)
    if end is None:
        kw = {"timed_out": True, "reason": "no response within 5s after the gate", **kw}
    return Record(
        resource,
        client,
        1,
        sent_ns=int(call * MS),
        end_ns=int((end if end is not None else call + 5000) * MS),
        status=kw.pop("status", status),
        outcome=Outcome.UNKNOWN if end is None else outcome,
        said=kw.pop("said", "seat taken" if outcome is Outcome.REJECTION else None),
        call_ns=int(call * MS),
        operation=operation,
        **kw,
    )


def wave(wins: Sequence[int], clients: int, resource: int = 0) -> list[Record]:
    """One wave: every client called within 0.5 ms, every answer after the last call; ``wins``
    are the clients that won."""
    return [
        op(
            c,
            1 + c * 0.5 / clients,
            2 + c % 7,
            Outcome.WIN if c in wins else Outcome.REJECTION,
            resource=resource,
        )
        for c in range(1, clients + 1)
    ]


def result(
    records: Sequence[Record],
    model: Any = None,
    *,
    resources: tuple[Hashable, ...] = ("A",),
    shards: tuple[ShardInfo, ...] = (),
    **config: Any,
) -> RaceResult:
    cfg = RaceConfig(resources=resources, concurrency=len(records), model=model, sync="last-byte", **config)
    run = RaceRun(records=tuple(records), duration=0.1, shards=shards)
    return RaceResult.from_run("t.py::test_model", cfg, run)


def kinds(res: RaceResult) -> list[ViolationKind]:
    return [v.kind for v in res.violations]


def test_a_correct_one_wave_seat_history_passes_with_the_default_expect() -> None:
    res = result(wave([3], 100), Seats())
    assert res.passed, res.violations
    assert res.linearizable is True
    assert [v.valid for v in res.verdicts.values()] == [True]
    assert list(res.verdicts) == [(1, "A")]
    doc = res.to_dict()
    assert [(h["resource"], h["valid"], h["model"], h["operations"]) for h in doc["histories"]] == [
        ("A", True, "Seats", [])
    ]


def test_a_double_booking_is_not_linearizable_naming_the_resource_and_its_table() -> None:
    res = result(wave([3, 40], 100), Seats())
    assert kinds(res) == [ViolationKind.NOT_LINEARIZABLE]  # expect=1 was not given: not judged
    v = res.violations[0]
    assert (v.resource, v.round, v.allowed, v.found) == (
        "A",
        1,
        "linearizable under Seats",
        "not linearizable",
    )
    assert "99 of 100 operations linearize" in v.detail
    assert res.linearizable is False
    message = violation_message(res.to_dict())
    assert "not-linearizable" in message
    table = message[message.index("history of resource A") :]
    lines = table.splitlines()
    assert any("book() -> ok" in line and "201" in line for line in lines)
    assert any("book() -> fail" in line and "409 seat taken" in line and "98" in line for line in lines)
    stuck = [line for line in lines if line.startswith("✗ ")]
    assert len(stuck) == 1
    assert "book() -> ok" in stuck[0]


def test_a_model_double_booking_counts_the_bookings_no_order_can_place() -> None:
    res = result(wave([3, 5, 8], 10), Seats())
    assert res.double_bookings == 2
    (history,) = res.to_dict()["histories"]
    assert "client 3" in history["explanation"] or "client 5" in history["explanation"]
    assert "process" not in history["explanation"]
    assert result(wave([3], 10), Seats()).double_bookings == 0
    mixed = booked_cancelled_read(holders=1)
    assert result(mixed, MIXED).double_bookings == 0  # not a model of bookings alone: no count


def test_every_failing_resource_is_reported_not_just_the_first() -> None:
    records = wave([1, 2], 10, resource=0) + wave([5], 10, resource=1) + wave([4, 6], 10, resource=2)
    res = result(records, Seats(), resources=("A", "B", "C"))
    assert [(v.kind, v.resource) for v in res.violations] == [
        (ViolationKind.NOT_LINEARIZABLE, "A"),
        (ViolationKind.NOT_LINEARIZABLE, "C"),
    ]
    assert {key: v.valid for key, v in res.verdicts.items()} == {
        (1, "A"): False,
        (1, "B"): True,
        (1, "C"): False,
    }


def booked_cancelled_read(holders: int) -> list[Record]:
    """One after the other: a booking, its cancel, then a read of ``holders``."""
    return [
        op(1, 1, 2, Outcome.WIN),
        op(2, 3, 4, Outcome.WIN, operation=CANCEL, status=200),
        op(3, 5, 6, Outcome.WIN, operation=READ, status=200, output=holders),
    ]


def test_a_mixed_history_that_only_the_model_catches() -> None:
    stale = booked_cancelled_read(holders=1)  # the read saw the cancelled booking
    assert result(stale, expect=range(0, 4)).passed  # counting wins sees nothing wrong
    res = result(stale, MIXED)
    assert kinds(res) == [ViolationKind.NOT_LINEARIZABLE]
    assert "read() -> ok 1" in res.violations[0].detail
    (stuck,) = [line for line in violation_message(res.to_dict()).splitlines() if line.startswith("✗ ")]
    assert "read() -> ok" in stuck
    assert stuck.endswith("200 → 1")  # what the model took from the response
    assert result(booked_cancelled_read(holders=0), MIXED).passed


def test_expect_is_judged_beside_the_model_only_when_given() -> None:
    records = wave([3], 10)
    assert result(records, Seats(), expect=range(2, 3)).passed  # the default's stand-in: not given
    res = result(records, Seats(), expect=range(2, 3), expect_given=True)
    assert kinds(res) == [ViolationKind.TOO_FEW]
    assert res.linearizable is True
    assert result(records, Seats(), expect=range(1, 2), expect_given=True).passed


def test_a_double_booking_in_the_final_state_is_judged_only_when_expect_is_given() -> None:
    records = wave([3], 10)
    run = RaceRun(records=tuple(records), duration=0.1, held={(1, 0): 2})
    plain = RaceResult.from_run("t", RaceConfig(resources=("A",), model=Seats()), run)
    assert ViolationKind.DOUBLE not in kinds(plain)
    assert ViolationKind.PHANTOM in kinds(plain)  # verify='s own rules keep applying
    given = RaceResult.from_run("t", RaceConfig(resources=("A",), model=Seats(), expect_given=True), run)
    assert ViolationKind.DOUBLE in kinds(given)


def test_the_final_state_is_set_against_wins_only_when_every_win_is_a_booking() -> None:
    booked = op(1, 1, 2, Outcome.WIN)
    cancelled = op(2, 3, 4, Outcome.WIN, operation=CANCEL)
    run = RaceRun(records=(booked, cancelled), duration=0.1, held={(1, 0): 0})
    mixed = RaceResult.from_run("t", RaceConfig(resources=("A",), model=MIXED), run)
    assert mixed.passed  # a won cancel holds no seat: 2 wins, 0 holders is no lost booking
    bookings = RaceRun(records=(booked, op(2, 3, 4, Outcome.WIN)), duration=0.1, held={(1, 0): 0})
    lost = RaceResult.from_run("t", RaceConfig(resources=("A",), model=Seats(2)), bookings)
    assert ViolationKind.LOST in kinds(lost)


def test_an_ambiguous_operation_name_is_judged_as_the_engine_bound_it() -> None:
    """``POST /seats/1/cancel`` raced by client 1 is named ``{resource|client}``: the engine took
    it as the model's cancel, so the judge does too (it used to raise LookupError)."""
    ambiguous = f"POST /seats/{AMBIGUOUS}/cancel"
    records = [op(1, 1, 2, Outcome.WIN), op(2, 3, 4, Outcome.WIN, operation=ambiguous)]
    res = result(records, MIXED)
    assert res.passed
    assert [o.f for c in res.history_checks for o in c.operations] == ["book", "cancel"]


def test_an_info_that_may_have_taken_effect_makes_it_linearizable() -> None:
    refused = booked_cancelled_read(holders=0)
    refused[1] = op(2, 3, 4, Outcome.REJECTION, operation=CANCEL)  # the cancel did not happen
    assert kinds(result(refused, MIXED)) == [ViolationKind.NOT_LINEARIZABLE]
    timed_out = booked_cancelled_read(holders=0)
    timed_out[1] = op(2, 3, None, operation=CANCEL)  # it may have
    assert result(timed_out, MIXED).passed
    failed = booked_cancelled_read(holders=0)
    failed[1] = op(2, 3, 4, Outcome.ERROR, operation=CANCEL, status=503, reason="503 Service Unavailable")
    res = result(failed, MIXED, allow_errors=True)
    assert res.passed
    assert res.linearizable is True


def test_a_check_the_budget_leaves_undecided_is_a_violation_naming_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(linearizability, "CHECK_BUDGET_S", 0.0)
    res = result(wave([3], 100), Seats())
    assert kinds(res) == [ViolationKind.HISTORY_UNKNOWN]
    assert not res.passed
    assert res.linearizable is None
    assert "CHECK_BUDGET_S = 0s" in res.violations[0].detail
    assert res.to_dict()["histories"][0]["valid"] is None


def test_a_shard_s_clock_error_widens_its_instants() -> None:
    """The book returned before the read was called by the clocks, but not beyond the clock error of
    the read's shard: it may have read first."""
    records = [
        op(1, 1.0, 1.1, Outcome.WIN, shard=1),
        op(2, 1.2, 1.3, Outcome.WIN, operation=READ, status=200, output=0, shard=2),
    ]
    exact = (ShardInfo(1, "popen"), ShardInfo(2, "popen"))
    assert kinds(result(records, MIXED, shards=exact)) == [ViolationKind.NOT_LINEARIZABLE]
    widened = (ShardInfo(1, "popen"), ShardInfo(2, "popen", error_ns=200_000))
    assert result(records, MIXED, shards=widened).passed


def test_the_checks_run_once_per_result(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counted(*args: Any, **kw: Any) -> Verdict:
        calls.append(len(args[0]))
        return check(*args, **kw)

    monkeypatch.setattr(linearizability, "check", counted)
    res = result(wave([3, 4], 10), Seats())
    for _ in range(2):
        assert res.violations
        assert res.to_dict()["histories"]
        assert res.verdicts
        assert res.linearizable is False
    assert calls == [10]


def test_without_a_model_nothing_is_checked_and_the_document_has_no_histories() -> None:
    res = result(wave([3, 4], 10))
    assert kinds(res) == [ViolationKind.TOO_MANY]
    assert res.verdicts == {}
    assert res.linearizable is None
    assert "histories" not in res.to_dict()


def test_the_document_of_a_model_race_validates_against_the_schema() -> None:
    records = [*wave([3, 40], 50), op(60, 1.2, None)]
    res = result(records, Seats())
    race = res.to_dict(history=True)
    validate(json_document([race], seed=0))
    (history,) = race["histories"]
    assert history["valid"] is False
    assert history["explanation"].startswith("not linearizable")
    ops = history["operations"]
    assert len(ops) == 51
    assert min(o["call_ms"] for o in ops) == 0.0
    assert sorted(o["order"] for o in ops if o["order"] is not None) == list(range(1, 50))
    assert [o["client"] for o in ops if o["stuck"]] in ([3], [40])
    (info,) = [o for o in ops if o["type"] == "info"]
    assert (info["return_ms"], info["response"], info["order"]) == (None, "timed out", None)
    validate(json_document([result(wave([3], 10), Seats()).to_dict(history=True)], seed=0))


def test_a_failing_history_of_a_thousand_operations_keeps_its_message_short() -> None:
    """Rejections that said 50 different things: no run of identical rows is long, so the rows are
    capped."""
    records = wave([3, 700], 1000)
    for rec in records[::3]:
        if rec.outcome is Outcome.REJECTION:
            rec.said = f"seat taken by order {rec.client % 50}"
    res = result(records, Seats())
    message = violation_message(res.to_dict())
    lines = message.splitlines()
    assert len(lines) < 30
    assert len(message) < 4000
    assert any("and " in line and " more rows" in line for line in lines)
    assert sum(1 for line in lines if line.startswith("✗ ")) == 1


def test_the_summary_says_a_race_was_judged_by_its_model() -> None:
    races = [result(wave([3, 12], 20), Seats()).to_dict(), result(wave([3], 20), Seats()).to_dict()]
    races[1]["name"] = "t.py::test_clean"
    plain = [line.text for line in summary_lines(races, verbosity=0, mode="auto", width=120)]
    assert "t.py::test_model: checked against Seats: of 1 history, 1 not linearizable" in plain
    assert "t.py::test_clean: checked against Seats: 1 history linearizable" in plain
    verbose = summary_lines(races[:1], verbosity=1, mode="auto", width=120)
    assert "t.py::test_model (last-byte, model Seats):" in [line.text for line in verbose]
    kind = [line for line in verbose if "not-linearizable" in line.text]
    assert len(kind) == 1
    assert kind[0].red
    assert "resource A: not-linearizable (allowed linearizable under Seats" in kind[0].text
    (seat,) = [line for line in verbose if line.text.startswith("A: 20 VUs")]
    assert seat.red
    mixed = result(booked_cancelled_read(holders=0), MIXED).to_dict()  # 3 wins, expect=1 not given
    assert not any(line.red for line in summary_lines([mixed], verbosity=1, mode="auto", width=120))
