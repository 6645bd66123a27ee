"""Every error shows its reason: what a failing response's body said, derived once per distinct
response, redacted, and shown wherever the response is counted — the violation message, the
summary's status breakdown, ``error_reasons``, the JSON samples and history, the HTML tables.

The derivation is tested alone (``core.reasons``); then a service that answers some clients
500 with a ~1 KiB body (JSON, HTML or text, as pretix's 941 bytes were) races in every start
mode, and no sample of a 500 may come out with an empty body.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import h2.connection
import h2.events
import pytest

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.reasons import (
    CACHE_LIMIT,
    KINDS_PER_RESOURCE,
    REASON_CHARS,
    SAMPLES_PER_KIND,
    Reasons,
    answer_label,
    derive_reason,
    explain,
)
from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.core.result import STATUS_REASONS_SHOWN, RaceResult
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.plan import RequestSpec
from pytest_seatrace.report.files import json_document
from pytest_seatrace.report.html import render_html
from pytest_seatrace.report.message import violation_message
from pytest_seatrace.report.summary import status_lines, summary_lines
from tests.support import Receive, Scope, Send, app_conftest, read_body, serve_app
from tests.test_reports import validate
from tests.test_single_packet import Seen, ended, fire, h2_server, respond

# -- the derivation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"error": "database is locked"}', "database is locked"),
        (b'{"message": "sold out", "detail": "quota 3"}', "sold out"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (
            b'{"success": false, "message": "An unexpected error has occurred"}',
            "An unexpected error has occurred",
        ),
        (b'{"error": {"code": 7, "message": "lock timeout"}}', "lock timeout"),
        (b'{"detail": [{"loc": ["body", "seats"], "msg": "field required"}]}', "field required"),
        (b'{"errors": [{"message": "seat 3 is taken"}]}', "seat 3 is taken"),
        (b'[{"error": "first"}, {"error": "second"}]', "first"),
        (b'"database is locked"', "database is locked"),
        (b'{"won": false}', '{"won": false}'),
        (
            b"<html><head><title>Server Error (500)</title></head><body><h1>Oops</h1></body></html>",
            "Server Error (500)",
        ),
        (b"<!doctype html><TITLE>Fish &amp; Chips</TITLE>", "Fish & Chips"),
        (
            b"<html><head><style>h1{}</style></head><body>\n<h1>Bad  Gateway</h1><p>nginx</p></body></html>",
            "Bad Gateway",
        ),
        (b"\n\n   database is locked  \nTraceback (most recent call last):\n", "database is locked"),
        ("Sitz\u00a0vergeben: ÄÖÜ".encode(), "Sitz vergeben: ÄÖÜ"),
    ],
)
def test_a_reason_from_json_html_or_text(body: bytes, reason: str) -> None:
    assert derive_reason(body) == reason


@pytest.mark.parametrize(
    "body", [b"", b"   \n\t ", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xfe\x01\x02\x03"]
)
def test_an_empty_or_binary_body_says_nothing(body: bytes) -> None:
    assert derive_reason(body) is None


def test_a_long_reason_is_cut_to_one_short_line() -> None:
    said = derive_reason(json.dumps({"error": "locked\n\t" + "x" * 300}).encode())
    assert said is not None
    assert len(said) == REASON_CHARS
    assert said.startswith("locked xxx")
    assert said.endswith("…")


def test_a_json_body_cut_at_the_kept_kib_still_gives_its_field() -> None:
    body = json.dumps({"trace": "t" * 200, "error": 'database "main" is locked', "more": "m" * 2000}).encode()
    assert derive_reason(body[:1024]) == 'database "main" is locked'


@pytest.mark.parametrize(
    ("body", "secret"),
    [
        (b'{"error": "bad token=abc123 for user"}', "abc123"),
        (b'{"token": "s3cr3t-value", "ok": false}', "s3cr3t-value"),
        (b"<title>login failed: password=hunter2</title>", "hunter2"),
        (b"session_key: 9f8e7d6c\nsecond line", "9f8e7d6c"),
        (b'{"error": {"message": "api_key=AKIA123 rejected"}}', "AKIA123"),
    ],
)
def test_a_reason_never_shows_a_secret(body: bytes, secret: str) -> None:
    said = derive_reason(body)
    assert said is not None
    assert secret not in said
    assert "***" in said


def test_a_secret_cut_by_the_length_limit_stays_masked() -> None:
    said = derive_reason(("x" * 70 + " token=" + "y" * 40).encode())
    assert said is not None
    assert "y" not in said


@pytest.mark.parametrize(
    ("reason", "status", "said", "shown"),
    [
        ("HTTP 500", 500, "database is locked", "500 database is locked"),
        ("unexpected 404", 404, "Not Found", "unexpected 404 Not Found"),
        ("unclassified: 403", 403, "CSRF verification failed", "unclassified: 403 CSRF verification failed"),
        ("HTTP 500", 500, None, "HTTP 500"),
        ("predicate raised KeyError: 'x'", 200, "ok", "predicate raised KeyError: 'x'"),
        (None, 409, "seat taken", None),
    ],
)
def test_an_errors_reason_carries_what_the_service_said(
    reason: str | None, status: int, said: str | None, shown: str | None
) -> None:
    assert explain(reason, status, said) == shown


def test_an_answer_is_labelled_as_counts_name_it() -> None:
    assert answer_label(500, "500 database is locked", "database is locked") == "500 database is locked"
    assert answer_label(409, None, "seat taken") == "409 seat taken"
    assert answer_label(409, None, None) == "409"
    assert answer_label(0, None, None) == "no response"


def test_identical_responses_cost_one_derivation_and_share_one_string() -> None:
    reasons = Reasons()
    body = json.dumps({"error": "database is locked", "pad": "p" * 900}).encode()
    said = {id(reasons.said(500, bytes(body))) for _ in range(50_000)}  # a fresh bytes object each time
    assert reasons.derived == 1
    assert len(said) == 1
    assert reasons.said(503, body) == "database is locked"
    assert reasons.derived == 2  # another status is another response


def test_the_cache_is_bounded_and_still_answers_past_it() -> None:
    reasons = Reasons()
    for n in range(CACHE_LIMIT + 100):
        assert reasons.said(500, f'{{"error": "order {n} failed"}}'.encode()) == f"order {n} failed"
    assert reasons.derived == CACHE_LIMIT + 100
    assert len(reasons._said) == CACHE_LIMIT


def test_bodies_are_kept_per_kind_a_few_each_and_for_a_bounded_number_of_kinds() -> None:
    reasons = Reasons()
    kept = [reasons.keep(0, 500, "database is locked") for _ in range(100)]
    assert kept == [True] * SAMPLES_PER_KIND + [False] * (100 - SAMPLES_PER_KIND)
    assert reasons.keep(0, 409, "database is locked")  # another status: another kind
    assert reasons.keep(1, 500, "database is locked")  # another resource: another kind
    for n in range(2 * KINDS_PER_RESOURCE):
        reasons.keep(2, 500, f"order {n} failed")
    assert not reasons.keep(2, 500, "yet another reason")
    assert reasons.keep(3, 500, "yet another reason")


def test_fifty_thousand_failures_keep_three_bodies_and_little_memory() -> None:
    """The 50k-request scenario's shape at the classifier, with pretix's 941-byte body."""
    config = RaceConfig(resources=tuple(range(1, 101)), concurrency=500)
    classifier = Classifier(config)
    body = json.dumps({"error": "database is locked", "pad": "p" * 900}).encode()
    records = [Record(resource=i % 100, client=i // 100 + 1, round=1) for i in range(50_000)]
    tracemalloc.start()
    try:
        for rec in records:
            classifier.fill(rec, 500, None, bytes(body), lambda: pytest.fail("no predicate asked"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert classifier.reasons.derived == 1
    assert {rec.reason for rec in records} == {"500 database is locked"}
    assert sum(rec.body is not None for rec in records) == 100 * SAMPLES_PER_KIND
    assert peak < 2_000_000, f"{peak:,} bytes traced while classifying 50,000 responses"


def test_many_reasons_fold_into_fifty_rows_and_keep_every_count() -> None:
    records = [
        Record(
            resource=0,
            client=n + 1,
            round=1,
            status=500,
            outcome=Outcome.ERROR,
            said=f"order {n % 70} failed",
        )
        for n in range(700)
    ]
    records += [Record(resource=0, client=701, round=1, status=201, outcome=Outcome.WIN)]
    result = RaceResult("t", RaceConfig(resources=(1,), concurrency=701), history=tuple(records))
    rows = result.to_dict()["status_reasons"]
    assert len(rows) == STATUS_REASONS_SHOWN
    assert sum(row["count"] for row in rows) == 701
    assert rows[0] == {"status": 201, "reason": "", "count": 1}
    assert rows[-1] == {"status": 500, "reason": "(22 other reasons)", "count": 220}
    assert {row["reason"] for row in rows[1:-1]} == {f"order {n} failed" for n in range(48)}
    assert {(row["status"], row["count"]) for row in rows[1:-1]} == {(500, 10)}


def test_the_status_breakdown_cuts_reasons_to_the_terminal() -> None:
    said = "x" * REASON_CHARS
    records = [Record(resource=0, client=1, round=1, status=503, outcome=Outcome.ERROR, said=said)]
    doc = RaceResult("t", RaceConfig(resources=(1,), concurrency=1), history=tuple(records)).to_dict()
    lines = [line.text for line in status_lines([doc], width=60)]
    assert max(len(line) for line in lines) == 60
    (row,) = [line for line in lines if line.split()[:1] == ["503"]]
    assert "xxx…" in row
    assert [line.text for line in status_lines([doc], width=200)][3].split()[1] == said


# -- a service that fails some clients, raced in every start mode ------------------------------

PAD = "x" * 880
LOCKED = {
    "json": ("application/json", json.dumps({"error": "database is locked", "trace": PAD}).encode()),
    "html": (
        "text/html",
        f"<!doctype html><html><head><title>database is locked</title></head><body><h1>Internal "
        f"Server Error</h1><pre>{PAD}</pre></body></html>".encode(),
    ),
    "text": ("text/plain", f"\ndatabase is locked\nTraceback (most recent call last):\n{PAD}\n".encode()),
}
"""A 500 of about 941 bytes that says "database is locked", as JSON, HTML and text."""
TAKEN = json.dumps({"error": "seat taken"}).encode()


class LockedSeats:
    """The first request per path wins (201); after it, every other one is a 409 "seat taken"
    and the rest a 500 whose body says "database is locked" (``kind``: json, html or text)."""

    def __init__(self, kind: str) -> None:
        self.content_type, self.locked = LOCKED[kind]
        self.seen: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        n = self.seen[scope["path"]] = self.seen.get(scope["path"], 0) + 1
        if n == 1:
            status, ctype, body = 201, "application/json", b'{"won": true}'
        elif n % 2:
            status, ctype, body = 409, "application/json", TAKEN
        else:
            status, ctype, body = 500, self.content_type, self.locked
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


RESOURCES, CLIENTS = 2, 30
LOCKED_PER_RESOURCE = CLIENTS // 2
"""Requests 2, 4, … 30 of each seat fail."""


def assert_every_report_says_why(result: RaceResult) -> None:
    """The 500s' reason in error_reasons, samples, history, message, summary and HTML; no sample
    of a 500 with an empty body."""
    errors = RESOURCES * LOCKED_PER_RESOURCE
    assert result.error_reasons == {"500 database is locked": errors}
    assert result.status_reasons[500, "database is locked"] == errors
    assert result.status_reasons[409, "seat taken"] == RESOURCES * (CLIENTS - 1 - LOCKED_PER_RESOURCE)

    doc = result.to_dict(history=True)
    validate(json_document([doc], seed=1))
    for resource, samples in doc["samples"].items():
        failed = [s for s in samples if s["status"] == 500]
        assert failed, f"resource {resource}: no sample of its 500s"
        for sample in failed:
            assert sample["body"], f"resource {resource}: a 500 sample with an empty body"
            assert sample["reason"] == "500 database is locked"
        assert [s["reason"] for s in samples if s["status"] == 409] == ["seat taken"] * sum(
            s["status"] == 409 for s in samples
        )
    history = doc["history"]
    assert history is not None
    assert {r for r, s in zip(history["reason"], history["status"], strict=True) if s == 500} == {
        "500 database is locked"
    }

    message = violation_message(result.to_dict())
    assert f"{LOCKED_PER_RESOURCE}× 500 database is locked" in message
    assert "HTTP 500" not in message

    lines = [line.text for line in summary_lines([doc], verbosity=0, mode="auto", width=120)]
    (row,) = [line for line in lines if line.split()[:1] == ["500"]]
    assert row.split() == [
        "500",
        "database",
        "is",
        "locked",
        str(errors),
        f"{100 * errors / result.requests:.2f}%",
    ]

    page = render_html(json_document([doc], seed=1))
    assert '<td class="wrap">500 database is locked</td>' in page  # the request table
    assert '<td class="l">database is locked</td>' in page  # the status table


@pytest.mark.parametrize("kind", sorted(LOCKED))
@pytest.mark.parametrize("sync", ["last-byte", "gate"])
def test_every_500_says_database_is_locked(race: Any, sync: str, kind: str) -> None:
    with serve_app(LockedSeats(kind)) as url:
        result = race.post(
            lambda a: f"{url}/seats/{a.resource}",
            resources=RESOURCES,
            concurrency=CLIENTS,
            sync=sync,
            check=False,
        )
    assert (result.wins, result.errors) == (RESOURCES, RESOURCES * LOCKED_PER_RESOURCE)
    assert_every_report_says_why(result)


def test_sharded_races_say_why_too(race: Any) -> None:
    """Shards ship each response's first KiB; the coordinator derives the reason."""
    with serve_app(LockedSeats("json")) as url:
        result = race.post(
            lambda a: f"{url}/seats/{a.resource}",
            resources=RESOURCES,
            concurrency=CLIENTS,
            shards=2,
            check=False,
        )
    assert {rec.shard for rec in result.history} == {1, 2}
    assert_every_report_says_why(result)


