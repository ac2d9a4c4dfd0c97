"""Sweeps: the grids behind Table 2 and Table 6, run notebook by notebook through papermill.

    python -m lora_nb.sweep --preset cpu --runs-dir runs/cpu --workers 2 --report

Each grid point is one execution of ``notebooks/train.ipynb`` into ``<runs-dir>/<run-id>/``,
beside that run's ``record.json`` and adapter. The sweep resumes: completed runs are skipped,
failed or half-written ones run again, a failing run is recorded and the others go on. Settings
run in threads on this machine (`ThreadPool`) or as Ray tasks on a local Ray instance or a
cluster (``--executor ray``, `lora_nb.ray_executor.RayPool`).

One sweep per runs folder: a sweep holds ``<runs-dir>/.sweep.lock`` (an OS lock, gone with its
process), and a second sweep on the same folder is refused at once, naming the first. A run
folder that another process writes (a notebook, ``python -m lora_nb.train``, each holding its run
folder's lock) is left alone: its runs are reported "in use" and run on a later call. A full disk
or a read-only folder stops the sweep with one line naming the path and the cause; SIGTERM stops
it as Ctrl-C does, the runs in flight recorded failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import queue
import sys
import time
from contextlib import ExitStack, suppress
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from . import estimate
from .config import PAPER_LORA_HPARAMS, RunConfig, paper_config
from .methods import METHODS
from .notebook_run import execute_notebook
from .tuning import choose_rate, dev_score, extended_grid
from .rundir import (ADAPTER_FILE, COMPLETED, FAILED, REPO_ROOT, SWEEP_LOCK_FILE, FolderInUse,
                     FolderLock, StorageError, check_writable_folder, find_records,
                     is_storage_error, lock_holder, read_record, storage_error, write_record)
from .signals import SIGTERM_ERROR, Terminated, received, sigterm_as_interrupt

TRAIN_NOTEBOOK = REPO_ROOT / "notebooks" / "train.ipynb"
# Settings that say where or how a run executes, not what it computes.
EXECUTION_FIELDS = ("num_threads", "overwrite", "eval_batch_size", "output_dir", "glue_dir",
                    "init_adapter", "tags")
RANKS = (1, 2, 4, 8, 64)  # Table 6
WEIGHT_TYPES = (("q",), ("q", "v"), ("q", "k", "v", "o"))  # Table 6: Wq; Wq,Wv; Wq,Wk,Wv,Wo


@dataclass(frozen=True)
class Preset:
    """A sweep: Table 2 (tasks × methods × seeds), Table 6 (ranks × weight types on one task)
    with Table 5's equal-budget cells, and learning-curve runs ("budget"), all × seeds."""

    name: str
    model: str
    table2_tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    table6_task: str
    ranks: tuple[int, ...]
    weight_types: tuple[tuple[str, ...], ...]
    # Table 5: (weight types, r) cells at one parameter budget that the Table 6 grid lacks.
    table5_cells: tuple[tuple[tuple[str, ...], int], ...] = ()
    # Settings for every run; None keeps the paper's per-task value (Table 9).
    common: dict = field(default_factory=dict)
    task_settings: dict = field(default_factory=dict)  # per task, over `common`
    method_settings: dict = field(default_factory=dict)  # per method, over the task's
    learning_rates: dict = field(default_factory=dict)  # per method; default: paper_config's
    # Per method: learning rates that each run, the best picked on the validation set (a grid
    # point's runs get the suffix -lr<rate>); overrides `learning_rates`.
    learning_rate_grid: dict = field(default_factory=dict)
    cell_settings: dict = field(default_factory=dict)  # per (task, method), over all the above
    # Learning-curve runs: each a dict of RunConfig settings (task, method, learning_rate, ...).
    curves: tuple[dict, ...] = ()
    # Methods whose MRPC, RTE and STS-B runs start from the MNLI run of the same seed (and
    # learning rate): LoRA from the MNLI adapter (App. D.1), full fine-tuning from the MNLI
    # fine-tuned model, as the paper's FT numbers (RoBERTa's, Liu et al., 2019) did.
    start_from_mnli: tuple[str, ...] = ()
    # Per method: an equal-size grid of rates run at the first seed (the tuning seed) only; the
    # other seeds, and Tables 5–6 (LoRA on table6_task), run at the rate `tuning.choose_rate`
    # picks on the dev split once that seed's grid has finished (see `resolve_grid`).
    tuning_grid: dict = field(default_factory=dict)
    method_seeds: dict = field(default_factory=dict)  # per method, instead of `seeds`
    task_methods: dict = field(default_factory=dict)  # per task: its Table 2 row's methods only
    description: str = ""


# The Table 6 cells that decide claims C3 (Wq,Wv at r = 1, 2 against 8, 64) and C4 (Wq r = 8
# against Wq,Wv r = 4 and all four at r = 2), and that §7 reads (Wq,Wv at every rank).
CLAIM_CELLS = {(("q", "v"), r) for r in RANKS} | {(("q",), 8), (("q", "k", "v", "o"), 2)}
# Table 5 (GPT-3, 18M parameters): the equal-budget cells that Table 6's grid lacks.
TABLE5_CELLS = ((("k",), 8), (("v",), 8), (("o",), 8), (("q", "k"), 4))
# The converged reference run on a 2-core CPU (issues "runs that converge" and "the converged
# reference run"). all-MiniLM-L6-v2 read as it was trained, the mean over tokens (a deviation:
# the paper's RoBERTa head reads [CLS]); bf16 autocast where the CPU has it; batches of 16
# grouped by length (transformers' LengthGroupedSampler: random mega-batches of 50 batches,
# sorted within), a speed option: padded tokens per batch fall from about 2 × the mean length
# to 1.04 × (`python benchmarks/padding.py`: MNLI 79.5 against 41.7 tokens);
# every seed on the same data: each task's whole training split but a dev split of
# min(1,000, 10%) held out for choosing rates and budgets; scores on the validation split at the
# best evaluation (§5.1). Per-task optimizer-step budgets, evaluated 8 times per run; the
# convergence study (preset "study": FT and LoRA, 3 rates each, seed 0) tests them with the rule
# in lora_nb.convergence, and its runs are the reference's FT and LoRA tuning runs.
# MNLI gets 2,000: at 1,200 steps FT at its best rate (1e-4) still gained 1.5 dev points in the
# last quarter (64.8 → 66.3; the first study's records, report/study/mnli-1200/). MRPC gets
# 1,200 (≈ 6 epochs): at 600 FT at 2e-5 and 5e-5 rose at every evaluation of the second half
# (report/study/mrpc-600/). CoLA, short sentences and cheap steps, gets 1,600 (≈ 3.3 epochs).
REFERENCE_STEPS = {"mnli": 2000, "qqp": 1200, "sst2": 1200, "cola": 1600, "stsb": 1000, "mrpc": 1200}
# Equal-size grids (3 rates, ×3 apart) around each method's published range: FT 2e-5–1e-4
# (Liu et al., 2019; Devlin et al., 2019); LoRA ≈ 10× FT's (paper Table 9: 4e-4–5e-4 on
# RoBERTa-base); BitFit 1e-4–1e-3 (Ben Zaken et al., 2021); adapters 1e-4–1e-3 (Houlsby et al.,
# 2019; Pfeiffer et al., 2021); a linear probe higher still. A grid whose best rate is at an edge
# grows by one rate beyond it, at most twice per side (`tuning.extended_grid`): in the study, 5 of
# the first 7 FT and LoRA cells chose the top rate of their grid.
TUNING_GRID = {"full": (2e-5, 5e-5, 1e-4), "lora": (3e-4, 1e-3, 3e-3), "bitfit": (3e-4, 1e-3, 3e-3),
               "houlsby": (3e-4, 1e-3, 3e-3), "pfeiffer": (3e-4, 1e-3, 3e-3)}
