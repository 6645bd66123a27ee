"""How a race is put into words, once for every place that says it.

The terminal summary, the HTML page, the violation message and the live progress line all read
the same race document; the sentences they share (early answers, where a race stopped,
replaced connections, what clean rounds showed), and the small formats (milliseconds, counted
nouns, status shares) live here, so the same fact reads the same everywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from pytest_seatrace.core.document import RaceDoc
from pytest_seatrace.core.judge import early_hint

CONFIDENCE = 0.95
"""The confidence level of the per-round failure-rate bound of clean multi-round races."""

OPERATION_HEADERS = ("operation", "requests", "wins", "rejections", "errors", "unknown", "statuses")
"""The columns of a race's per-operation table, in the terminal and on the page."""


# -- small formats ------------------------------------------------------------------------------


def format_ms(ns: float | None, digits: int = 1) -> str:
    """Nanoseconds as milliseconds for tables; "-" where nothing was measured."""
    return "-" if ns is None else f"{ns / 1e6:.{digits}f}"


def plural(n: int, word: str, words: str | None = None, *, grouped: bool = False) -> str:
    """``1 race``, ``3 races``, ``2 successes``; ``grouped``: ``4,800 requests``."""
    count = f"{n:,}" if grouped else str(n)
    return f"{count} {word if n == 1 else words or word + 's'}"


def share(n: int, total: int) -> str:
    """``n`` of ``total`` as a percentage with two decimals: ``12.50%``."""
    return f"{100 * n / total:.2f}%"


def statuses_text(counts: Mapping[str, int]) -> str:
    """An operation's statuses: ``201 ×1, 409 ×49``; ``-`` for none."""
    return ", ".join(f"{code} ×{n}" for code, n in counts.items()) or "-"


def status_key(code: str) -> tuple[bool, int, str]:
    """Statuses in numeric order, then ``no response``: the order every report lists them."""
    return (not code.isdigit(), int(code) if code.isdigit() else 0, code)


def ordered_statuses(counts: Counter[tuple[str, str]]) -> list[tuple[str, str, int]]:
    """(status, what the bodies said, count) in status order; a status's most frequent reason
    first."""
    rows = sorted(counts.items(), key=lambda item: (*status_key(item[0][0]), -item[1], item[0][1]))
    return [(code, reason, n) for (code, reason), n in rows]


# -- sentences about one race ----------------------------------------------------------------------


def hold_point(race: RaceDoc) -> str | None:
    """The hold point of a last-byte or single-datagram race (what was raced says it); ``None``
    for other starts."""
    raced = race["raced"]
    return None if raced is None else raced["hold"]


def early_hint_of(race: RaceDoc) -> str:
    """What to try when requests of this race were answered early, for its start and hold."""
    return early_hint(race["mode"], hold_point(race))


def early_text(race: RaceDoc) -> str | None:
    """Requests answered before their held bytes were sent, when there were any (the summary's
    note)."""
    early = race["early"]
    if not early:
        return None
    hint = early_hint_of(race)
    return (
        f"early answers: {early} of {race['requests']} "
        "(answered before their held bytes were sent: not synchronised; left out of the start spread)"
        + (f"; {hint}" if hint else "")
    )


def early_note(race: RaceDoc) -> str:
    """The violation message's line on early answers, with what to try, unless a violation
    already says it; empty without early answers."""
    if not race["early"]:
        return ""
    hint = early_hint_of(race)
    if hint and any(hint in v["detail"] for v in race["violations"]):
        return ""
    return (
        f"early answers: {race['early']} of {race['requests']} were answered before their held "
        "bytes were sent (not synchronised)" + (f"; {hint}" if hint else "")
    )


def stopped_text(race: RaceDoc) -> str | None:
    """Where and why a race ended before its last wave (a hook failed, Ctrl-C), if it did."""
    stopped = race.get("stopped")
    if stopped is None:
        return None
    if stopped["by"] == "interrupted":
        return f"{stopped['reason']}: the figures cover the requests sent until then"
    return f"stopped: {stopped['reason']}"


def replaced_text(race: RaceDoc) -> str | None:
    """Kept connections the server closed (its keep-alive) and the race replaced, if any."""
    replaced = race.get("connections_replaced", 0)
    if not replaced:
        return None
    return (
        f"{replaced} kept {'connection' if replaced == 1 else 'connections'} the server had closed "
        "(idle past its keep-alive) replaced before the release: no request it could have acted on "
        "was lost or replayed"
    )


