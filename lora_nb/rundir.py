"""The run folder: one home for its file names, statuses and records.

    <runs-dir>/<run-id>/record.json          the run record (written atomically)
    <runs-dir>/<run-id>/adapter.safetensors  the trained tensors of the best evaluation
    <runs-dir>/<run-id>/.lock                who writes this run folder now (an OS file lock)
    <runs-dir>/.sweep.lock                   which sweep writes this runs folder now

One writer at a time: a run (`lora_nb.train.run`) holds its folder's lock while it writes, and a
sweep holds its runs folder's lock (`FolderLock`). The lock is the kernel's (``fcntl.flock``), so it
dies with its process: a run killed with ``kill -9`` leaves no stale lock, only a file that the next
writer locks again. The lock file names its holder (pid, host, command), for the message that
refuses a second writer.

A record and its adapter never disagree: the adapter is written first (a temporary file, then
renamed), then the record that names its step (``best_step``, which the adapter's metadata holds
too); a completed record is written last, after its run's last adapter. File-system errors on
writing (a full disk, a read-only folder, a file where a folder should be) raise `StorageError`,
one line naming the path and the cause, and leave no temporary file behind.

Every reader and writer of runs goes through this module; it imports nothing heavy, so the sweep
and the analysis can read records without loading torch or transformers. The committed reference
run keeps only its records, flat, as ``report/records/<run-id>.json`` (plus a few §7 adapters as
``report/adapters/<run-id>.safetensors``): `find_records` reads both layouts.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Iterator, TypedDict

RECORD_FILE = "record.json"
ADAPTER_FILE = "adapter.safetensors"
LOCK_FILE = ".lock"
SWEEP_LOCK_FILE = ".sweep.lock"
# What a writer leaves behind when it dies mid-write (the next writer of the folder removes them).
TEMPORARY_FILES = (RECORD_FILE + ".tmp", ADAPTER_FILE + ".tmp")
COMPLETED, FAILED, RUNNING = "completed", "failed", "running"


class RunRecord(TypedDict, total=False):
    """A run's ``record.json``: what `lora_nb.train.run` writes and every reader reads. A record
    holds its keys as they are known: a run that died early has a status and a config alone."""

    status: str  # RUNNING, COMPLETED or FAILED
    error: str  # a failed run's cause, one line
    config: dict  # RunConfig.to_dict()
    task: str
    primary_metric: str  # the metric Table 2 shows (lora_nb.metrics.PRIMARY_METRIC)
    started_at: str
    finished_at: str
    # Where it ran (lora_nb.machine)
    device: str
    num_processes: int
    torch_threads: int
    cpu_count: int
    mixed_precision: str
    versions: dict
    git_commit: str | None
    # What it trained
    batch: dict  # per_device, processes, gradient_accumulation_steps, global
    parameters: dict  # lora_nb.methods.ParameterCounts.to_dict()
    data: dict  # train_examples, eval_examples per split
    optimizer_steps: int
    # What it measured
    epochs: list[dict]  # per epoch: train_loss, eval, primary, train_seconds, eval_seconds
    evaluations: list[dict]  # per evaluation: step, epoch, eval, primary, eval_seconds
    loss_curve: list[list[float]]  # [step, mean loss]
    lr_curve: list[list[float]]  # [step, learning rate]
    best_epoch: int
    best_step: int
    best_metric: float
    best_outputs: dict  # per split: predictions, labels of the best evaluation
    convergence: dict  # lora_nb.convergence.Convergence.to_dict()
    train_seconds: float
    eval_seconds: float
    train_tokens_per_s: float
    wall_time_s: float
    peak_memory_bytes: int


def is_completed(record: dict | None) -> bool:
    """Whether `record` (a run record, or None for none) is a completed run's."""
    return bool(record) and record.get("status") == COMPLETED


class RecordError(ValueError):
    """A file where a run record should be that is not one: the message names the file,
    `problem` says what is wrong with it."""

    def __init__(self, message: str, problem: str = ""):
        super().__init__(message)
        self.problem = problem or message


