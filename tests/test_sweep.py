"""Sweep grids, resume, failure handling and interruption (fast: a fake executor), plus one real
failing run through papermill."""

import json
from dataclasses import replace

import pytest

from conftest import GLUE_DIR
from lora_nb import sweep
from lora_nb.sweep import Outcome, build_grid, run_sweep, summarize, validate_grid
from lora_nb.train import read_record, write_record


def test_grid_sizes_per_preset(tmp_path):
    sizes = {name: len(build_grid(name, tmp_path)) for name in sweep.PRESETS}
    assert sizes["smoke"] == 1 * 2 * 1 + 2 * 2 + 1
    assert sizes["cpu"] == 4 * 4 * 3 + 5 * 3 + 1  # Table 2 + Table 6 + the §7.2 extra seed
    assert sizes["paper"] == 8 * 4 * 5 + 5 * 3 + 1
    for name in sweep.PRESETS:
        specs = build_grid(name, tmp_path)
        assert len({s.config.output_dir for s in specs}) == len(specs)


def test_cpu_preset_settings_are_valid_and_uniform(tmp_path):
    specs = build_grid("cpu", tmp_path, glue_dir=str(GLUE_DIR))
    validate_grid(specs)
    t2 = [s.config for s in specs if "table2" in s.config.tags]
    assert {(c.max_train_samples, c.epochs, c.max_length) for c in t2} == {(320, 2, 128)}
    t6 = [s.config for s in specs if "table6" in s.config.tags]
    assert {(tuple(c.targets), c.r) for c in t6} == {(t, r) for t in sweep.WEIGHT_TYPES for r in sweep.RANKS}
    assert all(c.task == "mnli" and c.method == "lora" for c in t6)


def test_paper_preset_starts_mrpc_rte_stsb_from_mnli(tmp_path):
    specs = {s.run_id: s for s in build_grid("paper", tmp_path)}
    mrpc = specs["t2-mrpc-lora-s3"]
    assert mrpc.depends_on == "t2-mnli-lora-s3"
    assert mrpc.config.init_adapter == str(tmp_path / "t2-mnli-lora-s3" / "adapter.safetensors")
    assert specs["t2-sst2-lora-s0"].depends_on is None and specs["t2-mrpc-full-s0"].depends_on is None
    assert specs["t2-cola-lora-s0"].config.epochs == 80  # Table 9


def test_bad_input_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ValueError, match="preset: unknown 'huge'"):
        build_grid("huge", tmp_path)
    assert sweep.main(["--preset", "huge", "--runs-dir", str(tmp_path)]) == 2
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(tmp_path), "--workers", "0"]) == 2
    assert sweep.main(["--preset", "cpu", "--runs-dir", str(tmp_path), "--glue-dir", str(tmp_path)]) == 2
    assert "has no sst2" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


