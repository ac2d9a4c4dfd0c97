"""Nothing lost under concurrent and hostile use (issue 24).

1. One writer per run folder, one sweep per runs folder: OS file locks (they die with their
   process), a second writer refused at once naming the holder; a record and its adapter from
   the same evaluation.
2. File-system errors: a --runs-dir that is a file, a read-only or full file system: one line
   naming the path and the cause, no temporary files, a clean resume.
3. A strict --resume-from. 4. `python -m lora_nb.results` without tracebacks. 5. SIGTERM as
   Ctrl-C. 6. Notebook parameters as users type them. 7. Garbage adapter and parquet files named.

Concurrent writers and signals use real processes (a `python -c` holding a lock, or running a
sweep or a run whose training is a sleep); sweeps use fake executors, runs a tiny model.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import GLUE_DIR
from lora_nb import grid, results, runner, sweep, train
from lora_nb.config import RunConfig
from lora_nb.rundir import (ADAPTER_FILE, LOCK_FILE, REPO_ROOT, SWEEP_LOCK_FILE, FolderInUse,
                            FolderLock, StorageError, check_writable_folder, lock_holder,
                            read_record, write_record)
from lora_nb.grid import build_grid, group_settings
from lora_nb.runner import IN_USE, Outcome
from lora_nb.sweep import run_sweep, summarize
from lora_nb.parameters import notebook_config, notebook_seeds
from lora_nb.train import run_seeds

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LORA_NB_GLUE_DIR": str(GLUE_DIR),
       "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}


def _ignore_sigint() -> None:  # what `nohup cmd &` in a non-interactive shell leaves a process
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(script: str, *args: str, ignore_sigint: bool = False) -> subprocess.Popen:
    """A real process running `script` (Python), its stdout piped."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=REPO_ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ignore_sigint if ignore_sigint else None)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended first: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


HOLD = """
import sys, time
from pathlib import Path
from lora_nb.rundir import FolderLock
FolderLock(sys.argv[1], sys.argv[2]).acquire()
Path(sys.argv[3]).write_text("locked")
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """hold(folder, lock file name): a real process that takes the folder's lock and sleeps."""
    procs = []

    def hold(folder: Path, name: str = LOCK_FILE) -> subprocess.Popen:
        ready = tmp_path / f"ready-{len(procs)}"
        proc = start(HOLD, str(folder), name, str(ready))
        procs.append(proc)
        wait_for(ready, proc, timeout=60)
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def quick_args(out: Path, **changes) -> list[str]:
    settings = {**dict(task="mrpc", method="lora", model="all-MiniLM-L6-v2", glue_dir=str(GLUE_DIR),
                       max_train_samples=48, max_eval_samples=48, epochs=1, max_length=64,
                       learning_rate=1e-3, num_threads=1, output_dir=str(out)), **changes}
    return [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()] + ["--no-progress"]


# --- 1. One writer per run folder --------------------------------------------------------------


def test_a_second_writer_of_a_run_folder_is_refused_at_once_naming_the_holder(tmp_path, holder, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_record(run_dir, {"status": "running", "config": {}})
    (run_dir / ADAPTER_FILE).write_bytes(b"the first writer's adapter")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != LOCK_FILE}
    proc = holder(run_dir)
    start_time = time.monotonic()
    assert train.main(quick_args(run_dir)) == 2
    assert time.monotonic() - start_time < 30  # refused before any loading
    err = capsys.readouterr().err
    assert f"output_dir: {run_dir} is in use by pid {proc.pid} on {socket.gethostname()}" in err
    assert "python -c" in err and "wait for it to finish" in err
    # Nothing of the first writer's was touched: not its running record, not its adapter.
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != LOCK_FILE} == before
    proc.kill()  # kill -9: the lock dies with its process, no stale lock is left
    proc.wait()
    assert lock_holder(run_dir) is None
    with FolderLock(run_dir):
        assert str(os.getpid()) in lock_holder(run_dir)
    assert lock_holder(run_dir) is None


