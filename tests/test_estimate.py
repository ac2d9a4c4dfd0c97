"""`python -m lora_nb.sweep --estimate`: runs, optimizer steps, tokens and GPU-hours of a preset."""

import math

import pytest

from conftest import GLUE_DIR
from lora_nb import estimate, sweep
from lora_nb.sweep import build_grid


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
    assert "30 runs" in out and "measured" in out and "upper bound" not in out
    sst2 = next(line for line in out.splitlines() if line.startswith("| sst2"))
    # 18 runs × 2 epochs × ceil(2000 / 16) steps
    assert "4,500" in sst2
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written
    assert sweep.main(["--preset", "cpu", "--runs-dir", str(tmp_path), "--tokens-per-second", "5"]) == 2
