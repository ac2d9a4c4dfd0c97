"""Real short runs: all-MiniLM-L6-v2 on ../shared/glue, on the CPU."""

import json

import pytest
import torch
from accelerate import Accelerator

from conftest import GLUE_DIR, assert_valid_record
from lora_nb import RunConfig, load_adapter, run
from lora_nb.checkpoint import read_adapter
from lora_nb.rundir import ADAPTER_FILE
from lora_nb.glue import load_glue, make_dataloader, subset, tokenize_glue
from lora_nb.models import load_model, load_model_config
from lora_nb.rundir import read_record
from lora_nb.train import evaluate

pytestmark = pytest.mark.slow  # real runs of all-MiniLM-L6-v2


def quick(tmp_path, **changes) -> RunConfig:
    settings = dict(task="mrpc", method="lora", model="all-MiniLM-L6-v2", glue_dir=str(GLUE_DIR),
                    max_train_samples=160, max_eval_samples=96, epochs=2, batch_size=16,
                    learning_rate=1e-3, max_length=64, output_dir=str(tmp_path / "run"), num_threads=2)
    return RunConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def mrpc_run(tmp_path_factory):
    cfg = quick(tmp_path_factory.mktemp("mrpc"))
    return cfg, run(cfg, progress=False)


def test_loss_goes_down_and_the_record_is_complete(mrpc_run):
    cfg, record = mrpc_run
    assert_valid_record(record)
    assert record["epochs"][1]["train_loss"] < record["epochs"][0]["train_loss"]
    assert record == read_record(cfg.output_dir)  # what run() returns is what it wrote
    assert record["config"] == cfg.to_dict() and record["primary_metric"] == "accuracy"
    assert record["best_epoch"] in (1, 2)
    assert record["best_metric"] == max(e["primary"] for e in record["epochs"])
    assert set(record["epochs"][0]["eval"]["validation"]) == {"accuracy", "f1"}
    assert record["data"] == {"train_examples": 160, "eval_examples": {"validation": 96}}
    counts = record["parameters"]
    assert counts["lora"] == 2 * 6 * 384 * 8 * 2  # |Θ| = 2 · L̂ · d · r over Wq and Wv (§7.1)
    assert counts["trainable"] == counts["lora"] + counts["head"]
    for key in ("wall_time_s", "train_tokens_per_s", "peak_memory_bytes"):
        assert record[key] > 0
    assert record["versions"]["torch"] == torch.__version__ and record["device"].startswith("cpu")
    assert len(record["loss_curve"]) >= 4 and "finished_at" in record


def test_adapter_reloads_to_the_same_validation_metric(mrpc_run):
    cfg, record = mrpc_run
    state, meta = read_adapter(f"{cfg.output_dir}/{ADAPTER_FILE}")
    assert meta["epoch"] == record["best_epoch"] and meta["lora_config"]["r"] == 8
    model, tokenizer = load_model(cfg.model, load_model_config(cfg.model, 2))
    load_adapter(model, f"{cfg.output_dir}/{ADAPTER_FILE}")
    data = tokenize_glue(load_glue(cfg.glue_task, GLUE_DIR), tokenizer, cfg.glue_task, cfg.max_length)
    loader = make_dataloader(subset(data["validation"], 96, 0), tokenizer, 64, train=False)
    scores = evaluate(model, loader, cfg.glue_task, Accelerator(), progress=False)
    assert scores["accuracy"] == pytest.approx(record["best_metric"], abs=1e-9)


def test_a_completed_run_is_never_overwritten_silently(mrpc_run):
    cfg, record = mrpc_run
    with pytest.raises(FileExistsError, match="holds a completed run"):
        run(cfg)
    assert read_record(cfg.output_dir) == record


def test_stsb_trains_as_regression(tmp_path):
    record = run(quick(tmp_path, task="stsb", max_train_samples=64, max_eval_samples=64, epochs=1),
                 progress=False)
    assert record["primary_metric"] == "pearson"
    assert set(record["epochs"][0]["eval"]["validation"]) == {"pearson", "spearman"}
    assert record["parameters"]["head"] == 384 * 384 + 384 + 384 * 1 + 1  # pooler + 1-output classifier


def test_non_finite_loss_stops_the_run_with_a_failed_record(tmp_path, monkeypatch):
    monkeypatch.setattr("lora_nb.train.torch.isfinite", lambda t: torch.tensor(False))
    cfg = quick(tmp_path, max_train_samples=32, max_eval_samples=32, epochs=1)
    with pytest.raises(FloatingPointError, match="loss is .* at epoch 1, step 1"):
        run(cfg, progress=False)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == "failed" and "FloatingPointError" in record["error"]
    monkeypatch.undo()
    assert run(quick(tmp_path, max_train_samples=16, max_eval_samples=16, epochs=1),
               progress=False)["status"] == "completed"  # a failed run may be rerun in place


