"""Sweep grids, resume, failure handling and interruption (fast: a fake executor), plus one real
failing run through papermill."""

import json
from pathlib import Path
from dataclasses import replace

import pytest

from conftest import GLUE_DIR
from lora_nb import grid, presets, runner, sweep
from lora_nb.rundir import read_record, write_record
from lora_nb.grid import build_grid, group_settings, validate_grid
from lora_nb.runner import Outcome
from lora_nb.sweep import run_sweep, step_fraction, summarize


def test_grid_sizes_per_preset(tmp_path):
    sizes = {name: len(build_grid(name, tmp_path)) for name in presets.PRESETS}
    # smoke: Table 2 (1 task × 3 methods) + Table 6 (2 × 2) + Table 5 (1), × 2 seeds; 1 curve × 1 seed
    assert sizes["smoke"] == (1 * 3 + 2 * 2 + 1) * 2 + 1
    # reference before any tuning run finished: the tuning runs (3 rates) and head-only's 3 seeds
    # at its one rate; MNLI, QQP, SST-2, STS-B × 6 methods, MRPC and CoLA × LoRA and FT only
    assert sizes["reference"] == 4 * 6 * 3 + 2 * 2 * 3
    assert sizes["study"] == 6 * 2 * 3
    # with every rate chosen: + the other seeds (3 for LoRA and FT, 2 for BitFit and the
    # adapters) and Tables 5–6 on MNLI × 3 seeds (15 + 4 cells, Wq,Wv r = 8 shared with Table 2)
    full = build_grid("reference", tmp_path, placeholder_rates=True)
    assert len(full) == 4 * 6 * 3 + 2 * 2 * 3 + 6 * 2 * 3 + 4 * 3 * 2 + (15 + 4) * 3 - 3
    # paper: Table 2 (8 tasks × 5 methods + FT at 3 learning rates) + Table 6 (15, one shared) +
    # Table 5 (4), × 5 seeds; paper-table9 the same grid
    assert sizes["paper"] == sizes["paper-table9"] == (8 * (5 + 3) + 15 - 1 + 4) * 5
    for name in presets.PRESETS:
        specs = build_grid(name, tmp_path, placeholder_rates=True)
        assert len({s.config.output_dir for s in specs}) == len(specs)


def test_a_run_two_tables_share_runs_once_with_both_tags(tmp_path):
    specs = {s.run_id: s for s in build_grid("reference", tmp_path, rates={("mnli", "lora"): 1e-3})}
    assert "t6-mnli-qv-r8-s0" not in specs  # Table 6's Wq,Wv r = 8 cell is Table 2's MNLI LoRA
    assert specs["t2-mnli-lora-lr0.001-s0"].config.tags == ["table2", "table6"]
    assert specs["t2-mnli-lora-lr0.001-s3"].config.tags == ["table2"]  # Table 6 runs 3 seeds