# The whole design is ~44 core-hours here (`--estimate` with the study's measured step times),
# over the 24 aimed for, so it is cut in the order the issue fixed (never convergence, never
# equal tuning of the methods the claims compare): (1) MRPC and CoLA run LoRA and FT only;
# (2) head-only, context rather than a claim, runs at one rate, the middle of its grid
# (1e-3, 3e-3, 1e-2); (3) LoRA and FT get 4 seeds, not 5. What is left (~35 core-hours, Tables
# 5–6 on MNLI the largest part) still does not fit: it runs over more sittings, not fewer runs.
HEAD_RATE = 3e-3
CUT_TASK_METHODS = {"mrpc": ("lora", "full"), "cola": ("lora", "full")}
_REFERENCE = dict(
    name="reference", model="all-MiniLM-L6-v2", table2_tasks=tuple(REFERENCE_STEPS),
    methods=("lora", "full", "bitfit", "head", "houlsby", "pfeiffer"), seeds=(0, 1, 2),
    method_seeds={"lora": (0, 1, 2, 3), "full": (0, 1, 2, 3)}, task_methods=CUT_TASK_METHODS,
    learning_rates={"head": HEAD_RATE},
    table6_task="mnli", ranks=RANKS, weight_types=WEIGHT_TYPES, table5_cells=TABLE5_CELLS,
    common=dict(batch_size=16, max_length=128, warmup_ratio=0.06, pooling="mean",
                dev_examples=1000, group_by_length=True),
    task_settings={t: dict(max_steps=n, eval_every=n // 8) for t, n in REFERENCE_STEPS.items()},
    method_settings={"houlsby": dict(adapter_size=8), "pfeiffer": dict(adapter_size=16)},
    tuning_grid=TUNING_GRID,
)
# The paper preset follows the authors' scripts (microsoft/LoRA examples/NLU/roberta_base_<task>.sh,
# read for MNLI, MRPC, QNLI, QQP, RTE and STS-B): `torch.distributed.launch` on 8 GPUs with Table 9's
# batch per GPU, α = 16 (Table 9 says 8), weight decay 0.1, max length 512, warm-up 0.06, Table 9's
# epochs and rates, MRPC/RTE/STS-B from the MNLI LoRA adapter. Microsoft's SST-2 script was later
# replaced by another experiment (r = 128); copies of the original in forks run 8 × 16 or 1 × 64 × 2
# accumulation, both 128. CoLA's script (not in microsoft's repository any more; forks' copies) ran
# 2 GPUs × 32. The FT baseline is RoBERTa's recipe (Liu et al., 2019, App. C): 10 epochs,
# weight decay 0.1, learning rate picked from {1e-5, 2e-5, 3e-5} on the validation set,
# MRPC/RTE/STS-B from the MNLI model; the paper copied those numbers rather than running them.
SCRIPT_PROCESSES = {"cola": 2}  # other tasks: 8
_PAPER = dict(
    model="roberta-base", table2_tasks=("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"),
    methods=METHODS, seeds=(0, 1, 2, 3, 4), table6_task="mnli", ranks=RANKS,
    weight_types=WEIGHT_TYPES, table5_cells=TABLE5_CELLS,
    common=dict(weight_decay=0.1),
    task_settings={t: dict(global_batch_size=SCRIPT_PROCESSES.get(t, 8) * PAPER_LORA_HPARAMS[t][0])
                   for t in PAPER_LORA_HPARAMS},
    # Adapters at Table 2's ≈ 0.3M budget (lora_nb.methods.roberta_base_adapter_counts).
    method_settings={"lora": dict(alpha=16.0), "full": dict(global_batch_size=None, weight_decay=0.1),
                     "houlsby": dict(adapter_size=8), "pfeiffer": dict(adapter_size=16)},
    learning_rate_grid={"full": (1e-5, 2e-5, 3e-5)},
    start_from_mnli=("lora", "full"),
)
PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke", model="all-MiniLM-L6-v2", table2_tasks=("mrpc",),
        methods=("lora", "head", "houlsby"), seeds=(0, 1), table6_task="mnli", ranks=(8, 64),
        weight_types=(("q",), ("q", "v")), table5_cells=((("v",), 8),),
        common=dict(max_train_samples=48, max_eval_samples=48, epochs=1, batch_size=16,
                    max_length=64),
        learning_rates={"lora": 1e-3, "head": 1e-3, "houlsby": 1e-3},
        curves=(dict(task="sst2", method="lora", learning_rate=1e-3, eval_every=1),),
        description="A couple of minutes on a CPU: exercises every part of the pipeline.",
    ),
    "study": Preset(
        **{**_REFERENCE, "name": "study", "methods": ("lora", "full"), "seeds": (0,),
           "method_seeds": {}, "ranks": (), "weight_types": (), "table5_cells": ()},
        description=(
            "The convergence study: FT and LoRA (Wq,Wv, r = 8) at 3 learning rates each on six "
            "tasks, seed 0, at the reference budgets, dev and validation scores 8 times per run: "
            "the reference run's FT and LoRA tuning runs.")),
    "cpu": Preset(
        **{**_REFERENCE, "name": "cpu", "table2_tasks": ("sst2",), "methods": ("lora", "full"),
           "method_seeds": {}, "tuning_grid": {}, "ranks": (), "weight_types": (),
           "table5_cells": (), "learning_rate_grid": {"lora": (1e-3,), "full": (5e-5,)}},
        description=(
            "The main job, under 30 minutes on 2 cores: a subset of the reference run with the "
            "same settings, LoRA and FT on SST-2 at the reference's rates, 3 seeds: claim C1 on "
            "one task.")),
    "reference": Preset(
        **_REFERENCE,
        description=(
            "The converged reference run (make reference): all-MiniLM-L6-v2 on real GLUE, Table 2 "
            "on 6 tasks (MNLI, QQP, SST-2, STS-B: 6 methods; MRPC, CoLA: LoRA and FT), each method "
            "but head-only tuned on a 3-rate grid on the dev split; 4 seeds for LoRA and FT, 3 "
            "for the others), Tables 5–6 on MNLI × 3 seeds, at per-task budgets of 1,000–2,000 "
            "optimizer steps.")),
    "paper": Preset(**_PAPER, name="paper", description=(
        "The paper's setting as the authors' scripts ran it, on GPUs with the Hub: roberta-base, "
        "8 tasks × 6 methods × 5 seeds (FT at 3 learning rates) and Tables 5–6 on MNLI; "
        "α = 16, weight decay 0.1, the scripts' global batch (8 GPUs × Table 9's batch; "
        "CoLA 2 × 32) by gradient accumulation on fewer GPUs.")),
    "paper-table9": Preset(
        **{**_PAPER, "common": dict(_PAPER["common"], weight_decay=0.0), "task_settings": {},
           "method_settings": {**_PAPER["method_settings"], "lora": {}}},
        name="paper-table9", description=(
            "The paper's setting as Table 9 states it: α = 8, no weight decay, Table 9's batch "
            "per process and no accumulation; otherwise as the paper preset.")),
}


