"""One fine-tuning run: data, model, method, training loop, run record, adapter.

    python -m lora_nb.train --task mrpc --method lora --r 8 --model all-MiniLM-L6-v2 \
        --glue-dir ../shared/glue --output-dir runs/mrpc-lora

Each epoch is evaluated with the LoRA weights merged (§4.1: no extra inference latency) and the
run is scored at its best epoch (§5.1). The record (`record.json`) is written atomically: a run
that dies leaves a record whose status is ``running`` or ``failed``, never one that looks complete.
A run holds its folder's lock (`lora_nb.rundir.FolderLock`) from before it touches the folder to
its last write: a second writer of the same folder is refused at once, naming the first. SIGTERM
stops a run as Ctrl-C does, its record failed (`lora_nb.signals`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
import typing
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_linear_schedule_with_warmup, set_seed

from .checkpoint import load_adapter, save_adapter
from .config import RunConfig, paper_config
from .glue import Task, load_glue, make_dataloader, split_dev, subset, tokenize_glue
from .lora import merge_lora, unmerge_lora
from .convergence import DEV_SPLIT, judge_record
from .machine import cpu_count, cpu_has_bf16, device_name, git_commit, peak_memory_bytes, versions
from .metrics import glue_metric
from .models import load_model, load_model_config, max_model_length
from .methods import count_parameters, prepare_model
from .parameters import seed_config
from .rundir import (ADAPTER_FILE, COMPLETED, FAILED, RECORD_FILE, RUNNING, FolderInUse, FolderLock,
                     RunRecord, StorageError, is_completed, read_record, remove_temporary_files,
                     storage_error, write_record)
from .signals import SIGTERM_ERROR, Terminated, sigterm_as_interrupt

def _environment(accelerator: Accelerator) -> dict:
    return {
        "device": device_name(accelerator.device),
        "num_processes": accelerator.num_processes,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": cpu_count(),
        "mixed_precision": accelerator.mixed_precision,
        "versions": versions("torch", "transformers", "datasets", "accelerate"),
        "git_commit": git_commit(),
    }


def _mixed_precision(setting: str) -> str:
    """"auto": bf16 autocast (fp32 master weights and optimizer state) where the device has bf16
    arithmetic: a GPU that supports it, or a CPU with AVX512-BF16 or AMX; else fp32 ("no")."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_bf16() else "no"


