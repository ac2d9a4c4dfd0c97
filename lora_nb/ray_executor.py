"""Sweeps on Ray: each grid setting one Ray task, on a local Ray instance or a cluster.

    python -m lora_nb.sweep --preset paper --executor ray --gpus-per-run 0.5     # this machine
    python -m lora_nb.sweep --preset paper --executor ray --ray-address auto     # a running cluster

Each task runs `lora_nb.sweep.execute_setting`, the papermill execution of the training notebook
that the thread pool runs, on the node Ray chooses, and that node writes the records and adapters
into the run folders: the runs folder must be on storage that every node sees at the same path (a
shared file system), and every node needs the same environment (lora-nb and its dependencies).
Ray is the optional `ray` extra (``pip install 'lora-nb[ray]'``), imported only here and only when
a Ray pool is made.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import Executor, Future
from typing import Any, Callable

# A worker that dies (killed, out of memory, its node lost) is retried once by Ray on a fresh
# worker, since on a cluster that is mostly a lost node; a second death is recorded failed by the
# sweep. Exceptions in the task are not retried (Ray's default): execute_setting records them.
MAX_RETRIES = 1


def import_ray() -> Any:
    """The `ray` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("--executor ray needs Ray: pip install 'lora-nb[ray]'") from err
    return ray


def check_resources(gpus_per_run: float | None, cpus_per_run: int | None) -> None:
    """Refuse resources a setting can't use: one run trains on one GPU (a fraction packs several
    runs on it), and needs at least one CPU."""
    if gpus_per_run is not None and not 0 < gpus_per_run <= 1:
        raise ValueError(f"--gpus-per-run: must be in (0, 1] (a run trains on one GPU), got {gpus_per_run}")
    if cpus_per_run is not None and cpus_per_run < 1:
        raise ValueError(f"--cpus-per-run: must be >= 1, got {cpus_per_run}")


@functools.cache
def _remote(fn: Callable) -> Any:
    """`fn` as a Ray remote function, made once so that Ray ships it to the workers once."""
    return import_ray().remote(fn)


class RayPool(Executor):
    """Settings as Ray tasks, each reserving `gpus_per_run` GPUs (Ray sets CUDA_VISIBLE_DEVICES,
    a fraction shares a GPU) and `cpus_per_run` CPUs, which are also its torch threads.

    Joins the Ray cluster at `address` (``"auto"``: the one this machine belongs to) or starts a
    local Ray instance; a Ray already initialised in this process is used as it is. Only a Ray
    it started is shut down with the pool. Defaults: 1 GPU per run where the cluster has GPUs,
    else none; 1 CPU per run with GPUs, else this machine's CPUs / `workers` (the thread pool's
    share; nodes with fewer CPUs need an explicit `cpus_per_run`).
    """

    def __init__(self, address: str | None = None, gpus_per_run: float | None = None,
                 cpus_per_run: int | None = None, workers: int = 1):
        check_resources(gpus_per_run, cpus_per_run)
        ray = import_ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address)
        cluster = ray.cluster_resources()
        if gpus_per_run is None:
            gpus_per_run = 1.0 if cluster.get("GPU") else 0.0
        if cpus_per_run is None:
            cpus_per_run = 1 if gpus_per_run else max(1, (os.cpu_count() or 1) // workers)
        self.threads_per_run = cpus_per_run
        self.cores = int(cluster.get("GPU" if gpus_per_run else "CPU", 1))
        self._options = dict(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=MAX_RETRIES)
        self._refs: list = []

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        """Run `fn(*args, **kwargs)` as a Ray task; its future raises Ray's error (say
        ``WorkerCrashedError``) when the task could not finish."""
        ref = _remote(fn).options(**self._options).remote(*args, **kwargs)
        self._refs.append(ref)
        return ref.future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """`cancel_futures` (Ctrl-C): pending tasks never start, and running ones get a
        KeyboardInterrupt, on which execute_setting records their runs failed; `wait` waits for
        them to end. Then shuts down the Ray this pool started."""
        ray = import_ray()
        if not ray.is_initialized():
            return
        unfinished = ray.wait(self._refs, num_returns=len(self._refs), timeout=0)[1] if self._refs else []
        try:
            if cancel_futures:
                for ref in unfinished:
                    ray.cancel(ref)
            if wait and unfinished:
                ray.wait(unfinished, num_returns=len(unfinished))
        finally:  # a second Ctrl-C while waiting still stops the local Ray and its workers
            self._refs = []
            if self._owns_ray:
                ray.shutdown()