def test_a_run_holds_its_folder_lock_from_start_to_last_write(tmp_path, monkeypatch):
    seen = []

    def fake_train(config, task, model_config, accelerator, run_dir, record, progress):
        seen.append(lock_holder(run_dir))

    monkeypatch.setattr(train, "_train", fake_train)
    config = RunConfig(task="mrpc", model="all-MiniLM-L6-v2", glue_dir=str(GLUE_DIR),
                       output_dir=str(tmp_path / "run"), max_length=64)
    assert train.run(config, progress=False)["status"] == "completed"
    assert seen and f"pid {os.getpid()}" in seen[0]
    assert lock_holder(tmp_path / "run") is None  # released
    with pytest.raises(FolderInUse, match="is in use by pid"):  # and refused while held, in-process too
        with FolderLock(tmp_path / "other"):
            train.run(replace(config, output_dir=str(tmp_path / "other")), progress=False)


def test_a_record_names_the_adapter_on_disk_at_every_write(tmp_path, monkeypatch):
    """Adapter first (temporary file, then rename), then the record naming its step: every record
    written with a best step finds that step's adapter on disk; no temporary file is left."""
    from lora_nb.checkpoint import read_metadata
    from lora_nb.models import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny", "bert", dropout=0.0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "record.json.tmp").write_text("{half")  # what a writer killed mid-write leaves
    (run_dir / (ADAPTER_FILE + ".tmp")).write_bytes(b"half")
    checked = []
    real_write = train.write_record

    def checking_write(folder, record):
        real_write(folder, record)
        if "best_step" in record:
            assert read_metadata(Path(folder) / ADAPTER_FILE)["step"] == record["best_step"]
            checked.append(record["best_step"])

    monkeypatch.setattr(train, "write_record", checking_write)
    config = RunConfig(task="sst2", method="lora", model=str(model), glue_dir=str(GLUE_DIR),
                       max_train_samples=64, max_eval_samples=32, max_length=32, batch_size=8,
                       max_steps=6, eval_every=2, learning_rate=5e-3, num_threads=1,
                       output_dir=str(run_dir))
    record = train.run(config, progress=False)
    assert record["status"] == "completed" and checked
    assert read_metadata(run_dir / ADAPTER_FILE)["step"] == read_record(run_dir)["best_step"]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([LOCK_FILE, ADAPTER_FILE, "record.json"])


class FakeExecutor:
    """Writes a completed record per seed (as test_sweep's), or raises `raise_on` for a setting."""

    def __init__(self, raise_on: dict | None = None):
        self.calls, self.raise_on = [], dict(raise_on or {})

    def __call__(self, setting, notebook=None, gpu=None, processes=1):
        if setting.setting_id in self.raise_on:
            raise self.raise_on[setting.setting_id]
        outcomes = []
        for spec in setting.runs:
            self.calls.append(spec.run_id)
            run_dir = Path(spec.config.output_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            write_record(run_dir, {"status": "completed", "config": spec.config.to_dict()})
            outcomes.append(Outcome(spec.run_id, "completed"))
        return outcomes


def test_a_second_sweep_on_the_same_runs_folder_is_refused(tmp_path, holder, monkeypatch, capsys):
    runs = tmp_path / "runs"
    fake = FakeExecutor()
    monkeypatch.setattr(sweep, "execute_setting", fake)
    monkeypatch.setenv("LORA_NB_GLUE_DIR", str(GLUE_DIR))
    proc = holder(runs, SWEEP_LOCK_FILE)  # what a live sweep on `runs` holds
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert f"error: --runs-dir: {runs} is in use by pid {proc.pid}" in err
    assert fake.calls == [] and not list(runs.glob("*/record.json"))
    proc.kill()
    proc.wait()
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(runs)]) == 0  # no stale lock
    assert len(fake.calls) == len(build_grid("smoke", runs))


