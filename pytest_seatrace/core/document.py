"""The race document: one race as builtins, the one shape the summary, HTML, JSON and JUnit read.

Built once per race by ``RaceResult.to_dict()`` (``core.race_document``); under pytest-xdist it
travels from a worker to the controller as it is (execnet takes builtins only). A figure added
to a race is added here, in ``core.race_document`` and in the JSON schema.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TypedDict


class ExpectDoc(TypedDict):
    min: int
    max: int


class PercentilesDoc(TypedDict):
    count: int
    min_ns: float | None
    avg_ns: float | None
    med_ns: float | None
    p90_ns: float | None
    p95_ns: float | None
    p99_ns: float | None
    max_ns: float | None


class LatencyDoc(TypedDict):
    all: PercentilesDoc
    winners: PercentilesDoc
    losers: PercentilesDoc


class SpreadDoc(TypedDict):
    median_ns: float | None
    max_ns: float | None
    by_resource: dict[str, int]
    server_median_ns: float | None
    server_max_ns: float | None


class WinDoc(TypedDict):
    client: int
    round: int
    status: int
    latency_ns: int
    body: str


class ViolationDoc(TypedDict):
    kind: str
    resource: str | None
    round: int | None
    allowed: str
    found: str
    detail: str


class RoundDoc(TypedDict):
    round: int
    requests: int
    wins: int
    rejections: int
    errors: int
    unknown: int
    violations: int


class ResourceDoc(TypedDict):
    resource: str
    requests: int
    wins: int
    rejections: int
    errors: int
    unknown: int


class OperationDoc(TypedDict):
    """One operation of a race that mixed them (``POST /seats/{resource}/book``): its counts."""

    operation: str
    """Method and path, the attempt's values written ``{resource}``, ``{client}``, ``{key}``;
    ``(not sent)`` for clients whose set-up failed."""
    requests: int
    wins: int
    rejections: int
    errors: int
    unknown: int
    status_counts: dict[str, int]


class NotRunDoc(TypedDict):
    round: int
    resource: str


class StoppedDoc(TypedDict):
    by: str
    """``hook`` or ``interrupted``."""
    round: int
    wave: int | None
    """The wave in flight or about to be built (1-based); ``None``: between waves (reset, verify=)."""
    waves: int
    """Waves per round."""
    reason: str


class RacedDoc(TypedDict):
    """What was raced: a report read a week later explains itself."""

    method: str
    url: str
    """The first request's URL, credentials and secret-looking query values stripped."""
    base_url: str | None
    http_version: str
    stripped: list[str]
    """What was taken out of the URLs shown (``userinfo``, ``query token``, …)."""
    sync: str
    hold: str | None
    """The hold point of a last-byte race; ``None`` for other starts."""
    why: str | None
    """Why ``sync="auto"`` chose this start (the HTTP/3 probe's finding); ``None``: nothing to say."""


class StatusReasonDoc(TypedDict):
    """Answered requests of one status whose bodies said one thing (``500``, ``database is
    locked``); ``reason`` is empty for wins and bodies that said nothing."""

    status: int
    reason: str
    count: int


class SampleDoc(TypedDict):
    """One sample response: a few per resource, losers included, one per kind first."""

    client: int
    round: int
    status: int
    outcome: str
    latency_ns: int
    early: bool
    body: str
    """The first 200 bytes of the body (UTF-8, invalid bytes replaced)."""
    reason: str
    """Why it is an error or unknown (``500 database is locked``), else what a rejection's body
    said (``seat taken``); empty for a win."""


class ClockDoc(TypedDict):
    time_ns: int
    perf_counter_ns: int


class ReleaseDoc(TypedDict):
    """One resource's release in a single-datagram race: its UDP datagrams and their cost."""

    round: int
    resource: str
    connections: int
    streams: int
    datagrams: int
    bytes: int
    build_ns: int
    """Handing over the held bytes and building the datagrams, before the gate."""
    write_ns: int
    """The back-to-back ``sendto`` calls alone: the gate write."""
    stream_credit: int
    """Streams the server grants a fresh connection: why a release took more than one."""
    shard: int
    """The shard that released it (0: not sharded)."""


class ShardDoc(TypedDict):
    """One shard of a sharded race (execnet gateway): where it ran, its clock, its own spread."""

    shard: int
    spec: str
    host: str
    pid: int
    clock_offset_ns: int
    clock_error_ns: int
    start_late_ns: int
    """The latest this shard released a wave after the start instant."""
    spread_median_ns: float | None
    requests: int
    failure: str | None


class ContentionGroupDoc(TypedDict):
    """One (round, resource) of ``contention``: requests in flight at once inside the service."""

    round: int
    resource: str
    clients: int
    """Answered requests of this round and resource (early answers left out)."""
    median: float | None
    peak: int | None
    reading: str
    waited: int | None
    """Measured: requests that reached the service only after the first answer."""
    batches: int | None
    """Estimated: batches the answers came back in."""
    limit: float | None
    """Measured ``limit``: the median in flight when a run of held requests had got in."""


class ContentionDoc(TypedDict):
    """How many requests the service had in flight together (``core.contention``)."""

    source: str
    """``stamps`` (measured from X-Arrival-Ns), ``responses`` (estimated from answers alone), ``none``."""
    clients: int
    median: float | None
    peak: int | None
    reading: str
    limit: float | None
    """The worker or thread limit read from the stamps (median of the groups'); else ``None``."""
    note: str | None
    """Shown in the summary: only when the service saw a far narrower race than was sent."""
    by_resource: list[ContentionGroupDoc]


