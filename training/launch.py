"""Launchers for the training function: in-process, Horovod on Spark, Spark's TorchDistributor.

The same `train_worker` runs under each; standalone hosts run it under horovodrun or torchrun through
`python -m training.worker SPEC.json`.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from training.loop import TrainSpec, train_worker

LAUNCHED_BACKENDS = ("horovod", "torch")


def _is_local(spark: SparkSession) -> bool:
    return spark.sparkContext.master.startswith("local")


def launch(spark: SparkSession, spec: TrainSpec, workers: int) -> dict:
    """Runs the training function on `workers` processes with spec.backend; rank 0's summary."""
    if spec.backend == "single":
        if workers != 1:
            raise ValueError("the single backend trains in this process: use --workers 1")
        return train_worker(spec.to_dict())
    if spec.backend == "horovod":
        import horovod.spark

        # Locally the workers meet on loopback; on a cluster Horovod picks the executors' interfaces.
        nics = {"lo"} if _is_local(spark) else None
        results = horovod.spark.run(
            train_worker, args=(spec.to_dict(),), num_proc=workers, use_gloo=True, nics=nics, verbose=0
        )
        return results[0]
    if spec.backend == "torch":
        from pyspark.ml.torch.distributor import TorchDistributor

        distributor = TorchDistributor(num_processes=workers, local_mode=_is_local(spark), use_gpu=False)
        return distributor.run(train_worker, spec.to_dict())
    raise ValueError(f"unknown backend {spec.backend!r}; choose single, horovod or torch")
