"""Entry point for standalone launchers: `horovodrun -np 2 -H localhost:2 --network-interface lo
python -m training.worker SPEC.json` (or torchrun with a spec whose backend is torch)."""

from __future__ import annotations

import json
import sys

from training.loop import train_worker

if __name__ == "__main__":
    summary = train_worker(json.loads(open(sys.argv[1]).read()))
    if summary["rank"] == 0:
        print(json.dumps({key: value for key, value in summary.items() if key != "losses"}))
