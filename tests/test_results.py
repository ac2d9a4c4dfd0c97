"""Records → tables, on a fixed set of hand-written records with medians computed by hand."""

import json

import pandas as pd
import pytest

from lora_nb import results


def write(runs, run_id, task, method, seed, metric, tags, trainable=1000, head=100, status="completed", **cfg):
    d = runs / run_id
    d.mkdir(parents=True)
    record = {"status": status, "primary_metric": "accuracy", "best_metric": metric, "best_epoch": 1,
              "config": {"task": task, "method": method, "model": "m", "seed": seed, "tags": tags,
                         "targets": cfg.get("targets", ["q", "v"]), "r": cfg.get("r", 8), "alpha": 8.0,
                         "learning_rate": 1e-3, "epochs": 2, "max_length": 128},
              "parameters": {"total": 10**6, "trainable": trainable, "lora": trainable - head,
                             "head": head, "trainable_without_head": trainable - head},
              "epochs": [{"epoch": 1, "train_seconds": 2.0, "train_loss": 0.5, "primary": metric, "eval": {}}],
              "loss_curve": [[1, 0.7], [2, 0.5]], "data": {"train_examples": 512, "eval_examples": {"validation": 400}}}
    (d / "record.json").write_text(json.dumps(record))


@pytest.fixture
def runs(tmp_path):
    for seed, (lora, full) in enumerate([(0.80, 0.70), (0.90, 0.75), (0.85, 0.90)]):
        write(tmp_path, f"t2-sst2-lora-s{seed}", "sst2", "lora", seed, lora, ["table2"], trainable=1100)
        write(tmp_path, f"t2-sst2-full-s{seed}", "sst2", "full", seed, full, ["table2"], trainable=50100)
    write(tmp_path, "t2-sst2-full-s9", "sst2", "full", 9, 0.10, ["table2"], status="failed")
    for r, acc in [(1, 0.60), (8, 0.64), (64, 0.62)]:
        write(tmp_path, f"t6-q-r{r}", "mnli", "lora", 0, acc - 0.05, ["table6"], targets=["q"], r=r)
        write(tmp_path, f"t6-qv-r{r}", "mnli", "lora", 0, acc, ["table6"], targets=["q", "v"], r=r)
    write(tmp_path, "t6-qv-r64-s1", "mnli", "lora", 1, 0.5, ["subspace"], r=64)
    return tmp_path


def test_records_load_one_row_per_run(runs):
    df = results.load_records(runs)
    assert len(df) == 14 and (df["status"] == "failed").sum() == 1
    assert set(df.loc[df["method"] == "lora", "weight_type"]) == {"Wq", "Wq,Wv"}


def test_table2_medians_and_std_by_hand(runs):
    t2 = results.table2(results.load_records(runs)).set_index("method")
    assert t2.at["lora", "median"] == pytest.approx(85.0)  # median of 80, 90, 85
    assert t2.at["lora", "std"] == pytest.approx(5.0)  # sample std of 80, 85, 90
    assert t2.at["full", "median"] == pytest.approx(75.0)  # the failed run is left out
    assert t2.at["full", "seeds"] == 3 and t2.at["lora", "trainable_without_head"] == 1000
    wide = results.table2_display(t2.reset_index(), "m")
    ours = wide[wide["source"] == "ours (m)"].set_index("method")
    assert ours.at["LoRA", "SST-2"] == "85.0 ±5.0" and ours.at["FT", "SST-2"] == "75.0 ±10.4"  # sample std of 70, 75, 90
    assert ours.at["LoRA", "trainable (no head)"] == "0.00M"
    paper = wide[wide["source"] == "paper (RoBERTa-base)"].set_index("method")
    assert paper.at["LoRA", "SST-2"] == "95.1" and paper.at["FT", "SST-2"] == "94.8"


def test_table2_findings_quote_the_numbers(runs):
    text = results.table2_findings(results.table2(results.load_records(runs)))
    assert "LoRA scores 85.0 and full fine-tuning 75.0 (+10.0 points)" in text
    assert "SST-2 +10.0" in text and "2.00% of FT's parameters" in text
    assert "LoRA matches it within the seed spread on SST-2" in text  # +10 vs FT std 10.4


def test_table6_by_weight_type_and_rank(runs):
    t6 = results.table6(results.load_records(runs))
    assert len(t6) == 6  # the extra-seed subspace run is not a Table 6 cell
    cell = t6[(t6["weight_type"] == "Wq,Wv") & (t6["r"] == 8)].iloc[0]
    assert cell["median"] == pytest.approx(64.0) and cell["seeds"] == 1 and pd.isna(cell["std"])
    wide = results.table6_display(t6, "m")
    assert list(wide["weight type"][:2]) == ["Wq", "Wq,Wv"]
    gpt3 = wide[wide["source"] == "paper (GPT-3 175B)"].set_index("weight type")
    assert gpt3.at["Wq,Wv", "r=8"] == "91.6"
    course = wide[wide["source"].str.startswith("tn292")].set_index("weight type")
    assert course.at["Wq", "r=64"] == "83.2"
    text = results.table6_findings(t6)
    assert "400 validation examples: one cell's sampling error alone is about ±2.5 points" in text  # p = 0.595
    assert "All 6 cells lie within two sampling errors of their mean (59.5)" in text  # 55..64 vs ±4.9


def test_table6_findings_name_effects_beyond_the_sampling_error(runs):
    for r, acc in [(1, 0.30), (4, 0.90)]:
        write(runs, f"t6-qv-extra-r{r}", "mnli", "lora", 0, acc, ["table6"], targets=["q", "v"], r=r)
    write(runs, "t6-q-r4", "mnli", "lora", 0, 0.50, ["table6"], targets=["q"], r=4)
    text = results.table6_findings(results.table6(results.load_records(runs)))
    assert "best rank up to 8 (r=4, 90.0) against r=64 (62.0): a small rank suffices" in text
    assert "Wq r=8: 59.0, Wq,Wv r=4: 90.0" in text and "beats Wq alone, as in the paper" in text


def test_table2_findings_flag_tasks_where_nothing_is_learned(runs):
    for seed in range(3):
        write(runs, f"t2-sst2-head-s{seed}", "sst2", "head", seed, 0.74 + 0.01 * seed, ["table2"])
    text = results.table2_findings(results.table2(results.load_records(runs)))
    assert "On SST-2 FT does not beat training the head alone" in text and "exceeds" not in text
