"""Measure the paper's setting on one GPU: step throughput, packing, a real run, a projection.

    python -m benchmarks.gpu_check --out report/gpu.md                 # on the GPU machine
    python -m benchmarks.gpu_check --cpu --tiny --out /tmp/gpu.md      # the same code, on a CPU

Parts (``--parts``, default all):

1. training-step throughput of a RoBERTa-base-shaped model (random weights, no download): LoRA
   (r = 8, α = 8 on Wq, Wv) and full fine-tuning, batch 16 and 128, sequence lengths drawn from
   SST-2's and MNLI's token-length distributions (batches grouped by length as the project's
   training loader groups them, each padded to its longest), fp32 and bf16 autocast; tokens/s
   (non-pad), ms/step, peak GPU memory, achieved FLOP/s (`FlopCounterMode`) against a measured
   matmul rate;
2. packing: 1, 2, 4, 8 concurrent LoRA training processes (batch 16) on the one device,
   aggregate tokens/s and per-run slowdown;
3. a real run through ``lora_nb.train.run``: all-MiniLM-L6-v2 (``--model``), LoRA and full
   fine-tuning, all of SST-2's training set, 2 epochs, batch 32 (needs ``datasets``; skipped
   with a note when it is missing);
4. a projection of the ``paper`` preset's GPU-hours from parts 1 and 2.

Parts 1, 2 and 4 need no ``datasets`` (the GPU machine may lack it): they build models, batches and
steps with `benchmarks.harness` and read Table 9 from the package's CSV when ``lora_nb.config``
does not import. Writes Markdown to ``--out`` and JSON beside it (``.json``), and prints the
Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import queue
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils import benchmark

from benchmarks.harness import (GiB, at_least, build_model, comma_list, flops, free_memory,
                                markdown_table, matmul_rate, peak_memory_reset, random_batch,
                                train_step, trainable_parameters)
from lora_nb.estimate import GLUE_TRAIN_SIZES
from lora_nb.machine import device_name
from lora_nb.rundir import REPO_ROOT

DEFAULT_GLUE_DIR = REPO_ROOT.parent / "shared" / "glue"

# ---------------------------------------------------------------- constants

# Text columns of each task in the GLUE parquet layout.
TASK_COLUMNS: dict[str, tuple[str, ...]] = {
    "sst2": ("sentence",), "cola": ("sentence",), "mnli": ("premise", "hypothesis"),
    "mrpc": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
}
# Tokens per training example, special tokens included, when a task's data or a tokenizer is
# missing. sst2 … qqp: measured on this project's CPU machine with all-MiniLM-L6-v2's WordPiece
# tokenizer on ../shared/glue's training splits (mnli and qqp: 9k-row public samples); qnli and
# rte: estimates (no local copy; ~40 and ~55 words per pair). RoBERTa's BPE gives counts within a
# few percent of these on English text.
MEAN_TOKENS_FALLBACK: dict[str, float] = {
    "sst2": 13.3, "mnli": 40.3, "cola": 11.3, "mrpc": 53.2, "stsb": 27.8, "qqp": 30.8,
    "qnli": 50.0, "rte": 70.0,
}
# Part 1's length distributions when the data or a tokenizer is missing: lognormal (μ, σ) of the
# token count, fitted (mean and sd of log length) to the same measurement: SST-2 train mean 13.3,
# median 10, p95 33; MNLI mean 40.3, median 37, p95 73. Mean = exp(μ + σ²/2). Note that SST-2's
# training split is mostly phrases: its mean is about half the 25 tokens of its full sentences.
LOGNORMAL_FALLBACK: dict[str, tuple[float, float]] = {
    "sst2": (2.359, 0.677), "mnli": (3.589, 0.469)}
DISTRIBUTIONS = ("sst2", "mnli")
# Which measured distribution stands for each task's throughput in the projection.
TASK_DISTRIBUTION: dict[str, str] = {"sst2": "sst2", "cola": "sst2", "mnli": "mnli", "qnli": "mnli",
                                     "qqp": "mnli", "mrpc": "mnli", "rte": "mnli", "stsb": "mnli"}
PROJECTION_METHODS = ("lora", "full", "bitfit", "head")
FULL_FT_EPOCHS_FALLBACK = 10  # lora_nb.config.FULL_FT_EPOCHS
MEGABATCH = 50  # transformers' LengthGroupedSampler: sort 50 batches' worth of examples by length


def paper_grid() -> tuple[dict[str, tuple[int, int, float]], int, str]:
    """Table 9 (task → batch, epochs, lr), FT's epochs, and where they came from."""
    try:
        from lora_nb.config import FULL_FT_EPOCHS, PAPER_LORA_HPARAMS
        return dict(PAPER_LORA_HPARAMS), FULL_FT_EPOCHS, "lora_nb.config.PAPER_LORA_HPARAMS"
    except ImportError:
        from lora_nb.paper import table_path, reference_rows

        grid = {r["task"]: (int(r["batch_size"]), int(r["epochs"]), float(r["learning_rate"]))
                for r in reference_rows("table9")}
        source = f"{table_path('table9').relative_to(REPO_ROOT)} (lora_nb.config not importable)"
        return grid, FULL_FT_EPOCHS_FALLBACK, source