def test_single_packet_races_say_why_too() -> None:
    """HTTP/2: each stream's body is its own; the 500s' reason comes from their DATA frames."""
    locked = LOCKED["json"][1]
    taken: dict[int, int] = {}

    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        for sid in ended(events):
            n = taken[0] = taken.get(0, 0) + 1
            status, body = (201, b'{"won": true}') if n == 1 else (409, TAKEN) if n % 2 else (500, locked)
            respond(conn, sid, status, body)
        return True

    with h2_server(script) as (url, _):
        result = fire(RequestSpec("POST", url + "/book", json={"seat": 1}), concurrency=CLIENTS).result
    assert (result.wins, result.errors) == (1, LOCKED_PER_RESOURCE)
    assert result.error_reasons == {"500 database is locked": LOCKED_PER_RESOURCE}
    doc = result.to_dict()
    failed = [s for samples in doc["samples"].values() for s in samples if s["status"] == 500]
    assert failed
    assert all(s["body"].startswith('{"error": "database is locked"') for s in failed)
    assert all(s["reason"] == "500 database is locked" for s in failed)
    assert f"{LOCKED_PER_RESOURCE}× 500 database is locked" in violation_message(result.to_dict())


def test_no_winner_says_what_everyone_got(race: Any) -> None:
    """With errors allowed, a seat nobody won names what its clients got instead."""

    class AlwaysLocked(LockedSeats):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            self.seen.setdefault(scope.get("path", ""), 1)  # never a first request: nobody wins
            await super().__call__(scope, receive, send)

    with serve_app(AlwaysLocked("html")) as url:
        result = race.post(url + "/seat", concurrency=6, allow_errors=True, check=False)
    assert result.wins == 0
    message = violation_message(result.to_dict())
    assert "no winner: " in message
    assert "3× 500 database is locked" in message
    assert "3× 409 seat taken" in message  # a rejection is named with its status
    assert result.rejections == 3