def test_a_sweep_leaves_run_folders_another_process_writes_alone(tmp_path, holder, monkeypatch):
    specs = build_grid("smoke", tmp_path)
    busy = specs[0]
    proc = holder(Path(busy.config.output_dir))  # say, a notebook run into the sweep's folder
    fake = FakeExecutor()
    monkeypatch.setattr(sweep, "execute_setting", fake)
    outcomes = {o.run_id: o for o in run_sweep(specs, progress=False)}
    assert busy.run_id not in fake.calls and len(fake.calls) == len(specs) - 1
    assert outcomes[busy.run_id].status == IN_USE and f"pid {proc.pid}" in outcomes[busy.run_id].reason
    assert read_record(busy.config.output_dir) is None  # no failed record written into it
    assert f"1 in use by other processes (not run)" in summarize(list(outcomes.values()))
    # Nor does recording a setting's failure write into a folder another process holds.
    setting = next(s for s in group_settings(specs) if busy in s.runs)
    assert runner.collect_outcomes(setting, "boom")[0].status == IN_USE
    assert read_record(busy.config.output_dir) is None


# --- 2. File-system errors ---------------------------------------------------------------------


def test_a_runs_dir_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    fake = FakeExecutor()
    monkeypatch.setattr(sweep, "execute_setting", fake)
    monkeypatch.setenv("LORA_NB_GLUE_DIR", str(GLUE_DIR))
    (tmp_path / "file").write_text("x")
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"error: --runs-dir: {tmp_path / 'file'} is a file, not a folder\n"
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(tmp_path / "file" / "runs")]) == 2
    assert "cannot be created" in capsys.readouterr().err
    assert fake.calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    # A run's output_dir likewise: one line, no traceback.
    assert train.main(quick_args(tmp_path / "file")) == 1
    assert capsys.readouterr().err == f"error: output_dir: {tmp_path / 'file'} is a file, not a folder\n"


def test_a_read_only_runs_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """Root writes through permissions, so EROFS is simulated here (the real mounts: below)."""
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(StorageError) as err:
        check_writable_folder(tmp_path, "--runs-dir")
    assert str(err.value) == f"--runs-dir: cannot write in {tmp_path}: Read-only file system (EROFS)"


def test_write_record_on_a_full_disk_leaves_the_previous_record_and_no_temporary_file(tmp_path, monkeypatch):
    write_record(tmp_path, {"status": "running"})

    def full(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(StorageError) as err:
        write_record(tmp_path, {"status": "completed"})
    assert str(err.value) == f"cannot write {tmp_path / 'record.json.tmp'}: No space left on device (ENOSPC)"
    monkeypatch.undo()
    assert read_record(tmp_path) == {"status": "running"} and sorted(os.listdir(tmp_path)) == ["record.json"]


def test_save_adapter_on_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch, tiny_bert):
    from lora_nb import checkpoint

    def full(state, path, metadata=None):
        Path(path).write_bytes(b"")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(StorageError, match=r"cannot write .*adapter.safetensors.tmp: No space left on device \(ENOSPC\)"):
        checkpoint.save_adapter(tiny_bert, tmp_path / ADAPTER_FILE)
    assert os.listdir(tmp_path) == []


def test_a_full_disk_mid_sweep_stops_it_with_one_line_and_it_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LORA_NB_GLUE_DIR", str(GLUE_DIR))
    settings = sorted(group_settings(build_grid("smoke", tmp_path)), key=sweep._order)
    victim = settings[2].setting_id
    message = f"cannot write {tmp_path}/{victim}-s0/record.json.tmp: No space left on device (ENOSPC)"
    fake = FakeExecutor(raise_on={victim: StorageError(errno.ENOSPC, message)})
    monkeypatch.setattr(sweep, "execute_setting", fake)
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"error: {message}\nthe sweep stopped" in err and "Traceback" not in err
    started = {c.rpartition("-s")[0] for c in fake.calls}
    assert started == {s.setting_id for s in settings[:2]}  # nothing started after it
    assert lock_holder(tmp_path, SWEEP_LOCK_FILE) is None
    fake.raise_on.clear()  # space is back
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(tmp_path)]) == 0
    assert victim in {c.rpartition("-s")[0] for c in fake.calls}


def test_a_full_disk_while_papermill_writes_the_notebook_leaves_no_empty_notebook(tmp_path, monkeypatch):
    setting = group_settings(build_grid("smoke", tmp_path))[0]

    def full(notebook, output, parameters):
        Path(output).write_text("")  # papermill opened it, then the write failed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner, "execute_notebook", full)
    with pytest.raises(StorageError) as err:
        runner.execute_setting(setting)
    log = tmp_path / "notebooks" / f"{setting.setting_id}.ipynb"
    assert str(err.value) == f"cannot write {log}: No space left on device (ENOSPC)"
    assert not log.exists() and not list(tmp_path.glob("*/record.json"))


