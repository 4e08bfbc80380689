"""Launchers for the training function: in-process, Horovod on Spark, Spark's TorchDistributor (for
torch DDP and TorchRec-sharded workers).

The same `train_worker` runs under each; standalone hosts run it under horovodrun or torchrun through
`python -m training.worker RUN_DIR`. Workers train on GPUs where the cluster gives them GPUs.
"""

from __future__ import annotations

import torch
from pyspark.sql import SparkSession

from rec_plugin.errors import InputError
from rec_plugin.schema import SchemaError
from rec_plugin.storage import is_local_master
from training.distributed import BACKENDS, refuse_torchrec_on_cpu
from training.loop import TrainSpec, train_worker


def _workers_have_gpus(spark: SparkSession) -> bool:
    """Local mode: this host has a GPU. A cluster: Spark schedules GPUs to its tasks."""
    if is_local_master(spark):
        return torch.cuda.is_available()
    return float(spark.conf.get("spark.task.resource.gpu.amount", "0")) > 0


def check_workers(backend: str, workers: int) -> None:
    """The single backend trains in the calling process: one worker."""
    if backend == "single" and workers != 1:
        raise InputError(f"--backend single trains in this process: --workers 1, not {workers}")


def check_backend_settings(spark: SparkSession, spec: TrainSpec) -> None:
    """What the workers would refuse of the backend's settings, refused in one line before the run
    directory is written: TorchRec's GPU-only sharding and optimizers, where the workers have no GPU."""
    if spec.backend == "torchrec" and not _workers_have_gpus(spark):
        try:
            refuse_torchrec_on_cpu(spec.sharding, spec.sparse_optimizer)
        except SchemaError as error:
            raise InputError(str(error)) from None


def launch(spark: SparkSession, spec: TrainSpec, workers: int) -> dict:
    """Runs the training function on `workers` processes with spec.backend; one rank's summary
    (TorchDistributor returns whichever rank finished last; the totals are the same on every rank)."""
    check_workers(spec.backend, workers)
    if spec.backend == "single":
        return train_worker(spec.to_dict())
    if spec.backend == "horovod":
        import horovod.spark

        # Locally the workers meet on loopback; on a cluster Horovod picks the executors' interfaces.
        nics = {"lo"} if is_local_master(spark) else None
        results = horovod.spark.run(
            train_worker, args=(spec.to_dict(),), num_proc=workers, use_gloo=True, nics=nics, verbose=0
        )
        return results[0]
    if spec.backend in ("torch", "torchrec"):
        from pyspark.ml.torch.distributor import TorchDistributor

        distributor = TorchDistributor(
            num_processes=workers, local_mode=is_local_master(spark), use_gpu=_workers_have_gpus(spark)
        )
        return distributor.run(train_worker, spec.to_dict())
    raise ValueError(f"unknown backend {spec.backend!r}; choose one of {', '.join(BACKENDS)}")
