"""The tuned sweep: the first seed runs every rate of a method's grid; once those runs finish,
`tuning.choose_rate` picks the rate on the dev split and the other seeds (and Tables 5–6) run at
it. Fake records, no training."""

import pytest

from lora_nb import grid, presets, sweep
from lora_nb.rundir import write_record


def finish(spec, dev: float, status: str = "completed") -> None:
    """Write a finished record for `spec` whose dev score is `dev`."""
    config = spec.config.to_dict()
    evaluations = [{"step": s, "primary": 0.5, "eval": {"validation": {"accuracy": 0.5},
                                                         "dev": {"accuracy": dev}}} for s in (1, 2, 3, 4)]
    spec_dir = spec.config.output_dir
    import pathlib

    pathlib.Path(spec_dir).mkdir(parents=True, exist_ok=True)
    write_record(spec_dir, {"status": status, "config": config, "primary_metric": "accuracy",
                            "evaluations": evaluations, "best_metric": 0.5, "optimizer_steps": 4})


def test_the_other_seeds_wait_for_the_tuning_runs_then_run_at_the_chosen_rate(tmp_path):
    specs, rates, _ = grid.resolve_grid("study", tmp_path)
    assert rates == {} and {s.config.seed for s in specs} == {0}
    preset = presets.PRESETS["reference"]
    specs, rates, _ = grid.resolve_grid(preset, tmp_path)
    mnli_lora = [s for s in specs if s.run_id.startswith("t2-mnli-lora-")]
    assert len(mnli_lora) == 3
    for spec, dev in zip(mnli_lora[:2], (0.6, 0.7)):
        finish(spec, dev)
    assert grid.resolve_grid(preset, tmp_path)[1] == {}  # one tuning run still to finish
    finish(mnli_lora[2], 0.99, status="failed")  # a failed run takes no part in the choice
    specs, rates, _ = grid.resolve_grid(preset, tmp_path)
    chosen = mnli_lora[1].config.learning_rate
    assert rates == {("mnli", "lora"): chosen}
    ids = {s.run_id: s for s in specs}
    assert [f"t2-mnli-lora-lr{chosen:g}-s{seed}" in ids for seed in range(4)] == [True] * 4
    assert all(ids[f"t2-mnli-lora-lr{chosen:g}-s{seed}"].config.learning_rate == chosen for seed in range(4))
    # Tables 5–6 at LoRA's MNLI rate, 3 seeds; their Wq,Wv r = 8 cell is Table 2's run
    t6 = [s for s in specs if "table6" in s.config.tags]
    assert len(t6) == 15 * 3 and {s.config.learning_rate for s in t6} == {chosen}
    assert "table6" in ids[f"t2-mnli-lora-lr{chosen:g}-s0"].config.tags
    assert not any(s.run_id.startswith("t2-mnli-full-lr") and s.config.seed > 0 for s in specs)


def test_list_names_the_settings_that_wait_for_their_rate(tmp_path, capsys):
    assert sweep.main(["--preset", "reference", "--runs-dir", str(tmp_path), "--list"]) == 0
    out = capsys.readouterr().out
    assert "t2-mnli-lora-lr0.001-s0" in out and "once its tuning runs finish" in out
    assert sweep.main(["--preset", "study", "--runs-dir", str(tmp_path), "--list"]) == 0
    assert "once its tuning runs finish" not in capsys.readouterr().out


def test_the_estimate_counts_every_run_before_tuning(tmp_path):
    specs = grid.build_grid("reference", tmp_path, placeholder_rates=True)
    assert len(specs) > len(grid.build_grid("reference", tmp_path))


def test_a_rate_chosen_at_the_grid_edge_runs_one_rate_further_first(tmp_path):
    preset = presets.PRESETS["reference"]
    specs, _, _ = grid.resolve_grid(preset, tmp_path)
    mnli_lora = [s for s in specs if s.run_id.startswith("t2-mnli-lora-")]
    for spec, dev in zip(mnli_lora, (0.6, 0.7, 0.8)):  # the best at the top rate, 3e-3
        finish(spec, dev)
    specs, rates, _ = grid.resolve_grid(preset, tmp_path)
    ids = {s.run_id: s for s in specs}
    assert ("mnli", "lora") not in rates  # not chosen yet: the grid grows first
    assert "t2-mnli-lora-lr0.009-s0" in ids and "t2-mnli-lora-lr0.009-s1" not in ids
    assert ids["t2-mnli-lora-lr0.009-s0"].config.learning_rate == 0.009
    finish(ids["t2-mnli-lora-lr0.009-s0"], 0.75)  # now bracketed: 3e-3 stays the best
    specs, rates, _ = grid.resolve_grid(preset, tmp_path)
    assert rates[("mnli", "lora")] == 3e-3
    assert "t2-mnli-lora-lr0.003-s1" in {s.run_id for s in specs}
    # the same rule for every method: FT's grid grows at its bottom when 2e-5 is best
    mnli_full = sorted((s for s in specs if s.run_id.startswith("t2-mnli-full-")), key=lambda s: s.config.learning_rate)
    for spec, dev in zip(mnli_full, (0.8, 0.7, 0.6)):
        finish(spec, dev)
    specs, rates, _ = grid.resolve_grid(preset, tmp_path)
    assert "t2-mnli-full-lr8e-06-s0" in {s.run_id for s in specs} and ("mnli", "full") not in rates