@dataclass(frozen=True)
class RunSpec:
    """One grid point: its id, its configuration and the run it starts from, if any."""

    run_id: str
    config: RunConfig
    depends_on: str | None = None


@dataclass(frozen=True)
class Setting:
    """The seeds of one grid setting: one notebook execution, one record per seed. Its config's
    ``output_dir`` (and ``init_adapter``) hold ``{seed}``."""

    setting_id: str
    config: RunConfig
    seeds: tuple[int, ...]
    runs: tuple[RunSpec, ...]

    @property
    def depends_on(self) -> tuple[str, ...]:
        return tuple(r.depends_on for r in self.runs if r.depends_on)


def _targets_id(targets) -> str:
    return "".join(targets)


def _what_it_computes(config: RunConfig) -> str:
    return json.dumps({k: v for k, v in config.to_dict().items()
                       if k not in (*EXECUTION_FIELDS, "seed")}, sort_keys=True, default=str)


def get_preset(preset: Preset | str) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown {preset!r}; choose from {sorted(PRESETS)}")
    return PRESETS[preset]


def build_grid(preset: Preset | str, runs_dir: str | os.PathLike, glue_dir: str | None = None,
               model: str | None = None, rates: dict | None = None,
               placeholder_rates: bool = False, grids: dict | None = None) -> list[RunSpec]:
    """Every run of a preset (Table 2, Tables 6 and 5, curves), each with its own folder. A run
    that two tables share (Table 2's MNLI LoRA is Table 6's Wq,Wv r = 8 cell when their settings
    agree) runs once and carries both tags. Relative `runs_dir` and `glue_dir` are taken from
    the current folder and made absolute here: the notebooks run from the repository root.

    With a `tuning_grid`, the runs at a tuned rate are in the grid only once `rates` holds it
    ({(task, method): rate}, `chosen_rates`); `placeholder_rates` puts the grid's first rate in
    instead (for counting runs and their cost before the tuning has run). `grids` ({(task,
    method): rates}, `chosen_rates`) holds the tuning grids that grew past an edge
    (`tuning.extended_grid`)."""
    preset = get_preset(preset)
    rates, grids = dict(rates or {}), dict(grids or {})
    runs_dir = Path(runs_dir).expanduser().resolve()
    glue_dir = str(Path(glue_dir).expanduser().resolve()) if glue_dir else None
    specs: dict[str, RunSpec] = {}
    by_settings: dict[tuple[str, int], str] = {}

    def add(base: str, task: str, method: str, tag: str, depends: str | None = None,
            seeds: tuple[int, ...] = preset.seeds, **overrides) -> None:
        for seed in seeds:
            settings = {**preset.common, **preset.task_settings.get(task, {}),
                        **preset.method_settings.get(method, {}),
                        "model": model or preset.model, "seed": seed, "glue_dir": glue_dir}
            if method in preset.learning_rates:
                settings["learning_rate"] = preset.learning_rates[method]
            settings.update(preset.cell_settings.get((task, method), {}))
            settings.update(overrides)
            run_id = f"{base}-s{seed}"
            cfg = paper_config(task, method, **settings, tags=[tag], output_dir=str(runs_dir / run_id))
            if depends:
                cfg = replace(cfg, init_adapter=str(runs_dir / f"{depends}-s{seed}" / ADAPTER_FILE))
            key = (_what_it_computes(cfg), seed)
            if key in by_settings and not depends:
                shared = specs[by_settings[key]]
                shared.config.tags.append(tag)
                continue
            by_settings[key] = run_id
            specs[run_id] = RunSpec(run_id, cfg, f"{depends}-s{seed}" if depends else None)

    def rate(task: str, method: str) -> float | None:
        if (task, method) not in rates and placeholder_rates:
            return preset.tuning_grid[method][0]
        return rates.get((task, method))

    for task in preset.table2_tasks:
        for method in preset.task_methods.get(task, preset.methods):
            seeds = preset.method_seeds.get(method, preset.seeds)
            if method in preset.tuning_grid:
                for lr in grids.get((task, method), preset.tuning_grid[method]):
                    add(f"t2-{task}-{method}-lr{lr:g}", task, method, "table2", seeds=seeds[:1],
                        learning_rate=lr)
                if rate(task, method) is not None and len(seeds) > 1:
                    lr = rate(task, method)
                    add(f"t2-{task}-{method}-lr{lr:g}", task, method, "table2", seeds=seeds[1:],
                        learning_rate=lr)
                continue
            starts = method in preset.start_from_mnli and task in ("mrpc", "rte", "stsb")
            for lr in preset.learning_rate_grid.get(method, (None,)):
                suffix, extra = (f"-lr{lr:g}", {"learning_rate": lr}) if lr else ("", {})
                depends = f"t2-mnli-{method}{suffix}" if starts else None
                add(f"t2-{task}-{method}{suffix}", task, method, "table2", depends, seeds=seeds, **extra)
    task = preset.table6_task
    lora_rate = {}
    if "lora" in preset.tuning_grid:
        lora_rate = {"learning_rate": rate(task, "lora")}
    if lora_rate.get("learning_rate", 0) is not None:
        for targets in preset.weight_types:
            for r in preset.ranks:
                add(f"t6-{task}-{_targets_id(targets)}-r{r}", task, "lora", "table6",
                    targets=list(targets), r=r, **lora_rate)
        for targets, r in preset.table5_cells:
            add(f"t5-{task}-{_targets_id(targets)}-r{r}", task, "lora", "table5",
                targets=list(targets), r=r, **lora_rate)
    for curve in preset.curves:
        extra = {k: v for k, v in curve.items() if k not in ("task", "method")}
        name = "-".join(f"{v}" for k, v in sorted(extra.items()) if k in ("learning_rate", "pooling"))
        add(f"b-{curve['task']}-{curve['method']}-{name}", curve["task"], curve["method"],
            "budget", seeds=preset.seeds[:1], **extra)
    return list(specs.values())


