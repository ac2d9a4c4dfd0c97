"""Sweeps: the grids behind Table 2 and Table 6, run notebook by notebook through papermill.

    python -m lora_nb.sweep --preset cpu --runs-dir runs/cpu --workers 2 --report

Each grid point is one execution of ``notebooks/train.ipynb`` into ``<runs-dir>/<run-id>/``,
beside that run's ``record.json`` and adapter. The presets are in `lora_nb.presets`, their grids
in `lora_nb.grid`, one setting's execution in `lora_nb.runner`; this module runs a grid. The sweep resumes: completed runs are skipped,
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
import signal
import sys
import time
from contextlib import ExitStack
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from . import estimate
from .grid import RunSpec, Setting, build_grid, group_settings, resolve_grid, validate_grid
from .presets import CLAIM_CELLS, PRESETS, Preset, get_preset
from .rundir import (COMPLETED, FAILED, REPO_ROOT, SWEEP_LOCK_FILE, FolderInUse, FolderLock,
                     StorageError, check_writable_folder, find_records, is_completed, load_record,
                     lock_holder, read_record)
from .runner import (IN_USE, TRAIN_NOTEBOOK, Outcome, SettingPool, ThreadPool, _cause,
                     collect_outcomes, execute_setting)
from .signals import Terminated, sigterm_as_interrupt


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
        if is_completed(read_record(spec.config.output_dir)):
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
               for r in records if is_completed(r))
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
        records = [load_record(p) for d in records_dirs if d and Path(d).is_dir()
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
            done = sum(is_completed(read_record(s.config.output_dir)) for s in specs)
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
