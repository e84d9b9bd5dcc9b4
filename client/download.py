"""Downloads that are verified, resumable and fetched from several holders at once.

    result = download("big.iso", "./big.iso", holders, expected_sha256=sha, size=size)

A download runs in four steps, each in its own module:

1. what the content is (here): the size and digests /locate gave, else those of the first
   holder that answers; the BLAKE3 the fast lane verifies comes from the same place;
2. a partial file beside the target, preallocated, with a journal of finished pieces, so a
   cut download continues where it stopped (client/partial.py);
3. the scheduler (client/scheduler.py) fetches the missing pieces from the holders at once,
   driving each holder's transports (client/transports.py: the fast lane of client/lane.py,
   or the gRPC Download stream), while a thread hashes the finished prefix;
4. the digest is checked (BLAKE3 when known, else sha256) and the file renamed into place; when
   it does not match, the holder that sent bad bytes is found and its pieces are fetched again
   from the others (client/heal.py).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from client.heal import Healing, heal, report_bad
from client.options import (  # noqa: F401 - re-exported: the CLI's defaults
    MAX_SOURCES,
    PIECE_SIZE,
    STALL_TIMEOUT,
    DownloadOptions,
)
from client.partial import InOrderHasher, PartialFile, WriteFailed
from client.retry import Backoff
from client.scheduler import Holder, Scheduler, failure
from client.transports import Content
from common.errors import AlreadyExists, Busy, DataLoss, Interrupted, NotFound, P2PError, Unavailable
from common.names import check_name
from common.units import format_size


@dataclass(frozen=True)
class Result:
    path: Path
    size: int
    sha256: str
    resumed: int  # bytes kept from an earlier, cut run
    sources: dict[str, int]  # holder name -> bytes of the file it delivered in this run (its share)
    seconds: float
    verified: str = "sha256"  # the digest checked: "blake3" (lane downloads) or "sha256"
    lane_bytes: dict[str, int] = field(default_factory=dict)  # holder name -> bytes it sent over its lane
    lane_off: dict[str, str] = field(default_factory=dict)  # holder name -> why its lane was not (or no longer) used
    duplicates: int = 0  # bytes received twice (a range raced in the endgame) or dropped, never written twice
    trouble: dict[str, str] = field(default_factory=dict)  # holder name -> what went wrong with it (it rested, or left)
    bad: dict[str, str] = field(default_factory=dict)  # holder name -> the bad bytes it sent (fetched again elsewhere)


def download(
    name: str, out: str | os.PathLike, holders: list[dict], options: DownloadOptions | None = None, **fields
) -> Result:
    """Fetch name from holders into the local path out, verified; a P2PError (partial kept when useful) otherwise.

    holders are dicts with at least "name" and "grpc_address" (as /locate gives them, with
    "blake3" when the holder advertises it). options is a DownloadOptions, or pass its fields
    as keywords.
    """
    options = dataclasses.replace(options or DownloadOptions(), **fields)
    return _Download(name, out, holders, options).run()


class _Download:
    """One download: learn the content, fetch it through the scheduler, verify, rename into place."""

    def __init__(self, name: str, out: str | os.PathLike, holders: list[dict], options: DownloadOptions) -> None:
        self.name = check_name(name)
        self.out = Path(os.path.abspath(out))
        self.entries = holders
        self.options = options
        self.sha256 = options.expected_sha256
        self.blake3 = options.expected_blake3
        self.size = options.size
        self.lanes_refused = "" if options.lanes else "lanes turned off"  # why no lane is used at all
        self.clock = time.monotonic

    def run(self) -> Result:
        started = self.clock()
        retry_deadline = started + self.options.retry_for
        if self.out.exists() and not self.options.overwrite:
            raise AlreadyExists(f"{self.out} already exists")
        holders = [Holder.of(entry, self.options) for entry in self.entries]
        if not holders:
            raise NotFound(f"no peer holds {self.name!r}")
        try:
            if self.sha256 and self.size is not None:
                size = self.size
                if not self.blake3:
                    self._agree_on_blake3()
            else:
                size = self._learn_content(holders, retry_deadline)
            if not self.blake3 and not self.lanes_refused:
                self.lanes_refused = "no BLAKE3 digest advertised for this content"
            for holder in holders:
                holder.lane_off = self.lanes_refused
            try:
                part = PartialFile(self.out, size, self.sha256, self.options.piece_size)
            except OSError as err:
                raise WriteFailed.of(err, Path(err.filename or self.out)) from None
            try:
                return self._fetch(part, holders, started)
            finally:
                part.close()
        finally:
            for holder in holders:
                holder.close()

    def _agree_on_blake3(self) -> None:
        """The BLAKE3 the holders advertise beside the expected sha256, if they all say the same."""
        advertised = {h["blake3"] for h in self.entries if h.get("blake3")}
        if len(advertised) == 1:
            self.blake3 = advertised.pop()
        elif len(advertised) > 1:
            self.lanes_refused = "the holders disagree on the BLAKE3 digest of this content; verifying sha256"

    def _learn_content(self, holders: list[Holder], retry_deadline: float) -> int:
        """Ask holders in turn for the size and digests (return the size); all busy or unreachable: pause, retry."""
        backoff = Backoff(max(0.0, retry_deadline - self.clock()), clock=self.clock)
        while True:
            for holder in holders:
                if holder.error is not None and not isinstance(holder.error, (Busy, Unavailable)):
                    continue
                try:
                    size, sha, b3 = holder.client(self.options).stat(self.name)
                except P2PError as err:  # unreachable, busy, or it does not hold it: ask the next one
                    holder.error = err
                    continue
                if self.sha256 and sha != self.sha256:
                    holder.error = DataLoss(f"{holder.name} holds other content (sha256 {sha[:12]})")
                    continue
                if self.sha256:  # the sha256 came from elsewhere: a BLAKE3 must come from there too
                    self._agree_on_blake3()
                else:
                    self.blake3 = self.blake3 or b3
                self.sha256, self.size = sha, size
                for other in holders:  # busy is no reason to leave a holder out of the download
                    if isinstance(other.error, Busy):
                        other.error = None
                holder.error = None
                return size
            retryable = [h.error for h in holders if isinstance(h.error, (Busy, Unavailable))]
            if not retryable or not backoff.pause():
                for holder in holders:
                    if isinstance(holder.error, (Busy, Unavailable)):
                        holder.error = backoff.exhausted(holder.error)
                raise failure(self.name, holders)

    def _fetch(self, part: PartialFile, holders: list[Holder], started: float) -> Result:
        resumed = part.done_bytes
        if self.options.on_start:
            self.options.on_start(part.size, resumed)
        verify = "blake3" if self.blake3 and not self.lanes_refused else "sha256"
        content = Content(self.name, part.size, part.sha256, self.blake3)
        hasher = InOrderHasher(part, kind=verify)
        hasher.start()
        scheduler = Scheduler(content, part, holders, self.options, hasher)
        expected = self.blake3 if verify == "blake3" else part.sha256
        try:
            scheduler.run()
            digest = hasher.hexdigest()
            healing = Healing(ok=True)
            if digest != expected:  # some holder sent bad bytes: find it, fetch its pieces from the others
                quiet = dataclasses.replace(self.options, progress=None)
                healing = heal(part, content, holders, quiet, verify, expected, scheduler.sources)
        except KeyboardInterrupt:
            hasher.stop()
            raise self._interrupted(part) from None
        except BaseException:
            hasher.stop()
            if not part.done:
                part.discard()
            raise
        if not healing.ok:
            part.discard()
            raise self._mismatch(verify, digest, expected, healing, holders)
        path = part.commit(self.options.overwrite)
        return Result(
            path,
            part.size,
            part.sha256,
            resumed,
            {h.name: h.sent for h in holders if h.sent},
            self.clock() - started,
            verified=verify,
            lane_bytes={h.name: h.lane_sent for h in holders if h.lane_sent},
            lane_off={h.name: h.lane_off for h in holders if h.lane_off},
            duplicates=scheduler.duplicates,
            trouble={h.name: h.trouble for h in holders if h.trouble},
            bad=healing.bad,
        )

    def _mismatch(self, verify: str, digest: str, expected: str, healing: Healing, holders: list[Holder]) -> DataLoss:
        """The file does not match its digest and healing could not mend it: say whose bytes were bad."""
        mismatch = f"{verify} mismatch for {self.name}: got {digest[:16]}…, expected {expected[:16]}…"
        deleted = "the partial download was deleted"
        if healing.bad:
            named = "; ".join(f"{name}: {what}" for name, what in healing.bad.items())
            return DataLoss(f"bad bytes from {named}; {mismatch} even so; {deleted}")
        if len(healing.suspects) == 1:
            only = next(h for h in holders if h.name == healing.suspects[0])
            report_bad(only, self.name)
            return DataLoss(f"bad bytes from {only.name}: {mismatch}; no other holder to fetch them from; {deleted}")
        who = ", ".join(healing.suspects) or "an earlier run"
        return DataLoss(
            f"{mismatch}; fetching each holder's pieces ({who}) again from the others did not mend it; {deleted}"
        )

    def _interrupted(self, part: PartialFile) -> Interrupted:
        """Ctrl-C: keep the finished pieces for the next run and say where they are."""
        if not part.done:
            part.discard()
            return Interrupted(f"interrupted before a piece of {self.name} was complete; nothing was kept")
        return Interrupted(
            f"interrupted: {format_size(part.done_bytes)} of {format_size(part.size)} kept in {part.path}; "
            "run the same download again to resume"
        )
