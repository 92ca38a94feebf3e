"""Start-up time of the `imgsearch` command: wall time of `imgsearch --help`, and what its imports cost.

Usage: python benchmarks/cli_startup.py [--runs 5] [--top 20] [--modules imgsearch.cli imgsearch.engine]
Prints the median wall (and CPU) time of `imgsearch --help` over --runs fresh processes, the modules that
took longest to import in one of them (cumulative, from Python's -X importtime), and the median
cumulative import time of each of --modules in a fresh interpreter. The console script is run
when it is on PATH, else `python -m imgsearch`. Timings include Python's own start-up; on a
shared machine run it twice and trust the lower figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ImportTiming:
    module: str
    self_us: int
    cumulative_us: int
    depth: int  # 0 = imported by the program itself, 1 = by one of those, ...


def help_command() -> list[str]:
    script = shutil.which("imgsearch")
    return [script, "--help"] if script else [sys.executable, "-m", "imgsearch", "--help"]


def run_times(command: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each of runs fresh processes of command.

    CPU time barely moves when other work shares the machine; wall time does.
    """
    walls, cpus = [], []
    for _ in range(runs):
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - began)
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime)
    return walls, cpus


def import_timings(command: list[str]) -> list[ImportTiming]:
    """Every import command makes, as -X importtime reports it (the env var reaches console scripts too)."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    timings = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        timings.append(ImportTiming(name.strip(), int(self_us), int(cumulative_us), depth))
    return timings


def module_import_ms(module: str, runs: int) -> float:
    """Median milliseconds to import module (and all it pulls in) in a fresh interpreter."""
    results = []
    for _ in range(runs):
        timings = import_timings([sys.executable, "-c", f"import {module}"])
        results.append(next(t.cumulative_us for t in timings if t.module == module) / 1000)
    return statistics.median(results)


def main() -> None:
    from machine import announce_cpu

    announce_cpu()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=20, help="How many modules to list by cumulative import time.")
    parser.add_argument("--modules", nargs="*", default=["imgsearch.cli", "imgsearch.engine"])
    args = parser.parse_args()

    command = help_command()
    shown = " ".join(os.path.basename(part) if i == 0 else part for i, part in enumerate(command))
    run_times(command, 1)  # warm the file cache and .pyc files; not counted
    walls, cpus = run_times(command, args.runs)
    print(
        f"`{shown}` wall time: median {statistics.median(walls):.3f} s over {args.runs} runs "
        f"(min {min(walls):.3f}, max {max(walls):.3f}); CPU time median {statistics.median(cpus):.3f} s"
    )

    timings = import_timings(command)
    total_ms = sum(t.self_us for t in timings) / 1000
    print(
        f"\nimports of `{shown}`: {len(timings)} modules, {total_ms:.0f} ms in all; "
        f"top {args.top} by cumulative time (ms; indent = import depth):"
    )
    print(f"{'cumul':>8} {'self':>7}  module")
    for t in sorted(timings, key=lambda t: t.cumulative_us, reverse=True)[: args.top]:
        print(f"{t.cumulative_us / 1000:8.1f} {t.self_us / 1000:7.1f}  {'  ' * t.depth}{t.module}")
    top_level = sorted((t for t in timings if t.depth == 0), key=lambda t: t.cumulative_us, reverse=True)
    print(
        "\nimported directly by the program (ms): "
        + ", ".join(f"{t.module} {t.cumulative_us / 1000:.1f}" for t in top_level[:8])
    )

    if args.modules:
        print(f"\nimport time in a fresh interpreter, median of {args.runs}:")
        for module in args.modules:
            print(f"  {module:24} {module_import_ms(module, args.runs):7.1f} ms")


if __name__ == "__main__":
    main()
