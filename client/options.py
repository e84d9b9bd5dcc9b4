"""How a download behaves: one frozen parameters object, its defaults and what each knob means.

The CLI builds one from its flags; tests and other programs pass the fields they change as
keywords to client.download.download(). Nothing here does any work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from client.credentials import NONE, Credentials
from client.retry import RETRY_FOR

PIECE_SIZE = 1024 * 1024  # unit of the resume journal (requests are sized apart: client/pace.py)
STREAMS_PER_SOURCE = 2  # requests in flight per holder (one is set up while the other runs)
MAX_STREAMS = 8  # in all, whatever the number of holders
# Without lanes every byte crosses gRPC in Python (CPU-bound near 300 MB/s on 2 cores, whatever the
# number of streams), and each stream holds ~10 MiB of buffers: 2 streams for one holder, one per
# holder for several, keeps the client under 100 MiB (bench.transfer, `--no-lane` with 2 holders).
MAX_STREAMS_WITHOUT_LANES = 2
MAX_SOURCES = 8  # every live holder, up to this many
STALL_TIMEOUT = 10.0  # seconds without a byte before a holder is given up (its own pace decides sooner)
CONNECT_TIMEOUT = 5.0
LANE_CONNECT_TIMEOUT = 2.0  # a lane not connected by then (a firewall dropping it) falls back to the stream
CHUNK_SIZE = 1024 * 1024  # bytes per gRPC stream message

# What a holder is presented: one credential for all, or one chosen per holder (its /locate entry).
CredentialsFor = Credentials | Callable[[dict], Credentials]


@dataclass(frozen=True)
class DownloadOptions:
    """Everything about a download but what and where: digests known in advance, paths, limits, observers.

    expected_sha256 and size come from /locate (the holders' shared answer); without them the
    first holder that answers tells them. expected_blake3 likewise, else the holders' entries
    when they all agree, else the holder asked for the content; lanes need it.
    """

    expected_sha256: str = ""
    expected_blake3: str = ""
    size: int | None = None
    overwrite: bool = False  # replace an existing target
    lanes: bool = True  # False: gRPC streams only, verified with sha256
    max_sources: int = MAX_SOURCES  # holders fetched from in parallel
    streams_per_source: int = STREAMS_PER_SOURCE
    piece_size: int = PIECE_SIZE
    chunk_size: int = CHUNK_SIZE
    stall_timeout: float = STALL_TIMEOUT  # seconds without a byte before a holder is given up
    connect_timeout: float = CONNECT_TIMEOUT
    lane_connect_timeout: float = LANE_CONNECT_TIMEOUT
    retry_for: float = RETRY_FOR  # seconds to keep retrying busy or unreachable holders
    credentials: CredentialsFor = NONE  # the one place a holder's credential comes from
    progress: Callable[[int], None] | None = None  # called with each batch of newly received bytes
    on_start: Callable[[int, int], None] | None = None  # (size, bytes kept from an earlier run), once known

    def credentials_for(self, holder: dict) -> Credentials:
        """What to present to this holder (its /locate entry)."""
        return self.credentials if isinstance(self.credentials, Credentials) else self.credentials(holder)