def _accelerator(mixed_precision: str) -> Accelerator:
    """This run's `Accelerator`. accelerate keeps one state per process and refuses another
    precision; a process that ran a run at another one (a notebook kernel, the tests) has that
    state reset first (accelerate's own reset; the process group, `PartialState`, is kept)."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed_precision)


def prepare_run_dir(config: RunConfig, main_process: bool = True) -> Path:
    """Create the run directory; refuse to replace a completed run unless `overwrite`. The main
    process, holding the folder's lock, removes an earlier failed or half-written run's record and
    adapter and the temporary files of a writer that died mid-write; the others only check."""
    run_dir = Path(config.output_dir)
    previous = read_record(run_dir)
    if is_completed(previous) and not config.overwrite:
        raise FileExistsError(
            f"output_dir: {run_dir} holds a completed run; choose another output_dir or set "
            "overwrite=True"
        )
    if not main_process:
        return run_dir
    try:
        if run_dir.exists() and (previous is not None or config.overwrite):
            for stale in (ADAPTER_FILE, RECORD_FILE):
                (run_dir / stale).unlink(missing_ok=True)
        remove_temporary_files(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(err) from None
    return run_dir


@torch.no_grad()
def evaluate(model, loader, task: Task, accelerator: Accelerator, progress: bool,
             outputs: dict | None = None) -> dict:
    """Metrics of `model` on one split, with the LoRA weights merged (§4.1). When `outputs` is
    given, the predictions and labels (in the loader's order) are stored in it, for paired
    comparisons between runs."""
    is_regression = task.is_regression
    metric = glue_metric(task.name)
    model.eval()
    merge_lora(accelerator.unwrap_model(model))
    all_preds, all_refs = [], []
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        preds = logits.squeeze(-1) if is_regression else logits.argmax(-1)
        preds, refs = accelerator.gather_for_metrics((preds, batch["labels"]))
        preds = preds.float().cpu() if is_regression else preds.cpu()
        metric.add_batch(predictions=preds, references=refs.cpu())
        all_preds += [round(float(p), 4) if is_regression else int(p) for p in preds]
        all_refs += [round(float(r), 4) if is_regression else int(r) for r in refs.cpu()]
    unmerge_lora(accelerator.unwrap_model(model))
    model.train()
    if outputs is not None:
        outputs.update(predictions=all_preds, labels=all_refs)
    return metric.compute()


def run_seeds(config: RunConfig, seeds: typing.Sequence[int], progress: bool = True) -> list[RunRecord]:
    """Run one setting for several seeds in this process, one record and adapter per seed.

    The kernel, the imports and the tokenised data are paid once per setting instead of once per
    seed. `config.output_dir` (and `init_adapter`, when set) may hold ``{seed}``, filled in per
    seed. A seed whose folder already holds a completed run with these settings is not run again:
    its stored record is returned (a completed run made with other settings is refused)."""
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: repeated seed in {list(seeds)}")
    configs = [seed_config(config, seed) for seed in seeds]
    if len({c.output_dir for c in configs}) != len(configs):
        raise ValueError("output_dir: must contain '{seed}' when several seeds run")
    for c in configs:
        c.validate()
    records = []
    with sigterm_as_interrupt():
        for c in configs:
            previous = read_record(c.output_dir)
            if is_completed(previous) and not c.overwrite:
                if c.differs_from(previous.get("config", {})):
                    raise FileExistsError(
                        f"output_dir: {c.output_dir} holds a completed run made with other settings; "
                        "choose another output_dir or set overwrite=True")
                print(f"{c.output_dir}: already completed (best {previous.get('primary_metric')} "
                      f"{previous.get('best_metric', float('nan')):.4f}); not run again")
                records.append(previous)
                continue
            records.append(run(c, progress=progress))
    return records


def run(config: RunConfig, progress: bool = True) -> RunRecord:
    """Fine-tune one model on one GLUE task as `config` says; return the run record. The main
    process holds the run folder's lock throughout: a folder another process writes is refused
    (`FolderInUse`, naming it) before anything in it changes."""
    config.validate()
    task = config.glue_task
    model_config = load_model_config(config.model, task.num_labels)
    if config.max_length > max_model_length(model_config):
        raise ValueError(
            f"max_length: {config.max_length} exceeds {config.model}'s limit "
            f"{max_model_length(model_config)}"
        )
    accelerator = _accelerator(_mixed_precision(config.mixed_precision))
    accelerator.gradient_accumulation_steps = gradient_accumulation_steps(config, accelerator.num_processes)
    lock = FolderLock(config.output_dir) if accelerator.is_main_process else None
    with sigterm_as_interrupt():
        if lock is not None:
            lock.acquire()
        try:
            return _locked_run(config, task, model_config, accelerator, progress)
        finally:
            if lock is not None:
                lock.release()


def _locked_run(config: RunConfig, task: Task, model_config, accelerator: Accelerator,
                progress: bool) -> RunRecord:
    processes = accelerator.num_processes
    accumulation = accelerator.gradient_accumulation_steps
    run_dir = prepare_run_dir(config, accelerator.is_main_process)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    record: RunRecord = {
        "status": RUNNING, "config": config.to_dict(), "task": task.name,
        "primary_metric": task.primary_metric, "started_at": dt.datetime.now().isoformat(),
        **_environment(accelerator), "epochs": [], "loss_curve": [],
        "batch": {"per_device": config.batch_size, "processes": processes,
                  "gradient_accumulation_steps": accumulation,
                  "global": config.batch_size * processes * accumulation},
    }
    if accelerator.is_main_process:
        write_record(run_dir, record)
    start = time.perf_counter()
    try:
        _train(config, task, model_config, accelerator, run_dir, record, progress)
        record["status"] = COMPLETED
    except BaseException as err:  # KeyboardInterrupt and SIGTERM too: the record must say the run failed
        error = SIGTERM_ERROR if isinstance(err, Terminated) else f"{type(err).__name__}: {err}"
        record.update(status=FAILED, error=error)
        raise
    finally:
        record["wall_time_s"] = time.perf_counter() - start
        record["peak_memory_bytes"] = peak_memory_bytes(accelerator.device)
        record["finished_at"] = dt.datetime.now().isoformat()
        if accelerator.is_main_process:
            try:
                write_record(run_dir, record)
            except StorageError as err:
                if record["status"] == COMPLETED:
                    raise  # not complete on disk: the run failed
                # The run's own error goes on (a full disk, most likely, already raised it).
                print(f"warning: the failed record could not be written: {err}", file=sys.stderr)
    return record


def gradient_accumulation_steps(config: RunConfig, processes: int) -> int:
    """Micro-batches per optimizer step that make `config.global_batch_size` on `processes`
    processes of `config.batch_size` each: the authors' scripts ran 8 GPUs × Table 9's batch, so
    one GPU needs 8 (App. D; microsoft/LoRA examples/NLU/roberta_base_*.sh)."""
    if config.global_batch_size is None:
        return 1
    per_step = config.batch_size * processes
    if config.global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size: {config.global_batch_size} is not a multiple of batch_size × "
            f"processes = {config.batch_size} × {processes}; choose a batch_size that divides "
            f"{config.global_batch_size // math.gcd(config.global_batch_size, processes)}")
    return config.global_batch_size // per_step


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float,
                    num_processes: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then linear decay to zero over `total_steps` optimizer steps (Table 9).

    accelerate steps a prepared scheduler once per process for every optimizer step, so the
    schedule counts optimizer steps × processes: the learning rate then follows the same curve
    per optimizer step, and reaches zero at the end, with any number of processes."""
    warmup = int(warmup_ratio * total_steps)
    return get_linear_schedule_with_warmup(optimizer, warmup * num_processes, total_steps * num_processes)


def _train(config, task, model_config, accelerator, run_dir, record, progress) -> None:
    set_seed(config.seed)
    model, tokenizer = load_model(config.model, model_config, config.pooling)
    prepare_model(model, config.method, config.lora, config.adapter)
    if config.init_adapter:
        load_adapter(model, config.init_adapter, include_head=False)
    counts = count_parameters(model)
    record["parameters"] = counts.to_dict()

    with accelerator.main_process_first():
        data = tokenize_glue(load_glue(task, config.glue_dir), tokenizer, task,
                             config.max_length)
    # The same examples for every seed (data_seed): the dev split first, the subset from the rest.
    train_ds, dev_ds = split_dev(data["train"], config.dev_examples, config.data_seed)
    train_ds = subset(train_ds, config.max_train_samples, config.data_seed)
    eval_splits = {s: subset(data[s], config.max_eval_samples, 0) for s in task.eval_splits if s in data}
    if dev_ds is not None:
        eval_splits[DEV_SPLIT] = dev_ds
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
        lr=config.learning_rate, fused=True,
    )
    # Optimizer steps: the batches each process sees, grouped by gradient accumulation (accelerate
    # also steps at the end of the data, so an epoch's last group may be short).
    accumulation = accelerator.gradient_accumulation_steps
    steps_per_epoch = math.ceil(math.ceil(len(train_loader) / accelerator.num_processes) / accumulation)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = linear_schedule(optimizer, total_steps, config.warmup_ratio, accelerator.num_processes)
    model, optimizer, train_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, scheduler)
    eval_loaders = {s: accelerator.prepare(l) for s, l in eval_loaders.items()}
    record["optimizer_steps"] = total_steps
    record["evaluations"] = []

    def evaluate_now(epoch: int, step: int) -> None:
        """Evaluate every split, keep the best evaluation's adapter (§5.1), write the record."""
        if record["evaluations"] and record["evaluations"][-1]["step"] == step:
            return  # the last step was evaluated already (eval_every divides it)
        t0 = time.perf_counter()
        outputs = {s: {} for s in eval_loaders}
        scores = {s: evaluate(model, l, task, accelerator, progress, outputs[s])
                  for s, l in eval_loaders.items()}
        primary = scores[task.eval_splits[0]][task.primary_metric]
        seconds = time.perf_counter() - t0
        record["evaluations"].append({"step": step, "epoch": epoch, "eval": scores,
                                      "primary": primary, "eval_seconds": seconds})
        improved = primary > record.get("best_metric", -math.inf)
        if improved:
            # The adapter first (atomically), then the record that names its step: a record never
            # names an adapter that is not on disk, and a completed record is written after the
            # run's last adapter (see lora_nb.rundir).
            if accelerator.is_main_process:
                save_adapter(accelerator.unwrap_model(model), run_dir / ADAPTER_FILE,
                             task=task.name, epoch=epoch, step=step, model=config.model)
            # The best evaluation's validation predictions, for paired intervals (lora_nb.claims).
            record.update(best_epoch=epoch, best_step=step, best_metric=primary,
                          best_outputs={s: o for s, o in outputs.items() if s != DEV_SPLIT})
            if accelerator.is_main_process:
                write_record(run_dir, record)
        clock["eval"] += seconds
        accelerator.print(f"step {step}/{total_steps}  {task.primary_metric} {primary:.4f}"
                          f"{'  (best)' if improved else ''}  {seconds:.1f}s eval")

    log_every = max(1, steps_per_epoch // 10)  # optimizer steps
    step, tokens, clock = 0, 0, {"train": 0.0, "eval": 0.0}
    record["lr_curve"] = []
    model.train()
    for epoch in range(1, epochs + 1):
        epoch_loss, batches, window, window_steps, eval_before = 0.0, 0, [], 0, clock["eval"]
        t0 = time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", leave=False,
                   disable=not progress or not accelerator.is_main_process)
        for batch in bar:
            with accelerator.accumulate(model):  # optimizer and scheduler step once per group
                loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss is {loss.item()} at epoch {epoch}, step {step + 1}: lower "
                        f"learning_rate (now {config.learning_rate}) or check the data")
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum()) * accelerator.num_processes
            window.append(loss.item())
            epoch_loss += window[-1]
            batches += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            window_steps += 1
            if window_steps == log_every:
                record["loss_curve"].append([step, sum(window) / len(window)])
                record["lr_curve"].append([step, scheduler.get_last_lr()[0]])
                bar.set_postfix(loss=f"{record['loss_curve'][-1][1]:.4f}")
                window, window_steps = [], 0
            if config.eval_every and step % config.eval_every == 0:
                evaluate_now(epoch, step)
            if step == total_steps:
                break
        # Without eval_every, each epoch ends with an evaluation; with it, the last step does.
        if not config.eval_every or step == total_steps:
            evaluate_now(epoch, step)
        eval_seconds = clock["eval"] - eval_before
        train_time = time.perf_counter() - t0 - eval_seconds
        clock["train"] += train_time
        last = record["evaluations"][-1] if record["evaluations"] else {}
        record["epochs"].append({
            "epoch": epoch, "train_loss": epoch_loss / batches, "eval": last.get("eval"),
            "primary": last.get("primary"), "train_seconds": train_time, "eval_seconds": eval_seconds,
        })
        record["train_seconds"], record["eval_seconds"] = clock["train"], clock["eval"]
        record["train_tokens_per_s"] = tokens / clock["train"]
        if accelerator.is_main_process:
            write_record(run_dir, record)
            accelerator.print(f"epoch {epoch}/{epochs}  loss {epoch_loss / batches:.4f}  "
                              f"{train_time:.1f}s train + {eval_seconds:.1f}s eval")
    record["convergence"] = judge_record(record).to_dict()


