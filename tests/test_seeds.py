"""Several seeds in one notebook execution give the records that separate executions give."""

import json

import papermill
import pytest

from conftest import GLUE_DIR
from lora_nb.rundir import REPO_ROOT, read_record

TIMING = {"wall_time_s", "train_seconds", "eval_seconds", "started_at", "finished_at",
          "train_tokens_per_s", "peak_memory_bytes", "config"}


def content(record: dict) -> dict:
    """A record without what depends on the clock or the folder (timings, the output path)."""
    out = {k: v for k, v in record.items() if k not in TIMING}
    out["config"] = {k: v for k, v in record["config"].items() if k != "output_dir"}
    for key in ("epochs", "evaluations"):
        out[key] = [{k: v for k, v in e.items() if k not in ("train_seconds", "eval_seconds")}
                    for e in record[key]]
    return out


def execute(tmp_path, name: str, **params) -> None:
    settings = dict(task="sst2", method="lora", model="all-MiniLM-L6-v2", glue_dir=str(GLUE_DIR),
                    max_train_samples=32, max_eval_samples=32, epochs=1, max_length=32,
                    num_threads=1, progress=False)
    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "train.ipynb"), str(tmp_path / f"{name}.ipynb"),
                               parameters={**settings, **params}, progress_bar=False, kernel_name="python3")


@pytest.mark.slow
def test_seeds_in_one_execution_match_separate_executions(tmp_path):
    execute(tmp_path, "together", seeds=[0, 1], output_dir=str(tmp_path / "together-s{seed}"))
    execute(tmp_path, "alone", seed=1, output_dir=str(tmp_path / "alone"))
    together = [read_record(tmp_path / f"together-s{s}") for s in (0, 1)]
    alone = read_record(tmp_path / "alone")
    assert [r["status"] for r in together] == ["completed", "completed"]
    assert together[0]["best_outputs"] != together[1]["best_outputs"] or \
        together[0]["loss_curve"] != together[1]["loss_curve"]  # the seeds differ
    assert json.dumps(content(together[1]), sort_keys=True) == json.dumps(content(alone), sort_keys=True)