def test_init_adapter_starts_lora_from_another_run(mrpc_run, tmp_path):
    cfg, _ = mrpc_run
    source, _ = read_adapter(f"{cfg.output_dir}/{ADAPTER_FILE}")
    record = run(quick(tmp_path, task="stsb", max_train_samples=16, max_eval_samples=16, epochs=1,
                       learning_rate=1e-12, init_adapter=f"{cfg.output_dir}/{ADAPTER_FILE}"), progress=False)
    trained, _ = read_adapter(tmp_path / "run" / ADAPTER_FILE)
    lora_keys = [k for k in source if k.endswith("lora_B")]
    assert record["status"] == "completed" and lora_keys
    for key in lora_keys:  # a learning rate of 1e-12 leaves the MNLI-style start in place
        assert torch.allclose(trained[key], source[key], atol=1e-6)


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_the_schedule_per_optimizer_step_does_not_depend_on_the_process_count(processes):
    """accelerate steps the scheduler once per process per optimizer step; the schedule must
    still warm up, decay and reach zero over the run's optimizer steps."""
    from lora_nb.train import linear_schedule

    def trajectory(n: int) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = linear_schedule(opt, total_steps=50, warmup_ratio=0.1, num_processes=n)
        lrs = []
        for _ in range(50):
            lrs.append(sched.get_last_lr()[0])
            opt.step()
            for _ in range(n):  # what accelerate's AcceleratedScheduler does
                sched.step()
        return lrs + [sched.get_last_lr()[0]]

    one, many = trajectory(1), trajectory(processes)
    assert many == pytest.approx(one)
    assert max(one) == pytest.approx(1.0) and one[-1] == pytest.approx(0.0) and one[2] < one[5]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny BERT without dropout: runs are deterministic given the seed."""
    from lora_nb.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "bert", "bert", dropout=0.0)


def test_gradient_accumulation_reaches_the_global_batch_with_the_same_updates(tmp_path, tiny_folder):
    """Batch 4 × 2 accumulation steps trains as batch 8 does (the same examples per optimizer step,
    the same loss scale, one clipping per step): the authors' 8-GPU global batch on fewer GPUs."""
    common = dict(model=str(tiny_folder), task="sst2", max_train_samples=64, max_eval_samples=32,
                  epochs=2, max_length=32, group_by_length=False, learning_rate=1e-3, num_threads=1,
                  method="lora", max_grad_norm=0.5, mixed_precision="no")  # fp32: exact sums
    big = run(quick(tmp_path, **common, batch_size=8, output_dir=str(tmp_path / "big")), progress=False)
    acc = run(quick(tmp_path, **common, batch_size=4, global_batch_size=8,
                    output_dir=str(tmp_path / "acc")), progress=False)
    assert acc["batch"] == {"per_device": 4, "processes": 1, "gradient_accumulation_steps": 2, "global": 8}
    assert big["batch"]["gradient_accumulation_steps"] == 1
    assert acc["optimizer_steps"] == big["optimizer_steps"] == 2 * 64 // 8
    assert [e["step"] for e in acc["evaluations"]] == [e["step"] for e in big["evaluations"]] == [8, 16]
    a, _ = read_adapter(tmp_path / "acc" / ADAPTER_FILE)
    b, _ = read_adapter(tmp_path / "big" / ADAPTER_FILE)
    for key in b:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    with pytest.raises(ValueError, match="global_batch_size: must be None or a positive multiple of batch_size"):
        quick(tmp_path, batch_size=16, global_batch_size=24).validate()


def test_a_step_budget_with_a_dev_split_is_evaluated_on_both_and_judged(tmp_path):
    cfg = quick(tmp_path, max_train_samples=64, max_eval_samples=32, max_steps=6, eval_every=2,
                dev_examples=24, max_length=32)
    record = run(cfg, progress=False)
    assert record["optimizer_steps"] == 6 and len(record["epochs"]) == 2  # 64 examples: 4 steps an epoch
    assert [e["step"] for e in record["evaluations"]] == [2, 4, 6]
    assert record["data"] == {"train_examples": 64, "eval_examples": {"validation": 32, "dev": 24}}
    assert all(set(e["eval"]) == {"validation", "dev"} for e in record["evaluations"])
    assert set(record["best_outputs"]) == {"validation"}  # dev predictions are not kept
    assert record["convergence"]["split"] == "dev" and not record["convergence"]["converged"]
    assert record["mixed_precision"] in ("bf16", "no")