def chosen_rates(preset: Preset | str, specs: list[RunSpec]) -> tuple[dict, dict]:
    """({(task, method): rate}, {(task, method): grid}): the rate `tuning.choose_rate` picks for
    every tuned setting whose tuning runs (the first seed at every rate of its grid) have all
    finished, and the grids that grew past an edge on the way (`tuning.extended_grid`: a chosen
    rate at an edge of its grid runs one rate further first). A setting whose tuning runs all
    failed gets no rate."""
    preset = get_preset(preset)
    by_id = {s.run_id: s for s in specs}
    rates, grids = {}, {}
    for task in preset.table2_tasks:
        for method in preset.tuning_grid:
            if method not in preset.task_methods.get(task, preset.methods):
                continue
            seed = preset.method_seeds.get(method, preset.seeds)[0]
            finished = {}
            for spec in (by_id.get(f"t2-{task}-{method}-lr{lr:g}-s{seed}") for lr in
                         {*preset.tuning_grid[method], *_grown(preset, task, method, specs)}):
                record = read_record(spec.config.output_dir) if spec else None
                if record and record.get("status") in (COMPLETED, FAILED):
                    finished[spec.config.learning_rate] = record
            scores = {lr: dev_score(r) if r.get("status") == COMPLETED else math.nan
                      for lr, r in finished.items()}
            grid = extended_grid(preset.tuning_grid[method], scores)
            if grid != tuple(sorted(preset.tuning_grid[method])):
                grids[(task, method)] = grid
            if all(lr in finished for lr in grid):
                chosen = choose_rate(finished[lr] for lr in grid)
                if chosen is not None:
                    rates[(task, method)] = chosen
    return rates, grids


def _grown(preset: Preset, task: str, method: str, specs: list[RunSpec]) -> set[float]:
    """The rates of `specs`' tuning runs of (task, method) beyond the preset's grid."""
    prefix = f"t2-{task}-{method}-lr"
    seed = preset.method_seeds.get(method, preset.seeds)[0]
    return {s.config.learning_rate for s in specs if s.run_id.startswith(prefix)
            and s.config.seed == seed and s.config.learning_rate not in preset.tuning_grid[method]}


def resolve_grid(preset: Preset | str, runs_dir: str | os.PathLike, glue_dir: str | None = None,
                 model: str | None = None, resume_from: str | os.PathLike | None = None,
                 problems: dict | None = None) -> tuple[list[RunSpec], dict, int]:
    """The grid as far as the finished tuning runs decide it: (specs, chosen rates, runs restored
    from `resume_from`). Restoring committed tuning runs can choose rates or grow a grid, which
    adds runs, which may be restored in turn: repeated until nothing changes. `problems`
    receives the committed records that could not be restored (`restore_committed`)."""
    rates: dict = {}
    grids: dict = {}
    restored = 0
    while True:
        specs = build_grid(preset, runs_dir, glue_dir, model, rates, grids=grids)
        if resume_from:
            restored += restore_committed(specs, resume_from, problems)
        new_rates, new_grids = chosen_rates(preset, specs)
        if (new_rates, new_grids) == (rates, grids):
            return specs, rates, restored
        rates, grids = new_rates, new_grids


def group_settings(specs: list[RunSpec]) -> list[Setting]:
    """The runs grouped by setting (run id without its seed), in grid order."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        base, _, seed = spec.run_id.rpartition("-s")
        if not base or not seed.isdigit():
            raise ValueError(f"run id {spec.run_id!r} does not end in -s<seed>")
        groups.setdefault(base, []).append(spec)
    settings = []
    for base, runs in groups.items():
        first = runs[0].config
        template = replace(
            first, output_dir=first.output_dir.replace(f"-s{first.seed}", "-s{seed}"),
            init_adapter=first.init_adapter.replace(f"-s{first.seed}", "-s{seed}")
            if first.init_adapter else None)
        settings.append(Setting(base, template, tuple(r.config.seed for r in runs), tuple(runs)))
    return settings


def validate_grid(specs: list[RunSpec]) -> None:
    """Check every configuration before anything runs (adapters from earlier runs excepted), and
    refuse a runs folder whose completed runs were made with other settings: resuming would mix
    them into one table."""
    for spec in specs:
        try:
            replace(spec.config, init_adapter=None).validate()
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"{spec.run_id}: {err}") from err
        record = read_record(spec.config.output_dir) or {}
        recorded = record.get("config", {})
        diff = sorted(k for k, v in spec.config.to_dict().items()
                      if k not in EXECUTION_FIELDS and recorded.get(k) != v)
        if record.get("status") == COMPLETED and diff:
            raise ValueError(
                f"{spec.config.output_dir} holds a completed run made with other settings ({', '.join(diff)}); "
                "choose another --runs-dir (completed runs are never overwritten)")


def _committed_record(path: Path, spec: RunSpec) -> tuple[dict | None, str]:
    """The committed record at `path` if it can restore `spec`'s run, else (None, what is wrong)."""
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not a text file (binary or damaged)"
    except json.JSONDecodeError as err:
        return None, f"not valid JSON (truncated or damaged: {err})"
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    if not isinstance(record, dict):
        return None, f"not a run record (a JSON {type(record).__name__}, not an object)"
    config = record.get("config")
    if not isinstance(config, dict) or not config:
        return None, "not a run record (it has no config)"
    if record.get("status") != COMPLETED:
        return None, f"its run is not completed (status {record.get('status')!r})"
    try:
        recorded = RunConfig.from_dict(config)
    except (TypeError, ValueError) as err:
        return None, f"its config is not a run configuration ({err})"
    if recorded.seed != spec.config.seed:
        return None, f"made with seed {recorded.seed}, the grid's {spec.run_id} has seed {spec.config.seed}"
    if _what_it_computes(recorded) != _what_it_computes(spec.config):
        theirs, ours = recorded.to_dict(), spec.config.to_dict()
        diff = sorted(k for k in ours if k not in (*EXECUTION_FIELDS, "seed") and theirs.get(k) != ours[k])
        return None, f"made with other settings than the grid's ({', '.join(diff)})"
    return record, ""


