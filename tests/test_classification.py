"""Classification that cannot hide a failure: ``error=``, unclassified responses under
``reject=``, the notes that suggest ``reject=``, and how ``-v`` names the resources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_seatrace import RaceUsageError, RaceViolation
from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Outcome, RaceRun, Record
from pytest_seatrace.core.result import RaceResult
from tests.support import INNER_INI, Receive, Scope, Send, app_conftest, read_body, respond, serve_app

UNEXPECTED = "An unexpected error has occurred"


class Tickets:
    """First buyer per path wins; a later one is refused with ``loser_status``. A buyer whose
    body says ``fail`` gets ``fail_status`` and the seat stays free: pretix's cart answers
    ``200 {"success": false, "message": "An unexpected error has occurred"}`` for that."""

    def __init__(self, *, loser_status: int = 409, fail_status: int = 200) -> None:
        self.taken: set[str] = set()
        self.loser_status = loser_status
        self.fail_status = fail_status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path = scope["path"]
        if body and json.loads(body).get("fail"):
            await respond(send, self.fail_status, {"success": False, "message": UNEXPECTED})
        elif path in self.taken:
            detail = "CSRF verification failed" if self.loser_status == 403 else "sold out"
            await respond(send, self.loser_status, {"success": False, "message": detail})
        else:
            self.taken.add(path)
            await respond(send, 200 if self.loser_status != 403 else 201, {"success": True})


def buy(race: Any, url: str, **kwargs: Any) -> Any:
    """Every client buys its resource's ticket; every fifth one's purchase fails."""
    return race.post(
        lambda a: f"{url}/tickets/{a.resource}",
        json=lambda a: {"fail": a.client % 5 == 0, "client": a.client},
        **kwargs,
    )


def failed_purchase(response: Any) -> bool:
    return response.status_code == 200 and response.json()["success"] is False


@pytest.fixture
def tickets() -> Iterator[str]:
    with serve_app(Tickets()) as url:
        yield url


@pytest.fixture
def locked_tickets() -> Iterator[str]:
    """Failed purchases answer 423 instead of 200."""
    with serve_app(Tickets(fail_status=423)) as url:
        yield url


@pytest.fixture
def csrf_tickets() -> Iterator[str]:
    """The first buyer per ticket gets 201, everyone else a 403 (a CSRF failure, not a loss)."""
    with serve_app(Tickets(loser_status=403)) as url:
        yield url


# -- unclassified responses under reject= --------------------------------------------------------


def test_403_for_all_but_one_with_reject_409_fails_as_unclassified(race, csrf_tickets):
    with pytest.raises(RaceViolation, match=r"unclassified: 403") as info:
        race.post(lambda a: f"{csrf_tickets}/tickets/{a.resource}", resources=2, concurrency=8,
                  success=201, reject=409)  # fmt: skip
    result = info.value.result
    assert (result.wins, result.rejections, result.errors) == (2, 0, 14)
    assert {v.kind for v in result.violations} == {"error"}
    refused = [r for r in result.history if r.status == 403]
    assert all(r.reason and r.reason.startswith("unclassified: 403") for r in refused)


def test_without_reject_the_403s_stay_rejections_with_a_note(race, csrf_tickets):
    url = csrf_tickets
    result = race.post(lambda a: f"{url}/tickets/{a.resource}", resources=2, concurrency=8, success=201)
    assert result.passed
    assert (result.wins, result.rejections, result.errors) == (2, 14, 0)
    assert len(result.notes) == 1
    assert "every rejection was 403" in result.notes[0]
    assert "reject=403" in result.notes[0]
    assert result.to_dict()["notes"] == list(result.notes)


def test_widening_reject_restores_the_old_reading(race, csrf_tickets):
    result = race.post(lambda a: f"{csrf_tickets}/tickets/{a.resource}", resources=2, concurrency=8,
                       success=201, reject=[403, 409])  # fmt: skip
    assert result.passed
    assert (result.wins, result.rejections, result.errors) == (2, 14, 0)
    assert result.notes == ()


# -- error= -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sync", ["gate", "last-byte"])
def test_an_error_predicate_with_allow_errors_passes_and_counts_its_errors(race, tickets, sync):
    """The failed purchases are 200s: ``error=`` is applied before ``success=`` (here the
    default 2xx), so they are errors, not wins, and the seat goes to someone else."""
    result = buy(
        race, tickets, resources=2, concurrency=10, error=failed_purchase, allow_errors=True, sync=sync
    )
    assert result.passed
    assert (result.wins, result.rejections, result.errors) == (2, 14, 4)
    assert result.error_reasons == {"error= matched 200 An unexpected error has occurred": 4}
    assert all(r.outcome is Outcome.ERROR for r in result.history if r.client % 5 == 0)
    assert result.settings["error"] == "failed_purchase"


def test_an_error_predicate_without_allow_errors_fails(race, tickets):
    with pytest.raises(RaceViolation, match=r"error= matched 200") as info:
        buy(race, tickets, resources=2, concurrency=10, error=failed_purchase)
    result = info.value.result
    assert result.errors == 4
    assert {v.kind for v in result.violations} == {"error"}


def test_without_error_the_failed_purchases_are_wins(race, tickets):
    """What ``error=`` is for: left out, a 200 failure counts as a win (too many)."""
    with pytest.raises(RaceViolation, match="too-many"):
        buy(race, tickets, resources=2, concurrency=10)


@pytest.mark.parametrize("error", [423, [423, 503], range(420, 424)])
def test_error_statuses_are_errors_whatever_reject_says(race, locked_tickets, error):
    result = buy(race, locked_tickets, resources=2, concurrency=10, error=error, allow_errors=True)
    assert (result.wins, result.rejections, result.errors) == (2, 14, 4)
    assert result.error_reasons == {"error= matched 423 An unexpected error has occurred": 4}


def test_without_error_statuses_a_4xx_failure_hides_as_a_rejection(race, locked_tickets):
    result = buy(race, locked_tickets, resources=2, concurrency=10)
    assert (result.wins, result.rejections, result.errors) == (2, 18, 0)
    assert any("kinds" in note and "423" in note and "409" in note for note in result.notes)


def test_error_rule_responses_count_as_a_rule_the_test_gave(race):
    """Everyone failing by the test's own ``error=`` is no "wrong URL": the errors say why."""
    with serve_app(Tickets(fail_status=422)) as url:
        result = race.post(lambda a: f"{url}/tickets/{a.resource}", json={"fail": True},
                           concurrency=4, expect=0, error=422, allow_errors=True)  # fmt: skip
        unruled = race.post(lambda a: f"{url}/tickets/{a.resource}", json={"fail": True},
                            concurrency=4, expect=0, check=False)  # fmt: skip
    assert [v.kind for v in unruled.violations] == ["no-winner-possible"]
    assert result.passed
    assert result.errors == 4
    assert not [v for v in result.violations if v.kind == "no-winner-possible"]


