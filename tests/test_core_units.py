"""The pure core on its own: thresholds, figures, redaction and each judge rule, with made-up records.

Whole races test these only through their sum; here each rule is held by inputs built by hand,
so a wrong edge (an empty sample, a tie, a unit, an unknown settled by the final state) shows
in the function that has it.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Hashable, Sequence
from typing import Any

import pytest

from pytest_seatrace.core.config import HoldPoint, RaceConfig, SyncMode
from pytest_seatrace.core.figures import Figures
from pytest_seatrace.core.judge import (
    SINGLE_PACKET_EARLY_HINT,
    Group,
    double_bookings,
    errors,
    invariant_violations,
    judge,
    no_winner_possible,
    not_raced,
    problem_violation,
    raising_predicates,
    reconcile,
    threshold_violations,
    winner_count,
)
from pytest_seatrace.core.records import HookFailed, NotACount, Outcome, RaceRun, Record, WaveHung
from pytest_seatrace.core.redact import MASK, is_secret, redact_text, strip_url
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.core.stats import Percentiles, Spread, percentile
from pytest_seatrace.core.thresholds import GRAMMAR, ThresholdError, parse_threshold
from pytest_seatrace.core.violations import Violation, ViolationKind

MS = 1_000_000
ONE = range(1, 2)


def win(client: int, status: int = 201, **kw: Any) -> Record:
    return Record(0, client, 0, sent_ns=MS, end_ns=2 * MS, status=status, outcome=Outcome.WIN, **kw)


def lose(client: int, status: int = 409, **kw: Any) -> Record:
    return Record(0, client, 0, sent_ns=MS, end_ns=2 * MS, status=status, outcome=Outcome.REJECTION, **kw)


def unknown(client: int, **kw: Any) -> Record:
    return Record(0, client, 0, **{"sent_ns": MS, **kw}, outcome=Outcome.UNKNOWN)


def failed(client: int, reason: str, status: int = 0, **kw: Any) -> Record:
    return Record(0, client, 0, status=status, outcome=Outcome.ERROR, reason=reason, **kw)


def group(records: Sequence[Record], holders: int | None = None, resource: Hashable = "A") -> Group:
    return Group(resource, 0, records, holders)


def kinds(violations: Sequence[Violation]) -> list[ViolationKind]:
    return [v.kind for v in violations]


# -- thresholds: parse_threshold -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "op", "bound"),
    [
        ("p95 < 2000ms", "p95", "<", 2000 * MS),
        ("p95<2s", "p95", "<", 2e9),
        ("max <= 1.5", "max", "<=", 1.5 * MS),  # a time without unit is in ms
        ("avg < 250us", "avg", "<", 250_000),
        ("avg < 250µs", "avg", "<", 250_000),
        ("min > 40ns", "min", ">", 40),
        ("med >= .5s", "med", ">=", 5e8),
        ("spread < 5ms", "spread", "<", 5 * MS),
        ("rps >= 100", "rps", ">=", 100),
        ("errors == 0", "errors", "==", 0),
        ("errors != 3", "errors", "!=", 3),
    ],
)
def test_parse_threshold_reads_metric_operator_and_bound_in_nanoseconds(
    text: str, metric: str, op: str, bound: float
) -> None:
    th = parse_threshold(text)
    assert (th.metric, th.op) == (metric, op)
    assert th.bound == pytest.approx(bound)


def test_parse_threshold_keeps_the_text_stripped_for_reports() -> None:
    assert parse_threshold("  p99 < 3s \n").text == "p99 < 3s"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("p95 ~ 2s", "does not parse"),
        ("p95 < -1ms", "does not parse"),
        ("P95 < 2s", "does not parse"),  # metrics are lower case only
        ("p95 <", "does not parse"),
        ("", "does not parse"),
        ("p42 < 2s", "unknown metric 'p42'"),
        ("p95 < 2min", "unknown unit 'min'"),
        ("p95 < 2 h", "unknown unit 'h'"),
        ("rps > 5ms", "rps takes no unit"),
        ("errors == 1s", "errors takes no unit"),
    ],
)
def test_parse_threshold_rejects_bad_text_naming_it_and_the_grammar(text: str, says: str) -> None:
    with pytest.raises(ThresholdError) as info:
        parse_threshold(text)
    message = str(info.value)
    assert repr(text) in message
    assert says in message
    assert message.endswith(GRAMMAR)
    assert isinstance(info.value, ValueError)  # callers that catch ValueError still catch it


def test_parse_threshold_rejects_a_non_string_naming_it() -> None:
    with pytest.raises(ThresholdError, match=r"threshold 2000 is not a string"):
        parse_threshold(2000)


# -- thresholds: evaluation ----------------------------------------------------------------


def test_threshold_holds_compares_with_its_operator_at_the_boundary() -> None:
    below, at_most = parse_threshold("p95 < 2s"), parse_threshold("p95 <= 2s")
    assert below.holds(1_999_999_999)
    assert not below.holds(2e9)
    assert at_most.holds(2e9)
    assert not at_most.holds(2e9 + 1)
    assert parse_threshold("rps > 10").holds(10.5)
    assert not parse_threshold("errors == 0").holds(1)


def test_threshold_without_a_value_never_holds_even_for_not_equal() -> None:
    """NaN (no sample to measure) fails every threshold: an empty race proves no bound."""
    assert not parse_threshold("p95 < 2s").holds(math.nan)
    assert not parse_threshold("errors != 3").holds(math.nan)


def test_threshold_format_value_per_metric_kind() -> None:
    assert parse_threshold("p95 < 2s").format_value(1_234_567) == "1.235ms"
    assert parse_threshold("spread < 1ms").format_value(500_000) == "0.500ms"
    assert parse_threshold("rps > 1").format_value(12.345) == "12.3"
    assert parse_threshold("errors == 0").format_value(3.0) == "3"


def _result(records: Sequence[Record], *thresholds: str, duration: float = 1.0) -> RaceResult:
    config = RaceConfig(
        resources=("A",),
        concurrency=len(records),
        thresholds=tuple(parse_threshold(t) for t in thresholds),
        allow_errors=True,
    )
    return RaceResult.from_run("t.py::test_x", config, RaceRun(records=tuple(records), duration=duration))


def _timed(client: int, latency_ms: int, outcome: Outcome = Outcome.REJECTION) -> Record:
    return Record(0, client, 0, sent_ns=10 * MS, end_ns=(10 + latency_ms) * MS, status=409, outcome=outcome)


def test_threshold_violations_measure_latency_over_all_answered_requests() -> None:
    records = [_timed(0, 1, Outcome.WIN), _timed(1, 2), _timed(2, 3), _timed(3, 4)]
    result = _result(records, "med < 3ms", "max < 3ms", "min >= 1ms")
    (broken,) = threshold_violations(result.config.thresholds, result.figures)
    assert broken.kind is ViolationKind.THRESHOLD
    assert (broken.allowed, broken.found) == ("max < 3ms", "4.000ms")
    assert broken.detail == "max = 4.000ms"
    assert (broken.resource, broken.round) == (None, None)


def test_threshold_violations_measure_rps_errors_and_spread() -> None:
    records = [
        Record(0, 0, 0, sent_ns=10 * MS, end_ns=11 * MS, status=201, outcome=Outcome.WIN),
        Record(0, 1, 0, sent_ns=13 * MS, end_ns=14 * MS, status=409, outcome=Outcome.REJECTION),
        Record(0, 2, 0, sent_ns=11 * MS, end_ns=12 * MS, status=500, outcome=Outcome.ERROR, reason="500"),
        Record(0, 3, 0, sent_ns=12 * MS, end_ns=13 * MS, status=409, outcome=Outcome.REJECTION),
    ]
    result = _result(records, "rps >= 3", "errors == 0", "spread < 3ms", "spread <= 3ms", duration=2.0)
    found = {v.allowed: v.found for v in threshold_violations(result.config.thresholds, result.figures)}
    assert found == {"rps >= 3": "2.0", "errors == 0": "1", "spread < 3ms": "3.000ms"}


def test_threshold_violations_with_no_answered_request_fail_a_latency_bound() -> None:
    result = _result([unknown(0)], "p95 < 2s")
    (broken,) = threshold_violations(result.config.thresholds, result.figures)
    assert broken.allowed == "p95 < 2s"


# -- stats: percentile, Percentiles, Latency, Spread ---------------------------------------


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


def test_percentile_of_one_sample_is_that_sample_at_every_rank() -> None:
    assert [percentile([7], p) for p in (0, 50, 99, 100)] == [7, 7, 7, 7]


def test_percentile_interpolates_linearly_between_ranks_like_numpy() -> None:
    data = [10, 20, 30, 40]
    assert percentile(data, 0) == 10
    assert percentile(data, 50) == 25  # not a nearest-rank 20 or 30
    assert percentile(data, 90) == pytest.approx(37)
    assert percentile(data, 100) == 40


def test_percentile_over_ties_is_the_tied_value() -> None:
    assert percentile([5, 5, 5, 9], 50) == 5
    assert percentile([5, 5, 5, 9], 75) == pytest.approx(6)


def test_percentiles_of_unsorted_samples() -> None:
    p = Percentiles.of([40, 10, 30, 20])
    assert (p.count, p.min, p.max, p.avg, p.med) == (4, 10.0, 40.0, 25.0, 25.0)
    assert p.p90 == pytest.approx(37)
    assert p.p95 == pytest.approx(38.5)
    assert p.p99 == pytest.approx(39.7)


def test_percentiles_of_no_samples_are_nan_and_null_in_the_document() -> None:
    p = Percentiles.of(iter(()))
    assert p.count == 0
    assert all(math.isnan(v) for v in (p.min, p.avg, p.med, p.p90, p.p95, p.p99, p.max))
    doc = p.to_dict()
    assert doc["count"] == 0
    assert {k: v for k, v in doc.items() if k != "count"} == dict.fromkeys(
        ("min_ns", "avg_ns", "med_ns", "p90_ns", "p95_ns", "p99_ns", "max_ns")
    )


def test_latency_splits_winners_and_losers_and_leaves_unknowns_out_of_all() -> None:
    records = [_timed(0, 1, Outcome.WIN), _timed(1, 3), _timed(2, 5), unknown(3)]
    latency = _result(records).latency
    assert (latency.all.count, latency.winners.count, latency.losers.count) == (3, 1, 2)
    assert latency.winners.max == 1 * MS
    assert latency.losers.med == 4 * MS
    assert latency.to_dict()["all"]["max_ns"] == 5 * MS


def test_record_latency_is_zero_when_never_sent_or_ended_before_it_was_sent() -> None:
    assert Record(0, 0, 0, sent_ns=0, end_ns=5 * MS).latency_ns == 0
    assert Record(0, 0, 0, sent_ns=5 * MS, end_ns=3 * MS).latency_ns == 0
    assert Record(0, 0, 0, sent_ns=3 * MS, end_ns=5 * MS).latency_ns == 2 * MS


def test_spread_is_first_to_last_send_per_round_and_resource() -> None:
    records = [
        Record(0, 0, 0, sent_ns=100),
        Record(0, 1, 0, sent_ns=130),
        Record(0, 0, 1, sent_ns=100),
        Record(0, 1, 1, sent_ns=200),
        Record(1, 2, 0, sent_ns=50),
        Record(1, 3, 0, sent_ns=60),
    ]
    spread = Spread.of(records, ("A", "B"))
    assert spread.median_ns == 30  # widths 30, 100 and 10
    assert spread.max_ns == 100.0
    assert spread.by_resource == {"A": 100, "B": 10}  # the widest round of each
    assert spread.to_dict({"A": "seat A", "B": "seat B"})["by_resource"] == {"seat A": 100, "seat B": 10}


def test_spread_leaves_out_early_answers_and_unsent_requests() -> None:
    records = [
        Record(0, 0, 0, sent_ns=100),
        Record(0, 1, 0, sent_ns=110),
        Record(0, 2, 0, sent_ns=10_000, early=True),
        Record(0, 3, 0, sent_ns=0),
    ]
    spread = Spread.of(records, ("A",))
    assert spread.max_ns == 10
    assert spread.by_resource == {"A": 10}


def test_spread_of_nothing_is_nan_and_null_in_the_document() -> None:
    spread = Spread.of([], ("A",))
    assert math.isnan(spread.median_ns)
    assert math.isnan(spread.max_ns)
    assert spread.by_resource == {}
    assert spread.server_median_ns is None
    assert spread.server_max_ns is None
    doc = spread.to_dict({})
    assert (doc["median_ns"], doc["max_ns"]) == (None, None)


def test_spread_from_server_stamps_needs_two_stamps_per_group() -> None:
    records = [
        Record(0, 0, 0, sent_ns=100, server_ns=5),
        Record(0, 1, 0, sent_ns=100, server_ns=25),
        Record(1, 2, 0, sent_ns=100, server_ns=7),  # alone: no width
    ]
    spread = Spread.of(records, ("A", "B"))
    assert (spread.server_median_ns, spread.server_max_ns) == (20, 20.0)
    no_stamps = Spread.of([Record(0, 0, 0, sent_ns=1), Record(0, 1, 0, sent_ns=2)], ("A",))
    assert no_stamps.server_median_ns is None


# -- redact: strip_url, redact_text --------------------------------------------------------


def test_strip_url_drops_user_and_password_and_says_so() -> None:
    url, taken = strip_url("https://alice:s3cret@example.com:8443/seats/1?seat=3#top")
    assert url == "https://example.com:8443/seats/1?seat=3#top"
    assert taken == ("userinfo",)


def test_strip_url_drops_userinfo_whose_password_has_an_at_sign() -> None:
    url, _ = strip_url("http://bob:p@ss@host/x")
    assert url == "http://host/x"


def test_strip_url_masks_secret_query_values_and_names_them() -> None:
    url, taken = strip_url("http://h/book?token=abc&seat=3&api_key=&sig=xyz")
    assert url == f"http://h/book?token={MASK}&seat=3&api_key={MASK}&sig={MASK}"
    assert taken == ("query token", "query api_key", "query sig")


def test_strip_url_keeps_other_query_values_when_masking() -> None:
    url, _ = strip_url("http://h/p?q=a%20b&session=x")
    query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)
    assert query == [("q", "a b"), ("session", MASK)]


def test_strip_url_without_secrets_leaves_the_url_byte_for_byte() -> None:
    url = "http://h/p?a=b%20c&a=d&empty="
    assert strip_url(url) == (url, ())


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Authorization", True),
        ("Set-Cookie", True),
        ("X-Api-Key", True),
        ("csrf_token", True),
        ("PASSWORD", True),
        ("sig", True),
        ("signal", False),
        ("seat", False),
        ("page", False),
    ],
)
def test_is_secret_by_name(name: str, secret: bool) -> None:
    assert is_secret(name) is secret


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ('{"token": "abc123", "seat": 3}', '{"token": "***", "seat": 3}'),
        ('{"token": "a b c"}', '{"token": "***"}'),
        ("password=hunter2&user=bob", "password=***&user=bob"),
        ("api_key: 'xyz'", "api_key: '***'"),
        ("{'Session-Id':abc}", "{'Session-Id':***}"),
        ("seat 3 is taken", "seat 3 is taken"),
        ("", ""),
    ],
)
def test_redact_text_masks_values_of_secret_names_only(text: str, shown: str) -> None:
    assert redact_text(text) == shown


def test_redact_text_masks_a_value_cut_off_by_truncation() -> None:
    shown = redact_text('{"seat": 3, "session": "abcdef')
    assert "abcdef" not in shown
    assert shown.startswith('{"seat": 3, "session": "***')


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def", "abc.def"),
        ("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ('{"detail": "bad header", "Authorization": "Bearer abc.def"}', "abc.def"),
        ("sig=f00d&seat=3", "f00d"),
    ],
)
def test_redact_text_masks_a_credential_after_its_scheme_and_a_signature(text: str, secret: str) -> None:
    """An authentication scheme goes with the credential after it (``Bearer abc``), and a
    ``sig=`` query value is masked in text as ``strip_url`` masks it in a URL."""
    shown = redact_text(text)
    assert secret not in shown
    assert MASK in shown


def test_redact_text_leaves_names_that_only_contain_sig_alone() -> None:
    assert redact_text("design=minimal") == "design=minimal"


# -- judge: winner_count -------------------------------------------------------------------


def test_winner_count_one_winner_passes() -> None:
    assert winner_count(group([win(0), lose(1), lose(2)]), ONE, 10.0) == []


def test_winner_count_two_winners_are_too_many_and_named() -> None:
    (v,) = winner_count(group([win(0), win(1, 200), lose(2)]), ONE, 10.0)
    assert v.kind is ViolationKind.TOO_MANY
    assert (v.allowed, v.found, v.excess) == ("1", "2", 1)
    assert v.detail == "winners: client 0 (201), client 1 (200)"


def test_winner_count_names_only_five_winners() -> None:
    (v,) = winner_count(group([win(i) for i in range(7)]), ONE, 10.0)
    assert v.detail.endswith("client 4 (201) and 2 more")
    assert v.excess == 6


def test_winner_count_no_winner_is_too_few_with_what_the_others_got() -> None:
    records = [lose(0, said="seat taken"), lose(1, said="seat taken"), failed(2, "connection refused")]
    (v,) = winner_count(group(records), ONE, 10.0)
    assert v.kind is ViolationKind.TOO_FEW
    assert (v.found, v.excess) == ("0", 0)
    assert v.detail == "no winner: 2× 409 seat taken; 1× connection refused"


def test_winner_count_zero_admitted_passes_without_a_winner() -> None:
    assert winner_count(group([lose(0), lose(1)]), range(0, 2), 10.0) == []


def test_winner_count_unknowns_that_cannot_bring_it_inside_still_violate() -> None:
    (v,) = winner_count(group([win(0), win(1), unknown(2)]), ONE, 10.0)
    assert v.kind is ViolationKind.TOO_MANY
    assert (v.found, v.excess) == ("2..3", 1)


def test_winner_count_unknowns_inside_whatever_their_outcome_pass() -> None:
    assert winner_count(group([win(0), unknown(1), unknown(2)]), range(1, 4), 10.0) == []


def test_winner_count_unknowns_that_decide_it_are_indeterminate() -> None:
    (v,) = winner_count(group([win(0), unknown(1, timed_out=True), lose(2)]), ONE, 2.5)
    assert v.kind is ViolationKind.INDETERMINATE
    assert (v.allowed, v.found) == ("1", "1..2")
    assert v.detail.startswith("1 timed out after the final write (timeout=2.5s); their outcome decides")
    assert "pass verify=" in v.detail


def test_winner_count_indeterminate_names_unknowns_closed_unanswered() -> None:
    records = [unknown(0, timed_out=True), unknown(1), lose(2)]
    (v,) = winner_count(group(records), ONE, 10.0)
    assert v.kind is ViolationKind.INDETERMINATE
    assert v.found == "0..2"
    assert v.detail.startswith("1 timed out after the final write (timeout=10s) and 1 closed unanswered")


def test_winner_count_indeterminate_says_which_timed_out_before_their_final_byte() -> None:
    """Held at the body, their headers whole: the server could act, though the release never came."""
    records = [unknown(0, timed_out=True), unknown(1, timed_out=True, sent_ns=0), lose(2)]
    (v,) = winner_count(group(records), ONE, 5.0)
    assert v.detail.startswith(
        "1 timed out after the final write (timeout=5s) and "
        "1 timed out held, before their final byte went (timeout=5s); their outcome decides"
    )


def test_winner_count_settled_by_holders_inside_expect_passes() -> None:
    assert winner_count(group([win(0), unknown(1)], holders=1), ONE, 10.0) == []


def test_winner_count_settled_by_holders_above_expect_is_left_to_reconcile() -> None:
    g = group([win(0), unknown(1)], holders=2)
    assert winner_count(g, ONE, 10.0) == []
    assert kinds(reconcile(g, ONE)) == [ViolationKind.DOUBLE]


def test_winner_count_settled_by_holders_below_expect_is_too_few() -> None:
    (v,) = winner_count(group([unknown(0), lose(1)], holders=0), ONE, 10.0)
    assert v.kind is ViolationKind.TOO_FEW
    assert v.found == "0"
    assert v.detail == "1 closed unanswered by the server; the final state holds 0"


def test_winner_count_holders_outside_what_unknowns_allow_stay_indeterminate() -> None:
    """Holders that no outcome of the unknowns explains do not settle the count (reconcile
    reports them as phantom)."""
    g = group([unknown(0), lose(1)], holders=5)
    assert kinds(winner_count(g, ONE, 10.0)) == [ViolationKind.INDETERMINATE]
    assert kinds(reconcile(g, ONE)) == [ViolationKind.PHANTOM, ViolationKind.DOUBLE]


# -- judge: reconcile ----------------------------------------------------------------------


def test_reconcile_without_verify_says_nothing() -> None:
    assert reconcile(group([win(0), win(1)]), ONE) == []


def test_reconcile_holders_matching_wins_pass() -> None:
    assert reconcile(group([win(0), lose(1)], holders=1), ONE) == []


def test_reconcile_an_acknowledged_win_missing_from_state_is_lost() -> None:
    (v,) = reconcile(group([win(0), lose(1)], holders=0), ONE)
    assert v.kind is ViolationKind.LOST
    assert (v.allowed, v.found) == (">= 1", "0")


def test_reconcile_a_holder_nobody_was_told_of_is_phantom() -> None:
    (v,) = reconcile(group([lose(0), lose(1)], holders=1), ONE)
    assert v.kind is ViolationKind.PHANTOM
    assert (v.allowed, v.found) == ("<= 0", "1")


def test_reconcile_holders_beyond_expect_are_double_with_their_excess() -> None:
    violations = reconcile(group([win(0), win(1), win(2)], holders=3), ONE)
    (v,) = violations
    assert v.kind is ViolationKind.DOUBLE
    assert (v.allowed, v.found, v.excess) == ("1", "3", 2)


def test_reconcile_holders_within_wins_and_unknowns_and_expect_pass() -> None:
    assert reconcile(group([win(0), unknown(1)], holders=2), range(1, 3)) == []


def test_reconcile_lost_and_double_together() -> None:
    """Three acknowledged wins, two in the state: one lost, and still one too many held."""
    violations = reconcile(group([win(0), win(1), win(2)], holders=2), ONE)
    assert kinds(violations) == [ViolationKind.LOST, ViolationKind.DOUBLE]
    assert violations[1].excess == 1


# -- judge: no attempt could win -----------------------------------------------------------


def test_no_winner_possible_every_response_one_never_win_status() -> None:
    records = [lose(i, 404, said="not found") for i in range(3)]
    (v,) = no_winner_possible(group(records), range(0, 2))
    assert v.kind is ViolationKind.NO_WINNER_POSSIBLE
    assert (v.allowed, v.found) == ("0..1", "0")
    assert v.detail == ("no attempt could win: every response was 404 not found (wrong URL, method or body?)")


def test_no_winner_possible_with_different_bodies_names_the_bare_status() -> None:
    records = [lose(0, 405, said="use PUT"), lose(1, 405)]
    (v,) = no_winner_possible(group(records), ONE)
    assert "every response was 405 (wrong URL" in v.detail


def test_no_winner_possible_every_request_failed() -> None:
    records = [failed(0, "connection refused"), failed(1, "connection refused"), failed(2, "reset")]
    (v,) = no_winner_possible(group(records), ONE)
    assert v.detail == "no attempt could win: every request failed (connection refused)"


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([lose(0, 404, by_rule=True), lose(1, 404)], id="classified-by-the-tests-rule"),
        pytest.param([lose(0, 404), lose(1, 401)], id="two-statuses"),
        pytest.param([lose(0, 409), lose(1, 409)], id="a-status-that-can-win"),
        pytest.param([win(0, 404), lose(1, 404)], id="someone-won"),
        pytest.param([unknown(0), lose(1, 404)], id="an-unknown-might-have-won"),
        pytest.param([failed(0, "500 boom", 500), failed(1, "500 boom", 500)], id="server-errors"),
        pytest.param([failed(0, "refused"), lose(1, 404)], id="failed-and-404"),
    ],
)
def test_no_winner_possible_does_not_apply(records: list[Record]) -> None:
    assert no_winner_possible(group(records), range(0, 2)) == []


def test_no_winner_possible_fails_a_race_even_when_expect_admits_zero() -> None:
    config = RaceConfig(resources=("A",), concurrency=2, expect=range(0, 2))
    violations = invariant_violations([lose(0, 404), lose(1, 404)], config)
    assert kinds(violations) == [ViolationKind.NO_WINNER_POSSIBLE]


# -- judge: errors and raising predicates --------------------------------------------------


def test_errors_count_the_two_commonest_reasons_unless_allowed() -> None:
    records = [failed(0, "500 boom", 500), failed(1, "500 boom", 500), failed(2, "refused"), win(3)]
    (v,) = errors(group(records), allow_errors=False)
    assert v.kind is ViolationKind.ERROR
    assert (v.allowed, v.found) == ("0", "3")
    assert v.detail == "2× 500 boom; 1× refused"
    assert errors(group(records), allow_errors=True) == []


def test_a_raising_predicate_fails_even_with_allow_errors_and_is_not_an_error() -> None:
    records = [failed(0, "predicate raised KeyError", fatal=True), win(1)]
    (v,) = raising_predicates(group(records))
    assert v.kind is ViolationKind.PREDICATE
    assert v.detail == "predicate raised KeyError (fails even with allow_errors=True)"
    assert errors(group(records), allow_errors=False) == []


# -- judge: early answers, not-raced -------------------------------------------------------


def _config(sync: SyncMode, hold: HoldPoint = "headers") -> RaceConfig:
    return RaceConfig(resources=("A",), concurrency=3, sync=sync, hold=hold)


def test_not_raced_when_every_request_was_answered_early_with_the_hint() -> None:
    records = [win(0, early=True), lose(1, early=True), lose(2, early=True)]
    (v,) = not_raced(group(records), _config("last-byte", "body"))
    assert v.kind is ViolationKind.NOT_RACED
    assert (v.allowed, v.found) == ("held until the gate", "0")
    assert v.detail == (
        "all 3 requests were answered before the gate opened, so none was raced; "
        'the handler acts on its headers: use hold="headers"'
    )


def test_not_raced_hints_per_start_mode() -> None:
    records = [win(0, early=True), lose(1, early=True)]
    (single,) = not_raced(group(records), _config("single-packet"))
    assert single.detail.endswith("; " + SINGLE_PACKET_EARLY_HINT)
    (headers,) = not_raced(group(records), _config("last-byte", "headers"))
    assert headers.detail.endswith('use sync="gate"')
    (gate,) = not_raced(group(records), _config("gate"))
    assert gate.detail == "all 2 requests were answered before the gate opened, so none was raced"


def test_not_raced_needs_every_request_early() -> None:
    assert not_raced(group([win(0, early=True), lose(1)]), _config("last-byte")) == []
    assert not_raced(group([]), _config("last-byte")) == []


# -- judge: every rule per (round, resource) -----------------------------------------------


def test_invariant_violations_judge_each_round_and_resource_with_its_holders() -> None:
    config = RaceConfig(resources=("A", "B"), concurrency=2, rounds=2)
    records = [
        Record(0, 0, 0, status=201, outcome=Outcome.WIN),
        Record(0, 1, 0, status=409, outcome=Outcome.REJECTION),
        Record(1, 2, 0, status=201, outcome=Outcome.WIN),
        Record(1, 3, 0, status=201, outcome=Outcome.WIN),
        Record(0, 0, 1, status=201, outcome=Outcome.WIN),
        Record(0, 1, 1, status=409, outcome=Outcome.REJECTION),
    ]
    held = {(0, 0): 1, (0, 1): 2, (1, 0): 0}
    found = [(v.kind, v.resource, v.round) for v in invariant_violations(records, config, held)]
    assert found == [
        (ViolationKind.TOO_MANY, "B", 0),
        (ViolationKind.DOUBLE, "B", 0),
        (ViolationKind.LOST, "A", 1),
    ]


# -- judge: what went wrong while racing, and the whole verdict ----------------------------


def test_a_hung_wave_is_worded_with_the_timeout_and_what_was_not_run() -> None:
    v = problem_violation(WaveHung(round=2, not_run=5), timeout=0.5)
    assert (v.kind, v.resource, v.round, v.allowed, v.found) == (
        ViolationKind.HUNG,
        None,
        2,
        "answers within timeout",
        "none",
    )
    assert v.detail == (
        "every request of a wave of round 2 timed out (timeout=0.5s): the service seems hung, so the "
        "race stopped; 5 (round, resource) pairs were not run (RaceResult.not_run); raise timeout= "
        "if the service is just slow"
    )


def test_a_failed_hook_is_worded_with_its_reason_and_exception() -> None:
    v = problem_violation(HookFailed("reset= raised after round 1: ConnectionError", "ConnectionError"), 10.0)
    assert (v.kind, v.resource, v.round) == (ViolationKind.HOOK, None, None)
    assert (v.allowed, v.found) == ("every hook returns", "ConnectionError")
    assert v.detail == "reset= raised after round 1: ConnectionError; the race stopped with what it had"


def test_a_verify_that_returned_no_count_is_worded_with_the_value() -> None:
    v = problem_violation(NotACount("A", 3, repr("two"), "str"), 10.0)
    assert (v.kind, v.resource, v.round, v.allowed, v.found) == (
        ViolationKind.VERIFY,
        "A",
        3,
        "an int",
        "str",
    )
    assert v.detail == "verify('A') returned 'two', expected the number of holders (int)"


def test_judge_gives_the_rules_then_the_problems_then_the_thresholds() -> None:
    config = RaceConfig(resources=("A",), concurrency=2, thresholds=(parse_threshold("errors == 0"),))
    records = [win(0), win(1), failed(2, "500 boom", status=500)]
    figures = Figures(tuple(records), config.resources, config.concurrency)
    kinds = [v.kind for v in judge(records, config, figures, None, (WaveHung(0, 1),))]
    assert kinds == [ViolationKind.TOO_MANY, ViolationKind.ERROR, ViolationKind.HUNG, ViolationKind.THRESHOLD]
    assert judge([win(0)], config, Figures((win(0),), ("A",), 1)) == ()


def test_double_bookings_take_the_largest_excess_per_resource_and_round() -> None:
    def excess(resource: str, rnd: int, n: int) -> Violation:
        return Violation(ViolationKind.TOO_MANY, resource, rnd, "1", str(n + 1), excess=n)

    found = [excess("A", 1, 2), excess("A", 1, 3), excess("B", 1, 1), excess("A", 2, 1)]
    assert double_bookings(found) == 3 + 1 + 1
    assert double_bookings([Violation(ViolationKind.ERROR, "A", 1, "0", "1")]) == 0


# -- figures: from records alone -----------------------------------------------------------


def test_figures_count_time_and_sample_from_records_alone() -> None:
    records = (
        Record(0, 0, 1, sent_ns=MS, end_ns=3 * MS, status=201, outcome=Outcome.WIN, body=b"ok"),
        Record(1, 1, 1, sent_ns=MS, end_ns=2 * MS, status=409, outcome=Outcome.REJECTION, said="taken"),
        Record(1, 2, 2, status=0, outcome=Outcome.ERROR, reason="connection refused"),
    )
    figures = Figures(records, ("A", "B"), concurrency=2, rounds=2, duration=0.5)
    assert (figures.requests, figures.wins, figures.rejections, figures.errors, figures.unknown) == (
        3,
        1,
        1,
        1,
        0,
    )
    assert figures.rps == 6.0
    assert figures.latency.all.max == 2 * MS
    assert figures.status_reasons == {(201, ""): 1, (409, "taken"): 1}
    assert [w.client for w in figures.winners["A"]] == [0]
    assert figures.samples == {"A": [records[0]], "B": [records[2]]}
    assert [dict(c) for c in figures.round_outcomes] == [
        {Outcome.WIN: 1, Outcome.REJECTION: 1},
        {Outcome.ERROR: 1},
    ]
    assert [row["requests"] for row in figures.by_resource()] == [1, 2]
