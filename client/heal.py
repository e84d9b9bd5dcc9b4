"""Bad copies heal: a digest mismatch is traced to the holder that sent bad bytes, and mended from the others.

Holders advertise one digest for the whole file, so the whole file's digest is the only witness
(docs/transfer.md, "How a download works"). The scheduler knows which holders wrote each piece in
this run; each of them is a suspect in turn, the one that wrote least first (the cheapest test).
A suspect's pieces are fetched again from the other holders of the same content, each block
compared with the bytes it replaces. When none differs, the suspect's copy agrees with another
holder's: the next suspect. When some differ, the file is hashed again; if the digest now
matches, the suspect sent bad bytes: it is named (`Healing.bad`) and told, best-effort, to
re-hash its copy (`POST /recheck {"file": NAME}` on its REST API, so it stops advertising a digest
it no longer has). Pieces kept from an earlier run have no known sender: they are fetched again
last, from every holder. With nobody to fetch from (a single holder) nothing can heal: the
caller fails naming that holder.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from client.options import DownloadOptions
from client.partial import InOrderHasher, PartialFile
from client.scheduler import Holder, Scheduler
from client.transports import Content
from common.errors import P2PError

RECHECK_TIMEOUT = 2.0  # seconds for telling a holder its copy is bad (best-effort)


@dataclass
class Healing:
    """What healing found: whether the file now matches, and who sent bad bytes."""

    ok: bool = False
    bad: dict[str, str] = field(default_factory=dict)  # holder -> what was wrong ("2 pieces differed from h1's")
    suspects: list[str] = field(default_factory=list)  # holders that wrote pieces, when none could be proven bad


def heal(
    part: PartialFile,
    content: Content,
    holders: list[Holder],
    options: DownloadOptions,
    verify: str,
    expected: str,
    sources: dict[int, set[str]],
) -> Healing:
    """Find and replace the bad pieces; Healing.ok when the file's digest matches at last."""
    writers: dict[str, int] = {}
    for names in sources.values():
        for name in names:
            writers[name] = writers.get(name, 0) + 1
    earlier = sorted(set(range(part.pieces)) - set(sources))  # kept from an earlier run: sender unknown
    found = Healing(suspects=sorted(writers))
    by_name = {h.name: h for h in holders}
    order = sorted(writers, key=lambda name: (writers[name], name)) + ([""] if earlier else [])
    for suspect in order:
        helpers = [h for h in holders if h.alive and h.name != suspect and h.name not in found.bad]
        pieces = [p for p, names in sources.items() if suspect in names] if suspect else earlier
        if not helpers or not pieces:
            continue
        differ, digest, scheduler = _again(part, content, helpers, options, verify, sorted(pieces))
        for piece in pieces:  # who wrote them now
            sources[piece] = scheduler.sources.get(piece, set())
        if not differ:
            continue  # its bytes agree with another holder's copy
        if digest == expected:
            if suspect:
                witness = ", ".join(sorted({n for p in differ for n in scheduler.sources.get(p, ())}))
                found.bad[suspect] = f"{_count(differ)} differed from {witness}'s copy"
            found.ok = True
            break
    for name in found.bad:
        report_bad(by_name[name], content.name)
    return found


def _again(
    part: PartialFile,
    content: Content,
    helpers: list[Holder],
    options: DownloadOptions,
    verify: str,
    pieces: list[int],
) -> tuple[set[int], str, Scheduler]:
    """Fetch pieces again from helpers, comparing; (pieces that differed, the file's digest now, the scheduler)."""
    part.redo(pieces)
    hasher = InOrderHasher(part, kind=verify)
    hasher.start()
    scheduler = Scheduler(content, part, helpers, options, hasher, compare=True)
    try:
        scheduler.run()
    except BaseException:
        hasher.stop()
        raise
    return scheduler.differ, hasher.hexdigest(), scheduler


def _count(pieces: set[int]) -> str:
    return f"{len(pieces)} piece{'s' if len(pieces) != 1 else ''} ({', '.join(str(p) for p in sorted(pieces)[:8])})"


def report_bad(holder: Holder, name: str) -> None:
    """Ask the holder to re-hash its copy of name now (POST /recheck); nothing it answers changes the download."""
    url = holder.entry.get("rest_url")
    if not url:
        return
    from client.api import call  # requests: only on this rare path

    with contextlib.suppress(P2PError):
        call("POST", f"{url.rstrip('/')}/recheck", json={"file": name}, timeout=RECHECK_TIMEOUT,
             credentials=holder.credentials)  # fmt: skip
