"""Start-up time of the ``n2nonnx`` command: ``--help`` of every verb against a bare interpreter.

    python examples/benchmark_startup.py [--rounds 7]

Each round runs ``python -c pass`` and ``n2nonnx [VERB] --help`` for every verb, interleaved;
the table shows the median wall time of each and the time above the bare interpreter. The
target is 0.5 s for every line.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

VERBS = ["", "inspect", "prune", "skip", "train", "connectivity", "deploy", "run", "study"]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=7, help="interleaved rounds (median reported)"
    )
    args = parser.parse_args()
    commands = {"python -c pass": [sys.executable, "-c", "pass"]}
    for verb in VERBS:
        commands[f"n2nonnx {verb} --help".replace("  ", " ")] = [
            sys.executable,
            "-m",
            "n2nonnx",
            *([verb] if verb else []),
            "--help",
        ]
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, command in commands.items():
            times[name].append(timed(command))
    bare = statistics.median(times["python -c pass"])
    print(f"{'command':28s} {'median s':>9s} {'above bare python':>18s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:28s} {median:9.3f} {median - bare:18.3f}")
    worst = max(statistics.median(v) for k, v in times.items() if k != "python -c pass")
    print(f"\nslowest --help: {worst:.3f} s (target 0.5 s): {'met' if worst <= 0.5 else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