# ---------------------------------------------------------------- lengths and batches


@dataclass
class LengthDistribution:
    """Token lengths of one task's training examples: a pool of real lengths, or a lognormal."""

    task: str
    source: str
    pool: list[int] | None = None
    lognormal: tuple[float, float] | None = None
    max_length: int = 512

    @property
    def mean(self) -> float:
        if self.pool is not None:
            return float(np.mean(self.pool))
        mu, sigma = self.lognormal  # type: ignore[misc]
        return math.exp(mu + sigma**2 / 2)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` lengths, each in [3, max_length]."""
        if self.pool is not None:
            lengths = rng.choice(np.asarray(self.pool), size=n)
        else:
            mu, sigma = self.lognormal  # type: ignore[misc]
            lengths = np.rint(rng.lognormal(mu, sigma, size=n))
        return np.clip(lengths, 3, self.max_length).astype(int)


def load_tokenizer(model: str, tiny: bool) -> tuple[Any | None, str]:
    """A tokenizer for counting tokens: roberta-base's if cached locally (not with --tiny), else
    `model`'s (an alias or folder), else None; and its name."""
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
    except ImportError:
        return None, "none"
    candidates = [] if tiny else ["roberta-base"]
    try:
        from lora_nb.models import resolve_model
        candidates.append(resolve_model(model))
    except (ImportError, ValueError):
        if Path(model).is_dir():
            candidates.append(model)
    for ref in candidates:
        try:
            return AutoTokenizer.from_pretrained(ref, local_files_only=True), (
                "roberta-base" if ref == "roberta-base" else model)
        except Exception:  # noqa: BLE001 - not cached / not a tokenizer folder: try the next
            continue
    return None, "none"


def measure_lengths(task: str, glue_dir: Path | None, tokenizer: Any, max_length: int,
                    sample: int, seed: int = 0) -> list[int] | None:
    """Token lengths of up to `sample` random training rows of `task` (pandas + tokenizer), or
    None when the data, pandas/pyarrow or the tokenizer are missing."""
    path = glue_dir / task / "train.parquet" if glue_dir else None
    if tokenizer is None or path is None or not path.is_file():
        return None
    try:
        import pandas as pd
        frame = pd.read_parquet(path, columns=list(TASK_COLUMNS[task]))
    except Exception:  # noqa: BLE001 - pandas or a parquet engine missing, unreadable file
        return None
    if len(frame) > sample:
        frame = frame.sample(n=sample, random_state=seed)
    texts = [frame[c].astype(str).tolist() for c in TASK_COLUMNS[task]]
    enc = tokenizer(*texts, truncation=True, max_length=max_length)
    return [len(ids) for ids in enc["input_ids"]]


def length_distribution(task: str, glue_dir: Path | None, tokenizer: Any, tokenizer_name: str,
                        max_length: int, sample: int) -> LengthDistribution:
    """`task`'s measured length distribution, or the documented lognormal fallback."""
    pool = measure_lengths(task, glue_dir, tokenizer, max_length, sample)
    if pool:
        return LengthDistribution(task, f"measured: {len(pool)} rows of {task}/train, "
                                        f"{tokenizer_name} tokenizer", pool=pool,
                                  max_length=max_length)
    mu, sigma = LOGNORMAL_FALLBACK[task]
    return LengthDistribution(task, f"lognormal fallback (mu={mu}, sigma={sigma})",
                              lognormal=(mu, sigma), max_length=max_length)


def batch_lengths(dist: LengthDistribution, batch: int, count: int,
                  seed: int) -> list[np.ndarray]:
    """`count` batches of lengths grouped as transformers' `LengthGroupedSampler` groups them
    (the project's training loader, ``group_by_length=True``): draw 50 batches' worth, sort by
    length, cut into 50 batches. Up to 50 are taken from each such megabatch at evenly spaced
    ranks (stratum midpoints), so that a few steps see the whole range of lengths and their mean
    is close to the distribution's; their order is shuffled."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < count:
        take = min(MEGABATCH, count - len(out))
        mega = np.sort(dist.sample(MEGABATCH * batch, rng))[::-1].copy()
        chunks = [mega[i:i + batch] for i in range(0, len(mega), batch)]
        out += [chunks[int((k + 0.5) * MEGABATCH / take)] for k in range(take)]
    return [out[i] for i in rng.permutation(len(out))]


def step_lengths(dist: LengthDistribution, batch: int, warmup: int, steps: int,
                 seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Warm-up and measured batches: the warm-up starts with the longest batch of a megabatch
    (the peak memory any batch needs, as `LengthGroupedSampler` puts it first)."""
    rng = np.random.default_rng(seed + 1)
    longest = np.sort(dist.sample(MEGABATCH * batch, rng))[::-1][:batch].copy()
    warm = [longest] + batch_lengths(dist, batch, warmup - 1, seed + 2) if warmup else []
    return warm, batch_lengths(dist, batch, steps, seed)


def make_batch(lengths: np.ndarray, vocab_size: int, device: torch.device, seed: int) -> dict:
    """Random token ids of one batch of `lengths`, each row padded to the batch's longest."""
    config = argparse.Namespace(vocab_size=vocab_size, num_labels=2)
    return random_batch(config, len(lengths), [int(n) for n in lengths], device, seed)


def model_name(tiny: bool) -> str:
    """RoBERTa-base's shape (random weights), or with --tiny a 2-layer hidden-32 RoBERTa with a
    1,000-token vocabulary (`benchmarks.harness.model_config`)."""
    return "tiny-1k" if tiny else "roberta-base-shape"


def bf16_works(device: torch.device) -> bool:
    """Whether bf16 autocast runs a forward and backward pass on `device`."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        layer = torch.nn.Linear(8, 8)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = layer(torch.randn(4, 8))
        out.float().sum().backward()
        return out.dtype == torch.bfloat16
    except (RuntimeError, TypeError):
        return False


def timed(fn: Callable[[], object]) -> float:
    """Seconds `fn()` takes, accelerator work included (`benchmark.timer` waits for it)."""
    start = benchmark.timer()
    fn()
    return benchmark.timer() - start


# ---------------------------------------------------------------- part 1


def part_step_throughput(args: argparse.Namespace, device: torch.device,
                         dists: dict[str, LengthDistribution]) -> dict:
    """Part 1: training steps of LoRA and FT, every batch × distribution × precision."""
    precisions = ["fp32"] + (["bf16"] if bf16_works(device) else [])
    size = args.matmul_size or (8192 if device.type == "cuda" else 512)
    rates = {p: matmul_rate(device, size, dtype=torch.bfloat16 if p == "bf16" else torch.float32)
             for p in precisions}
    rows: list[dict] = []
    counts: dict[str, dict[str, int]] = {}
    for method in ("lora", "full"):
        model = build_model(model_name(args.tiny), method).to(device)
        trainable = trainable_parameters(model)
        counts[method] = {"trainable": trainable}
        steps = {p: train_step(model, device, bf16=p == "bf16", lr=1e-5) for p in precisions}
        for dist_name, dist in dists.items():
            for batch in args.batches:
                warm, measured = step_lengths(dist, batch, args.warmup, args.steps,
                                              seed=batch)
                batches = [make_batch(l, model.config.vocab_size, device, seed=batch + i)
                           for i, l in enumerate(warm + measured)]
                # FlopCounterMode's count of each measured step (padding included: the device
                # computes it), taken on a step of its own before the timed ones.
                counted = sum(flops(lambda b=b: steps["fp32"](b)) for b in batches[len(warm):])
                for precision in precisions:
                    peak_memory_reset(device)
                    times = [timed(lambda b=b: steps[precision](b)) for b in batches]
                    times = times[len(warm):]
                    real = sum(int(l.sum()) for l in measured)
                    padded = sum(len(l) * int(l.max()) for l in measured)
                    rows.append({
                        "distribution": dist_name, "method": method, "batch": batch,
                        "precision": precision, "trainable": trainable,
                        "mean_length": real / (len(measured) * batch),
                        "padding_fraction": 1 - real / padded,
                        "ms_median": 1000 * median(times), "ms_min": 1000 * min(times),
                        "ms_max": 1000 * max(times), "tokens_per_s": real / sum(times),
                        "peak_gib": torch.cuda.max_memory_allocated(device) / GiB
                        if device.type == "cuda" else None,
                        "tflops": counted / sum(times) / 1e12,
                        "fraction_of_matmul": counted / sum(times) / rates[precision]["flops_per_s"],
                    })
                del batches
        model = steps = None
        free_memory()
    return {"matmul": rates, "parameters": counts,
            "precisions": precisions, "warmup": args.warmup, "steps": args.steps,
            "distributions": {k: {"source": d.source, "mean_tokens": d.mean}
                              for k, d in dists.items()},
            "rows": rows}


def part1_rate(part1: dict, method: str, distribution: str, batch: int, precision: str) -> float:
    """Tokens/s of one part-1 configuration."""
    for r in part1["rows"]:
        if (r["method"], r["distribution"], r["batch"], r["precision"]) == (
                method, distribution, batch, precision):
            return r["tokens_per_s"]
    raise KeyError((method, distribution, batch, precision))


# ---------------------------------------------------------------- part 2


def packing_worker(rank: int, spec: dict, ready, go, results) -> None:
    """One packed LoRA training process: build, warm up, report ready, wait for `go`, then train
    for `spec["seconds"]` and report steps, tokens and step times."""
    try:
        torch.set_num_threads(spec["threads"])
        device = torch.device(spec["device"])
        dist = LengthDistribution(**spec["distribution"])
        model = build_model(model_name(spec["tiny"]), "lora", seed=rank).to(device)
        step = train_step(model, device, bf16=spec["bf16"], lr=1e-5)
        lengths = batch_lengths(dist, spec["batch"], 200, seed=1000 + rank)
        batches = [make_batch(l, model.config.vocab_size, device, seed=rank * 1000 + i)
                   for i, l in enumerate(lengths)]
        for b in batches[:spec["warmup"]]:
            step(b)
        benchmark.timer()  # waits for the device
        ready.put(rank)
        go.wait()
        times: list[float] = []
        tokens, i, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < spec["seconds"]:
            b = batches[i % len(batches)]
            times.append(timed(lambda: step(b)))
            tokens += int(lengths[i % len(lengths)].sum())
            i += 1
        elapsed = time.perf_counter() - start
        results.put({"rank": rank, "steps": i, "tokens": tokens, "seconds": elapsed,
                     "ms_median": 1000 * median(times),
                     "peak_gib": torch.cuda.max_memory_allocated(device) / GiB
                     if device.type == "cuda" else None})
    except BaseException:  # noqa: BLE001 - report any failure to the parent, never hang it
        ready.put(rank)
        results.put({"rank": rank, "error": traceback.format_exc()})


def run_packed(n: int, spec: dict, timeout: float) -> list[dict]:
    """Start `n` workers (spawn), release them together, collect their results."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=packing_worker, args=(rank, spec, ready, go, results), daemon=True)
             for rank in range(n)]
    for p in procs:
        p.start()
    try:
        for _ in range(n):
            ready.get(timeout=timeout)
        go.set()
        out = [results.get(timeout=spec["seconds"] + timeout) for _ in range(n)]
    except queue.Empty:
        out = [{"error": f"timed out after {timeout:.0f} s waiting for {n} workers"}]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    return sorted(out, key=lambda r: r.get("rank", -1))


def part_packing(args: argparse.Namespace, device: torch.device, dist: LengthDistribution,
                 bf16: bool) -> dict:
    """Part 2: 1, 2, 4, 8 concurrent LoRA processes of batch 16 on the one device."""
    cores = args.threads or os.cpu_count() or 1
    rows, errors = [], []
    for n in args.packing:
        spec = {"tiny": args.tiny, "device": str(device), "batch": 16, "bf16": bf16,
                "warmup": args.warmup, "seconds": args.packing_seconds,
                "threads": max(1, cores // n), "distribution": asdict(dist)}
        out = run_packed(n, spec, timeout=args.worker_timeout)
        failed = [r["error"] for r in out if "error" in r]
        if failed:
            errors.append({"processes": n, "error": failed[0]})
            continue
        per_run = [r["tokens"] / r["seconds"] for r in out]
        rows.append({"processes": n, "aggregate_tokens_per_s": sum(per_run),
                     "per_run_tokens_per_s": sum(per_run) / n,
                     "ms_median": median(r["ms_median"] for r in out),
                     "steps": sum(r["steps"] for r in out),
                     "peak_gib": max(r["peak_gib"] for r in out) if device.type == "cuda" else None,
                     "runs": out})
    if rows:
        single = rows[0]["per_run_tokens_per_s"] if rows[0]["processes"] == 1 else None
        best = max(r["aggregate_tokens_per_s"] for r in rows)
        for r in rows:
            r["slowdown_vs_1"] = single / r["per_run_tokens_per_s"] if single else None
            r["aggregate_vs_1"] = r["aggregate_tokens_per_s"] / single if single else None
        # The fewest processes within 5% of the best aggregate: more only lengthen each run.
        recommended = min(r["processes"] for r in rows
                          if r["aggregate_tokens_per_s"] >= 0.95 * best)
    else:
        single, best, recommended = None, None, None
    return {"distribution": dist.task, "precision": "bf16" if bf16 else "fp32", "batch": 16,
            "seconds": args.packing_seconds, "rows": rows, "errors": errors,
            "best_aggregate_tokens_per_s": best, "single_tokens_per_s": single,
            "recommended_processes": recommended}


# ---------------------------------------------------------------- part 3


def part3_settings(args: argparse.Namespace) -> dict:
    """Part 3's run settings: the whole SST-2 (or --part3-* overrides)."""
    return {"max_train_samples": args.part3_train_samples,
            "max_eval_samples": args.part3_eval_samples, "epochs": args.part3_epochs,
            "max_length": args.part3_max_length, "batch_size": 32}


def part_real_run(args: argparse.Namespace, device: torch.device, glue_dir: Path | None) -> dict:
    """Part 3: LoRA and FT of `--model` on SST-2 through ``lora_nb.train.run``."""
    try:
        import datasets  # noqa: F401
        from lora_nb.config import RunConfig
        from lora_nb.train import run
        datasets.disable_progress_bars()
    except ImportError as err:
        missing = getattr(err, "name", None) or str(err)
        return {"skipped": f"skipped: {missing} not installed", "rows": []}
    settings = part3_settings(args)
    precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_", dir=args.runs_dir) as tmp:
        for method, lr in (("lora", 1e-3), ("full", 5e-5)):
            extra = {"r": 8, "alpha": 8.0, "targets": ["q", "v"]} if method == "lora" else {}
            config = RunConfig(task="sst2", method=method, model=args.model,
                               glue_dir=str(glue_dir) if glue_dir else None, learning_rate=lr,
                               output_dir=str(Path(tmp) / method), mixed_precision=precision,
                               num_threads=args.threads, seed=0, **settings, **extra)
            start = time.perf_counter()
            try:
                record = run(config, progress=False)
            except Exception as err:  # noqa: BLE001 - report and go on with the other parts
                rows.append({"method": method, "error": f"{type(err).__name__}: {err}"})
                continue
            train_n = record["data"]["train_examples"]
            steps = math.ceil(train_n / config.batch_size)
            epochs = record["epochs"]
            rows.append({
                "method": method, "learning_rate": lr, "train_examples": train_n,
                "eval_examples": record["data"]["eval_examples"]["validation"],
                "steps_per_epoch": steps,
                "train_seconds_per_epoch": [e["train_seconds"] for e in epochs],
                "eval_seconds_per_epoch": [e["eval_seconds"] for e in epochs],
                "ms_per_step": 1000 * sum(e["train_seconds"] for e in epochs)
                / (steps * len(epochs)),
                "tokens_per_s": record["train_tokens_per_s"],
                "accuracy_per_epoch": [e["primary"] for e in epochs],
                "best_metric": record["best_metric"], "best_epoch": record["best_epoch"],
                "peak_gib": record["peak_memory_bytes"] / GiB,
                "wall_s": time.perf_counter() - start,
                "trainable": record["parameters"]["trainable"],
            })
    return {"model": args.model, "mixed_precision": precision, "settings": settings, "rows": rows}


# ---------------------------------------------------------------- part 4


def sweep_workload(grid: dict[str, tuple[int, int, float]], train_sizes: dict[str, int],
                   mean_tokens: dict[str, float], methods: Sequence[str] = PROJECTION_METHODS,
                   seeds: int = 5, full_epochs: int = 10, table6_cells: int = 15,
                   table6_task: str = "mnli") -> list[dict]:
    """Optimizer steps and training tokens of the ``paper`` preset's grid, one row per
    (table, task, method).

    Table 2: every task in `grid` (task → Table 9's batch, epochs, lr) × `methods` × `seeds`; FT
    runs `full_epochs`, LoRA, BitFit and head-only Table 9's epochs, all at Table 9's batch.
    Table 6: `table6_cells` LoRA runs on `table6_task` (one seed) with its Table 9 setting.
    A run: steps = epochs · ⌈n / batch⌉, tokens = epochs · n · mean tokens per example."""
    rows = []

    def row(table: str, task: str, method: str, runs: int) -> dict:
        batch, epochs, _ = grid[task]
        epochs = full_epochs if method == "full" else epochs
        n = train_sizes[task]
        steps = epochs * math.ceil(n / batch)
        return {"table": table, "task": task, "method": method, "runs": runs, "batch": batch,
                "epochs": epochs, "train_examples": n, "steps_per_run": steps,
                "steps": runs * steps, "tokens": runs * epochs * n * mean_tokens[task]}

    for task in grid:
        for method in methods:
            rows.append(row("table2", task, method, seeds))
    if table6_cells:
        rows.append(row("table6", table6_task, "lora", table6_cells))
    return rows


def project_hours(workload: list[dict], rate: Callable[[str, str], float]) -> list[dict]:
    """Each workload row with the tokens/s `rate(task, method)` it runs at, its ms per step and its
    device-hours in one process."""
    out = []
    for w in workload:
        tps = rate(w["task"], w["method"])
        tokens_per_step = w["tokens"] / w["steps"]
        out.append({**w, "tokens_per_s": tps, "ms_per_step": 1000 * tokens_per_step / tps,
                    "hours": w["tokens"] / tps / 3600})
    return out


def part_projection(args: argparse.Namespace, part1: dict | None, part2: dict | None,
                    mean_tokens: dict[str, tuple[float, str]], device: torch.device) -> dict:
    """Part 4: the ``paper`` preset's device-hours from parts 1 and 2."""
    if not part1 or not part1.get("rows"):
        return {"skipped": "skipped: needs part 1's tokens/s", "rows": []}
    grid, full_epochs, grid_source = paper_grid()
    precision = "bf16" if "bf16" in part1["precisions"] and device.type == "cuda" else "fp32"
    batch = 16 if 16 in args.batches else min(args.batches)

    def rate(task: str, method: str) -> float:
        # BitFit and head-only also backpropagate through the frozen encoder: LoRA's rate
        # (an upper bound on their time; head-only needs no input gradients below the head).
        kind = "full" if method == "full" else "lora"
        return part1_rate(part1, kind, TASK_DISTRIBUTION[task], batch, precision)

    workload = sweep_workload(grid, GLUE_TRAIN_SIZES, {t: m for t, (m, _) in mean_tokens.items()},
                              seeds=args.seeds, full_epochs=full_epochs)
    rows = project_hours(workload, rate)
    total = sum(r["hours"] for r in rows)
    speedup = None
    if part2 and part2.get("single_tokens_per_s") and part2.get("best_aggregate_tokens_per_s"):
        speedup = part2["best_aggregate_tokens_per_s"] / part2["single_tokens_per_s"]
    return {"grid_source": grid_source, "precision": precision, "batch_measured": batch,
            "mean_tokens": {t: {"tokens": m, "source": s} for t, (m, s) in mean_tokens.items()},
            "rows": rows, "total_hours_one_process": total,
            "packing_speedup": speedup,
            "total_hours_packed": total / speedup if speedup else None,
            "recommended_processes": part2.get("recommended_processes") if part2 else None}


def mean_tokens_table(glue_dir: Path | None, tokenizer: Any, tokenizer_name: str,
                      max_length: int, sample: int,
                      dists: dict[str, LengthDistribution]) -> dict[str, tuple[float, str]]:
    """Mean tokens per training example of each GLUE task: measured where the data and a
    tokenizer are present, else `MEAN_TOKENS_FALLBACK`."""
    out = {}
    for task in GLUE_TRAIN_SIZES:
        if task in dists and dists[task].pool is not None:
            out[task] = (dists[task].mean, dists[task].source)
            continue
        pool = measure_lengths(task, glue_dir, tokenizer, max_length, sample)
        out[task] = ((float(np.mean(pool)), f"measured: {len(pool)} rows, {tokenizer_name}")
                     if pool else (MEAN_TOKENS_FALLBACK[task], "constant (MEAN_TOKENS_FALLBACK)"))
    return out


# ---------------------------------------------------------------- Markdown


def fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def plural(n: int | None, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def render(results: dict) -> str:
    """The whole report as Markdown."""
    meta = results["meta"]
    out = [f"# GPU check: the paper's setting on {meta['device']}", "",
           f"- command: `{meta['command']}`", f"- date: {meta['date']}",
           f"- device: {meta['device']}; torch {meta['torch']}, transformers "
           f"{meta['transformers']}; {meta['threads']} CPU threads of {meta['cpu_count']}",
           f"- model: {meta['model_shape']}; fp32 matmuls: torch.backends.cuda.matmul."
           f"allow_tf32 = {meta['allow_tf32']}", f"- wall time: {meta['wall_s']:.1f} s", ""]
    p1 = results.get("part1_step_throughput")
    out.append("## 1. Training-step throughput (LoRA r=8 Wq,Wv vs full FT)\n")
    if p1 and p1.get("rows"):
        for name, d in p1["distributions"].items():
            out.append(f"- {name} lengths: {d['source']}; mean {d['mean_tokens']:.1f} tokens")
        for p, m in p1["matmul"].items():
            out.append(f"- {p} matmul {m['size']}³: {m['median_ms']:.4g} ms, "
                       f"{m['flops_per_s'] / 1e12:.4g} TFLOP/s")
        out.append(f"- median over {p1['steps']} steps after {p1['warmup']} warm-up; batches "
                   "grouped by length, padded to their longest; tokens/s counts non-pad tokens; "
                   "FLOPs counted by FlopCounterMode (padding included) against the matmul "
                   "rate of the same precision\n")
        out.append(markdown_table(
            ["lengths", "method", "batch", "precision", "trainable", "mean len", "pad %",
             "ms/step", "min ms", "max ms", "tokens/s", "peak GiB", "TFLOP/s", "% of matmul"],
            [[r["distribution"], r["method"], r["batch"], r["precision"], r["trainable"],
              r["mean_length"], 100 * r["padding_fraction"], r["ms_median"], r["ms_min"],
              r["ms_max"], r["tokens_per_s"], r["peak_gib"], r["tflops"],
              100 * r["fraction_of_matmul"]] for r in p1["rows"]]))
    else:
        out.append((p1 or {}).get("skipped", "not run"))
    p2 = results.get("part2_packing")
    out.append("\n## 2. Packing: concurrent LoRA processes on one device\n")
    if p2 and p2.get("rows"):
        out.append(f"- each process: LoRA, batch 16, {p2['distribution']} lengths, "
                   f"{p2['precision']}, {p2['seconds']} s of training after warm-up, all started "
                   "together\n")
        out.append(markdown_table(
            ["processes", "aggregate tokens/s", "tokens/s per run", "ms/step", "slowdown per run",
             "aggregate vs 1", "steps", "peak GiB per process"],
            [[r["processes"], r["aggregate_tokens_per_s"], r["per_run_tokens_per_s"],
              r["ms_median"], r["slowdown_vs_1"], r["aggregate_vs_1"], r["steps"], r["peak_gib"]]
             for r in p2["rows"]]))
        recommended = plural(p2["recommended_processes"], "process")
        out.append(f"\nRecommendation: **{recommended} per device** "
                   "(the fewest within 5% of the best aggregate tokens/s).")
    for e in (p2 or {}).get("errors", []):
        out.append(f"\n{e['processes']} processes failed:\n```\n{e['error'][-1500:]}\n```")
    if not p2 or not (p2.get("rows") or p2.get("errors")):
        out.append((p2 or {}).get("skipped", "not run"))
    p3 = results.get("part3_real_run")
    out.append("\n## 3. A real run: lora_nb.train.run on SST-2\n")
    if p3 and p3.get("rows"):
        s = p3["settings"]
        out.append(f"- model {p3['model']}, batch {s['batch_size']}, max length {s['max_length']}, "
                   f"{s['epochs']} epoch(s), train examples {s['max_train_samples'] or 'all'}, "
                   f"eval examples {s['max_eval_samples'] or 'all'}, mixed precision "
                   f"{p3['mixed_precision']}\n")
        ok = [r for r in p3["rows"] if "error" not in r]
        out.append(markdown_table(
            ["method", "lr", "train ex.", "val ex.", "steps/epoch", "train s/epoch",
             "eval s/epoch", "ms/step", "tokens/s", "accuracy per epoch", "best accuracy",
             "peak GiB"],
            [[r["method"], r["learning_rate"], r["train_examples"], r["eval_examples"],
              r["steps_per_epoch"], " / ".join(fmt(x) for x in r["train_seconds_per_epoch"]),
              " / ".join(fmt(x) for x in r["eval_seconds_per_epoch"]), r["ms_per_step"],
              r["tokens_per_s"], " / ".join(fmt(x) for x in r["accuracy_per_epoch"]),
              r["best_metric"], r["peak_gib"]] for r in ok]))
        for r in p3["rows"]:
            if "error" in r:
                out.append(f"\n{r['method']} failed: {r['error']}")
    else:
        out.append((p3 or {}).get("skipped", "not run"))
    p4 = results.get("part4_projection")
    out.append("\n## 4. Projection: the `paper` preset's device-hours\n")
    if p4 and p4.get("rows"):
        out.append(f"- grid: {p4['grid_source']}; Table 2 = 8 tasks × 4 methods × "
                   f"{p4['rows'][0]['runs']} seeds (FT 10 epochs), Table 6 = 15 LoRA cells on "
                   "MNLI, 1 seed; full GLUE training sets")
        out.append(f"- rates: part 1, batch {p4['batch_measured']}, {p4['precision']}; LoRA's "
                   "rate for LoRA, BitFit and head-only (an upper bound on their time), FT's "
                   "for FT; SST-2 lengths for sst2 and cola, MNLI lengths for the sentence-pair "
                   "tasks; the batch-32 tasks (cola, qnli, rte) at this batch's rate")
        out.append("- tokens per example: " + "; ".join(
            f"{t} {m['tokens']:.1f} ({m['source']})" for t, m in p4["mean_tokens"].items()) + "\n")
        out.append(markdown_table(
            ["table", "task", "method", "runs", "batch", "epochs", "steps", "tokens", "tokens/s",
             "ms/step", "device-hours"],
            [[r["table"], r["task"], r["method"], r["runs"], r["batch"], r["epochs"], r["steps"],
              r["tokens"], r["tokens_per_s"], r["ms_per_step"], r["hours"]] for r in p4["rows"]]))
        by_method: dict[str, float] = {}
        for r in p4["rows"]:
            by_method[f"{r['table']} {r['method']}"] = by_method.get(
                f"{r['table']} {r['method']}", 0.0) + r["hours"]
        out.append("\n" + markdown_table(["part of the sweep", "device-hours (1 process)"],
                                   [[k, v] for k, v in by_method.items()]
                                   + [["total", p4["total_hours_one_process"]]]))
        if p4["packing_speedup"]:
            out.append(f"\nWith the best packing (part 2: aggregate {p4['packing_speedup']:.3g}× "
                       "one process, LoRA on MNLI lengths, applied to the whole sweep): "
                       f"**{p4['total_hours_packed']:.4g} device-hours** in all "
                       f"({p4['total_hours_one_process']:.4g} unpacked); recommended "
                       f"{plural(p4['recommended_processes'], 'process')} per device.")
    else:
        out.append((p4 or {}).get("skipped", "not run"))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- command line


def _optional_int(s: str) -> int | None:
    return None if s.lower() in ("none", "all", "") else int(s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="report/gpu.md",
                   help="Markdown report; the JSON goes beside it (default: report/gpu.md)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present "
                   "(default: the GPU when there is one)")
    p.add_argument("--tiny", action="store_true",
                   help="a 2-layer hidden-32 model, few steps, packing 1 and 2, part 3 on 64 "
                   "examples for 1 epoch at max length 64 (default: off)")
    p.add_argument("--parts", type=comma_list(at_least(1)), default=[1, 2, 3, 4],
                   help="comma-separated parts to run (default: 1,2,3,4)")
    p.add_argument("--model", default="all-MiniLM-L6-v2",
                   help="part 3's model: an alias or a local folder; its tokenizer also counts "
                   "tokens when roberta-base's is not cached (default: all-MiniLM-L6-v2)")
    p.add_argument("--glue-dir",
                   default=str(DEFAULT_GLUE_DIR) if DEFAULT_GLUE_DIR.is_dir() else None,
                   help=f"GLUE parquet folder (default: {DEFAULT_GLUE_DIR} if it exists, else "
                   "none: lengths from the fallback, part 3 from the Hub)")
    p.add_argument("--batches", type=comma_list(at_least(1)), default=[16, 128],
                   help="part 1's per-device batch sizes (default: 16,128)")
    p.add_argument("--warmup", type=int, default=None,
                   help="unmeasured warm-up steps per configuration (default: 5; 1 with --tiny)")
    p.add_argument("--steps", type=int, default=None,
                   help="measured steps per configuration (default: 20; 3 with --tiny)")
    p.add_argument("--packing", type=comma_list(at_least(1)), default=None,
                   help="part 2's process counts (default: 1,2,4,8; 1,2 with --tiny)")
    p.add_argument("--packing-seconds", type=float, default=None,
                   help="measured seconds per packed process (default: 15; 2 with --tiny)")
    p.add_argument("--worker-timeout", type=float, default=300.0,
                   help="seconds to wait for packed processes to start (default: 300)")
    p.add_argument("--matmul-size", type=int, default=0,
                   help="matmul rate's size (default: 0 = 8192 on a GPU, 512 on the CPU)")
    p.add_argument("--length-sample", type=int, default=20000,
                   help="training rows tokenized per task to measure lengths (default: 20000)")
    p.add_argument("--part3-epochs", type=int, default=None,
                   help="part 3's epochs (default: 2; 1 with --tiny)")
    p.add_argument("--part3-train-samples", type=_optional_int, default=None,
                   help="part 3's training examples (default: all; 64 with --tiny)")
    p.add_argument("--part3-eval-samples", type=_optional_int, default=None,
                   help="part 3's validation examples (default: all; 64 with --tiny)")
    p.add_argument("--part3-max-length", type=int, default=None,
                   help="part 3's max length (default: 128; 64 with --tiny)")
    p.add_argument("--runs-dir", default=None,
                   help="where part 3's temporary run folders go (default: the system's temp)")
    p.add_argument("--seeds", type=int, default=5,
                   help="part 4: seeds per Table 2 cell (default: 5)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads, split among packed processes (default: 0 = all cores)")
    return p


def apply_mode_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on --tiny."""
    tiny = args.tiny
    defaults = {"warmup": 1 if tiny else 5, "steps": 3 if tiny else 20,
                "packing": [1, 2] if tiny else [1, 2, 4, 8],
                "packing_seconds": 2.0 if tiny else 15.0, "part3_epochs": 1 if tiny else 2,
                "part3_max_length": 64 if tiny else 128}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if tiny:
        args.part3_train_samples = args.part3_train_samples or 64
        args.part3_eval_samples = args.part3_eval_samples or 64
    return args


def main(argv: list[str] | None = None) -> int:
    args = apply_mode_defaults(build_parser().parse_args(argv))
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        import transformers
        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = "missing"
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    glue_dir = Path(args.glue_dir) if args.glue_dir else None
    max_length = 512  # the paper's (Table 9)
    tokenizer, tokenizer_name = load_tokenizer(args.model, args.tiny)
    dists = {t: length_distribution(t, glue_dir, tokenizer, tokenizer_name, max_length,
                                    args.length_sample) for t in DISTRIBUTIONS}
    results: dict = {"meta": {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": dt.datetime.now().isoformat(timespec="seconds"), "device": device_name(device),
        "torch": torch.__version__, "transformers": transformers_version,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "model_shape": "tiny RoBERTa (2 layers, hidden 32, vocab 1000)" if args.tiny
        else "RoBERTa-base shape (12 layers, hidden 768, random weights)",
        "allow_tf32": torch.backends.cuda.matmul.allow_tf32, "args": vars(args)}}
    out = Path(args.out)

    def save() -> None:
        """Write the report so far: a run cut short keeps every finished part."""
        results["meta"]["wall_s"] = time.perf_counter() - start
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(results))
        out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))

    def done(part: int) -> None:
        save()
        print(f"part {part} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr,
              flush=True)

    part1 = part2 = None
    if 1 in args.parts:
        part1 = results["part1_step_throughput"] = part_step_throughput(args, device, dists)
        done(1)
    if 2 in args.parts:
        bf16 = device.type == "cuda" and bf16_works(device)
        part2 = results["part2_packing"] = part_packing(args, device, dists["mnli"], bf16)
        done(2)
    if 4 in args.parts:  # before part 3, the longest: the projection needs parts 1 and 2 only
        mean_tokens = mean_tokens_table(glue_dir, tokenizer, tokenizer_name, max_length,
                                        args.length_sample, dists)
        results["part4_projection"] = part_projection(args, part1, part2, mean_tokens, device)
        done(4)
    if 3 in args.parts:
        results["part3_real_run"] = part_real_run(args, device, glue_dir)
        done(3)
    save()
    print(out.read_text())
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    failed = bool((part2 or {}).get("errors")) or any(
        "error" in r for r in results.get("part3_real_run", {}).get("rows", []))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