def test_reference_preset_settings_are_valid(tmp_path):
    specs = build_grid("reference", tmp_path, glue_dir=str(GLUE_DIR), placeholder_rates=True)
    validate_grid(specs)
    t2 = [s.config for s in specs if "table2" in s.config.tags]
    assert {c.max_eval_samples for c in t2} == {None}  # whole validation splits
    assert {c.task for c in t2} == set(presets.REFERENCE_STEPS)
    assert {(c.pooling, c.dev_examples, c.mixed_precision) for c in t2} == {("mean", 1000, "auto")}
    assert all(c.max_steps == presets.REFERENCE_STEPS[c.task] and c.max_steps // c.eval_every == 8 for c in t2)
    t6 = [s.config for s in specs if "table6" in s.config.tags]
    assert {(tuple(c.targets), c.r) for c in t6} == {(t, r) for t in presets.WEIGHT_TYPES for r in presets.RANKS}
    assert all(c.task == "mnli" and c.method == "lora" for c in t6)
    t5 = {(tuple(c.targets), c.r) for c in (s.config for s in specs) if "table5" in c.tags}
    assert t5 == set(presets.TABLE5_CELLS)
    assert all(len(t) * r == 8 for t, r in t5)  # one parameter budget (Table 5)


def test_every_method_a_claim_compares_is_tuned_on_an_equal_size_grid(tmp_path):
    preset = presets.PRESETS["reference"]
    assert set(preset.tuning_grid) == set(preset.methods) - {"head"}  # head-only: context, one rate
    assert {len(rates) for rates in preset.tuning_grid.values()} == {3}
    specs = build_grid(preset, tmp_path)
    head = [s.config for s in specs if s.config.method == "head"]
    assert {c.learning_rate for c in head} == {presets.HEAD_RATE} and len(head) == 4 * 3
    # the first cut: MRPC and CoLA rows hold LoRA and FT only
    assert {s.config.method for s in specs if s.config.task in ("mrpc", "cola")} == {"lora", "full"}


def test_settings_group_the_seeds_of_one_grid_point(tmp_path):
    specs = build_grid("smoke", tmp_path)
    settings = group_settings(specs)
    assert sum(len(s.seeds) for s in settings) == len(specs)
    lora = next(s for s in settings if s.setting_id == "t2-mrpc-lora")
    assert lora.seeds == (0, 1) and lora.config.output_dir == str(tmp_path / "t2-mrpc-lora-s{seed}")


def test_step_fraction(tmp_path):
    records = [{"status": "completed", "train_seconds": 50.0, "eval_seconds": 10.0},
               {"status": "completed", "train_seconds": 30.0, "eval_seconds": 0.0},
               {"status": "failed", "train_seconds": 99.0}]
    assert step_fraction(records, wall_seconds=50.0, cores=2) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        step_fraction(records, 0.0, 2)


def test_paper_preset_starts_mrpc_rte_stsb_from_mnli(tmp_path):
    specs = {s.run_id: s for s in build_grid("paper", tmp_path)}
    mrpc = specs["t2-mrpc-lora-s3"]
    assert mrpc.depends_on == "t2-mnli-lora-s3"
    assert mrpc.config.init_adapter == str(tmp_path / "t2-mnli-lora-s3" / "adapter.safetensors")
    # full fine-tuning as RoBERTa's recipe: MRPC, RTE and STS-B from the MNLI model at the same rate
    assert specs["t2-rte-full-lr3e-05-s0"].depends_on == "t2-mnli-full-lr3e-05-s0"
    assert specs["t2-sst2-lora-s0"].depends_on is None and specs["t2-sst2-full-lr1e-05-s0"].depends_on is None
    assert specs["t2-mrpc-bitfit-s0"].depends_on is None
    assert specs["t2-cola-lora-s0"].config.epochs == 80  # Table 9


def test_paper_preset_follows_the_authors_scripts_and_table9_is_a_variant(tmp_path):
    """The scripts' α = 16, weight decay 0.1 and global batch (8 GPUs × Table 9's batch, CoLA
    2 × 32) by default; `paper-table9` is Table 9 as printed (α = 8, no decay, no accumulation)."""
    scripts = {s.run_id: s.config for s in build_grid("paper", tmp_path)}
    table9 = {s.run_id: s.config for s in build_grid("paper-table9", tmp_path)}
    for task, global_batch in (("mnli", 128), ("qnli", 256), ("rte", 256), ("cola", 64), ("sst2", 128)):
        lora = scripts[f"t2-{task}-lora-s0"]
        assert (lora.alpha, lora.weight_decay, lora.global_batch_size) == (16.0, 0.1, global_batch)
        lora9 = table9[f"t2-{task}-lora-s0"]
        assert (lora9.alpha, lora9.weight_decay, lora9.global_batch_size) == (8.0, 0.0, None)
        assert lora9.batch_size == lora.batch_size and lora9.learning_rate == lora.learning_rate
    ft = [c for rid, c in scripts.items() if rid.startswith("t2-mrpc-full-")]
    assert sorted(c.learning_rate for c in ft) == [1e-5] * 5 + [2e-5] * 5 + [3e-5] * 5
    assert {(c.weight_decay, c.epochs, c.global_batch_size) for c in ft} == {(0.1, 10, None)}


def test_bad_input_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ValueError, match="preset: unknown 'huge'"):
        build_grid("huge", tmp_path)
    with pytest.raises(SystemExit) as exit_:  # argparse: "invalid choice: 'huge'"
        sweep.main(["--preset", "huge", "--runs-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(tmp_path), "--workers", "0"]) == 2
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(tmp_path), "--processes-per-run", "0"]) == 2
    assert sweep.main(["--preset", "smoke", "--runs-dir", str(tmp_path), "--processes-per-run", "2",
                       "--executor", "ray"]) == 2
    assert "with --executor threads only" in capsys.readouterr().err
    assert sweep.main(["--preset", "reference", "--runs-dir", str(tmp_path), "--glue-dir", str(tmp_path)]) == 2
    assert "has no mnli" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


