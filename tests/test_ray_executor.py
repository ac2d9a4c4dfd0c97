"""The Ray executor on a local Ray instance: the same records as the thread pool, a killed worker,
failed dependencies, resume, Ctrl-C, and the CLI's refusals.

Ray's workers are other processes, out of monkeypatch's reach: the settings execute a stand-in
notebook (papermill, the training notebook's parameters) that writes a completed record per seed,
or fails, or kills the Ray worker running it, as the test says. It writes the record as
`lora_nb.rundir.write_record` does, without importing lora_nb (torch) in every kernel.
"""

import json
import shutil
import signal
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

import nbformat
import pytest

from conftest import GLUE_DIR
from lora_nb import sweep
from lora_nb.config import RunConfig
from lora_nb.rundir import read_record, write_record
from lora_nb.config import EXECUTION_FIELDS
from lora_nb.grid import build_grid
from lora_nb.runner import ThreadPool
from lora_nb.sweep import run_sweep

ray = pytest.importorskip("ray")
from lora_nb.ray_executor import MAX_RETRIES, RayPool  # noqa: E402

CONFIG_FIELDS = [f.name for f in fields(RunConfig)]
# `behaviour`: setting id -> "fail" (an exception in the notebook), "kill" (the Ray worker is
# killed, every attempt), "kill-once" (killed on the first attempt only) or "sleep" (ten minutes).
# Each attempt is counted in <runs-dir>/<setting>.attempts.
STAND_IN = """\
import json, os, signal, time
from pathlib import Path

setting = Path(output_dir).name.removesuffix("-s{{seed}}")
attempts = Path(output_dir).parent / f"{{setting}}.attempts"
with attempts.open("a") as f:
    f.write("x")
todo = {behaviour!r}.get(setting)
if todo == "fail":
    raise RuntimeError("boom")
if todo == "kill" or (todo == "kill-once" and attempts.read_text() == "x"):
    os.kill(os.getppid(), signal.SIGKILL)  # the Ray worker that runs this notebook
    os._exit(1)
if todo == "sleep":
    time.sleep(600)
config = {{name: globals()[name] for name in {fields!r}}}
for seed in seeds:
    run_dir = Path(output_dir.format(seed=seed))
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {{"status": "completed", "config": {{**config, "seed": seed, "output_dir": str(run_dir)}}}}
    (run_dir / "record.json").write_text(json.dumps(record))
"""


def stand_in(path, behaviour=None):
    """A notebook with train.ipynb's parameters that does what `behaviour` says (else completes)."""
    params = "\n".join(f"{name} = None" for name in CONFIG_FIELDS + ["seeds", "progress", "cuda_visible_devices"])
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(STAND_IN.format(behaviour=behaviour or {}, fields=CONFIG_FIELDS))]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray instance. Python's KeyboardInterrupt handler is installed first: a test
    run started in the background by a non-interactive shell (nohup, some CI runners) inherits
    SIGINT ignored, Python then installs none, and Ray's processes started from it would ignore
    the SIGINT by which `ray.cancel` interrupts a running task (the Ctrl-C test would hang)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    signal.signal(signal.SIGINT, previous)


def pool():
    """Two settings at once on the module's 2-CPU Ray instance; the pool leaves it running."""
    return RayPool(cpus_per_run=1)


def completed(specs) -> dict[str, dict]:
    """Run id -> what the completed record says was computed (no paths, no execution settings)."""
    out = {}
    for spec in specs:
        record = read_record(spec.config.output_dir) or {}
        if record.get("status") == "completed":
            out[spec.run_id] = {k: v for k, v in record["config"].items() if k not in EXECUTION_FIELDS}
    return out


def attempts(runs_dir, setting_id) -> int:
    path = runs_dir / f"{setting_id}.attempts"
    return len(path.read_text()) if path.exists() else 0


