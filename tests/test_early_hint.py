"""Early answers under single-packet say what to do: hypercorn starts the app at HEADERS, so a
handler that ignores the body answers before the gate; ``sync="last-byte"`` (default
``hold="headers"``) holds it. (A bodyless request's whole HEADERS go at the gate, so it is held.)

Shown with a scripted h2 server that answers at HEADERS (hypercorn does so only when its app task
wins the race against the client's gate, so it cannot show it every time), with the hypercorn
sample service for the advice, and with made-up records for the note a race with only some early
answers gets in its violation message and in the summary.
"""

from __future__ import annotations

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.judge import SINGLE_PACKET_EARLY_HINT
from pytest_seatrace.core.records import Outcome, RaceRun, Record
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.engine.plan import RequestSpec
from pytest_seatrace.report.message import violation_message
from pytest_seatrace.report.wording import early_text
from tests.test_single_packet import answering_at_headers, fire, h2_server

LAST_BYTE = 'use sync="last-byte"'


def test_a_server_answering_at_headers_is_not_raced_and_says_use_last_byte():
    """A server that answers every stream as its HEADERS arrive (as hypercorn runs a handler that
    ignores the body): all answers early, a not-raced violation with the hint, the summary note too."""
    with h2_server(answering_at_headers(200, b"{}")) as (url, _):
        result = fire(
            RequestSpec("POST", url + "/seats/1/hold", json={"user": "u"}),
            concurrency=5,
            expect=range(0, 6),
            sync="single-packet",
        ).result
    assert result.early == 5
    (violation,) = result.violations
    assert violation.kind == "not-raced"
    assert LAST_BYTE in violation.detail
    assert 'hold="headers"' in violation.detail
    note = early_text(result.to_dict())
    assert note is not None
    assert LAST_BYTE in note


def test_the_advice_holds_on_hypercorn(race, module_service):
    """hypercorn runs a bodyless ``GET`` at HEADERS; last-byte's default hold keeps the header
    block open until the gate, so no answer comes early."""
    service = module_service(server="hypercorn", tls=True)
    held = race.get(
        service.url + "/seats/1",
        tls_verify=service.ca_path,
        concurrency=10,
        expect=range(0, 11),
        sync="last-byte",
    )
    assert (held.mode, held.config.hold, held.early) == ("last-byte", "headers", 0)
    assert held.violations == ()


def made_up(mode: str, *, early: int, winners: int) -> RaceResult:
    """One resource, 10 clients: ``winners`` wins, the first ``early`` losers answered early."""
    records = []
    for client in range(1, 11):
        rec = Record(resource=0, client=client, round=1, sent_ns=1_000 * client, end_ns=2_000_000)
        if client <= winners:
            rec.status, rec.outcome = 201, Outcome.WIN
        else:
            rec.status, rec.outcome = 409, Outcome.REJECTION
            rec.early = client - winners <= early
        records.append(rec)
    config = RaceConfig(resources=(1,), concurrency=10, sync=mode)  # type: ignore[arg-type]
    return RaceResult.from_run("t.py::test_x", config, RaceRun(records=tuple(records), duration=0.1))


def test_some_early_answers_in_a_broken_single_packet_race_are_noted_with_the_hint():
    result = made_up("single-packet", early=3, winners=2)
    assert [v.kind for v in result.violations] == ["too-many"]
    message = violation_message(result.to_dict())
    assert "early answers: 3 of 10" in message
    assert SINGLE_PACKET_EARLY_HINT in message
    note = early_text(result.to_dict())
    assert note is not None
    assert SINGLE_PACKET_EARLY_HINT in note


def test_no_single_packet_hint_for_other_starts_or_without_early_answers():
    gate = made_up("gate", early=3, winners=2)
    assert "early answers: 3 of 10" in violation_message(gate.to_dict())
    assert LAST_BYTE not in violation_message(gate.to_dict())
    note = early_text(gate.to_dict())
    assert note is not None
    assert LAST_BYTE not in note
    clean = made_up("single-packet", early=0, winners=2)
    assert "early answers" not in violation_message(clean.to_dict())
    assert early_text(clean.to_dict()) is None