def test_a_full_disk_inside_the_run_stops_the_sweep(tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    setting = group_settings(build_grid("smoke", tmp_path))[0]
    text = "cannot write /x/record.json.tmp: No space left on device (ENOSPC)"

    def failing(notebook, output, parameters):
        raise PapermillExecutionError(4, 1, "records = run_seeds(...)", "StorageError", text, [])

    monkeypatch.setattr(runner, "execute_notebook", failing)
    with pytest.raises(StorageError, match="No space left on device"):
        runner.execute_setting(setting)
    assert not list(tmp_path.glob("*/record.json"))


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/lora-nb-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MB tmpfs (root only), unmounted after the test."""
    if not _can_mount():
        pytest.skip("needs root and tmpfs mounts")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


class BigAdapterExecutor(FakeExecutor):
    """Writes a 1 MB adapter per run (as save_adapter does: temporary file, then rename), then
    its completed record: a 3 MB disk fills on the third run."""

    def __call__(self, setting, notebook=None, gpu=None, processes=1):
        from lora_nb.checkpoint import save_adapter

        class OneMegabyte(__import__("torch").nn.Module):
            def __init__(self):
                super().__init__()
                self.classifier = __import__("torch").nn.Linear(512, 512)

        outcomes = []
        for spec in setting.runs:
            self.calls.append(spec.run_id)
            run_dir = Path(spec.config.output_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            save_adapter(OneMegabyte(), run_dir / ADAPTER_FILE)
            write_record(run_dir, {"status": "completed", "config": spec.config.to_dict()})
            outcomes.append(Outcome(spec.run_id, "completed"))
        return outcomes


def test_a_real_full_disk_and_a_real_read_only_folder(small_disk, monkeypatch, capsys):
    monkeypatch.setenv("LORA_NB_GLUE_DIR", str(GLUE_DIR))
    runs = small_disk / "runs"
    fake = BigAdapterExecutor()
    monkeypatch.setattr(sweep, "execute_setting", fake)
    monkeypatch.setattr(sweep, "_order", lambda s: (0, 0, 0))  # grid order
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(runs)]) == 1
    err = capsys.readouterr().err
    assert "\nerror: cannot write " in err and "No space left on device (ENOSPC)" in err
    assert "Traceback" not in err
    assert not list(runs.rglob("*.tmp")) and not [p for p in runs.rglob("*") if p.is_file()
                                                   and p.stat().st_size == 0 and not p.name.startswith(".")]
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(runs)]) == 2
    assert capsys.readouterr().err == f"error: --runs-dir: cannot write in {runs}: Read-only file system (EROFS)\n"
    subprocess.run(["mount", "-o", "remount,rw,size=64m", str(small_disk)], check=True)
    for adapter in runs.glob(f"*/{ADAPTER_FILE}"):  # the fake's runs make room; real ones are smaller
        adapter.unlink()
    fake.calls.clear()
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(runs)]) == 0  # resumes cleanly
    assert all(read_record(s.config.output_dir)["status"] == "completed" for s in build_grid("smoke", runs))


# --- 3. A strict --resume-from ----------------------------------------------------------------


def test_resume_from_a_missing_or_empty_folder_is_refused(tmp_path, monkeypatch, capsys):
    fake = FakeExecutor()
    monkeypatch.setattr(sweep, "execute_setting", fake)
    monkeypatch.setenv("LORA_NB_GLUE_DIR", str(GLUE_DIR))
    runs = tmp_path / "runs"
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(runs), "--resume-from", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: --resume-from: {tmp_path / 'nope'} is not a folder (it does not exist)\n"
    (tmp_path / "empty").mkdir()
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(runs), "--resume-from", str(tmp_path / "empty")]) == 2
    assert "holds no run records" in capsys.readouterr().err
    assert fake.calls == [] and not runs.exists()


def test_resume_from_names_every_record_it_cannot_restore(tmp_path, monkeypatch, capsys):
    fake = FakeExecutor()
    monkeypatch.setattr(sweep, "execute_setting", fake)
    monkeypatch.setenv("LORA_NB_GLUE_DIR", str(GLUE_DIR))
    runs, committed = tmp_path / "runs", tmp_path / "report" / "records"
    committed.mkdir(parents=True)
    specs = build_grid("smoke", runs, glue_dir=str(GLUE_DIR))
    good = {"status": "completed", "config": specs[0].config.to_dict()}
    (committed / f"{specs[0].run_id}.json").write_text(json.dumps(good))
    bad = {specs[1].run_id: ('{"status": "compl', "not a run record (not valid JSON, truncated or damaged"),
           specs[2].run_id: (b"\x89PNG\r\n\x1a\n\xff\xfe", "not a run record (not a text file: binary or damaged)"),
           specs[3].run_id: ("[1, 2]", "not a run record (a JSON list, not an object)"),
           specs[4].run_id: ('{"status": "completed"}', "not a run record (it has no config)"),
           specs[5].run_id: (json.dumps({"status": "completed", "config": {**specs[5].config.to_dict(), "r": 2}}),
                             "made with other settings than the grid's (r)")}
    for run_id, (content, _) in bad.items():
        path = committed / f"{run_id}.json"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(runs), "--resume-from", str(committed)]) == 0
    out = capsys.readouterr().out
    assert f"restored 1 committed runs from {committed}; skipped {len(bad)}:" in out
    for run_id, (_, problem) in bad.items():
        assert f"  {committed / run_id}.json: {problem}" in out
    assert specs[0].run_id not in fake.calls and set(bad) <= set(fake.calls)


# --- 4. python -m lora_nb.results: one-line errors ----------------------------------------------


def _results(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_nb.results", *args], cwd=REPO_ROOT, env=ENV,
                          capture_output=True, text=True)


def test_results_errors_are_one_line_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert results.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: no such folder\n"
    assert results.main([str(empty)]) == 2
    assert capsys.readouterr().err == f"error: {empty}: holds no run records (<run-id>/record.json or <run-id>.json)\n"
    assert results.main([str(empty), "--same-as", str(REPO_ROOT / "report" / "records")]) == 2
    assert "holds no run records" in capsys.readouterr().err
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "record.json").write_text('{"status": "completed", "config": {"ta')
    assert results.main([str(runs)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {runs / 'a' / 'record.json'}: not a run record (not valid JSON")
    (runs / "a" / "record.json").write_text('{"status": "completed", "config": {"task": "mrpc"}}')
    (runs / "notes.json").write_text('["a stray JSON file"]')
    assert results.main([str(runs)]) == 2
    assert capsys.readouterr().err == f"error: {runs / 'notes.json'}: not a run record (a JSON list, not an object)\n"
    (runs / "notes.json").unlink()
    (runs / "a.json").write_text('{"status": "completed", "config": {"task": "mrpc"}}')  # the id collides
    assert results.main([str(runs)]) == 2
    err = capsys.readouterr().err
    assert f"1 run id(s) have two records each" in err and str(runs / "a.json") in err and err.count("\n") == 1
    # The real command (one process: each one imports the analysis): no traceback.
    done = _results(str(runs))
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr


# --- 5. SIGTERM as Ctrl-C ------------------------------------------------------------------------


RUN_THAT_SLEEPS = """
import sys, time
from pathlib import Path
from lora_nb import train

def sleeping(config, task, model_config, accelerator, run_dir, record, progress):
    Path(sys.argv[1]).write_text("training")
    time.sleep(600)

train._train = sleeping
sys.exit(train.main(sys.argv[2:]))
"""


def test_sigterm_stops_a_run_with_a_failed_record_even_with_sigint_ignored(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(RUN_THAT_SLEEPS, str(tmp_path / "ready"), *quick_args(run_dir), ignore_sigint=True)
    wait_for(tmp_path / "ready", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    record = read_record(run_dir)
    assert record["status"] == "failed" and record["error"].startswith("SIGTERM")
    assert lock_holder(run_dir) is None


SWEEP_WITH_A_CHILD_PER_SETTING = """
import subprocess, sys, time
from pathlib import Path
from lora_nb import sweep

CHILD = '''
import sys, time
from pathlib import Path
from lora_nb.rundir import FolderLock, write_record
from lora_nb.signals import SIGTERM_ERROR, Terminated, sigterm_as_interrupt
with sigterm_as_interrupt(), FolderLock(sys.argv[1]):
    write_record(sys.argv[1], {"status": "running", "config": {}})
    Path(sys.argv[2]).write_text("running")
    try:
        time.sleep(600)
    except Terminated:
        write_record(sys.argv[1], {"status": "failed", "error": SIGTERM_ERROR, "config": {}})
'''

def execute(setting, notebook=None, gpu=None, processes=1):  # a kernel stand-in: a child process
    run_dir = setting.runs[0].config.output_dir
    subprocess.run([sys.executable, "-c", CHILD, run_dir, sys.argv[1]])
    return sweep.collect_outcomes(setting, "the child ended")

sweep.execute_setting = execute
sys.exit(sweep.main(["--preset", "smoke", "--runs-dir", sys.argv[2], "--workers", "1"]))
"""


def test_sigterm_stops_a_sweep_and_the_run_in_flight_records_it(tmp_path):
    runs = tmp_path / "runs"
    proc = start(SWEEP_WITH_A_CHILD_PER_SETTING, str(tmp_path / "ready"), str(runs), ignore_sigint=True)
    wait_for(tmp_path / "ready", proc)
    proc.send_signal(signal.SIGTERM)  # to the sweep alone, as kill and the schedulers do
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM: 0 of" in err and "the same command resumes the sweep" in err
    assert "Traceback" not in err
    records = [read_record(p.parent) for p in runs.glob("*/record.json")]
    assert len(records) == 2  # the run in flight (both seeds of its setting), and nothing started after
    assert {r["status"] for r in records} == {"failed"}
    assert any(r["error"].startswith("SIGTERM") for r in records)
    assert lock_holder(runs, SWEEP_LOCK_FILE) is None


# --- 6. Notebook parameters as users type them -------------------------------------------------


@pytest.mark.parametrize("given, seeds", [
    (None, [7]), (3, [3]), ("3", [3]), ([0, 1], [0, 1]), ("[0, 1]", [0, 1]), ("0,1", [0, 1]),
    ("0, 1, 2", [0, 1, 2]), ("0 1", [0, 1]), ("(2, 3)", [2, 3]), ("[0, 0]", [0, 0]),
])
def test_seeds_in_the_forms_papermill_passes(given, seeds):
    assert notebook_seeds(given, 7) == seeds


@pytest.mark.parametrize("given", ["abc", True, "[0.5]", "", [], 1.5])
def test_bad_seeds_are_refused_with_their_name(given):
    with pytest.raises(ValueError, match="seeds: "):
        notebook_seeds(given, 0)


def test_repeated_seeds_given_as_text_are_refused_as_repeated(tmp_path):
    config = RunConfig(output_dir=str(tmp_path / "s{seed}"))
    with pytest.raises(ValueError, match=r"seeds: repeated seed in \[0, 0\]"):
        run_seeds(config, notebook_seeds("[0, 0]", 0))


def test_a_name_that_is_not_a_parameter_is_refused_with_the_nearest(tmp_path):
    base = {"task": "mrpc", "output_dir": str(tmp_path), "seeds": None, "progress": True,
            "cuda_visible_devices": None, "os": os, "In": [""], "Out": {}, "_": None}
    assert notebook_config(base).task == "mrpc"  # modules, IPython's names: not parameters
    with pytest.raises(ValueError, match=r"^lr: not a run parameter, did you mean learning_rate\?"):
        notebook_config({**base, "lr": 0.1})
    with pytest.raises(ValueError, match="learning_rat: not a run parameter, did you mean learning_rate"):
        notebook_config({**base, "learning_rat": 0.1})
    with pytest.raises(ValueError, match="sede: not a run parameter, did you mean seed"):
        notebook_config({**base, "sede": 1})
    with pytest.raises(ValueError, match=r"zzz: not a run parameter \(parameters: RunConfig's fields and seeds"):
        notebook_config({**base, "zzz": 1})
    assert notebook_config({**base, "targets": "[q, k]"}).targets == ["q", "k"]
    assert notebook_config({**base, "targets": "['q', 'v', 'o']"}).targets == ["q", "v", "o"]


def test_papermill_with_an_unknown_parameter_fails_naming_it(tmp_path):
    """The real papermill command: `-p lr 0.1` ran silently with the default rate before."""
    out = tmp_path / "out.ipynb"
    done = subprocess.run([str(Path(sys.executable).parent / "papermill"), str(REPO_ROOT / "notebooks" / "train.ipynb"),
                           str(out), "-p", "lr", "0.1", "-p", "output_dir", str(tmp_path / "run"),
                           "--cwd", str(REPO_ROOT), "--no-progress-bar", "-k", "python3"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "lr: not a run parameter, did you mean learning_rate?" in done.stderr + out.read_text()
    assert not (tmp_path / "run").exists()


# --- 7. Garbage adapter and parquet files, named ------------------------------------------------


def test_a_garbage_init_adapter_is_named(tmp_path, capsys):
    garbage = tmp_path / "adapter.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    config = RunConfig(task="stsb", init_adapter=str(garbage), output_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=f"init_adapter: {garbage} is not a readable safetensors adapter "
                                         r"file \(SafetensorError: "):
        config.validate()
    assert train.main(quick_args(tmp_path / "run", task="stsb", init_adapter=garbage)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: init_adapter: {garbage} is not a readable") and err.count("\n") == 1


def test_a_garbage_init_adapter_in_a_sweep_is_recorded_naming_the_file(tmp_path):
    """The real notebook: the failed record's error names the file."""
    specs = [s for s in build_grid("smoke", tmp_path / "runs", glue_dir=str(GLUE_DIR)) if s.run_id == "t2-mrpc-lora-s0"]
    garbage = tmp_path / "mnli.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    spec = replace(specs[0], config=replace(specs[0].config, init_adapter=str(garbage)))
    setting = grid.Setting("t2-mrpc-lora", spec.config, (0,), (spec,))
    (outcome,) = runner.execute_setting(setting)
    assert outcome.status == "failed"
    record = read_record(spec.config.output_dir)
    assert str(garbage) in record["error"] and "not a readable safetensors adapter file" in record["error"]


def _corrupt_glue(tmp_path: Path, split: str, keep_footer: bool) -> Path:
    glue = tmp_path / "glue"
    (glue / "mrpc").mkdir(parents=True)
    for name in ("train", "validation"):
        shutil.copyfile(GLUE_DIR / "mrpc" / f"{name}.parquet", glue / "mrpc" / f"{name}.parquet")
    path = glue / "mrpc" / f"{split}.parquet"
    data = bytearray(path.read_bytes())
    if keep_footer:  # the data pages damaged, the footer intact: only reading the rows fails
        footer = int.from_bytes(data[-8:-4], "little") + 8
        data[4:len(data) - footer] = os.urandom(len(data) - footer - 4)
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(bytes(data[:3000]))  # truncated
    return path


@pytest.mark.parametrize("split, keep_footer", [("train", False), ("validation", False), ("validation", True)])
def test_a_corrupt_parquet_file_is_named(tmp_path, split, keep_footer):
    from lora_nb.glue import get_task, load_glue

    path = _corrupt_glue(tmp_path, split, keep_footer)
    with pytest.raises(ValueError, match=f"glue_dir: {path} is not a readable parquet file"):
        load_glue(get_task("mrpc"), tmp_path / "glue")


def test_a_corrupt_parquet_file_is_named_in_the_failed_record(tmp_path, capsys):
    from lora_nb.models import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny", "bert")
    path = _corrupt_glue(tmp_path, "validation", keep_footer=False)
    run_dir = tmp_path / "run"
    assert train.main(quick_args(run_dir, model=model, glue_dir=tmp_path / "glue")) == 2
    assert f"error: glue_dir: {path} is not a readable parquet file" in capsys.readouterr().err
    record = read_record(run_dir)
    assert record["status"] == "failed" and f"ValueError: glue_dir: {path} is not a readable" in record["error"]
