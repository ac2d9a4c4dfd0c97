"""Every committed run record loads through the one reader (`lora_nb.rundir.load_record`), its
config is a `RunConfig`, and the same-run rule (`RunConfig.computation`) holds across runs folders."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lora_nb.config import RunConfig
from lora_nb.rundir import (COMPLETED, FAILED, REPO_ROOT, RUNNING, RecordError, find_records,
                            is_completed, load_record, read_record, write_record)

# Every folder of committed records: report/records, the archived and study runs beside it.
RECORD_FOLDERS = sorted({p.parent for p in (REPO_ROOT / "report").rglob("*.json")} - {REPO_ROOT / "report"})


def test_there_are_committed_records():
    assert RECORD_FOLDERS and any(True for folder in RECORD_FOLDERS for _ in find_records(folder))


@pytest.mark.parametrize("folder", RECORD_FOLDERS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_committed_record_loads(folder):
    records = [load_record(path) for _, path in find_records(folder)]
    assert records
    for record in records:
        assert record["status"] in (COMPLETED, FAILED, RUNNING)
        config = RunConfig.from_dict(record["config"])
        assert config.computation()["task"] == record["config"]["task"]
        if is_completed(record):
            assert record["primary_metric"] and record["evaluations"]


def test_the_reader_names_the_file_and_what_is_wrong(tmp_path):
    cases = {"a.json": ('{"status": "compl', "not valid JSON"), "b.json": ("[1]", "a JSON list"),
             "c.json": ('{"status": "completed"}', "it has no config"),
             "d.json": (b"\x89PNG\xff\xfe", "not a text file")}
    for name, (content, problem) in cases.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        with pytest.raises(RecordError, match=problem) as err:
            load_record(path)
        assert str(err.value).startswith(f"{path}: ") and problem in err.value.problem
    # A run folder's record without a config (a run killed early) is still its record.
    write_record(tmp_path, {"status": RUNNING})
    assert read_record(tmp_path) == {"status": RUNNING} and not is_completed(read_record(tmp_path))
    assert read_record(tmp_path / "none") is None and not is_completed(None)


def test_one_rule_for_the_same_run(tmp_path):
    """Where a run goes, its threads, labels and evaluation batch are not what it computes; the
    adapter it starts from counts by its run folder, wherever the runs folder lies."""
    config = RunConfig(method="lora", init_adapter=str(tmp_path / "a" / "t2-mnli-lora-s0" / "adapter.safetensors"))
    moved = replace(config, output_dir="elsewhere", glue_dir="glue", num_threads=3, tags=["table6"],
                    eval_batch_size=8, overwrite=True,
                    init_adapter=str(tmp_path / "b" / "t2-mnli-lora-s0" / "adapter.safetensors"))
    assert config.computation() == moved.computation()
    assert config.differs_from(moved.to_dict()) == []
    assert config.differs_from(replace(config, r=4, seed=1).to_dict()) == ["r", "seed"]
    assert config.differs_from(replace(config, seed=1).to_dict(), seed=False) == []
    other_start = replace(config, init_adapter=str(tmp_path / "a" / "t2-mnli-lora-s1" / "adapter.safetensors"))
    assert config.differs_from(other_start.to_dict()) == ["init_adapter"]
    # An older record without a newer field was made with its default.
    older = {k: v for k, v in config.to_dict().items() if k != "dev_examples"}
    assert config.differs_from(older) == []
    assert json.dumps(config.computation(), sort_keys=True)  # a key the sweep can hash