class CheckedOperationDoc(TypedDict):
    """One operation of a checked history, as the message's table and the page's timeline show it."""

    process: int
    """The record's index in the race's history."""
    client: int
    op: str
    """The plugin's operation name (``POST /seats/{resource}/book``)."""
    f: str
    """The model's function (``book``)."""
    input: str | None
    """``repr`` of the model's input; ``None`` for none."""
    type: str
    """``ok``, ``fail`` or ``info`` (Jepsen's)."""
    call_ms: float
    """Call instant (shard instants widened by their clock error), ms from the race's earliest."""
    return_ms: float | None
    """Return instant, same origin; ``None`` for ``info`` (it may take effect at any later time)."""
    response: str
    """``200``, ``409 seat taken``, ``timed out``; ``→ value`` adds what a read observed."""
    order: int | None
    """1-based position in the longest linearizable prefix of a history that is not linearizable."""
    stuck: bool
    """Among the operations that cannot follow that prefix."""


class CheckedHistoryDoc(TypedDict):
    """One partition of one round checked against the race's model (``core.linearizability``)."""

    round: int
    resource: str
    model: str
    valid: bool | None
    """``None``: the time budget ran out (unknown, a violation)."""
    elapsed_s: float
    explanation: str
    operations: list[CheckedOperationDoc]
    """Empty for a linearizable history (documents stay small)."""


HistoryDoc = dict[str, list[Any]]
"""Columns of equal length: ``start_ns``, ``call_ns``, ``end_ns``, ``client``, ``resource``, ``round``,
``status``, ``outcome``, ``server_ns``, ``early``, ``shard``, ``reason`` (as a sample's);
``operation`` too in a race that mixed operations."""


class _RaceDocRequired(TypedDict):
    name: str
    mode: str
    passed: bool
    interrupted: bool
    checked: bool
    """False for a ``check=False`` call: a broken invariant shows as ``unchecked``, not ``FAIL``."""
    resources: list[str]
    concurrency: int
    expect: ExpectDoc
    rounds: int
    requests: int
    wins: int
    rejections: int
    errors: int
    unknown: int
    early: int
    """Requests answered before their held bytes were sent."""
    double_bookings: int
    error_reasons: dict[str, int]
    notes: list[str]
    """Advice on the classification that does not change the verdict (suggests ``reject=``)."""
    status_counts: dict[str, int]
    latency: LatencyDoc
    rps: float
    duration_s: float
    spread: SpreadDoc
    winners: dict[str, list[WinDoc]]
    violations: list[ViolationDoc]
    violation_rate: str
    not_run: list[NotRunDoc]
    """(round, resource) pairs a race stopped on a hung service never fired."""
    raced: RacedDoc | None
    samples: dict[str, list[SampleDoc]]
    """Per resource up to 2 winners, then the others one per kind (status and reason) in turn:
    3 when there are that many, one of each kind up to 8; each with its body's start."""
    per_round: list[RoundDoc]
    by_resource: list[ResourceDoc]
    settings: dict[str, Any]
    clock: ClockDoc


class RaceDoc(_RaceDocRequired, total=False):
    status_reasons: list[StatusReasonDoc]
    """Answered requests per (status, reason), by status, the most frequent reason first;
    absent from documents written before reasons were derived."""
    history: HistoryDoc | None
    """Only in report files: ``None`` when an xdist worker could not send it."""
    worker: str
    """The pytest-xdist worker (``gw0``, …) that ran the race; absent without xdist."""
    by_operation: list[OperationDoc]
    """Per operation counts and statuses; only in a race that mixed operations."""
    shards: list[ShardDoc]
    """One entry per shard of a sharded race; absent for a race in the test process."""
    connections_replaced: int
    """Kept connections the server had closed (its keep-alive), replaced before the release;
    absent from documents written before it existed."""
    stopped: StoppedDoc
    """Where and why a race ended before its last wave; absent for a race that finished."""
    releases: list[ReleaseDoc]
    """Each release of a single-datagram race; absent for the other starts."""
    contention: ContentionDoc
    """Requests in flight together inside the service, per resource and round (wave 3)."""
    histories: list[CheckedHistoryDoc]
    """Only in a race with ``model=``: one entry per partition of each round checked."""


def format_expect(expect: ExpectDoc, times: int = 1) -> str:
    """Allowed winners as people write them, over ``times`` resources: ``16``, or ``0..16``."""
    low, high = expect["min"] * times, expect["max"] * times
    return str(low) if low == high else f"{low}..{high}"


def unanswered(race: RaceDoc) -> int:
    """Requests that got no HTTP status (transport failures, timeouts)."""
    return race["requests"] - sum(race["status_counts"].values())


def status_counts(race: RaceDoc) -> Counter[tuple[str, str]]:
    """A race's requests per (status, what the body said), ``no response`` for the rest."""
    counts: Counter[tuple[str, str]] = Counter()
    rows = race.get("status_reasons")
    if rows is None:  # a document without reasons
        counts.update({(code, ""): n for code, n in race["status_counts"].items()})
    else:
        counts.update({(str(row["status"]), row["reason"]): row["count"] for row in rows})
    no_status = unanswered(race)
    if no_status:
        counts["no response", ""] += no_status
    return counts


def verdict(race: RaceDoc) -> str:
    """``PASS``, ``FAIL``, ``unchecked`` (a ``check=False`` call that broke a rule) or
    ``INTERRUPTED``: the word every report shows."""
    if race["interrupted"]:
        return "INTERRUPTED"
    if race["passed"]:
        return "PASS"
    return "FAIL" if race["checked"] else "unchecked"