@pytest.fixture(scope="module")
def smoke_on_ray(local_ray, tmp_path_factory):
    """The smoke preset through Ray with the stand-in notebook: (specs, outcomes, notebook)."""
    runs_dir = tmp_path_factory.mktemp("ray") / "runs"
    notebook = stand_in(runs_dir.parent / "stand_in.ipynb")
    specs = build_grid("smoke", runs_dir)
    with pool() as p:
        outcomes = run_sweep(specs, progress=False, pool=p, notebook=notebook)
    return specs, outcomes, notebook


@pytest.mark.slow  # a local Ray cluster: tens of seconds
def test_smoke_through_ray_gives_the_thread_pools_records(smoke_on_ray, tmp_path):
    specs, outcomes, notebook = smoke_on_ray
    assert [o.status for o in outcomes] == ["completed"] * len(specs)
    threaded = build_grid("smoke", tmp_path / "runs")
    with ThreadPool(2) as p:
        run_sweep(threaded, progress=False, pool=p, notebook=notebook)
    assert completed(specs) == completed(threaded) and len(completed(specs)) == len(specs)
    record = read_record(specs[0].config.output_dir)
    assert record["config"]["num_threads"] == 1  # the CPUs each task reserved


@pytest.mark.slow  # a local Ray cluster: tens of seconds
def test_resume_under_ray_skips_completed_runs(smoke_on_ray, tmp_path):
    specs, _, notebook = smoke_on_ray
    runs_dir = tmp_path / "runs"
    shutil.copytree(Path(specs[0].config.output_dir).parent, runs_dir)
    specs = build_grid("smoke", runs_dir)
    half = specs[2]
    write_record(Path(half.config.output_dir), {"status": "running"})  # a killed run
    before = {s.run_id: (Path(s.config.output_dir) / "record.json").read_bytes() for s in specs}
    logs = set((runs_dir / "notebooks").iterdir())
    with pool() as p:
        outcomes = {o.run_id: o.status for o in run_sweep(specs, progress=False, pool=p, notebook=notebook)}
    assert outcomes.pop(half.run_id) == "completed" and set(outcomes.values()) == {"skipped"}
    new_logs = set((runs_dir / "notebooks").iterdir()) - logs
    assert [log.name for log in new_logs] == [f"{half.run_id.rpartition('-s')[0]}.1.ipynb"]
    for s in specs:  # completed records untouched, byte for byte
        if s.run_id != half.run_id:
            assert (Path(s.config.output_dir) / "record.json").read_bytes() == before[s.run_id]


@pytest.mark.slow  # a local Ray cluster: tens of seconds
def test_a_killed_worker_is_retried_once_then_recorded_failed(local_ray, tmp_path):
    runs_dir = tmp_path / "runs"
    specs = [s for s in build_grid("smoke", runs_dir) if s.run_id.startswith(("t2-mrpc", "t6-mnli-q-r8"))]
    notebook = stand_in(tmp_path / "stand_in.ipynb", {"t2-mrpc-lora": "kill", "t2-mrpc-head": "kill-once"})
    with pool() as p:
        outcomes = {o.run_id: o for o in run_sweep(specs, progress=False, pool=p, notebook=notebook)}
    assert attempts(runs_dir, "t2-mrpc-lora") == 1 + MAX_RETRIES
    for seed in (0, 1):
        killed = outcomes[f"t2-mrpc-lora-s{seed}"]
        assert killed.status == "failed" and killed.reason.startswith("WorkerCrashedError")
        assert read_record(runs_dir / f"t2-mrpc-lora-s{seed}")["status"] == "failed"
    assert attempts(runs_dir, "t2-mrpc-head") == 2  # Ray's retry completed it
    others = {k: o.status for k, o in outcomes.items() if not k.startswith("t2-mrpc-lora")}
    assert len(others) == len(specs) - 2 and set(others.values()) == {"completed"}


