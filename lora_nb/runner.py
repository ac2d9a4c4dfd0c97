"""One setting's execution, and where settings execute.

`execute_setting` runs the seeds of one setting: one execution of ``notebooks/train.ipynb``
(papermill), or one multi-process launch of ``python -m lora_nb.train`` (torchrun); it returns
one `Outcome` per seed, read from the records (`collect_outcomes` records a failure the run
could not). `ThreadPool` runs settings in threads on this machine, a GPU or a share of the CPU
threads each (`lora_nb.ray_executor.RayPool`: as Ray tasks).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .grid import Setting
from .notebook_run import execute_notebook
from .rundir import (COMPLETED, FAILED, REPO_ROOT, FolderInUse, FolderLock, StorageError,
                     is_completed, is_storage_error, read_record, storage_error, write_record)
from .signals import SIGTERM_ERROR, received

TRAIN_NOTEBOOK = REPO_ROOT / "notebooks" / "train.ipynb"


IN_USE = "in use"  # an outcome: another process holds the run folder's lock; not run


@dataclass
class Outcome:
    run_id: str
    status: str  # completed | skipped | failed | in use
    reason: str = ""
    seconds: float = 0.0


def _log_path(runs_dir: Path, setting_id: str, suffix: str = ".ipynb") -> Path:
    """Where the executed notebook (or a launch's log) of a setting goes; an earlier one is kept
    under a new name."""
    folder = runs_dir / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{setting_id}{suffix}"
    n = 1
    while path.exists():
        path = folder / f"{setting_id}.{n}{suffix}"
        n += 1
    return path


def launch_command(config_file: Path, seeds: tuple[int, ...], processes: int) -> list[str]:
    """`python -m lora_nb.train` on `processes` processes of one machine. torchrun is what
    `accelerate launch --multi_gpu` runs underneath, and accelerate's `Accelerator` reads its
    environment; `accelerate launch` itself sends multi-CPU jobs to mpirun, which a CPU test
    machine lacks, so torchrun starts them in both cases."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "lora_nb.train", "--config", str(config_file),
            "--seeds", ",".join(map(str, seeds)), "--no-progress"]


def _launch(setting: Setting, runs_dir: Path, gpu: int | str | None, processes: int) -> None:
    """Run a setting's seeds on `processes` processes (`launch_command`), its output in a log
    beside the executed notebooks; raises when the launch fails."""
    log = _log_path(runs_dir, setting.setting_id, ".log")
    config_file = log.with_suffix(".json")
    config_file.write_text(json.dumps(setting.config.to_dict(), indent=1))
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    else:
        import torch

        if not torch.cuda.is_available():
            env["ACCELERATE_USE_CPU"] = "1"  # gloo across CPU processes
    with open(log, "w") as out:
        proc = subprocess.run(launch_command(config_file, setting.seeds, processes), cwd=REPO_ROOT,
                              env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = log.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"{processes} processes exited with {proc.returncode}: {' | '.join(tail)}")


def _cause(err: BaseException) -> str:
    """What a failure record says went wrong: the notebook's exception for papermill's error, the
    task's own exception for Ray's wrapper (``RayTaskError.cause``), else `err` itself."""
    if hasattr(err, "ename"):  # PapermillExecutionError
        return f"{err.ename}: {err.evalue}"
    err = getattr(err, "cause", None) or err
    return f"{type(err).__name__}: {err}"


def _drop_broken_log(log: Path | None) -> None:
    """Remove an executed notebook that a full disk left empty or cut short."""
    if log is None or not log.is_file():
        return
    with suppress(OSError):
        try:
            json.loads(log.read_text())
        except ValueError:  # empty, truncated
            log.unlink()


def execute_setting(setting: Setting, notebook: Path = TRAIN_NOTEBOOK,
                    gpu: int | str | None = None, processes: int = 1) -> list[Outcome]:
    """Run every seed of a setting: one execution of the training notebook, or with `processes`
    > 1 one multi-process launch (`launch_command`). Record a failure the run couldn't. One
    outcome per seed. `gpu`: the GPU(s) it may use, e.g. 0 or "0,1" (None: all it sees).
    A file-system error (a full disk, a read-only folder), here or in the run, raises
    `StorageError`, which stops the sweep; an executed notebook it cut short is removed."""
    runs_dir = Path(setting.runs[0].config.output_dir).parent
    start = time.perf_counter()
    cause = ""
    log = None
    try:
        if processes > 1:
            _launch(setting, runs_dir, gpu, processes)
        else:
            params = {**setting.config.to_dict(), "seeds": list(setting.seeds), "progress": False,
                      "cuda_visible_devices": gpu}
            log = _log_path(runs_dir, setting.setting_id)
            execute_notebook(notebook, log, params)
    except Exception as err:  # a failing run is recorded; the sweep goes on
        if is_storage_error(err):  # papermill writing the executed notebook, or the folders
            _drop_broken_log(log)
            raise storage_error(err, log if log is not None and err.filename is None else None) from None
        if getattr(err, "ename", None) == "StorageError":  # the run's own record or adapter
            _drop_broken_log(log)
            raise StorageError(None, err.evalue) from None
        cause = _cause(err)
    except KeyboardInterrupt:  # Ray's cancel of a running task (Ctrl-C on a Ray sweep)
        collect_outcomes(setting, "KeyboardInterrupt: interrupted", time.perf_counter() - start)
        raise
    if received():  # SIGTERM: a kernel it stopped between runs died without a record
        cause = SIGTERM_ERROR
    return collect_outcomes(setting, cause, time.perf_counter() - start)