def seat_taken(response: Any) -> bool:
    return response.status_code == 409 and "already locked" in response.json()["error"]


@pytest.mark.parametrize(
    ("sync", "server", "shards"),
    [
        ("gate", "uvicorn", 1),
        ("last-byte", "uvicorn", 1),
        ("single-packet", "hypercorn", 1),
        ("auto", "uvicorn", 2),
    ],
    ids=["gate", "last-byte", "single-packet", "shards"],
)
def test_an_error_predicate_works_in_every_start_mode(race, module_service, sync, server, shards):
    """A predicate needs the body: every mode builds it (a shard sends it to its coordinator)."""
    service = module_service(server=server, seats=2)
    result = race.post(
        service.url + "/orders",
        json=lambda a: {"seats": [a.resource], "user": a.key},
        resources=2,
        concurrency=6,
        error=seat_taken,
        allow_errors=True,
        sync=sync,
        shards=shards,
    )
    assert (result.wins, result.rejections, result.errors) == (2, 0, 10)
    said = "Seat validation failed: one or more seats already locked"
    assert result.error_reasons == {f"error= matched 409 {said}": 10}


def test_a_raising_error_predicate_fails_even_with_allow_errors(race, tickets):
    def broken(response: Any) -> bool:
        raise KeyError("success")

    with pytest.raises(RaceViolation, match="predicate raised KeyError"):
        buy(race, tickets, concurrency=5, error=broken, allow_errors=True)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'500'", "error='500': expected a status code, an iterable of status codes, or a predicate"),
        ("True", "error=True: expected a status code, an iterable of status codes, or a predicate"),
        ("[200, 700]", "error=[[]200, 700]: expected status codes between 100 and 599, or a predicate"),
        ("''", "resource_label='': expected a non-empty string such as 'Ticket'"),
    ],
)
def test_bad_error_and_resource_label_are_marker_errors_naming_them(
    pytester: pytest.Pytester, value: str, message: str
) -> None:
    name = "resource_label" if "resource_label" in message else "error"
    pytester.makeini(INNER_INI)
    pytester.makepyfile(f"import pytest\n@pytest.mark.race({name}={value})\ndef test_x(race):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*@pytest.mark.race on test_x: {message}*"])