def restore_committed(specs: list[RunSpec], records_dir: str | os.PathLike,
                      problems: dict | None = None) -> int:
    """Put the committed records of a reference run (``report/records/<id>.json``) and their
    adapters back into the run folders that lack a completed run, so that a sweep on a fresh
    clone runs only what is missing. Only records made with the grid's settings are restored
    (an older reference run's are left alone). Returns how many runs were restored; `problems`
    ({record path: what is wrong}) receives each record of a grid run that was not restored:
    not JSON (truncated, binary), not a record, without a config, not completed, made with
    other settings, or its run folder in use."""
    committed = dict(find_records(records_dir))
    problems = {} if problems is None else problems
    restored = 0
    for spec in specs:
        path = committed.get(spec.run_id)
        run_dir = Path(spec.config.output_dir)
        if path is None or read_record(run_dir):
            continue
        record, problem = _committed_record(path, spec)
        if record is None:
            problems[str(path)] = problem
            continue
        try:
            with FolderLock(run_dir, what="output_dir"):
                if read_record(run_dir):  # written meanwhile: never over an existing run
                    continue
                record["config"] = {**record["config"], "output_dir": str(run_dir)}
                adapter = Path(records_dir).parent / "adapters" / f"{spec.run_id}.safetensors"
                if adapter.is_file():
                    tmp = run_dir / (ADAPTER_FILE + ".tmp")
                    try:
                        shutil.copyfile(adapter, tmp)
                        os.replace(tmp, run_dir / ADAPTER_FILE)
                    except OSError as err:
                        with suppress(OSError):
                            tmp.unlink()
                        raise storage_error(err, tmp) from None
                write_record(run_dir, record)
        except FolderInUse as err:
            problems[str(path)] = f"its run folder is in use by {err.holder}"
            continue
        restored += 1
    return restored


IN_USE = "in use"  # an outcome: another process holds the run folder's lock; not run


@dataclass
class Outcome:
    run_id: str
    status: str  # completed | skipped | failed | in use
    reason: str = ""
    seconds: float = 0.0


def _log_path(runs_dir: Path, setting_id: str, suffix: str = ".ipynb") -> Path:
    """Where the executed notebook (or a launch's log) of a setting goes; an earlier one is kept
    under a new name."""
    folder = runs_dir / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{setting_id}{suffix}"
    n = 1
    while path.exists():
        path = folder / f"{setting_id}.{n}{suffix}"
        n += 1
    return path


def launch_command(config_file: Path, seeds: tuple[int, ...], processes: int) -> list[str]:
    """`python -m lora_nb.train` on `processes` processes of one machine. torchrun is what
    `accelerate launch --multi_gpu` runs underneath, and accelerate's `Accelerator` reads its
    environment; `accelerate launch` itself sends multi-CPU jobs to mpirun, which a CPU test
    machine lacks, so torchrun starts them in both cases."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "lora_nb.train", "--config", str(config_file),
            "--seeds", ",".join(map(str, seeds)), "--no-progress"]


def _launch(setting: Setting, runs_dir: Path, gpu: int | str | None, processes: int) -> None:
    """Run a setting's seeds on `processes` processes (`launch_command`), its output in a log
    beside the executed notebooks; raises when the launch fails."""
    log = _log_path(runs_dir, setting.setting_id, ".log")
    config_file = log.with_suffix(".json")
    config_file.write_text(json.dumps(setting.config.to_dict(), indent=1))
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    else:
        import torch

        if not torch.cuda.is_available():
            env["ACCELERATE_USE_CPU"] = "1"  # gloo across CPU processes
    with open(log, "w") as out:
        proc = subprocess.run(launch_command(config_file, setting.seeds, processes), cwd=REPO_ROOT,
                              env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = log.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"{processes} processes exited with {proc.returncode}: {' | '.join(tail)}")


def _cause(err: BaseException) -> str:
    """What a failure record says went wrong: the notebook's exception for papermill's error, the
    task's own exception for Ray's wrapper (``RayTaskError.cause``), else `err` itself."""
    if hasattr(err, "ename"):  # PapermillExecutionError
        return f"{err.ename}: {err.evalue}"
    err = getattr(err, "cause", None) or err
    return f"{type(err).__name__}: {err}"


def _drop_broken_log(log: Path | None) -> None:
    """Remove an executed notebook that a full disk left empty or cut short."""
    if log is None or not log.is_file():
        return
    with suppress(OSError):
        try:
            json.loads(log.read_text())
        except ValueError:  # empty, truncated
            log.unlink()


def execute_setting(setting: Setting, notebook: Path = TRAIN_NOTEBOOK,
                    gpu: int | str | None = None, processes: int = 1) -> list[Outcome]:
    """Run every seed of a setting: one execution of the training notebook, or with `processes`
    > 1 one multi-process launch (`launch_command`). Record a failure the run couldn't. One
    outcome per seed. `gpu`: the GPU(s) it may use, e.g. 0 or "0,1" (None: all it sees).
    A file-system error (a full disk, a read-only folder), here or in the run, raises
    `StorageError`, which stops the sweep; an executed notebook it cut short is removed."""
    runs_dir = Path(setting.runs[0].config.output_dir).parent
    start = time.perf_counter()
    cause = ""
    log = None
    try:
        if processes > 1:
            _launch(setting, runs_dir, gpu, processes)
        else:
            params = {**setting.config.to_dict(), "seeds": list(setting.seeds), "progress": False,
                      "cuda_visible_devices": gpu}
            log = _log_path(runs_dir, setting.setting_id)
            execute_notebook(notebook, log, params)
    except Exception as err:  # a failing run is recorded; the sweep goes on
        if is_storage_error(err):  # papermill writing the executed notebook, or the folders
            _drop_broken_log(log)
            raise storage_error(err, log if log is not None and err.filename is None else None) from None
        if getattr(err, "ename", None) == "StorageError":  # the run's own record or adapter
            _drop_broken_log(log)
            raise StorageError(None, err.evalue) from None
        cause = _cause(err)
    except KeyboardInterrupt:  # Ray's cancel of a running task (Ctrl-C on a Ray sweep)
        collect_outcomes(setting, "KeyboardInterrupt: interrupted", time.perf_counter() - start)
        raise
    if received():  # SIGTERM: a kernel it stopped between runs died without a record
        cause = SIGTERM_ERROR
    return collect_outcomes(setting, cause, time.perf_counter() - start)


def collect_outcomes(setting: Setting, cause: str = "", seconds: float = 0.0) -> list[Outcome]:
    """One outcome per seed of a setting that ran, read from its record; a seed without a
    completed or failed record gets a failed one that says `cause`, written holding the run
    folder's lock (a folder that another process holds now is left alone, "in use")."""
    outcomes = []
    for spec in setting.runs:
        record = read_record(spec.config.output_dir)
        if record and record.get("status") == COMPLETED:
            outcomes.append(Outcome(spec.run_id, COMPLETED, seconds=seconds / len(setting.runs)))
            continue
        try:
            with FolderLock(spec.config.output_dir):
                record = read_record(spec.config.output_dir)
                if record and record.get("status") == COMPLETED:
                    outcomes.append(Outcome(spec.run_id, COMPLETED, seconds=seconds / len(setting.runs)))
                    continue
                reason = (record or {}).get("error") or cause or "not run"
                if record is None or record.get("status") != FAILED:
                    if record is None and not cause:
                        reason = "the run finished without a record for this seed"
                    write_record(spec.config.output_dir, {**(record or {}), "status": FAILED,
                                                          "error": reason, "config": spec.config.to_dict()})
        except FolderInUse as err:
            outcomes.append(Outcome(spec.run_id, IN_USE, f"in use by {err.holder}"))
            continue
        outcomes.append(Outcome(spec.run_id, FAILED, reason.splitlines()[0][:300], seconds))
    return outcomes


