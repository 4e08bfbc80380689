"""Small JSON files that stages and servers read while another process may be rewriting them
(reports, records, routings): each is written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any, default: Callable[[Any], Any] | None = None) -> None:
    """`data` as indented JSON at `path`, through a temporary file of its folder renamed over it: a
    reader sees the old file or the new one, never half of one, and concurrent writers never share a
    temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as out:
        out.write(json.dumps(data, indent=2, default=default) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(out.name, path)
