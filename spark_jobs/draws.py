"""The generators' random draws as Spark SQL text: uniform, centred and Zipf-like draws from the bits of
a 64-bit hash column, and double literals.

Both planted models (spark_jobs/planted_model.py, spark_jobs/generate_ecommerce.py) write their
hundreds of expressions as text that Spark parses once per column: built from pyspark Columns, each
operator is a round trip to the JVM, and the Criteo generator's frames took ~20k of them (3 s a frame).
"""

from __future__ import annotations

import math


def sql_double(x: float) -> str:
    """A double literal in Spark SQL (a bare 0.5 would be a decimal); repr keeps every bit of x."""
    return f"({float(x)!r}D)"


def sql_sum(terms: list[str]) -> str:
    """The terms added left to right; 0.0 when there are none."""
    return "(" + " + ".join(terms) + ")" if terms else sql_double(0.0)


def uniform(h: str, offset: int, width: int) -> str:
    """A uniform draw in (0, 1) from `width` bits of the 64-bit hash `h` starting at bit `offset`."""
    bits = f"(shiftright({h}, {offset}) & {(1 << width) - 1})"
    return f"(({bits} + {sql_double(0.5)}) / {sql_double(1 << width)})"


def centered(h: str, offset: int, width: int) -> str:
    """A zero-mean, unit-variance uniform draw from `width` bits of a hash."""
    return f"(({uniform(h, offset, width)} - {sql_double(0.5)}) * {sql_double(math.sqrt(12.0))})"


def zipf_rank(u: str, k: int) -> str:
    """A rank in [0, k) with P(rank = r) ~ 1 / (r + 1), from a uniform draw: exp(u ln(k + 1)) - 1
    (pow(k + 1, u), twice as fast)."""
    return f"(floor(exp({sql_double(math.log(k + 1.0))} * {u})) - 1)"
