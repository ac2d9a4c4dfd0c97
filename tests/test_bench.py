"""The training benchmark (`python -m benchmarks.bench`) in a tiny configuration: every section
runs and writes positive numbers under the keys the report reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.bench import SETTINGS, main

from conftest import GLUE_DIR  # noqa: E402
TINY = ["--batch", "2", "--length", "16", "--warmup", "1", "--steps", "5", "--threads", "1"]


def _run(tmp_path: Path, *argv: str) -> dict:
    out = tmp_path / "bench.json"
    assert main([*TINY, *argv, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def _positive_stats(stats: dict) -> None:
    assert 0 < stats["min_s"] <= stats["median_s"] <= stats["max_s"]
    assert len(stats["times_s"]) == 5
    assert stats["tokens_per_s"] > 0


def test_bench_tiny_sections(tmp_path):
    data = _run(tmp_path, "--models", "tiny", "--sections", "1,2,3,6",
                "--memory-settings", "lora", "--matmul-size", "128")
    assert {"environment", "args", "train_step", "memory", "inference", "ceiling",
            "ratios"} <= set(data)
    step = data["train_step"]["tiny"]
    assert set(step["settings"]) == set(SETTINGS)
    for stats in step["settings"].values():
        _positive_stats(stats)
    # lora_nb and peft train the same parameters: LoRA A, B and the head
    assert step["trainable_parameters"]["lora"] == step["trainable_parameters"]["peft"]
    assert step["trainable_parameters"]["lora"] < step["trainable_parameters"]["full"]

    memory = data["memory"]["tiny"]["lora"]
    assert memory["peak_bytes"] >= memory["after_build_bytes"] > 0

    inference = data["inference"]["tiny"]
    assert set(inference) == {"base", "lora_unmerged", "lora_merged"}
    for stats in inference.values():
        _positive_stats(stats)

    ceiling = data["ceiling"]
    assert ceiling["matmul"]["flops_per_s"] > 0
    for setting in SETTINGS:
        fraction = ceiling["train_step"]["tiny"][setting]
        assert fraction["flops_per_step"] > 0 and fraction["fraction_of_ceiling"] > 0
    # FlopCounterMode's count: full fine-tuning computes every weight gradient, LoRA fewer
    counted = step["flops_per_step"]
    assert counted["lora"] == counted["peft"] < counted["full"]

    ratios = data["ratios"]
    for goal in ("tiny: lora/peft step time", "tiny: lora/full step time",
                 "tiny: merged/base inference latency", "tiny: lora step FLOP/s / matmul rate",
                 "tiny: lora/peft step time, dropout 0.1"):
        r = ratios[goal]
        assert 0 < r["min"] <= r["max"] and r["median"] > 0


@pytest.mark.filterwarnings("ignore:'pin_memory' argument")  # Trainer's default, on a CPU
@pytest.mark.slow  # real GLUE runs
def test_bench_real_data_sections(tmp_path):
    if not GLUE_DIR.is_dir():
        pytest.skip(f"no GLUE data at {GLUE_DIR}")
    data = _run(tmp_path, "--sections", "4,5", "--glue-dir", str(GLUE_DIR),
                "--epoch-examples", "32", "--run-examples", "32", "--run-epochs", "1",
                "--run-eval-examples", "32", "--seeds", "1", "--tmp-dir", str(tmp_path))
    variants = data["epoch"]["variants"]
    assert set(variants) == {"padded", "dynamic", "dynamic_grouped"}
    for v in variants.values():
        assert v["steps"] == 16 and v["wall_s"] > 0 and v["tokens"] >= v["real_tokens"] > 0
    # fixed padding processes the most tokens, the same real ones
    assert variants["padded"]["tokens"] == 16 * 2 * 16
    assert variants["padded"]["tokens"] >= variants["dynamic"]["tokens"]
    assert len({v["real_tokens"] for v in variants.values()}) == 1

    for pipeline in ("lora_nb", "peft_trainer"):
        (run,) = data["whole_run"]["pipelines"][pipeline]["runs"]
        assert run["wall_s"] > 0 and 0 <= run["best_accuracy"] <= 1
    assert {"epoch time padded/(dynamic+grouped)", "whole run lora_nb/(peft+Trainer) wall time",
            "best accuracy lora_nb", "best accuracy peft+Trainer"} <= set(data["ratios"])


def test_profile_prints_where_a_lora_step_spends_its_time(capsys):
    assert main(["--models", "tiny", "--profile", "--batch", "2", "--length", "8", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "Self CPU" in out and "aten::" in out


def test_dropout_settings_set_lora_dropout_in_both_libraries():
    from benchmarks.bench import DROPOUT, prepare_setting
    from benchmarks.harness import build_model

    ours = prepare_setting(build_model("tiny"), "lora_dropout")
    theirs = prepare_setting(build_model("tiny"), "peft_dropout")
    ours_p = {m.p for n, m in ours.named_modules() if n.endswith("lora_dropout")}
    theirs_p = {m.p for n, m in theirs.named_modules()
                if isinstance(m, torch.nn.Dropout) and ".lora_dropout." in f"{n}."}
    assert ours_p == theirs_p == {DROPOUT}
    plain = prepare_setting(build_model("tiny"), "lora")
    assert not any(isinstance(m, torch.nn.Dropout) for n, m in plain.named_modules() if "lora" in n)


def test_compare_peft_prints_both_ratios_and_the_operators(capsys):
    assert main(["--models", "tiny", "--compare-peft", "--batch", "2", "--length", "8", "--steps", "2",
                 "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "lora / peft step time" in out and "lora_dropout / peft_dropout step time" in out
    assert "aten::" in out
