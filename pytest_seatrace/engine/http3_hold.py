"""The three pieces of aioquic the HTTP/3 start bends: a QUIC connection that holds bytes back, a
qlog trace that watches the release, and a congestion control that lets a release out at once.

Imported only by ``engine.http3`` once an HTTP/3 start runs (it imports aioquic at the top).
aioquic's ``H3Connection`` writes a whole frame into the QUIC stream at once; ``HoldingQuic``
captures what ``H3Connection`` writes to one stream from the hold point on, so all of it but the
final byte can go out now and the rest at the release. ``ReleaseWatch`` reads aioquic's own qlog
events (its public logger interface), keeping nothing but what the start needs: the server's
stream and data credit, which stream frames each packet carried, and which packets were lost.
``ReleaseReno`` is registered through aioquic's congestion-control registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.congestion.base import register_congestion_control
from aioquic.quic.congestion.reno import RenoCongestionControl
from aioquic.quic.connection import QuicConnection
from aioquic.quic.logger import QuicLogger, QuicLoggerTrace
from aioquic.quic.packet_builder import QuicSentPacket

RELEASE_BURST = 16
"""Datagrams one release may take on a connection: aioquic's pacer never lets out more at once
(its burst is a quarter of the congestion window, at most 16 datagrams)."""
RELEASE_CONTROL = "seatrace-release"


@dataclass
class Captured:
    """What ``H3Connection`` wrote to a stream while it was captured."""

    data: bytearray = field(default_factory=bytearray)
    fin: bool = False


class ReleaseReno(RenoCongestionControl):
    """aioquic's New Reno whose window never falls below four release bursts, so its pacer lets a
    whole release out at once: a release is one burst by design (every final byte at the same
    instant), and one cut short by a small window or a loss before it would be no race. The
    traffic it speeds is a race's few requests, never a bulk transfer."""

    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.floor = 4 * RELEASE_BURST * max_datagram_size
        self.congestion_window = max(self.congestion_window, self.floor)

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        super().on_packets_lost(now=now, packets=packets)
        self.congestion_window = max(self.congestion_window, self.floor)

    def on_persistent_congestion(self) -> None:
        super().on_persistent_congestion()
        self.congestion_window = max(self.congestion_window, self.floor)


register_congestion_control(RELEASE_CONTROL, ReleaseReno)


class HoldingQuic(QuicConnection):
    """A client ``QuicConnection`` whose ``send_stream_data`` captures one chosen stream's bytes,
    watched by its own ``ReleaseWatch`` (it takes the configuration's ``quic_logger``), its
    congestion control ``ReleaseReno``."""

    def __init__(self, configuration: QuicConfiguration) -> None:
        logger = WatchLogger()
        configuration.quic_logger = logger
        configuration.congestion_control_algorithm = RELEASE_CONTROL
        super().__init__(configuration=configuration)
        if logger.watch is None:  # aioquic starts the trace in __init__: never
            raise RuntimeError("aioquic started no qlog trace for the connection")
        self.watch: ReleaseWatch = logger.watch
        self.capturing: int | None = None
        """The stream whose written bytes are captured instead of queued (None: none)."""
        self.captured = Captured()

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        if stream_id != self.capturing:
            super().send_stream_data(stream_id, data, end_stream)
            return
        self.captured.data += data
        self.captured.fin = self.captured.fin or end_stream

    def capture(self, stream_id: int) -> None:
        self.capturing, self.captured = stream_id, Captured()

    def take(self) -> Captured:
        """Stop capturing; what was captured."""
        captured, self.capturing, self.captured = self.captured, None, Captured()
        return captured


@dataclass(frozen=True, slots=True)
class StreamFrame:
    stream_id: int
    offset: int
    length: int
    fin: bool


