"""What a sweep costs before it runs: runs, optimizer steps, training tokens and, given a measured
throughput, GPU-hours.

    python -m lora_nb.sweep --preset paper --estimate --tokens-per-second 20000

Example counts are GLUE's full training splits (what the Hub serves; `GLUE_TRAIN_SIZES`) unless
a preset caps them. Token lengths are measured on the local GLUE data this machine can see (up
to `LENGTH_SAMPLE` training examples per task, truncated at the run's max_length); a task without
local data counts max_length per example, an upper bound, and says so. Evaluation is not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

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


def run_costs(specs, lengths: dict[str, float | None]) -> list[RunCost]:
    """Examples, optimizer steps and training tokens of every run."""
    costs = []
    for spec in specs:
        c = spec.config
        examples = min(c.max_train_samples or math.inf, GLUE_TRAIN_SIZES[c.task])
        per_step = c.global_batch_size or c.batch_size
        length = lengths.get(c.task)
        costs.append(RunCost(spec.run_id, c.task, int(examples),
                             c.epochs * math.ceil(examples / per_step),
                             c.epochs * examples * (length if length is not None else c.max_length),
                             length is not None))
    return costs


def summary(costs: list[RunCost], tokens_per_second: float | None = None) -> str:
    """Per task and in all: runs, optimizer steps, training tokens (and GPU-hours)."""
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
