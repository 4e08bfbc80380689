"""The machine's cache of what `make setup` prepares once (jars, the JVM's class archive, Triton's server
layout): one root for every stage, $SPARKREC_CACHE, by default ~/.cache/sparkrec."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SPARKREC_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "sparkrec"))