def test_a_bad_error_call_argument_names_it(race, tickets):
    with pytest.raises(RaceUsageError, match=r"race.post: error='409': expected a status code"):
        buy(race, tickets, error="409")


# -- notes ----------------------------------------------------------------------------------------


def judged(statuses: list[int], *, reasons: list[str | None] | None = None, **config: Any) -> RaceResult:
    """A one-resource race whose first response won and the rest were rejected with ``statuses``."""
    records = [Record(0, 1, 1, sent_ns=10, end_ns=20, status=201, outcome=Outcome.WIN)]
    for client, status in enumerate(statuses, 2):
        reason = reasons[client - 2] if reasons else None
        rejected = Outcome.REJECTION
        records.append(
            Record(0, client, 1, sent_ns=10, end_ns=20, status=status, outcome=rejected, said=reason)
        )
    cfg = RaceConfig(resources=(1,), concurrency=len(records), **config)
    return RaceResult.from_run("t", cfg, RaceRun(records=tuple(records), duration=1.0))


def test_rejections_of_several_statuses_make_a_note():
    notes = judged([409, 409, 409, 422]).notes
    assert len(notes) == 1
    assert notes[0].startswith("rejections of 2 kinds (3× 409, 1× 422)")
    assert "reject=" in notes[0]


def test_rejections_of_one_status_but_several_reasons_make_a_note():
    notes = judged([409, 409, 409], reasons=["sold out", "sold out", "CSRF token missing"]).notes
    assert notes == (
        "rejections of 2 kinds (2× 409 sold out, 1× 409 CSRF token missing): if only some of them "
        "mean a lost race, name those with reject= (the rest then count as errors)",
    )


def test_rejections_all_not_allowed_make_a_note_naming_them():
    (note,) = judged([401, 401, 403, 403]).notes[1:]
    assert note.startswith("every rejection was 401, 403, which usually means not allowed to try")
    assert note.endswith("say so with reject=[401, 403]")


def test_clean_losses_and_a_given_reject_make_no_note():
    assert judged([409] * 5).notes == ()
    assert judged([403, 409], reject_given=True).notes == ()


def test_the_safe_sample_service_race_has_no_note(race, sample_service):
    result = race.post(
        sample_service.url + "/orders",
        json=lambda a: {"seats": [a.resource], "user": a.key},
        resources=2,
        concurrency=5,
    )
    assert result.notes == ()
    assert result.to_dict()["notes"] == []


NOTES_CONFTEST = app_conftest(
    "tickets",
    "FirstWins(buyer)",
    setup="""
import json


def buyer(body):
    \"\"\"After the first buyer per path: 409, but every third buyer gets a 403.\"\"\"
    return (403 if json.loads(body)["client"] % 3 == 0 else 409), {}
""",
)


