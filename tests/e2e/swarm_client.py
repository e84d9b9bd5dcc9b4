"""A library download on the swarm's client host, watched byte by byte: `python -m tests.e2e.swarm_client`.

Started by tests/e2e/test_swarm.py inside the client's network namespace (lab/swarm.py) with
one JSON argument: {"name", "out", "holders": [/locate entries], "options": {DownloadOptions fields}}.
It prints `started <monotonic>` when the download knows its size, `race <holder>` each time an
idle holder races a range still in flight elsewhere, then one JSON line: the Result's figures,
every range written into the partial file (to prove none twice) and the monotonic time it ended.
Ctrl-C (SIGINT) ends it with exit 130 and {"interrupted": what the library said}.
"""

from __future__ import annotations

import json
import sys
import time

from client import partial, scheduler
from client.download import download
from common.errors import Interrupted, P2PError

written: list[tuple[int, int]] = []


def say(line: str) -> None:
    print(line, flush=True)


def watch() -> None:
    """Record every write into the partial file; announce every race."""
    real_write = partial.PartialFile.write
    real_race = scheduler.Scheduler._race

    def write(self, offset: int, data) -> None:
        written.append((offset, len(data)))
        real_write(self, offset, data)

    def race(self, holder, now):
        span = real_race(self, holder, now)
        if span is not None:
            say(f"race {holder.name}")
        return span

    partial.PartialFile.write = write  # type: ignore[method-assign]
    scheduler.Scheduler._race = race  # type: ignore[method-assign]


def twice(ranges: list[tuple[int, int]]) -> int:
    """Bytes covered by more than one of the ranges."""
    over, reach = 0, 0
    for offset, length in sorted(ranges):
        end = offset + length
        over += max(0, min(end, reach) - offset)
        reach = max(reach, end)
    return over


def main() -> int:
    job = json.loads(sys.argv[1])
    watch()
    fields = {"on_start": lambda size, kept: say(f"started {time.monotonic()}"), **job.get("options", {})}
    try:
        result = download(job["name"], job["out"], job["holders"], None, **fields)
    except Interrupted as err:
        say(json.dumps({"interrupted": err.detail, "written": sum(n for _, n in written), "twice": twice(written)}))
        return 130
    except P2PError as err:
        say(json.dumps({"error": err.detail}))
        return err.exit_code
    say(
        json.dumps(
            {
                "ended": time.monotonic(),
                "seconds": result.seconds,
                "sources": result.sources,
                "duplicates": getattr(result, "duplicates", 0),
                "resumed": result.resumed,
                "trouble": getattr(result, "trouble", {}),
                "written": sum(n for _, n in written),
                "twice": twice(written),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