def _order(setting: Setting) -> tuple[int, int, float]:
    """Run order: Table 2, then Table 6 (first the cells that decide claims C3–C4 and that §7
    reads), Table 5 and the learning curves, so that a sweep stopped early has what decides the
    claims; within each, the longest settings first (fewer idle workers at the end), by a rough
    cost: examples seen × a per-task length factor × 2 for full FT."""
    c = setting.config
    length = {"mnli": 2.5, "mrpc": 2.5, "qqp": 1.5, "stsb": 1.5, "sst2": 1.0, "cola": 0.6}
    examples = c.max_steps * c.batch_size if c.max_steps else (c.max_train_samples or 10**6) * c.epochs
    cost = (examples * length.get(c.task, 2.0)
            * (2 if c.method == "full" else 1) * len(setting.seeds))
    table = next((i for i, t in enumerate(("table2", "table6", "table5")) if t in c.tags), 3)
    decides = (tuple(c.targets), c.r) in CLAIM_CELLS or table != 1
    return table, 0 if decides else 1, -cost


class SettingPool(Protocol):
    """Where settings run: a `concurrent.futures.Executor` that also says how many torch threads
    each run gets (0: torch's default) and how many cores (or GPUs) the sweep occupies."""

    threads_per_run: int
    cores: int

    def submit(self, fn, /, *args, **kwargs) -> Future: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


class ThreadPool(ThreadPoolExecutor):
    """Settings in threads on this machine, `workers` at a time: `processes` GPUs each when there
    are GPUs (passed to the function as ``gpu``), else an equal share of the CPU threads."""

    def __init__(self, workers: int = 1, processes: int = 1):
        import torch

        if workers < 1 or processes < 1:
            raise ValueError(f"workers and processes: must be >= 1, got {workers} and {processes}")
        gpus = torch.cuda.device_count()
        if gpus and gpus < processes:
            raise ValueError(f"processes: {processes} per run, but this machine has {gpus} GPU(s)")
        workers = min(workers, gpus // processes) if gpus else workers
        super().__init__(max_workers=workers)
        self.workers = workers  # settings at once
        cpus = os.cpu_count() or 1
        # The torch threads of each process of a run (0: torch's default) and the cores the
        # sweep occupies.
        self.threads_per_run = 0 if gpus else max(1, cpus // (workers * processes))
        self.cores = workers * processes if gpus else min(cpus, workers * processes * self.threads_per_run)
        self._free_gpus: queue.Queue | None = queue.Queue() if gpus else None
        for w in range(workers if gpus else 0):  # a worker's GPU, or its GPUs "0,1"
            ids = range(w * processes, (w + 1) * processes)
            self._free_gpus.put(w if processes == 1 else ",".join(map(str, ids)))

    def stop_runs(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the processes the settings run in (notebook kernels, multi-process
        launches: this process's children). Ctrl-C in a terminal reaches them itself (the whole
        process group); a SIGTERM sent to the sweep alone (kill, a scheduler) does not."""
        import psutil

        for child in psutil.Process().children():
            with suppress(psutil.Error):
                child.send_signal(sig)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self._free_gpus is None:
            return super().submit(fn, *args, **kwargs)
        return super().submit(self._on_a_free_gpu, fn, *args, **kwargs)

    def _on_a_free_gpu(self, fn, *args, **kwargs):
        gpu = self._free_gpus.get()
        try:
            return fn(*args, gpu=gpu, **kwargs)
        finally:
            self._free_gpus.put(gpu)


def _finished(future: Future, setting: Setting) -> list[Outcome]:
    """A finished setting's outcomes; one its executor lost (a Ray worker that died, after its
    retry) is recorded failed, seeds that completed before excepted."""
    try:
        return future.result()
    except StorageError:
        raise  # stops the sweep
    except Exception as err:
        return collect_outcomes(setting, _cause(err))


def run_sweep(specs: list[RunSpec], workers: int = 1, progress: bool = True,
              pool: SettingPool | None = None, notebook: Path = TRAIN_NOTEBOOK,
              processes: int = 1) -> list[Outcome]:
    """Run every spec not yet completed, one execution of `notebook` per setting (its seeds
    together), in `pool`: a `ThreadPool` of `workers` by default (shut down here), or the
    caller's pool, say a `lora_nb.ray_executor.RayPool`; with `processes` > 1 each setting is one
    multi-process launch (`launch_command`). Settings that start from another run's
    adapter go after all others; one whose dependency failed is failed, not started. Ctrl-C
    starts nothing more and shuts the pool down, waiting for the running settings (the Ray pool
    interrupts them first), which record their runs; SIGTERM (`lora_nb.signals.Terminated`)
    is passed on to them first (`ThreadPool.stop_runs`). A run folder that another process holds
    is not run ("in use"). A `StorageError` stops the sweep as Ctrl-C does. Returns one outcome
    per spec."""
    outcomes: dict[str, Outcome] = {}
    todo = []
    for spec in specs:
        if (read_record(spec.config.output_dir) or {}).get("status") == COMPLETED:
            outcomes[spec.run_id] = Outcome(spec.run_id, "skipped", "already completed")
        elif holder := lock_holder(spec.config.output_dir):
            outcomes[spec.run_id] = Outcome(spec.run_id, IN_USE, f"in use by {holder}")
        else:
            todo.append(spec)
    settings = group_settings(todo)
    own_pool = pool is None
    pool = pool or ThreadPool(workers, processes)
    # Settings that start from another run's adapter go after everything else (paper App. D.1).
    waves = [sorted((s for s in settings if not s.depends_on), key=_order),
             [s for s in settings if s.depends_on]]
    bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress,
               dynamic_ncols=True, mininterval=5)

    def finish(outs: list[Outcome]) -> None:
        outcomes.update({o.run_id: o for o in outs})
        bar.update(len(outs))
        failed = sum(o.status == FAILED for o in outs)
        bar.set_postfix_str(f"{outs[0].run_id.rpartition('-s')[0]}: "
                            f"{len(outs) - failed} completed, {failed} failed")

    # A pool that runs a fixed number of settings at once (the thread pool) gets the next one only
    # when one ends: a sweep stopped (Ctrl-C, SIGTERM, a full disk) starts nothing after. Ray's
    # pool gets them all at once and schedules them on the cluster.
    capacity = getattr(pool, "workers", None)
    try:
        for wave in waves:
            running: dict[Future, Setting] = {}
            waiting = list(wave)

            def submit_more() -> None:
                while waiting and (capacity is None or len(running) < capacity):
                    setting = waiting.pop(0)
                    missing = [d for d in setting.depends_on
                               if (outcomes.get(d) or Outcome(d, FAILED)).status in (FAILED, IN_USE)]
                    if missing:
                        reason = f"depends on {', '.join(missing)}, which failed or did not run"
                        finish([Outcome(r.run_id, FAILED, reason) for r in setting.runs])
                        continue
                    threads = pool.threads_per_run or setting.config.num_threads  # 0: the run's own
                    run = replace(setting, config=replace(setting.config, num_threads=threads))
                    kwargs = {"processes": processes} if processes > 1 else {}
                    running[pool.submit(execute_setting, run, notebook, **kwargs)] = setting

            submit_more()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    finish(_finished(fut, running.pop(fut)))
                submit_more()
    except BaseException as err:  # Ctrl-C: start nothing more; completed runs keep their records
        # Wait for the settings already running (Ctrl-C reaches a thread's kernel too; the Ray
        # pool interrupts its tasks), so that they end soon and record their runs: one left
        # running could write records while the same sweep is resumed. SIGTERM reached this
        # process alone: pass it on.
        if isinstance(err, Terminated) and hasattr(pool, "stop_runs"):
            pool.stop_runs(signal.SIGTERM)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
        if own_pool:
            pool.shutdown()
    return [outcomes[s.run_id] for s in specs if s.run_id in outcomes]


def summarize(outcomes: list[Outcome]) -> str:
    """Counts of completed / skipped / failed runs, and each failure's reason."""
    counts = {k: sum(o.status == k for o in outcomes) for k in (COMPLETED, "skipped", FAILED)}
    in_use = sum(o.status == IN_USE for o in outcomes)
    lines = [", ".join(f"{n} {k}" for k, n in counts.items())
             + (f", {in_use} in use by other processes (not run)" if in_use else "")]
    lines += [f"  {o.status} {o.run_id}: {o.reason}" for o in outcomes if o.status in (FAILED, IN_USE)]
    return "\n".join(lines)


def step_fraction(records: list[dict], wall_seconds: float, cores: int) -> float:
    """The share of the sweep's core-seconds spent in training and evaluation steps: the
    records' train + eval seconds ÷ (wall time × cores). The rest is kernels, imports, data and
    model loading, and idle workers."""
    if wall_seconds <= 0 or cores < 1:
        raise ValueError("wall_seconds and cores must be positive")
    busy = sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0)
               for r in records if r.get("status") == COMPLETED)
    return busy / (wall_seconds * cores)


