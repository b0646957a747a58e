"""Measure the noise sentinel's spread on this machine, quiet or loaded: how its bound was chosen.

    python scripts/sentinel_noise.py --seconds 60 --out reports/sentinel/quiet.jsonl
    python scripts/sentinel_noise.py --seconds 60 --burn 1 --out reports/sentinel/burn1.jsonl

``--burn N`` starts N processes that spin on a core for the whole measurement (a neighbour's job). Prints
the readings' medians and the figures ``segbench.reports.noise`` judges: each reading's median over the
quietest reading, and the largest ratio between neighbouring readings (the drift a pair of passes sees).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import statistics
import time
from pathlib import Path

from segbench.bench.sentinel import Sentinel


def _spin(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    parser.add_argument("--burn", type=int, default=0, help="busy processes running meanwhile")
    parser.add_argument("--out", type=Path, help="write the readings as JSONL")
    args = parser.parse_args()

    stop_at = time.time() + args.seconds + 5
    burners = [multiprocessing.Process(target=_spin, args=(stop_at,)) for _ in range(args.burn)]
    for process in burners:
        process.start()
    sentinel = Sentinel("cpu")
    readings = []
    end = time.time() + args.seconds
    try:
        while time.time() < end:
            readings.append(sentinel.read(f"reading {len(readings)}"))
            time.sleep(args.interval)
    finally:
        for process in burners:
            process.terminate()
    medians = [r.median_ms for r in readings]
    quietest = min(medians)
    steps = [max(a, b) / min(a, b) - 1 for a, b in itertools.pairwise(medians)]
    spreads = [(max(r.samples_ms) - min(r.samples_ms)) / r.median_ms for r in readings]
    print(f"{len(readings)} readings of {sentinel.workload}, {args.burn} busy process(es)")
    print(
        f"median of medians {statistics.median(medians):.2f} ms, quietest {quietest:.2f} ms, "
        f"slowest {max(medians):.2f} ms ({max(medians) / quietest - 1:+.0%})"
    )
    ordered = sorted(m / quietest - 1 for m in medians)
    for q in (0.5, 0.9, 1.0):
        at = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
        print(f"  reading over quietest, q{q:.0%}: {at:+.1%}")
    print(f"  neighbouring readings differ by: median {statistics.median(steps):.1%}, max {max(steps):.1%}")
    print(f"  within a reading, (max - min) / median: median {statistics.median(spreads):.1%}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in readings))


if __name__ == "__main__":
    main()
