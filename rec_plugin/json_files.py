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
    """`text` at `path`, whole or not at all (write_json's way), with the mode of the file it replaces
    or else 0644 (a temporary file's is 0600; reading the umask would change it process-wide)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as out:
        staged = Path(out.name)
        try:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
            os.chmod(staged, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
    os.replace(staged, path)
