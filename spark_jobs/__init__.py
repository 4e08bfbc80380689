"""spark-submit entry points of the sparkrec pipeline: one module per stage, plus the `sparkrec` CLI."""
