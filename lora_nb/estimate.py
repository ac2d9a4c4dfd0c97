"""What a sweep costs before it runs: runs, optimizer steps, training tokens, core-hours on this
machine and, given a measured GPU throughput, GPU-hours.

    python -m lora_nb.sweep --preset reference --estimate
    python -m lora_nb.sweep --preset paper --estimate --tokens-per-second 20000

Core-hours come from measured seconds: the completed records of the same model (in the runs
folder and --resume-from) give core-seconds per training token and per evaluated example for
each method; a method without records is timed here, a few training steps on one thread as a
sweep worker runs them (`time_methods`).

Example counts are GLUE's full training splits (what the Hub serves; `GLUE_TRAIN_SIZES`) unless
a preset caps them. Token lengths are measured on the local GLUE data this machine can see (up
to `LENGTH_SAMPLE` training examples per task, truncated at the run's max_length); a task without
local data counts max_length per example, an upper bound, and says so. Evaluation is not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .rundir import is_completed

# GLUE training split sizes (Wang et al., 2019; the Hub's nyu-mll/glue).
GLUE_TRAIN_SIZES = {"mnli": 392_702, "sst2": 67_349, "mrpc": 3_668, "cola": 8_551, "qnli": 104_743,
                    "qqp": 363_846, "rte": 2_490, "stsb": 5_749}
LENGTH_SAMPLE = 2000


@dataclass(frozen=True)
class RunCost:
    run_id: str
    task: str
    examples: int
    optimizer_steps: int
    tokens: float
    lengths_measured: bool


def mean_lengths(max_lengths: dict[str, int], glue_dir: Path | None,
                 tokenizer) -> dict[str, float | None]:
    """Mean tokens per training example for each task of `max_lengths` (task -> the runs'
    max_length, where examples are truncated) with local data; None without."""
    from .glue import get_task, local_splits, subset, load_glue

    out: dict[str, float | None] = {}
    for name in max_lengths:
        task = get_task(name)
        try:
            if glue_dir is None:
                raise FileNotFoundError
            local_splits(task, glue_dir)
        except FileNotFoundError:
            out[name] = None
            continue
        train = subset(load_glue(task, glue_dir)["train"], LENGTH_SAMPLE, 0)
        first, second = task.text_keys
        texts = (list(train[first]),) if second is None else (list(train[first]), list(train[second]))
        ids = tokenizer(*texts, truncation=True, max_length=max_lengths[name])["input_ids"]
        out[name] = sum(map(len, ids)) / len(ids)
    return out


def run_costs(specs, lengths: dict[str, float | None],
              sizes: dict[str, tuple[int, int]] | None = None) -> list[RunCost]:
    """Examples, optimizer steps and training tokens of every run (training split sizes from
    `sizes`, else GLUE's)."""
    costs = []
    for spec in specs:
        c = spec.config
        train = sizes[c.task][0] if sizes else GLUE_TRAIN_SIZES[c.task]
        examples = min(c.max_train_samples or math.inf, train)
        per_step = c.global_batch_size or c.batch_size
        length = lengths.get(c.task)
        steps = c.max_steps or c.epochs * math.ceil(examples / per_step)
        seen = c.max_steps * per_step if c.max_steps else c.epochs * examples
        costs.append(RunCost(spec.run_id, c.task, int(examples), steps,
                             seen * (length if length is not None else c.max_length),
                             length is not None))
    return costs


# GLUE validation split sizes (MNLI matched + mismatched), for tasks without local data.
GLUE_VALIDATION_SIZES = {"mnli": 9_815 + 9_832, "qqp": 40_430, "sst2": 872, "mrpc": 408,
                         "cola": 1_043, "stsb": 1_500, "qnli": 5_463, "rte": 277}


def split_sizes(tasks, glue_dir: Path | None) -> dict[str, tuple[int, int]]:
    """(training, validation) examples per task: the local parquet files' row counts where they
    exist, else GLUE's."""
    import pyarrow.parquet as pq

    from .glue import get_task, local_splits

    out = {}
    for name in tasks:
        try:
            files = local_splits(get_task(name), glue_dir) if glue_dir else None
        except FileNotFoundError:
            files = None
        if files:
            rows = {s: pq.ParquetFile(p).metadata.num_rows for s, p in files.items()}
            out[name] = (rows.pop("train"), sum(rows.values()))
        else:
            out[name] = (GLUE_TRAIN_SIZES[name], GLUE_VALIDATION_SIZES[name])
    return out


def evaluated_examples(config, sizes: tuple[int, int]) -> int:
    """Examples a run evaluates in all: its evaluations × (validation + dev examples), from the
    task's (training, validation) `sizes`."""
    from .glue import DEV_SHARE

    train, validation = sizes
    validation = min(validation, config.max_eval_samples or validation)
    dev = min(config.dev_examples, int(DEV_SHARE * train))
    steps = config.max_steps or 0
    evaluations = (steps // config.eval_every + (steps % config.eval_every > 0)
                   if config.eval_every and steps else config.epochs)
    return evaluations * (validation + dev)


def measured_rates(records: list[dict]) -> dict[str, tuple[float, float]]:
    """Per method: (core-seconds per training token, core-seconds per evaluated example), the
    medians over completed records (a run's torch threads × its seconds)."""
    import statistics

    per: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if not is_completed(r) or not r.get("train_tokens_per_s"):
            continue
        threads = r.get("torch_threads") or 1
        examples = sum(r.get("data", {}).get("eval_examples", {}).values()) * len(r.get("evaluations", []))
        train = threads / r["train_tokens_per_s"]
        per.setdefault(r["config"]["method"], []).append(
            (train, threads * r.get("eval_seconds", 0.0) / examples if examples else math.nan))
    return {m: (statistics.median(t for t, _ in v), statistics.median(e for _, e in v))
            for m, v in per.items()}


def time_methods(model: str, methods, mixed_precision: str = "auto", length: int = 64,
                 batch: int = 16, steps: int = 3) -> dict[str, tuple[float, float]]:
    """Per method: (core-seconds per training token, core-seconds per evaluated example), timed
    now on one thread: `steps` training steps of `batch` × `length` random tokens (after one
    warm-up) and one evaluation batch of 64 × `length`, under the run's mixed precision."""
    import time

    import torch

    from .bottleneck import AdapterConfig
    from .lora import LoRAConfig
    from .methods import ADAPTER_METHODS, prepare_model
    from .models import load_model, load_model_config
    from .train import _mixed_precision

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bf16 = _mixed_precision(mixed_precision) == "bf16"
    out = {}
    try:
        config = load_model_config(model, 2)
        ids = torch.randint(1000, 20_000, (batch, length))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                  "labels": torch.randint(0, 2, (batch,))}
        evaluation = {"input_ids": torch.randint(1000, 20_000, (64, length))}
        for method in methods:
            torch.manual_seed(0)
            net, _ = load_model(model, config)
            prepare_model(net, method, LoRAConfig() if method == "lora" else None,
                          AdapterConfig(method) if method in ADAPTER_METHODS else None)
            optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], fused=True)
            times = []
            for i in range(steps + 1):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = net(**inputs).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                times.append(time.perf_counter() - start)
            net.eval()
            start = time.perf_counter()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                net(**evaluation)
            evaluated = time.perf_counter() - start
            out[method] = (sorted(times[1:])[steps // 2] / (batch * length), evaluated / 64)
    finally:
        torch.set_num_threads(threads)
    return out


def core_hours(specs, costs: list[RunCost], rates: dict[str, tuple[float, float]],
               sizes: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Core-hours per task (and "all"): training tokens and evaluated examples × the method's
    measured core-seconds."""
    hours: dict[str, float] = {}
    for spec, cost in zip(specs, costs):
        train, evaluate = rates[spec.config.method]
        seconds = cost.tokens * train + evaluated_examples(spec.config, sizes[cost.task]) * (evaluate if evaluate == evaluate else 0.0)
        hours[cost.task] = hours.get(cost.task, 0.0) + seconds / 3600
    hours["all"] = sum(hours.values())
    return hours


def summary(costs: list[RunCost], tokens_per_second: float | None = None,
            hours: dict[str, float] | None = None) -> str:
    """Per task and in all: runs, optimizer steps, training tokens (core-hours on this machine,
    GPU-hours)."""
    from tabulate import tabulate

    if tokens_per_second is not None and tokens_per_second <= 0:
        raise ValueError(f"tokens_per_second: must be > 0, got {tokens_per_second}")
    rows = []
    for task in dict.fromkeys(c.task for c in costs):
        group = [c for c in costs if c.task == task]
        rows.append([task, len(group), group[0].examples if len({c.examples for c in group}) == 1 else "various",
                     sum(c.optimizer_steps for c in group), sum(c.tokens for c in group) / 1e9,
                     "measured" if group[0].lengths_measured else "max_length (upper bound)"])
    rows.append(["all", len(costs), "", sum(c.optimizer_steps for c in costs),
                 sum(c.tokens for c in costs) / 1e9, ""])
    head = ["task", "runs", "train examples", "optimizer steps", "training tokens (billions)", "lengths"]
    if hours is not None:
        for row in rows:
            row.append(hours.get(row[0], math.nan))
        head.append("core-hours here")
    if tokens_per_second:
        for row in rows:
            row.append(row[4] * 1e9 / tokens_per_second / 3600)
        head.append(f"GPU-hours at {tokens_per_second:,.0f} tokens/s")
    return tabulate(rows, head, tablefmt="github", floatfmt=",.2f", intfmt=",")


def length_tokenizer(model: str):
    """The run's tokenizer when it loads offline, else all-MiniLM-L6-v2's (WordPiece; RoBERTa's
    BPE gives similar counts on English), and the name of the one used."""
    from transformers import AutoTokenizer

    from .models import resolve_model

    for name in (model, "all-MiniLM-L6-v2"):
        try:
            return AutoTokenizer.from_pretrained(resolve_model(name)), name
        except (OSError, ValueError):
            continue
    raise ValueError("no tokenizer can be loaded offline (install lora-nb[offline])")