@pytest.mark.slow  # a local Ray cluster: tens of seconds
def test_a_setting_whose_dependency_failed_is_not_started_under_ray(local_ray, tmp_path):
    runs_dir = tmp_path / "runs"
    specs = [s for s in build_grid("paper", runs_dir) if s.run_id in ("t2-mnli-lora-s0", "t2-mrpc-lora-s0")]
    notebook = stand_in(tmp_path / "stand_in.ipynb", {"t2-mnli-lora": "fail"})
    with pool() as p:
        outcomes = {o.run_id: o for o in run_sweep(specs, progress=False, pool=p, notebook=notebook)}
    assert outcomes["t2-mnli-lora-s0"].reason == "RuntimeError: boom"
    assert outcomes["t2-mrpc-lora-s0"].reason == "depends on t2-mnli-lora-s0, which failed or did not run"
    assert attempts(runs_dir, "t2-mrpc-lora") == 0 and not (runs_dir / "t2-mrpc-lora-s0").exists()


@pytest.mark.slow  # a local Ray cluster: tens of seconds
def test_ctrl_c_under_ray_cancels_pending_settings_and_records_running_ones(local_ray, tmp_path):
    runs_dir = tmp_path / "runs"
    specs = [s for s in build_grid("smoke", runs_dir) if s.run_id.startswith(("t2-mrpc", "t6-mnli-q-r8"))]
    sleepers = ("t2-mrpc-head", "t2-mrpc-houlsby")  # they start once t2-mrpc-lora has completed
    notebook = stand_in(tmp_path / "stand_in.ipynb", dict.fromkeys(sleepers, "sleep"))

    def ctrl_c_once_both_sleep():
        while not all(attempts(runs_dir, s) for s in sleepers):
            time.sleep(0.2)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=ctrl_c_once_both_sleep, daemon=True).start()
    start = time.perf_counter()
    with pool() as p, pytest.raises(KeyboardInterrupt):
        run_sweep(specs, progress=False, pool=p, notebook=notebook)
    assert time.perf_counter() - start < 300  # the sleepers were interrupted, not waited for
    status = {s.run_id: (read_record(s.config.output_dir) or {}).get("status") for s in specs}
    assert status.pop("t2-mrpc-lora-s0") == status.pop("t2-mrpc-lora-s1") == "completed"
    for setting in sleepers:
        for seed in (0, 1):
            assert status.pop(f"{setting}-s{seed}") == "failed"
            assert read_record(runs_dir / f"{setting}-s{seed}")["error"].startswith("KeyboardInterrupt")
    assert set(status.values()) == {None} and attempts(runs_dir, "t6-mnli-q-r8") == 0  # never started


@pytest.mark.parametrize("flags, message", [
    (["--ray-address", "auto"], "--ray-address: only with --executor ray"),
    (["--gpus-per-run", "0.5", "--cpus-per-run", "2"], "--gpus-per-run, --cpus-per-run: only with --executor ray"),
    (["--executor", "ray", "--gpus-per-run", "0"], "--gpus-per-run: must be in (0, 1]"),
    (["--executor", "ray", "--gpus-per-run", "-1"], "--gpus-per-run: must be in (0, 1]"),
    (["--executor", "ray", "--gpus-per-run", "2"], "--gpus-per-run: must be in (0, 1]"),
    (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run: must be >= 1"),
])
def test_the_cli_refuses_bad_executor_flags(flags, message, tmp_path, capsys):
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(tmp_path), *flags]) == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_cli_says_how_to_install_ray(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(tmp_path), "--executor", "ray"]) == 2
    assert "pip install 'lora-nb[ray]'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_real_smoke_setting_through_ray(local_ray, tmp_path):
    """The training notebook itself in a Ray task: records as the thread pool writes them."""
    specs = [s for s in build_grid("smoke", tmp_path / "runs", glue_dir=str(GLUE_DIR))
             if s.run_id.startswith("t2-mrpc-lora")]
    with pool() as p:
        outcomes = run_sweep(specs, progress=False, pool=p)
    assert [o.status for o in outcomes] == ["completed"] * len(specs), [o.reason for o in outcomes]
    record = json.loads((tmp_path / "runs" / specs[0].run_id / "record.json").read_text())
    assert record["config"]["num_threads"] == 1 and record["evaluations"]