class StorageError(OSError):
    """A file-system error that stops a run or a sweep: a full disk, a read-only folder, a file
    where a folder should be. Its text is one line that names the path and the cause."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


# Errors of the file system itself, after which writing anything more in the runs folder fails too.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EACCES,
                  errno.EPERM, errno.ENOTDIR, errno.EISDIR}


def is_storage_error(err: BaseException) -> bool:
    return isinstance(err, StorageError) or (isinstance(err, OSError) and err.errno in STORAGE_ERRNOS)


def storage_error(err: OSError, path: str | os.PathLike | None = None, doing: str = "cannot write") -> StorageError:
    """`err` as a `StorageError`: "<doing> <path>: <cause> (<ERRNO>)"."""
    if isinstance(err, StorageError):
        return err
    path = path or err.filename or "?"
    cause = err.strerror or str(err)
    name = errno.errorcode.get(err.errno or 0)
    return StorageError(err.errno, f"{doing} {path}: {cause}" + (f" ({name})" if name else ""))


def check_writable_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """Refuse, before any work, a `path` that is not a folder this process can write files in
    (or create, when it does not exist yet): a file, a read-only or full file system. Writes and
    removes a small probe file; leaves nothing behind. Returns the path."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = "is a file, not a folder" if existing == path else f"cannot be created: {existing} is a file"
        raise StorageError(errno.ENOTDIR, f"{what}: {path} {problem}")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".write-test-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        doing = f"{what}: cannot write in" if existing == path else f"{what}: cannot create {path} in"
        raise storage_error(err, existing, doing) from None
    return path


class FolderInUse(RuntimeError):
    """Another live process holds the lock of a run folder (or a sweep's runs folder)."""

    def __init__(self, folder: Path, holder: str, what: str):
        self.folder, self.holder, self.what = folder, holder, what
        super().__init__(f"{what}: {folder} is in use by {holder}; wait for it to finish, "
                         "or stop it (a killed writer releases it at once)")

    def __reduce__(self):  # picklable (Ray's tasks return their exceptions pickled)
        return type(self), (self.folder, self.holder, self.what)


def _command_line() -> str:
    try:
        import psutil

        command = " ".join(psutil.Process().cmdline())
    except Exception:  # psutil missing, or /proc unreadable
        command = " ".join([Path(sys.executable).name, *sys.argv])
    command = " ".join(command.split())  # one line, whatever `python -c` held
    return command if len(command) <= 200 else command[:197] + "..."


def _describe(info: dict) -> str:
    text = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
    if info.get("since"):
        text += f" since {info['since']}"
    if info.get("command"):
        text += f" ({info['command']})"
    return text


def _holder_text(fd: int) -> str:
    """Who holds the lock of `fd`, as its lock file says (it may be written a moment after the
    lock is taken)."""
    for _ in range(20):
        with suppress(OSError, ValueError):
            info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
            if isinstance(info, dict):
                return _describe(info)
        time.sleep(0.05)
    return "another process (it does not say which)"


