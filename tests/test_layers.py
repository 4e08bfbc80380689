"""Imports flow one way: rec_plugin <- training <- serving <- spark_jobs. A lower layer that imports a
higher one (at module level or inside a function) ties the library to the stages that use it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("rec_plugin", "training", "serving", "spark_jobs")  # lowest first


def imported_packages(source: Path) -> set[str]:
    """The top-level packages a module's import statements name, wherever they stand in it."""
    packages = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{source}:{node.lineno}: a relative import; name the package"
            packages.add(node.module.split(".")[0])
    return packages


def test_no_layer_imports_a_higher_one():
    upward = []
    for rank, layer in enumerate(LAYERS):
        higher = set(LAYERS[rank + 1 :])
        modules = sorted((ROOT / layer).rglob("*.py"))
        assert modules, f"no modules under {ROOT / layer}"
        for module in modules:
            upward += [
                f"{module.relative_to(ROOT)} imports {p}" for p in sorted(imported_packages(module) & higher)
            ]
    assert not upward, upward


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "lower.py"
    module.write_text(
        "def f():\n    from spark_jobs.session import build_session\n    import serving.export\n"
    )
    assert imported_packages(module) == {"spark_jobs", "serving"}
