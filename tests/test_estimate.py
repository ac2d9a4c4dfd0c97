"""`python -m lora_nb.sweep --estimate`: runs, optimizer steps, tokens and GPU-hours of a preset."""

import math

import pytest

from conftest import GLUE_DIR
from lora_nb import estimate, sweep
from lora_nb.grid import build_grid


def test_steps_and_tokens_follow_the_global_batch_and_the_measured_lengths(tmp_path):
    specs = [s for s in build_grid("paper", tmp_path) if s.run_id in ("t2-mnli-lora-s0", "t2-rte-full-lr1e-05-s0")]
    costs = {c.run_id: c for c in estimate.run_costs(specs, {"mnli": 40.0})}
    mnli, rte = costs["t2-mnli-lora-s0"], costs["t2-rte-full-lr1e-05-s0"]
    # MNLI LoRA: 30 epochs over GLUE's 392,702 examples at the scripts' global batch 8 × 16
    assert mnli.optimizer_steps == 30 * math.ceil(392_702 / 128)
    assert mnli.tokens == 30 * 392_702 * 40.0 and mnli.lengths_measured
    # RTE FT: no local data here, so max_length per example (an upper bound); batch 32, 10 epochs
    assert rte.optimizer_steps == 10 * math.ceil(2_490 / 32)
    assert rte.tokens == 10 * 2_490 * 512 and not rte.lengths_measured
    table = estimate.summary(list(costs.values()), tokens_per_second=1e5)
    assert "GPU-hours at 100,000 tokens/s" in table and "upper bound" in table
    with pytest.raises(ValueError, match="tokens_per_second"):
        estimate.summary(list(costs.values()), tokens_per_second=0)


def test_the_estimate_command_measures_lengths_on_local_data(tmp_path, capsys):
    if not GLUE_DIR.is_dir():
        pytest.skip(f"no GLUE data at {GLUE_DIR}")
    assert sweep.main(["--preset", "cpu", "--runs-dir", str(tmp_path), "--glue-dir", str(GLUE_DIR),
                       "--estimate", "--tokens-per-second", "1000"]) == 0
    out = capsys.readouterr().out
    assert "6 runs" in out and "measured" in out and "upper bound" not in out
    sst2 = next(line for line in out.splitlines() if line.startswith("| sst2"))
    # 2 methods × 3 seeds × a budget of 1,200 optimizer steps
    assert "7,200" in sst2
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written
    assert sweep.main(["--preset", "cpu", "--runs-dir", str(tmp_path), "--tokens-per-second", "5"]) == 2


def test_core_hours_come_from_the_records_measured_seconds(tmp_path):
    specs = [s for s in build_grid("cpu", tmp_path)]
    costs = estimate.run_costs(specs, {"sst2": 10.0}, {"sst2": (66_349, 872)})
    rates = {"lora": (1e-3, 2e-3), "full": (2e-3, 2e-3)}  # core-seconds per token, per example
    hours = estimate.core_hours(specs, costs, rates, {"sst2": (66_349, 872)})
    # per run: 1,200 steps × 16 × 10 tokens × rate + 8 evaluations × (872 + 1,000 dev) × 2e-3
    lora = 1200 * 16 * 10 * 1e-3 + 8 * 1872 * 2e-3
    full = 1200 * 16 * 10 * 2e-3 + 8 * 1872 * 2e-3
    assert hours["all"] == pytest.approx(3 * (lora + full) / 3600)
    records = [{"status": "completed", "train_tokens_per_s": 500.0, "torch_threads": 2,
                "eval_seconds": 10.0, "evaluations": [{}] * 5,
                "data": {"eval_examples": {"validation": 100}}, "config": {"method": "lora"}}]
    train, evaluate = estimate.measured_rates(records)["lora"]
    assert train == pytest.approx(2 / 500) and evaluate == pytest.approx(2 * 10 / 500)