def releases_text(race: RaceDoc) -> str | None:
    """How a single-datagram race's releases went out: datagrams, connections, gate write."""
    releases = race.get("releases")
    if not releases:
        return None
    datagrams = sorted({r["datagrams"] for r in releases})
    each = str(datagrams[0]) if len(datagrams) == 1 else f"{datagrams[0]}–{datagrams[-1]}"
    widest = max(releases, key=lambda r: r["connections"])
    credit = widest["stream_credit"]
    why = (
        f"the server grants {plural(credit, 'stream')} a connection, {widest['streams']} needed them"
        if widest["connections"] > 1 and credit
        else "its stream credit holds every client"
        if widest["connections"] == 1
        else "as the server's stream credit allowed"
    )
    writes = sorted(r["write_ns"] for r in releases)
    return (
        f"{plural(len(releases), 'release')} over HTTP/3, {each} UDP "
        f"{'datagram' if datagrams == [1] else 'datagrams'} each, on up to "
        f"{plural(widest['connections'], 'connection')} ({why}), at most "
        f"{max(r['bytes'] for r in releases)} bytes; gate write median "
        f"{format_ms(writes[len(writes) // 2], 3)} ms"
    )


def contention_text(race: RaceDoc) -> str | None:
    """The service saw a far narrower race than was sent (``core.contention``); else nothing."""
    contention = race.get("contention")
    return None if contention is None else contention["note"]


def rounds_run(race: RaceDoc) -> int:
    return sum(1 for r in race["per_round"] if r["requests"])


def failure_rate_bound(rounds: int, confidence: float = CONFIDENCE) -> float:
    """The exact upper bound on the per-round failure rate after ``rounds`` clean rounds.

    With ``rounds`` independent rounds and none failing, every failure rate ``p`` with
    ``(1 - p) ** rounds >= 1 - confidence`` is still plausible; the bound is the largest,
    ``1 - (1 - confidence) ** (1 / rounds)``. The "rule of three", ``3 / rounds``, approximates it
    at 95 %.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    return 1.0 - float((1.0 - confidence) ** (1.0 / rounds))


def confidence_text(race: RaceDoc) -> str | None:
    """What a clean multi-round race showed: ``0 of 20 rounds broke the invariant: …``."""
    rounds = rounds_run(race)
    if rounds < 2 or race["violations"] or race["interrupted"] or not race["passed"]:
        return None
    bound = failure_rate_bound(rounds)
    return (
        f"0 of {rounds} rounds broke the invariant: the per-round failure rate is below "
        f"{100 * bound:.1f} % at {100 * CONFIDENCE:.0f} % confidence"
    )


def model_text(race: RaceDoc) -> str | None:
    """What a race's model made of its histories (``checked against Seats: 1 of 4 histories not
    linearizable``); nothing for a race without a model."""
    histories = race.get("histories")
    if histories is None:
        return None
    model = race["settings"].get("model") or "its model"
    valid = Counter(h["valid"] for h in histories)
    total = plural(len(histories), "history", "histories")
    if not valid[False] and not valid[None]:
        return f"checked against {model}: {total} linearizable"
    bad = [f"{valid[False]} not linearizable"] if valid[False] else []
    bad += [f"{valid[None]} unknown (the time budget ran out)"] if valid[None] else []
    return f"checked against {model}: of {total}, {' and '.join(bad)}"


STOPPED, WARNING, PLAIN, GOOD = "stopped", "warning", "plain", "good"
"""The tone of a race's note: each place colours it its own way."""


def race_notes(race: RaceDoc) -> list[tuple[str, str]]:
    """Everything said about a race under its figures, as (tone, text), in the order every
    report lists it: where it stopped, early answers, replaced connections, the classification's
    advice, a service that saw a far narrower race than was sent, what its model made of its
    histories, what clean rounds showed."""
    notes: list[tuple[str, str | None]] = [
        (STOPPED, stopped_text(race)),
        (WARNING, early_text(race)),
        (PLAIN, replaced_text(race)),
        (PLAIN, releases_text(race)),
        *((WARNING, text) for text in race["notes"]),
        (WARNING, contention_text(race)),
        (PLAIN if all(h["valid"] for h in race.get("histories", [])) else WARNING, model_text(race)),
        (GOOD, confidence_text(race)),
    ]
    return [(tone, text) for tone, text in notes if text]
