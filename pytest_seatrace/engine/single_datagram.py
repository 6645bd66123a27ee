"""Single-datagram start over HTTP/3: every stream held one byte short, then the held bytes of
every client of a resource released in as few UDP datagrams as they fit (one for 100 clients).

The QUIC connection is ``engine.http3``'s; this module runs it over the wave pipeline
(``engine.waves``) like the other starts. Per wave and resource: connections chosen from the
*remaining* stream credit (``MAX_STREAMS`` counts stream ids over a connection's life, so kept
connections spend it every wave), kept ones first; each client's request converted once
(``engine.h2_requests``: HTTP/3 fields are HTTP/2's), queued and settled (all of it but the held
byte acknowledged), then ``http3.release`` builds every datagram and sends them back to back. A
connection that fails after the release leaves its unanswered requests *unknown*.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
import httpx

from pytest_seatrace.core.records import DatagramRelease, Outcome, Record
from pytest_seatrace.core.settings import HoldPoint
from pytest_seatrace.engine.classify import ARRIVAL_HEADER
from pytest_seatrace.engine.h2_requests import H2Requests, H2Stream, StreamGroups, group_streams
from pytest_seatrace.engine.http3 import (
    H3Answer,
    H3Request,
    Http3Connection,
    Http3Error,
    load_aioquic,
    release,
)
from pytest_seatrace.engine.pool import KeptPool
from pytest_seatrace.engine.stream import Origin, TransportError
from pytest_seatrace.engine.waves import GateWrite, WavePipeline

_ARRIVAL = ARRIVAL_HEADER.encode()


@dataclass
class _Held:
    """One connection's share of a resource's clients, each request with its answer."""

    link: Http3Connection
    pairs: list[tuple[H2Stream, H3Answer]] = field(default_factory=list)
    settled: bool = False
    """All of it but the held bytes acknowledged: only then is it released."""


@dataclass
class _Wave:
    groups: StreamGroups
    held: dict[int, list[_Held]] = field(default_factory=dict)
    """Per resource index, its connections and what each holds."""


def h3_request(stream: H2Stream, hold: HoldPoint) -> H3Request:
    """The client's request as ``engine.http3`` queues it (it writes the pseudo-headers itself)."""
    fields = dict(stream.headers[:4])
    headers = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in stream.headers[4:])
    return H3Request(
        fields[b":method"].decode(),
        fields[b":path"].decode("latin-1"),
        headers,
        stream.body,
        hold,
        fields[b":authority"].decode("latin-1"),
    )


def fewest_links(kept: Sequence[int], fresh: int, count: int) -> tuple[list[int], int]:
    """Which kept connections (by their remaining stream credit ``kept``) and how many fresh ones
    (each granted ``fresh``) hold ``count`` streams on the fewest connections, as many kept ones
    among them as that number allows (no handshake), the most credit first: (their indices, how
    many fresh ones). ``fresh`` of 0 with too little kept credit: every kept one and no fresh
    one, which the caller reports."""
    order = sorted(range(len(kept)), key=lambda index: -kept[index])
    if fresh <= 0:
        return order, 0
    total, links = 0, 0
    for credit in sorted([*kept, *[fresh] * math.ceil(count / fresh)], reverse=True):
        if total >= count:
            break
        total, links = total + credit, links + 1
    links = max(links, 1)
    for take in range(min(links, len(order)), -1, -1):
        if sum(kept[index] for index in order[:take]) + (links - take) * fresh >= count:
            return order[:take], links - take
    return [], links  # unreachable: fresh ones alone reach count in ``links``