def collect_outcomes(setting: Setting, cause: str = "", seconds: float = 0.0) -> list[Outcome]:
    """One outcome per seed of a setting that ran, read from its record; a seed without a
    completed or failed record gets a failed one that says `cause`, written holding the run
    folder's lock (a folder that another process holds now is left alone, "in use")."""
    outcomes = []
    for spec in setting.runs:
        record = read_record(spec.config.output_dir)
        if is_completed(record):
            outcomes.append(Outcome(spec.run_id, COMPLETED, seconds=seconds / len(setting.runs)))
            continue
        try:
            with FolderLock(spec.config.output_dir):
                record = read_record(spec.config.output_dir)
                if is_completed(record):
                    outcomes.append(Outcome(spec.run_id, COMPLETED, seconds=seconds / len(setting.runs)))
                    continue
                reason = (record or {}).get("error") or cause or "not run"
                if record is None or record.get("status") != FAILED:
                    if record is None and not cause:
                        reason = "the run finished without a record for this seed"
                    write_record(spec.config.output_dir, {**(record or {}), "status": FAILED,
                                                          "error": reason, "config": spec.config.to_dict()})
        except FolderInUse as err:
            outcomes.append(Outcome(spec.run_id, IN_USE, f"in use by {err.holder}"))
            continue
        outcomes.append(Outcome(spec.run_id, FAILED, reason.splitlines()[0][:300], seconds))
    return outcomes


class SettingPool(Protocol):
    """Where settings run: a `concurrent.futures.Executor` that also says how many torch threads
    each run gets (0: torch's default) and how many cores (or GPUs) the sweep occupies."""

    threads_per_run: int
    cores: int

    def submit(self, fn, /, *args, **kwargs) -> Future: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


class ThreadPool(ThreadPoolExecutor):
    """Settings in threads on this machine, `workers` at a time: `processes` GPUs each when there
    are GPUs (passed to the function as ``gpu``), else an equal share of the CPU threads."""

    def __init__(self, workers: int = 1, processes: int = 1):
        import torch

        if workers < 1 or processes < 1:
            raise ValueError(f"workers and processes: must be >= 1, got {workers} and {processes}")
        gpus = torch.cuda.device_count()
        if gpus and gpus < processes:
            raise ValueError(f"processes: {processes} per run, but this machine has {gpus} GPU(s)")
        workers = min(workers, gpus // processes) if gpus else workers
        super().__init__(max_workers=workers)
        self.workers = workers  # settings at once
        cpus = os.cpu_count() or 1
        # The torch threads of each process of a run (0: torch's default) and the cores the
        # sweep occupies.
        self.threads_per_run = 0 if gpus else max(1, cpus // (workers * processes))
        self.cores = workers * processes if gpus else min(cpus, workers * processes * self.threads_per_run)
        self._free_gpus: queue.Queue | None = queue.Queue() if gpus else None
        for w in range(workers if gpus else 0):  # a worker's GPU, or its GPUs "0,1"
            ids = range(w * processes, (w + 1) * processes)
            self._free_gpus.put(w if processes == 1 else ",".join(map(str, ids)))

    def stop_runs(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the processes the settings run in (notebook kernels, multi-process
        launches: this process's children). Ctrl-C in a terminal reaches them itself (the whole
        process group); a SIGTERM sent to the sweep alone (kill, a scheduler) does not."""
        import psutil

        for child in psutil.Process().children():
            with suppress(psutil.Error):
                child.send_signal(sig)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self._free_gpus is None:
            return super().submit(fn, *args, **kwargs)
        return super().submit(self._on_a_free_gpu, fn, *args, **kwargs)

    def _on_a_free_gpu(self, fn, *args, **kwargs):
        gpu = self._free_gpus.get()
        try:
            return fn(*args, gpu=gpu, **kwargs)
        finally:
            self._free_gpus.put(gpu)