def test_the_notes_show_under_the_table_and_in_the_verbose_block(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    inner.makeconftest(NOTES_CONFTEST)
    inner.makepyfile(
        """
        def test_mixed(tickets):
            tickets.post("/t", json=lambda a: {"client": a.client}, concurrency=9)
        """
    )
    result = inner.runpytest("-p", "no:cacheprovider", "--race-html", "r.html")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_mixed: rejections of 2 kinds (*× 409, *× 403): if only some*"])
    html = (inner.path / "r.html").read_text(encoding="utf-8")
    assert '<p class="note">note: rejections of 2 kinds (' in html
    verbose = inner.runpytest("-p", "no:cacheprovider", "-v")
    verbose.stdout.fnmatch_lines(["Total: 9 requests*", "rejections of 2 kinds*"])


# -- resources from a fixture, and their label ---------------------------------------------------


ITEMS_TESTS = """
import pytest


@pytest.fixture
def item_ids():
    return [8123, 8124]


@pytest.mark.race(concurrency=6, resource_label="Ticket")
def test_items(seats, item_ids):
    result = seats.post(lambda a: f"/items/{a.resource}", resources=item_ids, concurrency=4)
    assert result.resources == (8123, 8124)
    assert result.settings["concurrency"] == 4


@pytest.mark.race(concurrency=6)
def test_items_labelled_by_the_call(seats, item_ids):
    seats.post(lambda a: f"/other/{a.resource}", resources=item_ids, resource_label="Order")
"""


def test_resources_from_a_fixture_are_labelled_with_their_ids_and_noun(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from tests.support import SEATS_CONFTEST

    monkeypatch.setenv("COLUMNS", "250")
    pytester.makeini(INNER_INI)
    pytester.makeconftest(SEATS_CONFTEST)
    pytester.makepyfile(ITEMS_TESTS)
    report = tmp_path / "r.json"
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "--race-json", str(report))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*::test_items (gate):",
            "Ticket 8123: 4 VUs → ✓ 1 success, ✗ 3 failures",
            "Ticket 8124: 4 VUs → ✓ 1 success, ✗ 3 failures",
        ]
    )
    result.stdout.fnmatch_lines(["Order 8123: 6 VUs → ✓ 1 success, ✗ 5 failures"])
    result.stdout.fnmatch_lines(["*::test_items *2 × 4*", "*::test_items_labelled_by_the_call *2 × 6*"])
    races = {r["name"].rsplit("::", 1)[-1]: r for r in json.loads(report.read_text())["races"]}
    assert races["test_items"]["concurrency"] == races["test_items"]["settings"]["concurrency"] == 4
    assert races["test_items"]["settings"]["resource_label"] == "Ticket"
    assert races["test_items_labelled_by_the_call"]["settings"]["concurrency"] == 6


def test_the_session_header_says_its_values_are_defaults(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        ["seatrace: concurrency=100, *(defaults: a marker or call argument overrides*"]
    )


def test_a_reason_that_differs_only_from_resource_to_resource_is_one_kind() -> None:
    """The Flask recipe says ``seat 1 is taken`` on seat 1 and ``seat 2 is taken`` on seat 2:
    one kind of loss, no note; a 403 beside them on one seat is another kind."""
    records = []
    for index in (0, 1):
        records.append(Record(index, 1, 1, sent_ns=10, end_ns=20, status=201, outcome=Outcome.WIN))
        for client in (2, 3):
            said = f"seat {index + 1} is taken"
            records.append(
                Record(
                    index, client, 1, sent_ns=10, end_ns=20, status=409, outcome=Outcome.REJECTION, said=said
                )
            )
    cfg = RaceConfig(resources=(1, 2), concurrency=3)
    assert RaceResult.from_run("t", cfg, RaceRun(records=tuple(records), duration=1.0)).notes == ()
    records.append(Record(1, 4, 1, sent_ns=10, end_ns=20, status=403, outcome=Outcome.REJECTION, said="CSRF"))
    cfg = RaceConfig(resources=(1, 2), concurrency=4)
    (note,) = RaceResult.from_run("t", cfg, RaceRun(records=tuple(records), duration=1.0)).notes
    assert note.startswith("rejections of 3 kinds")


def test_recording_a_response_writes_the_wire_facts_and_decides_nothing() -> None:
    """Two steps: what came off the wire (a shard stops there), then the outcome by the rules."""
    from pytest_seatrace.engine.classify import Classifier, record_response

    config = RaceConfig(resources=(1,), concurrency=2)
    recorded = Record(resource=0, client=0, round=1)
    record_response(recorded, 409, b"123")
    assert (recorded.status, recorded.server_ns) == (409, 123)
    assert (recorded.outcome, recorded.reason, recorded.said) == (Outcome.ERROR, None, None)  # undecided

    def no_response() -> Any:
        raise AssertionError("status rules need no response")

    Classifier(config).decide(recorded, b'{"detail": "seat taken"}', no_response)
    filled = Record(resource=0, client=1, round=1)
    Classifier(config).fill(filled, 409, b"123", b'{"detail": "seat taken"}', no_response)
    for rec in (recorded, filled):
        assert (rec.status, rec.server_ns, rec.outcome, rec.said) == (
            409,
            123,
            Outcome.REJECTION,
            "seat taken",
        )
