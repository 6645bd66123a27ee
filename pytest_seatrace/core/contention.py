"""How many requests the service had in flight together: the race it really saw.

A race of 100 clients against a service with 5 sync workers is a 5-way race: the other 95 wait
in the listen backlog. Per (round, resource) this module counts the requests *inside* the
service at once and reads the pattern, from the records alone (no I/O, no pytest).

With the service's arrival stamps (``X-Arrival-Ns``, ``time.perf_counter_ns()`` on the same
host, so one clock with ``sent_ns``/``end_ns``) it is measured: a request is in flight from its
arrival to its answer. The answer is the client's ``end_ns``, which is when the response had
been read, an upper bound of when the service answered: the figure is at most what it says.

- Most requests arriving only after the first answer, each getting in as one of about k in
  flight was answered, with the count steady near k and each held about as long as the others
  and well beyond the client's own timing noise: they waited outside for a free worker or thread
  (``limit``), the only reading that names a setting to raise.
- Arrivals together, answered one after another: the service serialises by design (a lock, a
  queue, a conditional update; ``serialised``); arrivals together, answered together:
  ``concurrent``. Neither is far below the clients, and neither gets advice.
- Held outside, and often let in with nothing else in flight: ``one-at-a-time``. One worker
  and a service that runs each request to completion on one event loop (the bundled sample
  service does: its stamp is taken inside that loop) look the same from outside, so no note
  names a cause.
- ``mixed``: held outside, but not like a pool (a count that grows while requests wait, stays
  from almost nothing to long, or within the client's timing noise: what a busy client reading
  answers late makes of a one-at-a-time service); no note.

Without stamps only the answers' timing is left: answers coming back in regular batches of
about k are an estimate (``batches``) with both readings, never one cause.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pytest_seatrace.core.document import ContentionDoc, ContentionGroupDoc
from pytest_seatrace.core.records import Record
from pytest_seatrace.core.stats import percentile

Reading = Literal["limit", "one-at-a-time", "serialised", "concurrent", "mixed", "batches", "unclear"]
Source = Literal["stamps", "responses", "none"]

FAR_BELOW = 4
"""The note shows when the service had fewer than 1/FAR_BELOW of the clients in flight at once:
a 100-client race seen as a 24-way race or narrower."""
MIN_CLIENTS = 8
"""Races with fewer clients per resource get no note: a handful of requests says little."""
MIN_BATCHES = 4
"""Batches needed before a pattern of batches is believed (a pause or two is chance): of
answers for an estimate; of held arrivals (after the first batch) for a measured limit."""
STAGGER = 3.0
"""Estimate: a gap between answers this many times the median gap splits two batches."""
NOISE = 2.0
"""Timing beyond this many times the client's start spread is the service's, not the
client's: a busy client sends late and reads late by about as much."""
ALIKE = 0.5
"""A pool's held requests stay about as long as each other: the middle half of their stays
within this fraction of the median. Answers read late by a busy client stay as long as the
client took to read them, from almost nothing to the whole delay."""
SPACED = 4.0
"""Answers spread this many times wider than the arrivals: answered one after another."""
SETTINGS_HINT = (
    "gunicorn --workers/--threads, uvicorn or hypercorn --workers, a thread or database connection pool"
)


@dataclass(frozen=True, slots=True)
class GroupContention:
    """One (round, resource): ``median``/``peak`` requests in flight at once (the median over
    the time at least one was), or, estimated from answers alone, the batch sizes; ``None``
    when unknown."""

    round: int
    resource: int
    clients: int
    median: float | None
    peak: int | None
    reading: Reading
    waited: int | None = None
    """Measured: requests that reached the service only after the first answer."""
    batches: int | None = None
    """Estimated: batches the answers came back in."""
    limit: float | None = None
    """Measured ``limit``: the median in flight when a run of held requests had got in."""

    def to_dict(self, name: str) -> ContentionGroupDoc:
        return {
            "round": self.round,
            "resource": name,
            "clients": self.clients,
            "median": self.median,
            "peak": self.peak,
            "reading": self.reading,
            "waited": self.waited,
            "batches": self.batches,
            "limit": self.limit,
        }


