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
    temporary file. Data that does not serialize is refused before any file is made."""
    write_text(Path(path), json.dumps(data, indent=2, default=default) + "\n")


def write_text(path: Path, text: str) -> None:
    """`text` at `path`, whole or not at all (write_json's way), readable as a plain write would leave
    it (the process's umask, not a temporary file's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as out:
        staged = Path(out.name)
        try:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staged, 0o666 & ~umask)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
    os.replace(staged, path)