def build_parser() -> HfArgumentParser:
    """A ``--field`` option for every `RunConfig` field, by transformers' `HfArgumentParser`
    (types, choices and help from the dataclass; lists as ``--targets q v`` or ``q,v``). A flag
    not given is left out of the parsed arguments, so that --paper and --config fill it in."""
    parser = HfArgumentParser(RunConfig, prog="python -m lora_nb.train",
                              description=__doc__.split("\n\n")[0])
    defaults = RunConfig().to_dict()
    for action in parser._actions:
        if action.dest in defaults:
            shown = ",".join(defaults[action.dest]) if isinstance(defaults[action.dest], list) else defaults[action.dest]
            action.help = f"{action.help} (default: {shown})".replace("%", "%%")
            action.default = argparse.SUPPRESS
            if action.nargs == "+":  # RunConfig splits "q,v" and checks the names itself
                action.choices = None
    parser.add_argument("--paper", action="store_true",
                        help="start from the paper's hyperparameters for --task/--method (Table 9)")
    parser.add_argument("--config", metavar="JSON_FILE",
                        help="start from a RunConfig saved as JSON (the sweep's multi-process runs); "
                        "flags given as well override it")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="progress bars")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                        help="run these seeds one after the other, comma-separated, one record each; "
                        "output_dir must then hold {seed} (default: --seed alone)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        given = vars(build_parser().parse_args(argv))
    except SystemExit as exit:  # --help (0), or a flag argparse refuses (2)
        return exit.code
    use_paper, config_file, seeds = given.pop("paper"), given.pop("config"), given.pop("seeds")
    progress = given.pop("progress")
    try:
        if use_paper and config_file:
            raise ValueError("--paper and --config: give one of them")
        if use_paper:
            config = paper_config(given.pop("task", "mrpc"), given.pop("method", "lora"), **given)
        elif config_file:
            config = RunConfig.from_dict({**json.loads(Path(config_file).read_text()), **given})
        else:
            config = RunConfig.from_dict(given)
        records = run_seeds(config, seeds, progress) if seeds else [run(config, progress)]
    except (ValueError, FileNotFoundError, FileExistsError, FolderInUse) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # StorageError: a full disk, a read-only folder, a file for a folder
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: the run's record says it failed
        print(f"\ninterrupted{' by SIGTERM' if isinstance(err, Terminated) else ''}: the run's "
              "record says failed; the same command runs it again", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    for record in records if PartialState().is_main_process else []:
        print(json.dumps({k: record.get(k) for k in ("status", "best_epoch", "best_metric",
                                                     "primary_metric", "wall_time_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