@dataclass(frozen=True, slots=True)
class Contention:
    """The race's figure: the median of its groups' medians, the highest peak, the reading
    most groups share, and a note when the service saw a far narrower race than was sent."""

    source: Source
    clients: int
    median: float | None
    peak: int | None
    reading: Reading
    groups: tuple[GroupContention, ...]
    limit: float | None = None
    """The median of the ``limit`` groups' limits; ``None`` when no group read as one."""

    @classmethod
    def of(cls, records: Iterable[Record], clients: int) -> Contention:
        """From a race's records; ``clients`` is its concurrency (clients per resource)."""
        answered: dict[tuple[int, int], list[Record]] = {}
        for rec in records:
            if rec.status and rec.sent_ns and rec.end_ns and not rec.early:
                answered.setdefault((rec.round, rec.resource), []).append(rec)
        stamped = any(rec.server_ns for recs in answered.values() for rec in recs)
        source: Source = "stamps" if stamped else "responses" if answered else "none"
        measure = measured if stamped else estimated
        groups = tuple(measure(rnd, res, answered[rnd, res]) for rnd, res in sorted(answered))
        known = [g for g in groups if g.median is not None]
        readings = Counter(g.reading for g in known)
        limits = [g.limit for g in groups if g.limit is not None]
        return cls(
            limit=statistics.median(limits) if limits else None,
            source=source,
            clients=clients,
            median=statistics.median(g.median for g in known if g.median is not None) if known else None,
            peak=max((g.peak for g in known if g.peak is not None), default=None),
            reading=readings.most_common(1)[0][0] if readings else "unclear",
            groups=groups,
        )

    @property
    def requests(self) -> int:
        """Answered requests the figure is over."""
        return sum(g.clients for g in self.groups)

    @property
    def far_below(self) -> bool:
        """Fewer than 1/FAR_BELOW of at least MIN_CLIENTS clients were in flight at once."""
        return (
            self.median is not None and self.clients >= MIN_CLIENTS and self.median * FAR_BELOW < self.clients
        )

    @property
    def note(self) -> str | None:
        """What the summary says, only for a far narrower race: measured (stamps) with the
        setting to raise, or estimated (answers alone) with both readings."""
        if not self.far_below or self.median is None:
            return None
        k = f"{self.median:g}"
        if self.source == "stamps" and self.reading == "limit" and self.limit is not None:
            waited = sum(g.waited or 0 for g in self.groups)
            limit = int(self.limit + 0.5)
            return (
                f"the service had only {k} of {self.clients} requests in flight at once (median over "
                f"its busy time, peak {self.peak}; measured from its X-Arrival-Ns stamps with the "
                f"answers timed at the client, an upper bound): {waited} of {self.requests} reached it "
                f"only after the first answer, each as one of about {limit} in flight was answered. "
                f"A worker or thread limit of about {limit} made this {_a(limit)} {limit}-way race while the "
                f"rest waited outside; to race more at once, raise it ({SETTINGS_HINT})"
            )
        if self.source == "responses" and self.reading == "batches":
            return (
                f"answers came back in batches of about {k} of {self.clients} clients (estimated "
                "from response times: the service sends no X-Arrival-Ns), so the service may have "
                f"had only about {k} requests in flight at once: either a worker or thread limit "
                f"({SETTINGS_HINT}), or a service that serialises part of its work by design. An "
                "X-Arrival-Ns header (time.perf_counter_ns() when the request reached the app) "
                "tells which"
            )
        return None

    def to_dict(self, names: Sequence[str]) -> ContentionDoc:
        """``names``: the resources as the document names them, by index."""
        return {
            "source": self.source,
            "clients": self.clients,
            "median": self.median,
            "peak": self.peak,
            "reading": self.reading,
            "limit": self.limit,
            "note": self.note,
            "by_resource": [g.to_dict(names[g.resource]) for g in self.groups],
        }


def occupancy(arrivals: Sequence[int], ends: Sequence[int]) -> list[tuple[int, int]]:
    """(requests in flight, for how many ns) over the time at least one was: in flight from
    its arrival until its answer (an answer never precedes its own arrival)."""
    events = sorted(
        [(a, 1) for a in arrivals] + [(max(a, e), -1) for a, e in zip(arrivals, ends, strict=True)]
    )
    out: list[tuple[int, int]] = []
    count = 0
    for (at, step), (following, _) in itertools.pairwise([*events, (events[-1][0], 0)]):
        count += step
        if count > 0 and following > at:
            out.append((count, following - at))
    return out


def weighted_median(segments: Sequence[tuple[int, int]]) -> float:
    """The count in flight for at least half the busy time (the lower one at an exact half)."""
    total = sum(length for _, length in segments)
    seen = 0
    for count, length in sorted(segments):
        seen += length
        if 2 * seen >= total:
            return float(count)
    return 0.0


def runs(arrivals: Sequence[int], done: Sequence[int]) -> list[range]:
    """The arrivals (indices) split into runs that came with no answer between them."""
    starts = [0]
    for i, (before, after) in enumerate(itertools.pairwise(arrivals), start=1):
        if bisect.bisect_right(done, after) > bisect.bisect_right(done, before):
            starts.append(i)
    return [range(a, b) for a, b in itertools.pairwise([*starts, len(arrivals)])]


def in_flight(arrivals: Sequence[int], ends: Sequence[int]) -> list[int]:
    """Requests in flight at each arrival, itself included (arrivals sorted)."""
    done = sorted(max(a, e) for a, e in zip(arrivals, ends, strict=True))
    return [bisect.bisect_right(arrivals, a) - bisect.bisect_right(done, a) for a in arrivals]