class FakeExecutor:
    """Stands in for papermill: writes a completed record per seed, or fails / is interrupted on cue."""

    def __init__(self, fail=(), interrupt=()):
        self.calls, self.fail, self.interrupt = [], set(fail), set(interrupt)

    def __call__(self, setting, notebook=None, gpu=None, processes=1):
        outcomes = []
        for spec in setting.runs:
            self.calls.append(spec.run_id)
            run_dir = Path(spec.config.output_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            if spec.run_id in self.interrupt:
                write_record(run_dir, {"status": "running", "config": spec.config.to_dict()})
                raise KeyboardInterrupt
            status = "failed" if spec.run_id in self.fail else "completed"
            write_record(run_dir, {"status": status, "config": spec.config.to_dict(), "error": "boom" if status == "failed" else None})
            outcomes.append(Outcome(spec.run_id, status, "boom" if status == "failed" else ""))
        return outcomes


def test_resume_skips_completed_and_reruns_half_written(tmp_path, monkeypatch):
    specs = build_grid("smoke", tmp_path)
    fake = FakeExecutor()
    monkeypatch.setattr(sweep, "execute_setting", fake)
    first = run_sweep(specs, workers=2, progress=False)
    assert {o.status for o in first} == {"completed"} and len(fake.calls) == len(specs)
    before = {s.run_id: (Path(s.config.output_dir) / "record.json").read_bytes() for s in specs}
    half = specs[0]
    write_record(Path(half.config.output_dir), {"status": "running"})  # a killed run
    fake.calls.clear()
    second = run_sweep(specs, workers=1, progress=False)
    assert fake.calls == [half.run_id]
    assert sum(o.status == "skipped" for o in second) == len(specs) - 1
    for s in specs[1:]:  # completed records untouched, byte for byte
        assert (Path(s.config.output_dir) / "record.json").read_bytes() == before[s.run_id]


def test_a_failing_run_is_recorded_and_the_others_complete(tmp_path, monkeypatch):
    specs = build_grid("smoke", tmp_path)
    monkeypatch.setattr(sweep, "execute_setting", FakeExecutor(fail={specs[1].run_id}))
    outcomes = run_sweep(specs, workers=2, progress=False)
    assert [o.status for o in outcomes].count("failed") == 1
    assert summarize(outcomes).startswith(f"{len(specs) - 1} completed, 0 skipped, 1 failed")
    assert f"failed {specs[1].run_id}: boom" in summarize(outcomes)


def test_an_interrupted_sweep_resumes_without_losing_completed_runs(tmp_path, monkeypatch):
    specs = build_grid("smoke", tmp_path)
    victim = specs[3].run_id
    monkeypatch.setattr(sweep, "execute_setting", FakeExecutor(interrupt={victim}))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(specs, workers=1, progress=False)
    done = [s.run_id for s in specs if (read_record(s.config.output_dir) or {}).get("status") == "completed"]
    assert {s.run_id for s in specs[:3]} <= set(done) and victim not in done
    fake = FakeExecutor()
    monkeypatch.setattr(sweep, "execute_setting", fake)
    outcomes = run_sweep(specs, workers=2, progress=False)
    assert victim in fake.calls and not set(done) & set(fake.calls)
    assert {o.status for o in outcomes} == {"completed", "skipped"}


def test_a_run_whose_dependency_failed_is_failed_not_started(tmp_path, monkeypatch):
    specs = [s for s in build_grid("paper", tmp_path) if s.run_id in ("t2-mnli-lora-s0", "t2-mrpc-lora-s0")]
    fake = FakeExecutor(fail={"t2-mnli-lora-s0"})
    monkeypatch.setattr(sweep, "execute_setting", fake)
    outcomes = {o.run_id: o for o in run_sweep(specs, progress=False)}
    assert fake.calls == ["t2-mnli-lora-s0"]
    assert outcomes["t2-mrpc-lora-s0"].reason == "depends on t2-mnli-lora-s0, which failed or did not run"


@pytest.mark.slow
def test_a_real_failing_notebook_is_recorded(tmp_path):
    """papermill runs the training notebook; a setting that raises leaves a failed record per seed."""
    setting = group_settings(build_grid("smoke", tmp_path / "runs", glue_dir=str(GLUE_DIR)))[0]
    broken = replace(setting, config=replace(setting.config, glue_dir=str(tmp_path)))  # no GLUE data there
    outcomes = runner.execute_setting(broken)
    assert [o.status for o in outcomes] == ["failed"] * len(setting.seeds)
    assert "has no mrpc" in outcomes[0].reason
    for spec in setting.runs:
        record = json.loads((tmp_path / "runs" / spec.run_id / "record.json").read_text())
        assert record["status"] == "failed" and "has no mrpc" in record["error"]
    log = tmp_path / "runs" / "notebooks" / f"{setting.setting_id}.ipynb"
    assert log.exists()  # the executed copy, for debugging
    runner.execute_setting(broken)  # a second attempt keeps the first log
    assert (tmp_path / "runs" / "notebooks" / f"{setting.setting_id}.1.ipynb").exists()


def test_restore_committed_records_runs_only_what_is_missing(tmp_path):
    specs = build_grid("smoke", tmp_path / "runs")
    committed = tmp_path / "report" / "records"
    committed.mkdir(parents=True)
    (tmp_path / "report" / "adapters").mkdir()
    for spec in specs[:3]:
        (committed / f"{spec.run_id}.json").write_text(json.dumps(
            {"status": "completed", "config": {**spec.config.to_dict(), "output_dir": "elsewhere"}}))
    (tmp_path / "report" / "adapters" / f"{specs[0].run_id}.safetensors").write_bytes(b"x")
    older = replace(specs[3].config, learning_rate=0.5)  # an older run under the same id
    (committed / f"{specs[3].run_id}.json").write_text(json.dumps({"status": "completed", "config": older.to_dict()}))
    assert grid.restore_committed(specs, committed) == 3
    assert read_record(specs[0].config.output_dir)["config"]["output_dir"] == specs[0].config.output_dir
    assert (Path(specs[0].config.output_dir) / "adapter.safetensors").read_bytes() == b"x"
    validate_grid(specs)  # restored runs carry the grid's settings
    assert grid.restore_committed(specs, committed) == 0  # never over an existing run


def test_a_runs_folder_made_with_other_settings_is_refused(tmp_path):
    spec = build_grid("smoke", tmp_path)[0]
    other = replace(spec.config, learning_rate=spec.config.learning_rate * 2)
    write_record(Path(spec.config.output_dir).mkdir(parents=True) or Path(spec.config.output_dir),
                 {"status": "completed", "config": other.to_dict()})
    with pytest.raises(ValueError, match="holds a completed run made with other settings \\(learning_rate\\)"):
        validate_grid([spec])
    write_record(Path(spec.config.output_dir), {"status": "completed", "config": replace(spec.config, num_threads=7).to_dict()})
    validate_grid([spec])  # execution settings may differ


@pytest.mark.slow
def test_relative_paths_mean_the_current_folder_for_the_sweep_and_its_notebooks(tmp_path, monkeypatch):
    """The notebooks run from the repository root: a relative --runs-dir or --glue-dir given
    elsewhere reaches them as the same absolute folder the sweep and its resume check use."""
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    specs = build_grid("smoke", "runs/x", glue_dir="glue")
    assert {str(Path(s.config.output_dir).parent) for s in specs} == {str(tmp_path / "here" / "runs" / "x")}
    assert {s.config.glue_dir for s in specs} == {str(tmp_path / "here" / "glue")}
    fake = FakeExecutor()
    monkeypatch.setattr(sweep, "execute_setting", fake)
    monkeypatch.setenv("LORA_NB_GLUE_DIR", str(GLUE_DIR))
    assert sweep.main(["--preset", "smoke", "--runs-dir", "runs/x"]) == 0
    assert len(list((tmp_path / "here" / "runs" / "x").glob("*/record.json"))) == len(specs)
    fake.calls.clear()
    assert sweep.main(["--preset", "smoke", "--runs-dir", "runs/x"]) == 0  # resumes: nothing runs
    assert fake.calls == []
