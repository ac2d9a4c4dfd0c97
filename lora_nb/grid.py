"""A preset's grid: every run it holds (`build_grid`), the learning rates its finished tuning runs
choose (`resolve_grid`), the runs grouped by setting, checked, and restored from committed records.

A grid point is a `RunSpec` (run id, `RunConfig`, the run it starts from); the seeds of one
setting are a `Setting`, one notebook execution.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path

from .config import RunConfig, paper_config
from .convergence import judge_record
from .presets import Preset, get_preset
from .rundir import (ADAPTER_FILE, COMPLETED, FAILED, FolderInUse, FolderLock, RecordError,
                     find_records, is_completed, load_record, read_record, storage_error,
                     write_record)
from .tuning import choose_rate, dev_score, extended_grid


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
            key = json.dumps(cfg.computation(), sort_keys=True, default=str)
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
            converged = frozenset(lr for lr, r in finished.items()
                                  if r.get("status") == COMPLETED and judge_record(r).converged)
            grid = extended_grid(preset.tuning_grid[method], scores, converged)
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
            spec.config.validate(adapter=False)
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"{spec.run_id}: {err}") from err
        record = read_record(spec.config.output_dir)
        diff = spec.config.differs_from(record.get("config", {})) if is_completed(record) else []
        if diff:
            raise ValueError(
                f"{spec.config.output_dir} holds a completed run made with other settings ({', '.join(diff)}); "
                "choose another --runs-dir (completed runs are never overwritten)")


def _committed_record(path: Path, spec: RunSpec) -> tuple[dict | None, str]:
    """The committed record at `path` if it can restore `spec`'s run, else (None, what is wrong)."""
    try:
        record = load_record(path)
    except RecordError as err:
        return None, err.problem
    if not record["config"]:
        return None, "not a run record (it has no config)"
    if not is_completed(record):
        return None, f"its run is not completed (status {record.get('status')!r})"
    try:
        recorded = RunConfig.from_dict(record["config"])
    except (TypeError, ValueError) as err:
        return None, f"its config is not a run configuration ({err})"
    if recorded.seed != spec.config.seed:
        return None, f"made with seed {recorded.seed}, the grid's {spec.run_id} has seed {spec.config.seed}"
    diff = spec.config.differs_from(record["config"], seed=False)
    if diff:
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
