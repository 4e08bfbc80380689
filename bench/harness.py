"""Benchmark helpers: a quiet-machine check (on 2 shared cores any busy process skews timings) and the
median report."""

from __future__ import annotations

import os
import statistics
import subprocess


def report_quiet() -> None:
    """Prints the load average and any process but this one and its descendants (Spark's JVM) using CPU;
    warns if there is one. The load average includes this benchmark's own earlier work."""
    load = os.getloadavg()[0]
    busy = subprocess.run(
        ["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True, text=True
    ).stdout.splitlines()
    others = [
        line.strip() for line in busy if float(line.split()[1]) > 5.0 and int(line.split()[0]) != os.getpid()
    ]
    print(f"quiet check: 1-min load average {load:.2f}; other busy processes: {others or 'none'}")
    if others:
        print("WARNING: the machine is busy; timings below are distorted")


def print_medians(rates: dict[str, list[float]], rows: int) -> dict[str, float]:
    """Prints each variant's median rows/s and its runs; returns the medians."""
    medians = {name: statistics.median(values) for name, values in rates.items()}
    width = max(len(name) for name in rates)
    for name, values in rates.items():
        runs = [round(v) for v in values]
        print(f"{name:{width}s}  median {medians[name]:>10,.0f} rows/s  runs {runs}  ({rows:,} rows)")
    return medians