class SingleDatagramFirer(WavePipeline[_Wave]):
    """Fires waves in single-datagram mode over HTTP/3 (QUIC, always TLS)."""

    def equip(self) -> None:
        load_aioquic()  # the [http3] extra, named before any request is built
        self.verify: bool | str | Path = True
        """``tls_verify=``: check the certificate, not at all, or against a CA file."""
        self.datagram_releases: list[DatagramRelease] = []
        """Each release as ``engine.http3`` measured it (build time apart from the sends), for
        the race's result and reports."""
        self.pool: KeptPool[Http3Connection] = KeptPool(self._spoke, self.keepalive)
        self.connections = 0
        """QUIC connections opened so far (kept ones are reused across waves and rounds)."""
        self._requests = H2Requests(self.builder)
        self.h3_at: dict[Origin, Origin] = {}
        """Where HTTP/3 answers for an origin when not on its URL's port (``Alt-Svc``)."""
        self._fresh_credit: dict[Origin, int] = {}
        """Streams a fresh connection to each origin is granted (its first one's)."""

    def aimed(self, verify: bool | str | Path, h3_at: Mapping[Origin, Origin]) -> SingleDatagramFirer:
        """This firer, checking certificates as ``verify`` says (``tls_verify=``) and finding HTTP/3
        for an origin at ``h3_at`` where it answers off its URL's port; returned for chaining."""
        self.verify = verify
        self.h3_at.update(h3_at)
        return self

    @property
    def gate_writes(self) -> list[GateWrite]:
        """One entry per resource and wave, as the other starts keep them: each release's
        datagrams (its ``sendto`` calls), bytes and write time."""
        return [
            GateWrite(
                r.round,
                r.resource,
                r.connections,
                r.streams,
                r.bytes,
                r.datagrams,
                r.write_ns,
                datagrams=r.datagrams,
            )
            for r in self.datagram_releases
        ]

    # -- the wave pipeline's steps ---------------------------------------------------------

    async def build(self, rnd: int, indices: Sequence[int]) -> _Wave:
        """Every request of the wave, grouped by resource and origin (one set of connections each)."""
        return _Wave(await group_streams(self._requests, self.roster, rnd, indices))

    def records(self, wave: _Wave) -> list[Record]:
        return [s.record for streams in wave.groups.values() for s in streams]

    async def prepare(self, rnd: int, wave: _Wave) -> None:
        """Connections and every request held, within one ``timeout``."""
        with anyio.move_on_after(self.config.timeout):
            async with anyio.create_task_group() as tg:
                for (index, origin), streams in wave.groups.items():
                    at = self.h3_at.get(origin, origin)
                    tg.start_soon(self._prepare_group, at, streams, wave.held.setdefault(index, []))
        late = f"timed out after {self.config.timeout}s"
        for group in wave.held.values():
            for held in group:
                if held.pairs and not held.settled:  # cut off by the deadline while holding
                    for stream, _ in held.pairs:
                        self._fail(stream, f"{late} holding its request ({held.link.origin.url})")
                        stream.record.timed_out = True
                    held.link.close()
                    held.pairs = []
        for streams in wave.groups.values():
            for stream in streams:
                if not stream.done and stream.prefix_ns == 0:
                    self._fail(stream, f"{late} connecting to {stream.origin.url}")
                    stream.record.timed_out = True

    async def release(self, rnd: int, indices: Sequence[int], wave: _Wave) -> None:
        """Each resource's release: its datagrams built, then sent back to back."""
        for index in indices:
            ready = [h for h in wave.held.get(index, []) if h.link.closed is None and h.pairs and h.settled]
            if not ready:
                continue
            begun = time.perf_counter_ns()
            try:
                gate = release([h.link for h in ready])
            except Http3Error as exc:
                for held in ready:
                    for stream, _ in held.pairs:
                        self._fail(stream, str(exc))
                continue
            start = begun + gate.build_ns
            sent = start + gate.write_ns
            for held in ready:
                for stream, answer in held.pairs:
                    stream.gated = True
                    rec = stream.record
                    if not rec.call_ns:  # held at HEADERS: the server could act from the release on
                        rec.call_ns = start
                    rec.sent_ns = stream.prefix_ns if answer.early else sent
            figure = DatagramRelease(
                rnd,
                index,
                len(ready),
                gate.streams,
                gate.datagrams,
                gate.bytes,
                gate.build_ns,
                gate.write_ns,
                stream_credit=self._fresh_credit.get(ready[0].link.origin, 0),
            )
            self.datagram_releases.append(figure)

    async def collect(self, wave: _Wave) -> None:
        """Read every answer, with one deadline: ``timeout`` after the release."""
        helds = [h for group in wave.held.values() for h in group]
        with anyio.move_on_after(self.config.timeout):
            async with anyio.create_task_group() as tg:
                for held in helds:
                    if held.link.closed is None and held.pairs:
                        tg.start_soon(held.link.read)
        now = time.perf_counter_ns()
        for held in helds:
            healthy = held.link.closed is None
            for stream, answer in held.pairs:
                if stream.done:
                    continue
                if answer.ended and answer.status:
                    self._complete(stream, answer)
                elif answer.error is not None:
                    self._fail(stream, answer.error)
                else:
                    healthy = False
                    self._fail(stream, f"no response within {self.config.timeout}s after the release")
                    stream.record.timed_out = True
            if healthy and held.link.remaining_streams > 0:
                self.pool.keep(held.link, now)
            else:
                held.link.close()

    async def aclose(self) -> None:
        self.pool.close()

    # -- before the release --------------------------------------------------------------------

    async def _prepare_group(self, origin: Origin, streams: list[H2Stream], out: list[_Held]) -> None:
        """One resource's requests over as few connections as their stream credit allows, spread
        as evenly as that credit lets; each connection's queued, then settled."""
        try:
            links = await self._links_for(origin, len(streams))
        except TransportError as exc:
            for stream in streams:
                self._fail(stream, str(exc))
            return
        start = 0
        mine: list[_Held] = []
        links.sort(key=lambda link: link.remaining_streams)  # the fullest last: they take the rest
        for number, link in enumerate(links):
            take = min(link.remaining_streams, math.ceil((len(streams) - start) / (len(links) - number)))
            if take:
                mine.append(_Held(link, [(s, H3Answer(0)) for s in streams[start : start + take]]))
            else:
                self.pool.give_back(link)
            start += take
        out.extend(mine)
        async with anyio.create_task_group() as tg:
            for held in mine:
                tg.start_soon(self._hold, held)

    async def _hold(self, held: _Held) -> None:
        """Queue every request of ``held`` one byte short, and wait until it is acknowledged."""
        hold = self.config.hold
        begun = time.perf_counter_ns()
        try:
            answers = held.link.queue([h3_request(stream, hold) for stream, _ in held.pairs])
        except Http3Error as exc:
            for stream, _ in held.pairs:
                self._fail(stream, str(exc))
            held.link.close()
            held.pairs = []
            return
        held.pairs = [(stream, answer) for (stream, _), answer in zip(held.pairs, answers, strict=True)]
        for stream, _ in held.pairs:
            stream.prefix_ns = begun
            if hold == "body" and stream.body:  # its whole HEADERS went: the server may act now
                stream.record.call_ns = begun
        try:
            await held.link.settle()
            held.settled = True
        except TransportError as exc:
            for stream, _ in held.pairs:
                self._fail(stream, f"{exc} (before the release)")
            held.link.close()
            held.pairs = []

    async def _links_for(self, origin: Origin, count: int) -> list[Http3Connection]:
        """As few connections as hold ``count`` streams (each connection sends its own datagrams),
        kept ones among them where they do (``fewest_links``). Kept ones left out go back to the
        pool, or are closed when fresh ones beat them (a server like aioquic's grants more only
        once what is left falls below half, which waves of this size would not reach). The first
        connection to an origin is opened before choosing: it tells what a fresh one is granted."""
        pool = self.pool
        pool.weed(await pool.probe(origin), origin)
        kept = await self._settled(origin)
        if origin not in self._fresh_credit:
            kept.insert(0, await self._open(origin))
        chosen, fresh = fewest_links(
            [link.remaining_streams for link in kept], self._fresh_credit[origin], count
        )
        out = [kept[index] for index in chosen]
        for link in kept:
            if link in out:
                continue
            if fresh:
                link.close()
            else:
                pool.give_back(link)
        await pool.open_into(out, fresh, partial(self._open, origin))
        if sum(link.remaining_streams for link in out) < count:
            for link in out:
                pool.give_back(link)
            raise Http3Error(
                f"{origin.url} grants too few HTTP/3 streams: {count} did not fit on {len(out)} connections"
            )
        return out

    async def _settled(self, origin: Origin) -> list[Http3Connection]:
        """Every kept connection to ``origin``, settled, by remaining stream credit, descending;
        one that fails to settle is closed and counted as replaced."""
        kept: list[Http3Connection] = []
        while (link := self.pool.take(origin)) is not None:
            try:
                await link.settle()
            except TransportError:
                link.close()
                self.keepalive.replaced += 1
                continue
            kept.append(link)
        kept.sort(key=lambda link: link.remaining_streams, reverse=True)
        return kept

    async def _open(self, origin: Origin) -> Http3Connection:
        link = self.pool.opened(await Http3Connection.open(origin, verify=self.verify))
        self.connections += 1
        self._fresh_credit[origin] = link.remaining_streams
        return link

    def _spoke(self, links: Sequence[Http3Connection]) -> list[bool]:
        """Which kept connections ended while idle (the server closed them)."""
        return [link.closed is not None for link in links]

    # -- outcomes ------------------------------------------------------------------------------

    def _complete(self, stream: H2Stream, answer: H3Answer) -> None:
        rec = stream.record
        stream.done = True
        rec.end_ns = answer.end_ns or time.perf_counter_ns()
        if answer.early:
            rec.early, rec.sent_ns = True, stream.prefix_ns
        fields = [(name, value) for name, value in answer.headers if not name.startswith(b":")]
        arrival = next((value for name, value in fields if name == _ARRIVAL), None)
        body = bytes(answer.body)
        status = answer.status or 0

        def response() -> httpx.Response:
            return httpx.Response(
                status,
                headers=fields,
                content=body,
                request=stream.httpx_request(),
                extensions={"http_version": b"HTTP/3"},
            )

        self.classifier.fill(rec, status, arrival, body, response)

    @staticmethod
    def _fail(stream: H2Stream, reason: str) -> None:
        """A request that got no answer: unknown once the server could act on it (its call
        began), an error when it never could."""
        rec = stream.record
        stream.done = True
        rec.end_ns = rec.end_ns or time.perf_counter_ns()
        rec.outcome = Outcome.UNKNOWN if rec.call_ns else Outcome.ERROR
        rec.reason = reason


__all__ = ["SingleDatagramFirer"]
