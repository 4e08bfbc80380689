"""Prints the version pyproject.toml pins for a package: the Makefile's single source of pins."""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
pins = project["dependencies"] + [p for group in project["optional-dependencies"].values() for p in group]
for pin in pins:
    name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", pin).groups()
    if name == sys.argv[1]:
        print(version)
        sys.exit(0)
sys.exit(f"no pin for {sys.argv[1]}")
