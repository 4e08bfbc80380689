"""Entry point for standalone launchers: `horovodrun -np 2 -H localhost:2 --network-interface lo
python -m training.worker RUN_DIR` (or torchrun for a run whose spec's backend is torch), which trains
from the spec that `sparkrec train` wrote into the run directory (a path or URI)."""

from __future__ import annotations

import json
import sys

from training.loop import train_worker
from training.run_directory import RunDirectory

if __name__ == "__main__":
    summary = train_worker(RunDirectory(sys.argv[1]).spec())
    if summary["rank"] == 0:
        print(json.dumps({key: value for key, value in summary.items() if key != "losses"}))