def measured(rnd: int, resource: int, records: Sequence[Record]) -> GroupContention:
    """One group from the service's arrival stamps: in flight over its busy time, the pattern."""
    stamped = sorted((r for r in records if r.server_ns), key=lambda r: r.server_ns)
    if len(stamped) < 2:
        return GroupContention(rnd, resource, len(records), None, None, "unclear")
    arrivals = [r.server_ns for r in stamped]
    ends = [max(r.end_ns, r.server_ns) for r in stamped]
    segments = occupancy(arrivals, ends)
    first_answer = min(ends)
    waited = [i for i, a in enumerate(arrivals) if a > first_answer]
    reading: Reading
    limit = None
    median = weighted_median(segments)
    held = _held(stamped, arrivals, ends, waited, median) if 2 * len(waited) >= len(arrivals) else None
    if held is not None:
        reading, limit = held
    elif max(ends) - min(ends) > SPACED * max(arrivals[-1] - arrivals[0], 1):
        reading = "serialised"
    else:
        reading = "concurrent"
    return GroupContention(
        round=rnd,
        resource=resource,
        clients=len(records),
        median=median,
        peak=max((count for count, _ in segments), default=1),
        reading=reading,
        waited=len(waited),
        limit=limit,
    )


def _held(
    stamped: Sequence[Record],
    arrivals: Sequence[int],
    ends: Sequence[int],
    waited: Sequence[int],
    busy: float,
) -> tuple[Reading, float | None] | None:
    """The reading of a group whose requests mostly arrived after the first answer, held
    outside the service, and the limit when there is one; ``None`` when they came in fewer than
    MIN_BATCHES - 1 runs after it (an answer or two, then the rest together).

    The arrivals come in runs with no answer between them; a pool of k that keeps requests
    waiting lets one in as each of its k frees, so at each run's last arrival about k are in
    flight. The counts are upper bounds (answers timed at the client): runs often ending with
    1 in flight prove the service took one at a time while others waited. The client's timing
    noise (its start spread) is taken off every answer: an answer read that little after the
    next arrival may well have been sent before it. A limit is believed only when the count
    stays steady near k (a full pool neither grows nor shrinks while requests wait, and has
    about k in flight most of the time, ``busy``: the median over its busy time), the held
    requests stayed about as long as each other (a pool's work takes its time; answers a busy
    client read late stay as long as it took to read them) and well beyond that noise. What a
    busy client that reads answers late makes of a one-at-a-time service, or a service serving
    other resources in between of one resource, fails one of these and reads ``mixed``: no
    note rather than a wrong one.
    """
    sends = [r.sent_ns for r in stamped]
    noise = max(sends) - min(sends)
    # an answer read within the client's timing noise of the next arrival may have been sent
    # before it: overlaps that short count for nothing
    ends = [max(a, e - noise) for a, e in zip(arrivals, ends, strict=True)]
    at_arrival = in_flight(arrivals, ends)
    held = [run for run in runs(arrivals, sorted(ends)) if run[-1] >= waited[0]]
    if len(held) < MIN_BATCHES - 1:  # one answer, then the rest together: not held, together
        return None
    # per held arrival (a run of 20 weighs 20 times a run of 1): its run's count
    counts = sorted(at_arrival[run[-1]] for run in held for _ in run)
    if percentile(counts, 25) < 2:
        return "one-at-a-time", None
    limit = float(statistics.median(counts))
    steady = 2 * percentile(counts, 25) >= limit and 2 * busy >= limit
    stays = sorted(ends[i] - arrivals[i] for i in waited)
    stay = percentile(stays, 50)
    alike = percentile(stays, 75) - percentile(stays, 25) <= ALIKE * stay
    if steady and alike and stay > NOISE * noise:
        return "limit", limit
    return "mixed", None


def estimated(rnd: int, resource: int, records: Sequence[Record]) -> GroupContention:
    """One group from the answers alone: batches of answers split by gaps wider than STAGGER
    times the typical gap and NOISE times the client's start spread, believed when there are
    MIN_BATCHES of them, most of a size near their median. An estimate: answers in batches
    fit a limit and a service that serialises part of its work alike."""
    ends = sorted(r.end_ns for r in records)
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    if len(ends) < MIN_CLIENTS:
        return GroupContention(rnd, resource, len(records), None, None, "unclear")
    sends = [r.sent_ns for r in records]
    cut = max(STAGGER * statistics.median(gaps), NOISE * (max(sends) - min(sends)), 1)
    sizes = [1]
    for gap in gaps:
        if gap > cut:
            sizes.append(1)
        else:
            sizes[-1] += 1
    k = statistics.median(sizes)
    regular = 2 * sum(1 for n in sizes if k / 2 <= n <= 2 * k) >= len(sizes)
    if len(sizes) < MIN_BATCHES or k < 2 or not regular:
        return GroupContention(rnd, resource, len(records), None, None, "unclear", batches=len(sizes))
    return GroupContention(rnd, resource, len(records), float(k), max(sizes), "batches", batches=len(sizes))


def _a(number: int) -> str:
    """The article spoken before a number: an 8-way race, an 11-way race, a 5-way race."""
    return "an" if str(number).startswith("8") or number in (11, 18) else "a"
