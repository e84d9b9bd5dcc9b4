"""Small probes run inside a lab host (`python -m lab.netns_probe ...` under `ip netns exec`).

Each prints one JSON document on stdout, so a test in the root namespace (which cannot
reach the lab's addresses) reads what a host on the lab's network sees.

  alive MAESTRO_URL NAME SECONDS OUT   append {"t", "alive"} lines for NAME every 0.1 s to OUT
  time URL N [GAP]                     GET URL N times (GAP s apart): {"codes", "seconds"} per request
  get URL                              {"status", "body"} of one GET (status 0: no answer)
"""

from __future__ import annotations

import json
import sys
import time

import requests


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


def alive(maestro: str, name: str, seconds: float, out: str) -> None:
    """Record NAME's alive flag at the Maestro every 0.1 s for SECONDS (None: no answer)."""
    s = _session()
    end = time.monotonic() + seconds
    with open(out, "a", encoding="utf-8") as fh:
        while time.monotonic() < end:
            state = None
            try:
                peers = s.get(f"{maestro}/peers", timeout=0.5).json()["peers"]
                state = next((p["alive"] for p in peers if p["name"] == name), None)
            except (requests.RequestException, ValueError, KeyError):
                pass
            fh.write(json.dumps({"t": time.time(), "alive": state}) + "\n")
            fh.flush()
            time.sleep(0.1)


def timed(url: str, n: int, gap: float = 0.0) -> None:
    """GET url n times one after another; print each status and duration."""
    s = _session()
    codes: list[int | str] = []
    seconds: list[float] = []
    for i in range(n):
        if i and gap:
            time.sleep(gap)
        start = time.perf_counter()
        try:
            codes.append(s.get(url, timeout=30).status_code)
        except requests.RequestException as err:
            codes.append(type(err).__name__)
        seconds.append(round(time.perf_counter() - start, 4))
    print(json.dumps({"url": url, "codes": codes, "seconds": seconds}))


def get(url: str) -> None:
    """One GET; print its status and JSON body."""
    try:
        resp = _session().get(url, timeout=10)
    except requests.RequestException as err:
        print(json.dumps({"status": 0, "body": {"error": type(err).__name__}}))
        return
    try:
        body = resp.json()
    except ValueError:
        body = {"text": resp.text[:200]}
    print(json.dumps({"status": resp.status_code, "body": body}))


def main(argv: list[str]) -> None:
    if argv[0] == "alive":
        alive(argv[1], argv[2], float(argv[3]), argv[4])
    elif argv[0] == "time":
        timed(argv[1], int(argv[2]), float(argv[3]) if len(argv) > 3 else 0.0)
    elif argv[0] == "get":
        get(argv[1])
    else:
        raise SystemExit(f"unknown probe {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
