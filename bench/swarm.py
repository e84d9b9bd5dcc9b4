"""Downloads over real links: holders behind uplink caps, the old scheduler against this one, in one run.

    python -m bench.swarm [--size 256] [--runs 3] [--baseline dlsplit-split-done] [--quick] [--json]

Three holders of the same files, each in its own network namespace behind an egress cap
(`tc qdisc ... tbf rate R burst 256kb latency 200ms`, lab/swarm.py), and the CLI
(`download`, default options) on a fourth address, in these scenarios:

- equal: 3 holders x 160 Mbit/s;
- slow:  2 x 160 Mbit/s + 1 x 16 Mbit/s (one holder 10x slower);
- lost:  3 x 160 Mbit/s, one holder's link cut (silent drops) 1.5 s into the download;
- crawl: 2 holders, 160 Mbit/s + 1.6 Mbit/s (one 100x slower: the download must not wait on it).

"what the links allow" is the sum of the caps (1 Mbit/s = 125,000 B/s); for `lost`, the time
the links allow is the cut's moment plus the rest at the two remaining caps. A run's time and
rate are the CLI's own (its summary: the download, not its start-up or locate). The baseline is
the client of --baseline (a git ref: the scheduler before this one), unpacked with `git archive`
into a temporary folder and run from there against the same holders, interleaved run by run.
Prints medians of --runs, the share of what the links allow, bytes fetched twice (endgame)
and each target of docs/pending/dlsplit.md with met / NOT met. Needs root (network namespaces);
elsewhere it says why and exits 0. `--quick`: 48 MiB, one run, no baseline (the old client
takes 90 s on `crawl` alone), for CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from control.processes import PROJECT_ROOT
from lab.swarm import Swarm, unavailable

MiB = 1024 * 1024
MBIT = 125_000  # bytes per second in one Mbit/s
CUT_AT = 1.5  # seconds into the download the `lost` holder is cut (scaled down with --quick)
SCENARIOS: dict[str, tuple[str, dict[str, float], str | None]] = {
    # name: (file, {holder: Mbit/s}, holder cut mid-way or None)
    "equal": ("three.bin", {"h1": 160, "h2": 160, "h3": 160}, None),
    "slow": ("three.bin", {"h1": 160, "h2": 160, "h3": 16}, None),
    "lost": ("three.bin", {"h1": 160, "h2": 160, "h3": 160}, "h3"),
    "crawl": ("two.bin", {"h1": 160, "h2": 1.6}, None),
}
TARGETS = {"equal": 0.9, "slow": 0.85}  # share of what the links allow
LOST_SLACK = 2.0  # seconds over what the remaining links allow
DUPLICATES = 0.05  # of the file, at most, fetched twice
CRAWL_SLACK = 1.1  # the 100x case: at most this times what the fast link alone allows


def allowed_seconds(scenario: str, size: int, cut_at: float) -> float:
    """The time the links allow for size bytes in this scenario."""
    _, caps, lost = SCENARIOS[scenario]
    total = sum(caps.values()) * MBIT
    if lost is None:
        return size / total
    remaining = total - caps[lost] * MBIT
    return cut_at + max(0.0, size - total * cut_at) / remaining


def baseline_tree(ref: str, into: Path) -> Path | None:
    """The project at ref, unpacked into a folder (None when the ref is unknown here)."""
    known = subprocess.run(["git", "rev-parse", "--verify", "-q", ref], cwd=PROJECT_ROOT, capture_output=True)
    if known.returncode != 0:
        return None
    into.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", ref], cwd=PROJECT_ROOT, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    archive.wait()
    return into


def one_run(swarm: Swarm, scenario: str, tree: Path, out: Path, cut_at: float) -> dict:
    """One CLI download of the scenario's file with the client of tree; its report and wall seconds."""
    name, caps, lost = SCENARIOS[scenario]
    for holder in swarm.names:
        rate = caps.get(holder)
        swarm.lab.cap(holder, f"{rate}mbit" if rate else None)
    swarm.wait_located(name)
    target = out / name
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    os.sync()  # no run pays for the last one's dirty pages
    argv = [*swarm.cli, "--json", "download", name, "--out", str(target)]
    started = time.monotonic()
    proc = swarm.client(argv, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cut = None
    try:
        if lost is not None:
            while not list(out.glob(f".{name}.p2p-part-*")) and proc.poll() is None:
                time.sleep(0.01)  # the download has begun when its partial file exists
            begun = time.monotonic()
            while time.monotonic() < begun + cut_at and proc.poll() is None:
                time.sleep(0.01)
            swarm.lab.partition(lost)
            cut = time.monotonic() - begun
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if lost is not None:
            swarm.lab.heal(lost)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{scenario} ({tree}): exit {proc.returncode}: {stderr.strip()[-800:]}")
    report = json.loads(stdout)
    size = report["size"]
    target.unlink()
    return {
        "seconds": report["seconds"],
        "wall": wall,
        "size": size,
        "bytes_from": report.get("bytes_from", {}),
        "duplicates": report.get("duplicates", 0),
        "cut_at": cut,
    }


def bench(size: int, runs: int, baseline: str | None, scenarios: list[str], folder: Path) -> dict:
    trees = {"after": PROJECT_ROOT}
    if baseline:
        old = baseline_tree(baseline, folder / "baseline")
        if old is not None:
            trees = {"before": old, **trees}
    cut_at = CUT_AT * min(1.0, size / (256 * MiB))
    out = folder / "out"
    out.mkdir()
    files = {"three.bin": size, "two.bin": size}
    results: dict[str, dict[str, list[dict]]] = {s: {t: [] for t in trees} for s in scenarios}
    with Swarm(folder / "swarm", ["h1", "h2", "h3"], files, only={"two.bin": ["h1", "h2"]}, maestro=True) as swarm:
        for scenario in scenarios:
            for _ in range(runs):
                for kind, tree in trees.items():  # interleaved: a change of load hits both alike
                    results[scenario][kind].append(one_run(swarm, scenario, tree, out, cut_at))
    return {
        "size": size,
        "runs": runs,
        "baseline": baseline if "before" in trees else None,
        "cut_at": cut_at,
        "results": results,
        "load": os.getloadavg(),
    }


def report(data: dict) -> str:
    size = data["size"]
    lines = [
        f"swarm: {size / MiB:.0f} MiB, median of {data['runs']} run(s), {os.cpu_count()} CPU(s), "
        f"load {data['load'][0]:.2f} {data['load'][1]:.2f} {data['load'][2]:.2f}; "
        f"before = {data['baseline'] or '(no baseline)'}, after = this tree",
        f"  {'scenario':9s} {'links allow':>12s} {'before':>16s} {'after':>16s} {'fetched twice':>14s}  shares (after)",
    ]
    verdicts = []
    for scenario, by_kind in data["results"].items():
        _, caps, lost = SCENARIOS[scenario]
        allowed = allowed_seconds(scenario, size, data["cut_at"])
        cells = {}
        for kind in ("before", "after"):
            rows = by_kind.get(kind) or []
            if not rows:
                cells[kind] = "-"
                continue
            seconds = statistics.median(r["seconds"] for r in rows)
            cells[kind] = (
                f"{seconds:.1f} s ({allowed / seconds:.2f})"
                if lost
                else f"{size / seconds / 1e6:.1f} MB/s ({allowed / seconds:.2f})"
            )
        after = by_kind["after"]
        twice = max(r["duplicates"] for r in after) / size
        last = after[-1]["bytes_from"]
        shares = ", ".join(f"{h} {n / size:.0%}" for h, n in sorted(last.items()))
        link = f"{allowed:.1f} s" if lost else f"{size / allowed / 1e6:.1f} MB/s"
        row = f"  {scenario:9s} {link:>12s} {cells['before']:>16s} {cells['after']:>16s} {twice:14.1%}"
        lines.append(f"{row}  {shares}")
        seconds = statistics.median(r["seconds"] for r in after)
        if scenario in TARGETS:
            share = allowed / seconds
            verdicts.append((f"{scenario}: {share:.2f} of what the links allow, target >= {TARGETS[scenario]}",
                             share >= TARGETS[scenario]))  # fmt: skip
        elif scenario == "lost":
            over = seconds - allowed
            text = f"lost: {seconds:.1f} s, {over:+.1f} s over the {allowed:.1f} s the links allow"
            text += f", target <= +{LOST_SLACK:g} s"
            verdicts.append((text, over <= LOST_SLACK))
        elif scenario == "crawl":
            alone = size / (max(caps.values()) * MBIT)
            verdicts.append((f"crawl: {seconds:.1f} s against {alone:.1f} s for the fast link alone, "
                             f"target <= {CRAWL_SLACK:g}x", seconds <= CRAWL_SLACK * alone))  # fmt: skip
        verdicts.append((f"{scenario}: {twice:.1%} of the file fetched twice, target <= {DUPLICATES:.0%}",
                         twice <= DUPLICATES))  # fmt: skip
    lines += [f"  {'met' if ok else 'NOT met'}: {text}" for text, ok in verdicts]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.swarm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="file size in MiB (default 256)")
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario and client (default 3)")
    parser.add_argument("--baseline", default="dlsplit-split-done", help="git ref of the client to compare with")
    parser.add_argument("--no-baseline", action="store_true", help="measure this tree only")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    parser.add_argument("--quick", action="store_true", help="48 MiB, one run: a smoke test for CI")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"bench.swarm skipped: {reason}")
        return
    size = (48 if args.quick else args.size) * MiB
    runs = args.runs or (1 if args.quick else 3)
    scenarios = [s for s in args.scenarios.split(",") if s]
    baseline = None if args.no_baseline or args.quick else args.baseline
    with tempfile.TemporaryDirectory(prefix="p2p-swarm-") as tmp:
        data = bench(size, runs, baseline, scenarios, Path(tmp))
    print(report(data))
    if args.json:
        print(json.dumps(data, indent=2, default=str))


if __name__ == "__main__":
    main()