class FolderLock:
    """An exclusive lock on a folder (``fcntl.flock`` on ``<folder>/<name>``), held by this
    process until `release` or its end, whatever ends it. `acquire` never waits: a folder that
    another process holds raises `FolderInUse`, naming the holder."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_FILE, what: str = "output_dir"):
        self.folder, self.name, self.what = Path(folder), name, what
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        if self._fd is not None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / self.name, os.O_RDWR | os.O_CREAT, 0o644)
        except FileExistsError:
            raise StorageError(errno.ENOTDIR, f"{self.what}: {self.folder} is a file, not a folder") from None
        except OSError as err:
            raise storage_error(err, self.folder, f"{self.what}: cannot write in") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            raise FolderInUse(self.folder, holder, self.what) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
                "since": dt.datetime.now().isoformat(timespec="seconds")}
        with suppress(OSError):  # a full disk: the lock holds all the same, unnamed
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the next writer in. The lock file stays: removing it would let two processes lock
        two different files of the same name."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(folder: str | os.PathLike, name: str = LOCK_FILE) -> str | None:
    """Who holds `folder`'s lock now (pid, host, command), or None when no live process does.
    Creates nothing."""
    try:
        fd = os.open(Path(folder) / name, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder_text(fd)
    finally:
        os.close(fd)
    return None


def remove_temporary_files(run_dir: str | os.PathLike) -> None:
    """Remove what a writer that died mid-write left in `run_dir` (call it holding the lock)."""
    for name in TEMPORARY_FILES:
        with suppress(OSError):
            (Path(run_dir) / name).unlink()


def _bad(path: str | os.PathLike, problem: str) -> RecordError:
    return RecordError(f"{path}: {problem}", problem)


def load_record(path: str | os.PathLike, require_config: bool = True) -> RunRecord:
    """The run record in file `path`: the one reader of records. Anything else (unreadable, not
    text, not JSON, not an object, without a config where `require_config`) raises
    `RecordError`, which names the file and what is wrong with it."""
    try:
        record = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad(path, "not a run record (not a text file: binary or damaged)") from None
    except json.JSONDecodeError as err:
        raise _bad(path, f"not a run record (not valid JSON, truncated or damaged: {err})") from None
    except OSError as err:
        raise _bad(path, f"cannot be read ({err.strerror or err})") from None
    if not isinstance(record, dict):
        raise _bad(path, f"not a run record (a JSON {type(record).__name__}, not an object)")
    if require_config and not isinstance(record.get("config"), dict):
        raise _bad(path, "not a run record (it has no config)")
    return record


def read_record(run_dir: str | os.PathLike) -> RunRecord | None:
    """The record in `run_dir`, or None when there is none or it can't be read (a run killed
    early may have left a record without a config: it is returned all the same)."""
    try:
        return load_record(Path(run_dir) / RECORD_FILE, require_config=False)
    except RecordError:
        return None


def write_record(run_dir: str | os.PathLike, record: RunRecord) -> None:
    """Write the record atomically (temporary file, then rename): the one writer of records. A
    file-system error raises `StorageError` and leaves the previous record, without the
    temporary file."""
    run_dir = Path(run_dir)
    tmp = run_dir / (RECORD_FILE + ".tmp")
    text = json.dumps(record, indent=1, default=str)
    try:
        tmp.write_text(text)
        os.replace(tmp, run_dir / RECORD_FILE)
    except BaseException as err:  # SIGTERM mid-write too: no temporary file is left
        with suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise storage_error(err, tmp if err.filename is None else None) from None
        raise


def find_records(runs_dir: str | os.PathLike) -> Iterator[tuple[str, Path]]:
    """(run id, record path) of every run under `runs_dir`, in run-id order: run folders
    (``<id>/record.json``) and flat records (``<id>.json``, the committed reference run)."""
    runs_dir = Path(runs_dir)
    found = {p.parent.name: p for p in runs_dir.glob(f"*/{RECORD_FILE}")}
    flat = {p.stem: p for p in runs_dir.glob("*.json")}
    both = sorted(set(found) & set(flat))
    if both:  # one id, two records: neither may be dropped silently
        raise ValueError(f"{runs_dir}: {len(both)} run id(s) have two records each, a run folder "
                         f"and a flat record, e.g. {found[both[0]]} and {flat[both[0]]} "
                         f"({', '.join(both[:5])}{', ...' if len(both) > 5 else ''}); keep one of each")
    found.update(flat)
    for run_id in sorted(found):
        yield run_id, found[run_id]


def find_adapter(runs_dir: str | os.PathLike, run_id: str) -> Path | None:
    """The adapter of `run_id`: in its run folder, or beside the flat records
    (``<runs-dir>/../adapters/<run-id>.safetensors``, the committed reference run)."""
    runs_dir = Path(runs_dir)
    for path in (runs_dir / run_id / ADAPTER_FILE, runs_dir.parent / "adapters" / f"{run_id}.safetensors"):
        if path.is_file():
            return path
    return None


REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_path(path: str | os.PathLike) -> Path:
    """`path` resolved against the repository root when relative: notebooks give the same paths
    whether JupyterLab runs them in notebooks/ or papermill runs them from anywhere."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def display_path(path: str | os.PathLike) -> str:
    """`path` relative to the repository root when it lies inside it (for pages and logs that
    must not show the machine's folders), else its name alone."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return path.name


COMMITTED_RECORDS = REPO_ROOT / "report" / "records"
# The §7 page reads the archived 250-step run's adapters (Table 6's Wq,Wv at every rank) until
# the converged reference run has its own (`subspace.default_subspace_runs_dir`).
ARCHIVED_SUBSPACE_RUNS = REPO_ROOT / "report" / "archive" / "250-steps" / "records"


def default_runs_dir(preferred: tuple[str, ...] = ("runs/reference", "runs/cpu")) -> Path:
    """Where the analysis notebooks read runs when given none: the first of `preferred` (relative
    to the repository root) that holds a completed Table 2 or Table 6 run, else the committed
    reference run's records (``report/records``), so that they run on a fresh clone."""
    for folder in preferred:
        path = repo_path(folder)
        for _, record_path in find_records(path):
            record = load_record(record_path)
            if is_completed(record) and {"table2", "table6"} & set(record["config"].get("tags", [])):
                return path
    return COMMITTED_RECORDS
