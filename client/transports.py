"""Transports: move one byte range of a file from one holder, and say how it went.

A transport knows one way bytes travel from a holder: its fast lane (an `OpenLane` ticket,
then client/lane.py receives the raw bytes) or its gRPC `Download` stream. It is handed a
`Job` (a range, the `Sink` its bytes go to, a cancel token) and returns an `Outcome` from a
small vocabulary (`Verdict`). It never decides what happens next: whether to try the
stream, pause, drop the holder or give its range to another is the scheduler's
(client/scheduler.py). Errors of this machine (a full disk, raised by the sink) pass
through untouched: they are no holder's fault.

grpc is imported only when a call is made (the CLI's locate and search import this module
through client/download.py and need no grpc).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from client import lane
from client.cancel import Cancel
from common.config import host_of
from common.errors import (
    Busy,
    DataLoss,
    NoLane,
    P2PError,
    PermissionDenied,
    Unauthorized,
    Unavailable,
    from_rpc_error,
)

if TYPE_CHECKING:
    from client.transfer import TransferClient


class Verdict(enum.Enum):
    DONE = "done"  # the whole range arrived
    STOPPED = "stopped"  # cancelled, or the sink wanted no more: the scheduler knows why
    NO_LANE = "no_lane"  # this holder's lane cannot serve (now); its gRPC stream may
    BUSY = "busy"  # the holder is at its transfer limit: try again after a pause
    CUT = "cut"  # the holder did not answer or ended early: it may be back in a moment
    STALLED = "stalled"  # nothing arrived for stall_timeout
    GONE = "gone"  # the holder cannot serve this content (any more): another content, not found, refused


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    error: P2PError | None = None  # why, for every verdict but DONE and STOPPED


DONE = Outcome(Verdict.DONE)
STOPPED = Outcome(Verdict.STOPPED)


class Sink(Protocol):
    """Where a job's bytes go: write(position, block) stores them; False means "no more, please".

    A block is a memoryview, or a lane's PipedBlock (bytes still in the kernel) when the
    transport splices: PartialFile.write stores either.
    """

    def write(self, position: int, block: memoryview | lane.PipedBlock) -> bool: ...


@dataclass
class Job:
    """One range to fetch from one holder."""

    offset: int
    length: int
    sink: Sink
    cancel: Cancel = field(default_factory=Cancel)


@dataclass(frozen=True)
class Content:
    """The file being fetched, as every holder must serve it."""

    name: str
    size: int
    sha256: str
    blake3: str = ""


def _by_error(error: P2PError) -> Outcome:
    """The verdict on a holder's P2PError answer."""
    if isinstance(error, Busy):
        return Outcome(Verdict.BUSY, error)
    if isinstance(error, Unavailable):
        return Outcome(Verdict.CUT, error)
    return Outcome(Verdict.GONE, error)


class LaneTransport:
    """A range over the holder's fast lane: a one-time ticket asked for over gRPC, then raw bytes."""

    kind = "lane"

    def __init__(
        self,
        holder: str,
        client: TransferClient,
        content: Content,
        *,
        connect_timeout: float,
        lane_connect_timeout: float,
        stall_timeout: float,
        splice: bool = False,
    ) -> None:
        self.holder = holder
        self.client = client
        self.content = content
        self.connect_timeout = connect_timeout
        self.lane_connect_timeout = lane_connect_timeout
        self.stall_timeout = stall_timeout
        self.splice = splice  # the bytes go socket -> pipe -> file, not through the buffer (client/lane.py)
        self.buffer = bytearray(lane.BUFFER_SIZE)  # one per transport, reused job after job

    def fetch(self, job: Job) -> Outcome:
        content = self.content
        try:
            ticket = self.client.open_lane(
                content.name, job.offset, job.length, timeout=self.connect_timeout + 5.0, cancel=job.cancel
            )
        except (NoLane, Unauthorized, PermissionDenied) as err:
            # no lane, or one this caller may not use (a peer whose policy predates OpenLane): the
            # holder's stream serves the range, or gives the real answer
            return Outcome(Verdict.NO_LANE, err)
        except P2PError as err:
            return _by_error(err)
        if ticket is None:
            return STOPPED
        if (ticket.size, ticket.sha256, ticket.blake3) != (content.size, content.sha256, content.blake3):
            return Outcome(
                Verdict.GONE,
                DataLoss(f"{self.holder} now holds other content ({ticket.size} bytes, sha256 {ticket.sha256[:12]})"),
            )
        if (ticket.offset, ticket.length) != (job.offset, job.length):
            return Outcome(Verdict.GONE, DataLoss(f"{self.holder} granted another range than the one asked for"))
        try:
            received = lane.fetch(
                host_of(self.client.address),
                ticket.port,
                ticket.ticket,
                content.name,
                job.offset,
                job.length,
                job.sink.write,
                connect_timeout=self.lane_connect_timeout,
                stall_timeout=self.stall_timeout,
                buffer=self.buffer,
                cancel=job.cancel,
                splice=self.splice,
            )
        except lane.LaneError as err:
            if err.kind == "busy":
                return Outcome(Verdict.BUSY, Busy(f"{self.holder}: {err.detail}"))
            if err.kind == "gone":
                return Outcome(Verdict.GONE, DataLoss(f"{self.holder}: {err.detail}"))
            if err.kind == "stalled":
                return Outcome(Verdict.STALLED, Unavailable(f"{self.holder}: {err.detail}"))
            return Outcome(Verdict.NO_LANE, NoLane(f"lane {err.kind}: {err.detail}"))
        return DONE if received == job.length else STOPPED


class StreamTransport:
    """A range over the holder's gRPC Download stream (the seed's path; the fallback of the lane)."""

    kind = "stream"

    def __init__(self, holder: str, client: TransferClient, content: Content, *, chunk_size: int) -> None:
        self.holder = holder
        self.client = client
        self.content = content
        self.chunk_size = chunk_size

    def fetch(self, job: Job) -> Outcome:
        import grpc

        content = self.content
        position, end = job.offset, job.offset + job.length
        try:
            call = self.client.download_range(
                content.name,
                job.offset,
                job.length,
                chunk_size=self.chunk_size,
                timeout=30.0 + job.length / (256 * 1024),
            )
            with job.cancel.hook(call.cancel):
                for chunk in call:
                    if chunk.filename and (
                        chunk.size != content.size or (chunk.sha256 and chunk.sha256 != content.sha256)
                    ):
                        call.cancel()
                        other = f"{chunk.size} bytes, sha256 {chunk.sha256[:12]}"
                        return Outcome(Verdict.GONE, DataLoss(f"{self.holder} now holds other content ({other})"))
                    data = chunk.data
                    if not data:
                        continue
                    if position + len(data) > end:
                        call.cancel()
                        return Outcome(Verdict.GONE, DataLoss(f"{self.holder} sent bytes past the asked range"))
                    keep = job.sink.write(position, memoryview(data))
                    position += len(data)
                    if not keep:
                        call.cancel()
                        return STOPPED
        except grpc.RpcError as err:
            if job.cancel.cancelled:
                return STOPPED
            return _by_error(from_rpc_error(err))
        if job.cancel.cancelled and position != end:
            return STOPPED
        if position != end:
            return Outcome(
                Verdict.CUT,
                Unavailable(f"{self.holder} ended the range at {job.offset} after {position - job.offset} bytes"),
            )
        return DONE