def _estimate(specs: list[RunSpec], glue_dir: str | None, tokens_per_second: float | None,
              records_dirs: tuple) -> str:
    """`lora_nb.estimate`'s table for a grid, with where its token lengths and seconds came from."""
    from .glue import resolve_glue_dir

    local = resolve_glue_dir(glue_dir)
    tokenizer, used = estimate.length_tokenizer(specs[0].config.model)
    max_lengths = {s.config.task: s.config.max_length for s in specs}
    lengths = estimate.mean_lengths(max_lengths, local, tokenizer)
    sizes = estimate.split_sizes(max_lengths, local)
    costs = estimate.run_costs(specs, lengths, sizes)
    lines = [f"{len(specs)} runs; token lengths: {used}'s tokenizer on up to "
             f"{estimate.LENGTH_SAMPLE} training examples per task in {local or 'no local GLUE folder'}"]
    hours = None
    if not tokens_per_second:  # core-hours on this machine, from measured seconds
        model = specs[0].config.model
        records = [json.loads(p.read_text()) for d in records_dirs if d and Path(d).is_dir()
                   for _, p in find_records(d)]
        records = [r for r in records if r.get("config", {}).get("model") == model
                   and r.get("mixed_precision") == "bf16"]
        rates = estimate.measured_rates(records)
        methods = sorted({s.config.method for s in specs})
        missing = [m for m in methods if m not in rates]
        if missing:
            rates.update(estimate.time_methods(model, missing, specs[0].config.mixed_precision))
        lines.append("core-seconds per token and per evaluated example: "
                     + ", ".join(f"{m} {'from records' if m not in missing else 'timed now'}"
                                 for m in methods))
        hours = estimate.core_hours(specs, costs, rates, sizes)
    lines.append(estimate.summary(costs, tokens_per_second, hours))
    return "\n".join(lines)


def _pending(preset: Preset | str, rates: dict) -> list[str]:
    """The tuned settings (task and method) whose rate is not chosen yet."""
    preset = get_preset(preset)
    table6 = bool(preset.ranks and preset.weight_types or preset.table5_cells)
    return [f"{t} {m}" for t in preset.table2_tasks for m in preset.methods
            if m in preset.tuning_grid and (t, m) not in rates
            and (len(preset.method_seeds.get(m, preset.seeds)) > 1
                 or (m == "lora" and t == preset.table6_task and table6))]


def _check_executor_flags(args: argparse.Namespace) -> None:
    """Refuse Ray's flags without --executor ray, bad resources, or a missing Ray, before anything
    runs."""
    ray_flags = {"--ray-address": args.ray_address, "--gpus-per-run": args.gpus_per_run,
                 "--cpus-per-run": args.cpus_per_run}
    if args.executor == "ray" and args.processes_per_run > 1:
        raise ValueError("--processes-per-run: with --executor threads only (a Ray task runs one "
                         "process; --gpus-per-run packs runs instead)")
    if args.executor != "ray":
        given = [flag for flag, value in ray_flags.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only with --executor ray")
        return
    from .ray_executor import check_resources, import_ray

    check_resources(args.gpus_per_run, args.cpus_per_run)
    import_ray()


def _pool(args: argparse.Namespace) -> SettingPool:
    if args.executor == "threads":
        return ThreadPool(args.workers, args.processes_per_run)
    from .ray_executor import RayPool

    return RayPool(args.ray_address, args.gpus_per_run, args.cpus_per_run, args.workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lora_nb.sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS),
                        help="which grid to run")
    parser.add_argument("--runs-dir", help="where runs go, relative to the current folder "
                        "(default runs/<preset>)")
    parser.add_argument("--glue-dir", help="local GLUE directory (default $LORA_NB_GLUE_DIR, else the Hub)")
    parser.add_argument("--model", help="override the preset's model (default: the preset's)")
    parser.add_argument("--workers", type=int, default=1,
                        help="notebooks run at once (one GPU each, or a share of the CPU threads; default 1); "
                        "with --executor ray on CPUs it sets the default --cpus-per-run")
    parser.add_argument("--executor", choices=("threads", "ray"), default="threads",
                        help="where settings run: threads on this machine, or Ray tasks on a local "
                        "Ray instance or a cluster (the `ray` extra; default threads)")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="with --executor ray: the Ray cluster to join, e.g. auto (default: start "
                        "a local Ray instance); --runs-dir must be on storage every node sees")
    parser.add_argument("--gpus-per-run", type=float, metavar="GPUS",
                        help="with --executor ray: GPUs each setting reserves, in (0, 1]; 0.5 packs two "
                        "runs on a GPU (default 1 where the cluster has GPUs, else none)")
    parser.add_argument("--cpus-per-run", type=int, metavar="CPUS",
                        help="with --executor ray: CPUs each setting reserves, and its torch threads "
                        "(default 1 with GPUs, else this machine's CPUs / --workers)")
    parser.add_argument("--processes-per-run", type=int, default=1, metavar="N",
                        help="run each setting on N processes (N GPUs, or N CPU processes with "
                        "gloo) through torchrun; the global batch is kept by gradient accumulation "
                        "(default 1: one notebook execution)")
    parser.add_argument("--resume-from", metavar="RECORDS_DIR",
                        help="first restore the committed records (and adapters) of this folder "
                        "into the runs folder, e.g. report/records: only missing runs then run (default: none)")
    parser.add_argument("--list", action="store_true", help="print the grid and exit")
    parser.add_argument("--estimate", action="store_true",
                        help="print runs, optimizer steps and training tokens per task (token "
                        "lengths from the local GLUE data) and exit")
    parser.add_argument("--tokens-per-second", type=float, metavar="N",
                        help="with --estimate: a measured training throughput, for GPU-hours")
    parser.add_argument("--report", action="store_true",
                        help="then execute the analysis notebooks and render the HTML report")
    args = parser.parse_args(argv)
    # The runs folder's lock, taken below, is released when the sweep ends, however it ends.
    with ExitStack() as held, sigterm_as_interrupt():
        try:
            return _main(args, held)
        except KeyboardInterrupt as err:  # before or after the runs (the runs' own: in _main)
            by = " by SIGTERM" if isinstance(err, Terminated) else ""
            print(f"\ninterrupted{by}; the same command resumes the sweep", file=sys.stderr)
            return 143 if by else 130