class FakeExecutor:
    """Stands in for papermill: writes a completed record, or fails / is interrupted on cue."""

    def __init__(self, fail=(), interrupt=()):
        self.calls, self.fail, self.interrupt = [], set(fail), set(interrupt)

    def __call__(self, spec, notebook=None, gpu=None):
        self.calls.append(spec.run_id)
        run_dir = sweep.Path(spec.config.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if spec.run_id in self.interrupt:
            write_record(run_dir, {"status": "running", "config": spec.config.to_dict()})
            raise KeyboardInterrupt
        status = "failed" if spec.run_id in self.fail else "completed"
        write_record(run_dir, {"status": status, "config": spec.config.to_dict(), "error": "boom" if status == "failed" else None})
        return Outcome(spec.run_id, status, "boom" if status == "failed" else "")


def test_resume_skips_completed_and_reruns_half_written(tmp_path, monkeypatch):
    specs = build_grid("smoke", tmp_path)
    fake = FakeExecutor()
    monkeypatch.setattr(sweep, "execute_run", fake)
    first = run_sweep(specs, workers=2, progress=False)
    assert {o.status for o in first} == {"completed"} and len(fake.calls) == len(specs)
    before = {s.run_id: (sweep.Path(s.config.output_dir) / "record.json").read_bytes() for s in specs}
    half = specs[0]
    write_record(sweep.Path(half.config.output_dir), {"status": "running"})  # a killed run
    fake.calls.clear()
    second = run_sweep(specs, workers=1, progress=False)
    assert fake.calls == [half.run_id]
    assert sum(o.status == "skipped" for o in second) == len(specs) - 1
    for s in specs[1:]:  # completed records untouched, byte for byte
        assert (sweep.Path(s.config.output_dir) / "record.json").read_bytes() == before[s.run_id]


def test_a_failing_run_is_recorded_and_the_others_complete(tmp_path, monkeypatch):
    specs = build_grid("smoke", tmp_path)
    monkeypatch.setattr(sweep, "execute_run", FakeExecutor(fail={specs[1].run_id}))
    outcomes = run_sweep(specs, workers=2, progress=False)
    assert [o.status for o in outcomes].count("failed") == 1
    assert summarize(outcomes).startswith(f"{len(specs) - 1} completed, 0 skipped, 1 failed")
    assert f"failed {specs[1].run_id}: boom" in summarize(outcomes)


def test_an_interrupted_sweep_resumes_without_losing_completed_runs(tmp_path, monkeypatch):
    specs = build_grid("smoke", tmp_path)
    victim = specs[3].run_id
    monkeypatch.setattr(sweep, "execute_run", FakeExecutor(interrupt={victim}))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(specs, workers=1, progress=False)
    done = [s.run_id for s in specs if (read_record(s.config.output_dir) or {}).get("status") == "completed"]
    assert {s.run_id for s in specs[:3]} <= set(done) and victim not in done
    fake = FakeExecutor()
    monkeypatch.setattr(sweep, "execute_run", fake)
    outcomes = run_sweep(specs, workers=2, progress=False)
    assert victim in fake.calls and not set(done) & set(fake.calls)
    assert {o.status for o in outcomes} == {"completed", "skipped"}


def test_a_run_whose_dependency_failed_is_failed_not_started(tmp_path, monkeypatch):
    specs = [s for s in build_grid("paper", tmp_path) if s.run_id in ("t2-mnli-lora-s0", "t2-mrpc-lora-s0")]
    fake = FakeExecutor(fail={"t2-mnli-lora-s0"})
    monkeypatch.setattr(sweep, "execute_run", fake)
    outcomes = {o.run_id: o for o in run_sweep(specs, progress=False)}
    assert fake.calls == ["t2-mnli-lora-s0"]
    assert outcomes["t2-mrpc-lora-s0"].reason == "depends on t2-mnli-lora-s0, which failed"


def test_a_real_failing_notebook_is_recorded(tmp_path):
    """papermill runs the training notebook; a run that raises leaves a failed record."""
    spec = build_grid("smoke", tmp_path / "runs", glue_dir=str(GLUE_DIR))[0]
    broken = replace(spec, config=replace(spec.config, glue_dir=str(tmp_path)))  # no GLUE data there
    outcome = sweep.execute_run(broken)
    assert outcome.status == "failed" and "has no mrpc" in outcome.reason
    record = json.loads((tmp_path / "runs" / spec.run_id / "record.json").read_text())
    assert record["status"] == "failed" and "has no mrpc" in record["error"]
    assert (tmp_path / "runs" / spec.run_id / "train.ipynb").exists()  # the executed copy, for debugging


def test_a_runs_folder_made_with_other_settings_is_refused(tmp_path):
    spec = build_grid("smoke", tmp_path)[0]
    other = replace(spec.config, learning_rate=spec.config.learning_rate * 2)
    write_record(sweep.Path(spec.config.output_dir).mkdir(parents=True) or sweep.Path(spec.config.output_dir),
                 {"status": "completed", "config": other.to_dict()})
    with pytest.raises(ValueError, match="holds a completed run made with other settings \\(learning_rate\\)"):
        validate_grid([spec])
    write_record(sweep.Path(spec.config.output_dir), {"status": "completed", "config": replace(spec.config, num_threads=7).to_dict()})
    validate_grid([spec])  # execution settings may differ