class ReleaseWatch(QuicLoggerTrace):
    """A qlog trace that keeps only the server's credit, the release's packets and losses.

    ``recording`` makes every packet sent meanwhile count as a release packet (its number and
    stream frames kept); ``lost`` collects the numbers of packets aioquic declares lost, and
    ``acked`` the release packets the server acknowledged.
    """

    def __init__(self, *, is_client: bool, odcid: bytes) -> None:
        super().__init__(is_client=is_client, odcid=odcid)
        self.max_streams_bidi = 0
        """Bidirectional streams the server lets us open over the connection's life."""
        self.max_data = 0
        """The server's connection-level flow-control credit (initial ``max_data`` and raises)."""
        self.max_stream_data = 0
        """The server's initial per-stream credit for the streams we open."""
        self.credit_used = 0
        """Request-stream bytes written, plus one per stream in reserve."""
        self.data_packets = 0
        """Packets sent that carried stream frames, ever."""
        self.recording = False
        self.released: dict[int, list[StreamFrame]] = {}
        """Release packet number -> its stream frames."""
        self.lost: set[int] = set()
        """Packets aioquic declared lost: found lost, or rescheduled by a probe timeout (PTO),
        which aioquic also logs as ``packet_lost`` though the packet may have arrived."""
        self.acked: set[int] = set()
        """Release packets the server's ACK frames name (even after aioquic gave them up)."""
        self._received: list[list[dict[str, Any]]] = []

    def log_event(self, *, category: str, event: str, data: dict[str, Any]) -> None:
        # Nothing is stored as qlog: the trace only reads the events it needs.
        name = f"{category}:{event}"
        if name == "transport:packet_sent":
            frames = [
                StreamFrame(frame["stream_id"], frame["offset"], frame["length"], frame["fin"])
                for frame in data["frames"]
                if frame.get("frame_type") == "stream"
            ]
            self.data_packets += bool(frames)
            if self.recording:
                self.released[data["header"]["packet_number"]] = frames
        elif name == "recovery:packet_lost":
            self.lost.add(data["packet_number"])
        elif name == "transport:packet_received":
            # aioquic logs a received packet before it parses it, then fills in this list.
            self._received.append(data["frames"])
        elif name == "transport:parameters_set" and data.get("owner") == "remote":
            self.max_streams_bidi = max(self.max_streams_bidi, data.get("initial_max_streams_bidi") or 0)
            self.max_data = max(self.max_data, data.get("initial_max_data") or 0)
            self.max_stream_data = data.get("initial_max_stream_data_bidi_remote") or 0

    def digest(self) -> None:
        """Read the frames of the packets received since the last call: call it after aioquic's
        ``receive_datagram`` returns, once their frames are all in."""
        received, self._received = self._received, []
        for frames in received:
            for frame in frames:
                kind = frame.get("frame_type")
                if kind == "max_streams" and frame.get("stream_type") == "bidirectional":
                    self.max_streams_bidi = max(self.max_streams_bidi, frame["maximum"])
                elif kind == "max_data":
                    self.max_data = max(self.max_data, frame["maximum"])
                elif kind == "ack" and self.released:
                    self._acknowledged(frame["acked_ranges"])

    def spend(self, size: int) -> str | None:
        """Count a request stream of ``size`` bytes, keeping one byte of stream and connection
        flow-control credit in reserve for it (the QPACK and control streams' few bytes are not
        counted); what it outgrows, if anything."""
        self.credit_used += size + 1
        if self.max_stream_data and size + 1 > self.max_stream_data:
            return f"the server's stream flow-control credit ({self.max_stream_data} bytes)"
        if self.max_data and self.credit_used > self.max_data:
            return f"the server's connection flow-control credit ({self.max_data} bytes)"
        return None

    def _acknowledged(self, ranges: list[list[int]]) -> None:
        for number in self.released:
            if any(first <= number <= last for first, last in ranges):
                self.acked.add(number)

    def start_release(self) -> None:
        """Count the packets sent from now on as the release's (until ``recording`` ends)."""
        self.released.clear()
        self.acked.clear()
        self.recording = True

    def suspect(self) -> set[int]:
        """Release packets declared lost that the server has not acknowledged (yet)."""
        return self.lost.intersection(self.released) - self.acked


class WatchLogger(QuicLogger):
    """Hands aioquic one ``ReleaseWatch`` per connection (a client makes exactly one)."""

    def __init__(self) -> None:
        super().__init__()
        self.watch: ReleaseWatch | None = None

    def start_trace(self, is_client: bool, odcid: bytes) -> QuicLoggerTrace:
        self.watch = ReleaseWatch(is_client=is_client, odcid=odcid)
        return self.watch

    def end_trace(self, trace: QuicLoggerTrace) -> None:
        pass