def _check_resume_from(path: str) -> Path:
    """Refuse a --resume-from folder that does not exist or holds no records."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"--resume-from: {path} is not a folder"
                                + (" (it is a file)" if folder.exists() else " (it does not exist)"))
    if not any(True for _ in find_records(folder)):
        raise FileNotFoundError(f"--resume-from: {path} holds no run records (<run-id>.json or "
                                "<run-id>/record.json), e.g. report/records")
    return folder


def _restored_text(restored: int, problems: dict, resume_from: str) -> str:
    lines = [f"restored {restored} committed runs from {resume_from}"
             + (f"; skipped {len(problems)}:" if problems else "")]
    lines += [f"  {path}: {problem}" for path, problem in sorted(problems.items())]
    return "\n".join(lines)


def _main(args: argparse.Namespace, held: ExitStack) -> int:
    locked: list[FolderLock] = []

    def lock_runs_dir() -> None:  # one sweep per runs folder: a second one is refused at once
        if not locked:
            locked.append(held.enter_context(FolderLock(runs_dir, SWEEP_LOCK_FILE, what="--runs-dir")))

    try:
        if args.workers < 1:
            raise ValueError(f"--workers: must be >= 1, got {args.workers}")
        if args.processes_per_run < 1:
            raise ValueError(f"--processes-per-run: must be >= 1, got {args.processes_per_run}")
        if args.tokens_per_second is not None and not args.estimate:
            raise ValueError("--tokens-per-second: only with --estimate")
        _check_executor_flags(args)
        runs_dir = Path(args.runs_dir or f"runs/{args.preset}").expanduser().resolve()
        if args.estimate:
            specs = build_grid(args.preset, runs_dir, args.glue_dir, args.model, placeholder_rates=True)
            print(_estimate(specs, args.glue_dir, args.tokens_per_second, (runs_dir, args.resume_from)))
            return 0
        resume = None if args.list else args.resume_from
        if not args.list:  # before any work: a folder this sweep can write in
            check_writable_folder(runs_dir, "--runs-dir")
        if resume:
            _check_resume_from(resume)
            lock_runs_dir()  # restoring writes into the runs folder
        problems: dict = {}
        specs, rates, restored = resolve_grid(args.preset, runs_dir, args.glue_dir, args.model, resume,
                                              problems)
        if resume:
            print(_restored_text(restored, problems, resume))
        validate_grid(specs)
        if not args.list:
            lock_runs_dir()
    except (ValueError, FileNotFoundError, ImportError, StorageError, FolderInUse) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pending = _pending(args.preset, rates)
    if args.list:
        for s in specs:
            print(s.run_id)
        if pending:
            print(f"and the runs at the chosen rate of {', '.join(pending)}, once its tuning runs finish")
        return 0
    try:
        pool = _pool(args)
    except ConnectionError as err:  # no Ray cluster at --ray-address
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{PRESETS[args.preset].description}\n{len(specs)} runs into {args.runs_dir or f'runs/{args.preset}'}")
    start = time.perf_counter()
    with pool:
        try:
            outcomes = run_sweep(specs, pool=pool, processes=args.processes_per_run)
            # Finished tuning runs choose rates, which add the other seeds' runs: run those too.
            while True:
                more, rates, _ = resolve_grid(args.preset, runs_dir, args.glue_dir, args.model)
                new = [s for s in more if s.run_id not in {o.run_id for o in outcomes}]
                if not new:
                    break
                print(f"learning rates chosen on the dev split: "
                      + ", ".join(f"{t} {m} {lr:g}" for (t, m), lr in sorted(rates.items())))
                validate_grid(new)
                specs += new
                outcomes += run_sweep(new, pool=pool, processes=args.processes_per_run)
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Terminated)
            done = sum((read_record(s.config.output_dir) or {}).get("status") == COMPLETED for s in specs)
            by = " by SIGTERM" if isinstance(err, Terminated) else ""
            print(f"\ninterrupted{by}: {done} of {len(specs)} runs are complete and kept; "
                  "the same command resumes the sweep", file=sys.stderr)
            return 143 if by else 130
        except StorageError as err:  # a full disk, a read-only folder: every run would fail
            print(f"error: {err}\nthe sweep stopped; completed runs are kept: free space (or make "
                  "the folder writable) and run the same command to resume", file=sys.stderr)
            return 1
    wall = time.perf_counter() - start
    print(summarize(outcomes))
    ran = [read_record(s.config.output_dir) or {} for s, o in zip(specs, outcomes) if o.status == COMPLETED]
    if ran:
        print(f"sweep wall time {wall / 60:.1f} min; {step_fraction(ran, wall, pool.cores):.0%} of its "
              f"{pool.cores} cores' time went to training and evaluation steps")
    if args.report:
        from .report import build_report

        # The committed report is the reference run's; any other preset renders beside it.
        report_dir = REPO_ROOT / "report" if args.preset == "reference" else REPO_ROOT / "report" / args.preset
        figures_dir = REPO_ROOT / "figures" if args.preset == "reference" else report_dir / "figures"
        written = build_report(runs_dir, figures_dir=figures_dir, report_dir=report_dir)
        for path in written:
            print(f"wrote {path}")
        if not written:
            print("report/ is up to date with the runs, notebooks and package")
    return 1 if any(o.status in (FAILED, IN_USE) for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