LOCKED_CONFTEST = app_conftest(
    "locked",
    "FirstWins(database_locked)",
    setup="""
def database_locked(body):
    \"\"\"After the first request per path: a 500 that says why.\"\"\"
    return 500, {"error": "database is locked", "trace": "x" * 900}
""",
)


def test_the_session_shows_the_reason_in_message_summary_and_json(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end through the plugin: the failure, the summary's breakdown and the JSON file."""
    monkeypatch.setenv("COLUMNS", "120")
    inner.makeconftest(LOCKED_CONFTEST)
    inner.makepyfile("def test_locked(locked):\n    locked.post('/seat', concurrency=6)\n")
    result = inner.runpytest("--race-json", "r.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E*error*0*5*5× 500 database is locked*"])
    result.stdout.fnmatch_lines(
        ["*status*reason*count*share*", "*201*1*", "*500*database is locked*5*83.33%*"]
    )
    document = json.loads((inner.path / "r.json").read_text(encoding="utf-8"))
    validate(document)
    (race,) = document["races"]
    assert race["error_reasons"] == {"500 database is locked": 5}
    failed = [s for s in race["samples"]["1"] if s["status"] == 500]
    assert failed
    assert all(s["body"].startswith('{"error": "database is locked"') for s in failed)
    assert all(s["reason"] == "500 database is locked" for s in failed)
