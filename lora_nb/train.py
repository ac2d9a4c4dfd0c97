"""One fine-tuning run: data, model, method, training loop, run record, adapter.

    python -m lora_nb.train --task mrpc --method lora --r 8 --model all-MiniLM-L6-v2 \
        --glue-dir ../shared/glue --output-dir runs/mrpc-lora

Each epoch is evaluated with the LoRA weights merged (§4.1: no extra inference latency) and the
run is scored at its best epoch (§5.1). The record (`record.json`) is written atomically: a run
that dies leaves a record whose status is ``running`` or ``failed``, never one that looks complete.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import typing
from dataclasses import fields
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup, set_seed

from .adapter import ADAPTER_FILE, load_adapter, save_adapter
from .config import RunConfig, paper_config
from .glue import get_task, load_glue, make_dataloader, subset, tokenize_glue
from .lora import merge_lora, unmerge_lora
from .metrics import glue_metric
from .models import load_model, load_model_config, max_model_length
from .modes import count_parameters, prepare_model

RECORD_FILE = "record.json"
COMPLETED, FAILED, RUNNING = "completed", "failed", "running"


def read_record(run_dir: str | os.PathLike) -> dict | None:
    """The record in `run_dir`, or None when there is none or it can't be parsed."""
    try:
        return json.loads((Path(run_dir) / RECORD_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_record(run_dir: Path, record: dict) -> None:
    """Write the record atomically (temporary file, then rename)."""
    tmp = run_dir / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, run_dir / RECORD_FILE)


def _environment(accelerator: Accelerator) -> dict:
    import accelerate
    import datasets
    import transformers

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    device = accelerator.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": f"{device.type}: {name}",
        "num_processes": accelerator.num_processes,
        "torch_threads": torch.get_num_threads(),
        "mixed_precision": accelerator.mixed_precision,
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "datasets": datasets.__version__,
            "accelerate": accelerate.__version__,
        },
        "git_commit": commit,
    }


def _peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated, or the process's peak resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:  # VmHWM is this process's own peak; ru_maxrss can carry a parent's over fork + exec
        status = Path("/proc/self/status").read_text()
        return int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1]) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def prepare_run_dir(config: RunConfig) -> Path:
    """Create the run directory; refuse to replace a completed run unless `overwrite`."""
    run_dir = Path(config.output_dir)
    previous = read_record(run_dir)
    if previous and previous.get("status") == COMPLETED and not config.overwrite:
        raise FileExistsError(
            f"output_dir: {run_dir} holds a completed run; choose another output_dir or set "
            "overwrite=True"
        )
    if run_dir.exists() and (previous is not None or config.overwrite):
        for stale in (ADAPTER_FILE, RECORD_FILE):
            (run_dir / stale).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


@torch.no_grad()
def evaluate(model, loader, task_name: str, accelerator: Accelerator, progress: bool) -> dict:
    """Metrics of `model` on one split, with the LoRA weights merged (§4.1)."""
    is_regression = get_task(task_name).is_regression
    metric = glue_metric(task_name)
    model.eval()
    merge_lora(accelerator.unwrap_model(model))
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        preds = logits.squeeze(-1) if is_regression else logits.argmax(-1)
        preds, refs = accelerator.gather_for_metrics((preds, batch["labels"]))
        metric.add_batch(predictions=preds.float().cpu() if is_regression else preds.cpu(),
                         references=refs.cpu())
    unmerge_lora(accelerator.unwrap_model(model))
    model.train()
    return metric.compute()


def run(config: RunConfig, progress: bool = True) -> dict:
    """Fine-tune one model on one GLUE task as `config` says; return the run record."""
    config.validate()
    task = get_task(config.task)
    model_config = load_model_config(config.model, task.num_labels)
    if config.max_length > max_model_length(model_config):
        raise ValueError(
            f"max_length: {config.max_length} exceeds {config.model}'s limit "
            f"{max_model_length(model_config)}"
        )
    run_dir = prepare_run_dir(config)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    accelerator = Accelerator(mixed_precision=_mixed_precision(config.mixed_precision))
    record: dict = {
        "status": RUNNING, "config": config.to_dict(), "task": task.name,
        "primary_metric": task.primary_metric, "started_at": dt.datetime.now().isoformat(),
        **_environment(accelerator), "epochs": [], "loss_curve": [],
    }
    if accelerator.is_main_process:
        write_record(run_dir, record)
    start = time.perf_counter()
    try:
        _train(config, task, model_config, accelerator, run_dir, record, progress)
        record["status"] = COMPLETED
    except BaseException as err:  # KeyboardInterrupt too: the record must say the run failed
        record.update(status=FAILED, error=f"{type(err).__name__}: {err}")
        raise
    finally:
        record["wall_time_s"] = time.perf_counter() - start
        record["peak_memory_bytes"] = _peak_memory_bytes(accelerator.device)
        record["finished_at"] = dt.datetime.now().isoformat()
        if accelerator.is_main_process:
            write_record(run_dir, record)
    return record


