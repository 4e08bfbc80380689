"""Checks that the machine is quiet before a benchmark: on 2 shared cores any busy process skews it."""

from __future__ import annotations

import os
import subprocess


def report_quiet() -> None:
    """Prints the load average and any other process using CPU right now; warns if the machine is busy."""
    load = os.getloadavg()[0]
    busy = subprocess.run(
        ["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True, text=True
    ).stdout.splitlines()
    others = [
        line.strip() for line in busy if float(line.split()[1]) > 5.0 and int(line.split()[0]) != os.getpid()
    ]
    print(f"quiet check: 1-min load average {load:.2f}; other busy processes: {others or 'none'}")
    if load > 1.0 or others:
        print("WARNING: the machine is busy; timings below are distorted")
