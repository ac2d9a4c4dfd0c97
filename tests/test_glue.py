"""Tasks, local GLUE loading, tokenisation (cached), subsets and batches, on ../shared/glue."""

from unittest import mock

import pytest
import torch

from lora_nb.glue import TASKS, get_task, load_glue, make_dataloader, subset, tokenize_glue

from conftest import GLUE_DIR

LOCAL_TASKS = ["sst2", "mrpc", "cola", "stsb", "mnli", "qqp"]


@pytest.mark.parametrize("task", LOCAL_TASKS)
def test_each_local_task_tokenises_with_its_columns_and_labels(task, minilm_tokenizer):
    spec = get_task(task)
    raw = load_glue(get_task(task), GLUE_DIR)
    for key in filter(None, spec.text_keys):
        assert key in raw["train"].column_names
    data = tokenize_glue(raw, minilm_tokenizer, get_task(task), max_length=64)
    assert set(data) >= {"train", spec.eval_splits[0]}
    train = data["train"]
    assert {"input_ids", "attention_mask", "labels", "length"} <= set(train.column_names)
    assert max(train["length"]) <= 64
    labels = train["labels"][:500]
    if spec.is_regression:
        assert train.features["labels"].dtype == "float32" and max(labels) <= 5.0
    else:
        assert train.features["labels"].dtype == "int64"
        assert set(labels) <= set(range(spec.num_labels)) and len(set(labels)) > 1
    if spec.text_keys[1] is not None:  # pairs are encoded with a separator between them
        assert train[0]["input_ids"].count(minilm_tokenizer.sep_token_id) == 2


def test_all_eight_tasks_are_registered():
    assert set(TASKS) == {"mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"}
    assert TASKS["stsb"].num_labels == 1 and TASKS["mnli"].num_labels == 3
    assert TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")


def test_second_tokenisation_hits_the_cache(minilm_tokenizer):
    raw = load_glue(get_task("mrpc"), GLUE_DIR)
    first = tokenize_glue(raw, minilm_tokenizer, get_task("mrpc"), max_length=96)
    with mock.patch.object(type(minilm_tokenizer), "__call__", side_effect=AssertionError("tokenised again")):
        second = tokenize_glue(load_glue(get_task("mrpc"), GLUE_DIR), minilm_tokenizer, get_task("mrpc"), max_length=96)
    assert second["train"]["input_ids"][:5] == first["train"]["input_ids"][:5]
    assert second["train"].cache_files


def test_missing_task_or_split_lists_what_the_directory_holds(tmp_path):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.parquet").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no rte/\{train,validation\}.*holds: sst2/train.parquet"):
        load_glue(get_task("rte"), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no sst2/\{validation\}"):
        load_glue(get_task("sst2"), tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_glue(get_task("sst2"), tmp_path / "nowhere")


def test_glue_dir_from_environment(monkeypatch):
    monkeypatch.setenv("LORA_NB_GLUE_DIR", str(GLUE_DIR))
    assert len(load_glue(get_task("mrpc"))["validation"]) == 408


def test_subset_is_deterministic_per_seed(minilm_tokenizer):
    train = tokenize_glue(load_glue(get_task("mrpc"), GLUE_DIR), minilm_tokenizer, get_task("mrpc"), 64)["train"]
    a, b, c = subset(train, 50, seed=1), subset(train, 50, seed=1), subset(train, 50, seed=2)
    assert len(a) == 50 and a["input_ids"] == b["input_ids"] and a["input_ids"] != c["input_ids"]
    assert subset(train, None, 0) is train and subset(train, 10**9, 0) is train


def test_batches_are_padded_dynamically(minilm_tokenizer):
    data = tokenize_glue(load_glue(get_task("sst2"), GLUE_DIR), minilm_tokenizer, get_task("sst2"), 128)
    train = subset(data["train"], 256, 0)
    lengths = train["length"]
    for grouped in (False, True):
        loader = make_dataloader(train, minilm_tokenizer, 16, train=True, group_by_length=grouped)
        batches = list(loader)
        assert sum(len(b["labels"]) for b in batches) == 256
        for b in batches:  # each batch is as long as its longest example, no longer
            assert b["input_ids"].shape[1] == int(b["attention_mask"].sum(1).max())
        padded = sum(b["input_ids"].numel() for b in batches)
        assert padded >= sum(lengths)
    fixed = next(iter(make_dataloader(train, minilm_tokenizer, 16, train=True, pad_to=128)))
    assert fixed["input_ids"].shape == (16, 128)
    ordered = list(make_dataloader(train, minilm_tokenizer, 32, train=False))
    widths = [b["input_ids"].shape[1] for b in ordered]
    assert widths == sorted(widths) and torch.is_tensor(ordered[0]["labels"])


def test_length_grouping_wastes_less_padding(minilm_tokenizer):
    data = tokenize_glue(load_glue(get_task("sst2"), GLUE_DIR), minilm_tokenizer, get_task("sst2"), 128)
    train = subset(data["train"], 1024, 0)
    tokens = {g: sum(b["input_ids"].numel() for b in make_dataloader(train, minilm_tokenizer, 16, train=True, group_by_length=g))
              for g in (False, True)}
    assert tokens[True] < tokens[False]


def test_the_dev_split_is_held_out_of_training_the_same_for_every_seed():
    import datasets

    from lora_nb.glue import split_dev

    train = datasets.Dataset.from_dict({"idx": list(range(200)), "label": [0, 1] * 100})
    rest, dev = split_dev(train, 1000, seed=0)
    assert len(dev) == 20 and len(rest) == 180  # at most 10% of the training split
    assert not set(dev["idx"]) & set(rest["idx"])
    again, dev_again = split_dev(train, 1000, seed=0)
    assert dev_again["idx"] == dev["idx"]
    assert split_dev(train, 5, seed=0)[1].num_rows == 5
    assert split_dev(train, 0, seed=0) == (train, None)