def _train(config, task, model_config, accelerator, run_dir, record, progress) -> None:
    set_seed(config.seed)
    model, tokenizer = load_model(config.model, model_config)
    prepare_model(model, config.method, config.lora)
    if config.init_adapter:
        load_adapter(model, config.init_adapter, include_head=False)
    counts = count_parameters(model)
    record["parameters"] = counts.to_dict()

    with accelerator.main_process_first():
        data = tokenize_glue(load_glue(task.name, config.glue_dir), tokenizer, task.name,
                             config.max_length)
    train_ds = subset(data["train"], config.max_train_samples, config.seed)
    eval_splits = {s: subset(data[s], config.max_eval_samples, 0) for s in task.eval_splits if s in data}
    record["data"] = {"train_examples": len(train_ds),
                      "eval_examples": {s: len(d) for s, d in eval_splits.items()}}
    train_loader = make_dataloader(train_ds, tokenizer, config.batch_size, train=True,
                                   seed=config.seed, group_by_length=config.group_by_length)
    eval_loaders = {s: make_dataloader(d, tokenizer, config.eval_batch_size, train=False)
                    for s, d in eval_splits.items()}

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate, fused=accelerator.device.type == "cuda",
    )
    total_steps = config.epochs * math.ceil(len(train_loader) / accelerator.num_processes)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, scheduler)
    eval_loaders = {s: accelerator.prepare(l) for s, l in eval_loaders.items()}

    log_every = max(1, len(train_loader) // 10)
    best, step, tokens, train_seconds = -math.inf, 0, 0, 0.0
    model.train()
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        epoch_loss, window = 0.0, []
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{config.epochs}", leave=False,
                   disable=not progress or not accelerator.is_main_process)
        for batch in bar:
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at epoch {epoch}, step {step + 1}: lower "
                    f"learning_rate (now {config.learning_rate}) or check the data")
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += int(batch["attention_mask"].sum()) * accelerator.num_processes
            window.append(loss.item())
            epoch_loss += window[-1]
            if len(window) == log_every:
                record["loss_curve"].append([step, sum(window) / len(window)])
                bar.set_postfix(loss=f"{record['loss_curve'][-1][1]:.4f}")
                window = []
        train_time = time.perf_counter() - t0
        train_seconds += train_time
        scores = {s: evaluate(model, l, task.name, accelerator, progress)
                  for s, l in eval_loaders.items()}
        primary = scores[task.eval_splits[0]][task.primary_metric]
        record["epochs"].append({
            "epoch": epoch, "train_loss": epoch_loss / len(train_loader), "eval": scores,
            "primary": primary, "train_seconds": train_time,
            "eval_seconds": time.perf_counter() - t0 - train_time,
        })
        improved = primary > best
        if improved:
            best = primary
            record.update(best_epoch=epoch, best_metric=primary)
            if accelerator.is_main_process:
                save_adapter(accelerator.unwrap_model(model), run_dir / ADAPTER_FILE,
                             task=task.name, epoch=epoch, model=config.model)
        record["train_tokens_per_s"] = tokens / train_seconds
        if accelerator.is_main_process:
            write_record(run_dir, record)
            accelerator.print(
                f"epoch {epoch}/{config.epochs}  loss {epoch_loss / len(train_loader):.4f}  "
                f"{task.primary_metric} {primary:.4f}{'  (best)' if improved else ''}  "
                f"{train_time:.1f}s train + {record['epochs'][-1]['eval_seconds']:.1f}s eval")


def _argument_type(hint):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return None
    if origin in (list, typing.List):
        return lambda s: [t.strip() for t in s.split(",") if t.strip()]
    if type(None) in args:  # Optional[X]
        inner = next(a for a in args if a is not type(None))
        return lambda s: None if s.lower() in ("none", "") else inner(s)
    return hint


def build_parser() -> argparse.ArgumentParser:
    """A `--field` option for every `RunConfig` field (lists comma-separated)."""
    parser = argparse.ArgumentParser(
        prog="python -m lora_nb.train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--paper", action="store_true",
                        help="start from the paper's hyperparameters for --task/--method (Table 9)")
    hints = typing.get_type_hints(RunConfig)
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None)
        else:
            parser.add_argument(flag, dest=f.name, type=_argument_type(hints[f.name]), default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    use_paper = args.pop("paper")
    given = {k: v for k, v in args.items() if v is not None}
    try:
        if use_paper:
            config = paper_config(given.pop("task", "mrpc"), given.pop("method", "lora"), **given)
        else:
            config = RunConfig.from_dict(given)
        record = run(config)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: record.get(k) for k in ("status", "best_epoch", "best_metric",
                                                 "primary_metric", "wall_time_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
