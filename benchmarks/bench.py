"""Speed and memory of lora_nb's LoRA against peft, full fine-tuning and a peft + `Trainer` run.

    python -m benchmarks.bench --models roberta-base-shape,minilm --sections 1,2,3,4,5,6 \
        --glue-dir ../shared/glue --out bench.json

Sections (``--sections``, default all; each is one `Section`: measure, table, ratios):

1. training step (forward + backward + clip + AdamW) of lora_nb LoRA and peft LoRA (LoRA
   dropout 0 and 0.1) and full fine-tuning, in rounds on random batches (`harness.rounds`), and
   each step's FLOPs (`FlopCounterMode`);
2. peak memory of each of those settings, each in its own subprocess (``--memory-child``);
3. inference latency (eval, no_grad): base model, LoRA unmerged, LoRA merged (§4.1: merging
   removes the extra latency);
4. one training epoch on SST-2 with all-MiniLM-L6-v2 + LoRA: fixed padding to ``--length`` vs
   dynamic padding vs dynamic padding with length-grouped batches, batch by batch in turn;
5. a whole run, ``lora_nb.train.run`` vs peft + transformers' `Trainer` with the same
   hyperparameters (Table 9's SST-2 learning rate), per seed: wall time and best accuracy;
6. the machine's matmul rate and each training setting's achieved FLOP/s against it.

Step timings are medians over ``--steps`` measured rounds after ``--warmup`` warm-up rounds, with
min and max; ratios are taken between medians, and their min / max over the pairs of steps
measured in the same round. On a GPU, steps run under bf16 autocast and the matmul is bf16.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median
from typing import Callable

import numpy as np
import torch
from torch.utils import benchmark
from tqdm.auto import tqdm

from benchmarks.harness import (LORA, MiB, at_least, autocast, build_model, comma_list, environment,
                                flops, free_memory, markdown_table, matmul_rate, paired_ratios,
                                peak_memory_reset, random_batch, rounds, single, stats,
                                train_step, trainable_parameters)
from lora_nb.config import RunConfig, paper_config
from lora_nb.glue import get_task, load_glue, make_dataloader, resolve_glue_dir, subset, tokenize_glue
from lora_nb.lora import merge_lora
from lora_nb.machine import peak_memory_bytes
from lora_nb.methods import HEAD_PREFIXES, prepare_model
from lora_nb.rundir import REPO_ROOT

MODELS = ("roberta-base-shape", "minilm", "tiny")
# lora_nb's and peft's LoRA without dropout and with 0.1 (what most users set), full fine-tuning.
DROPOUT = 0.1
SETTINGS = ("lora", "peft", "lora_dropout", "peft_dropout", "full")
PEFT_TARGETS = {"q": "query", "k": "key", "v": "value"}
REAL_MODEL = "all-MiniLM-L6-v2"  # sections 4 and 5
MEMORY_MARK = "BENCH_MEMORY "


def peft_lora(model: torch.nn.Module, dropout: float = 0.0) -> torch.nn.Module:
    """`model` with peft's LoRA at `LORA`'s settings, training the same head as `prepare_model`
    (RoBERTa's classifier; for BERT the pooler too). peft is the `bench` extra, imported here."""
    from peft import LoraConfig, get_peft_model

    names = [n for n, _ in model.named_modules()]
    head = [n.rsplit(".", 1)[-1] for n in names if f"{n}." in HEAD_PREFIXES]  # methods' head, by module
    config = LoraConfig(r=LORA.r, lora_alpha=LORA.alpha, lora_dropout=dropout,
                        target_modules=[PEFT_TARGETS[t] for t in LORA.targets], modules_to_save=head)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config)


def prepare_setting(model: torch.nn.Module, setting: str) -> torch.nn.Module:
    """`model` set up for ``lora`` (lora_nb), ``peft`` (peft's LoRA), either with dropout
    `DROPOUT` (``*_dropout``), or ``full`` fine-tuning."""
    dropout = DROPOUT if setting.endswith("_dropout") else 0.0
    if setting in ("lora", "lora_dropout"):
        return prepare_model(model, "lora", replace(LORA, dropout=dropout))
    if setting in ("peft", "peft_dropout"):
        return peft_lora(model, dropout)
    if setting == "full":
        return prepare_model(model, "full")
    raise ValueError(f"setting: unknown {setting!r}; choose from {SETTINGS}")


def _step(model: torch.nn.Module, device: torch.device) -> Callable[[dict], None]:
    return train_step(model, device, bf16=device.type == "cuda")


def profile_lora_step(args: argparse.Namespace, device: torch.device) -> str:
    """`torch.profiler`'s table of where a lora_nb LoRA step (r = 8, Wq,Wv) spends its time, on
    the first of --models: what bounds the step time."""
    from torch.profiler import profile

    model = prepare_setting(build_model(args.models[0]), "lora").to(device)
    batch = random_batch(model.config, args.batch, args.length, device)
    step = _step(model, device)
    for _ in range(max(1, args.warmup)):
        step(batch)
    with profile() as prof:
        for _ in range(args.steps):
            step(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def compare_with_peft(args: argparse.Namespace, device: torch.device, rows: int = 12) -> str:
    """Where lora_nb's whole training step and peft's differ, without and with LoRA dropout:
    their step times in rounds (`benchmark.Compare`'s table), then the operators whose self time
    differs most, per step, from `torch.profiler` (first of --models)."""
    from torch.profiler import profile

    base = build_model(args.models[0])
    batch = random_batch(base.config, args.batch, args.length, device)
    out, measurements = [], []
    for pair in (("lora", "peft"), ("lora_dropout", "peft_dropout")):
        steps = {s: _step(prepare_setting(copy.deepcopy(base), s).to(device), device) for s in pair}
        times = rounds({s: (lambda s=s: steps[s](batch)) for s in pair}, args.warmup, args.steps,
                       label="training step", sub_label=args.models[0])
        measurements += times.values()
        ops = {}
        for s in pair:
            with profile() as prof:
                for _ in range(2):
                    steps[s](batch)
            ops[s] = {e.key: (e.self_cpu_time_total / 2000, e.count / 2) for e in prof.key_averages()}
        keys = sorted(set(ops[pair[0]]) | set(ops[pair[1]]),
                      key=lambda k: -abs(ops[pair[0]].get(k, (0, 0))[0] - ops[pair[1]].get(k, (0, 0))[0]))
        table = [[k[:48], *ops[pair[0]].get(k, (0, 0)), *ops[pair[1]].get(k, (0, 0))] for k in keys[:rows]]
        r = paired_ratios(times[pair[0]].times, times[pair[1]].times)
        out.append(f"## {pair[0]} / {pair[1]} step time: {r['median']:.3f} (pairs {r['min']:.3f}–{r['max']:.3f}); "
                   f"medians {1000 * times[pair[0]].median:.1f} / {1000 * times[pair[1]].median:.1f} ms\n\n"
                   + markdown_table(["operator", f"{pair[0]} ms", "calls", f"{pair[1]} ms", "calls"], table))
    return str(benchmark.Compare(measurements)) + "\n\n" + "\n\n".join(out)


# ---------------------------------------------------------------- sections
# Each section in one place: what it measures, its table and the ratios it gives.


@dataclass(frozen=True)
class Section:
    number: int
    key: str  # its results' key in bench.json
    measure: Callable[[argparse.Namespace, torch.device, dict, Path | None], dict]
    table: Callable[[dict], tuple[str, list[str], list[list]]]  # title, headers, rows
    ratios: Callable[[dict], dict[str, dict]]


def _ms(s: dict) -> list[float]:
    return [1000 * s[k] for k in ("median_s", "min_s", "max_s")]


# 1. training step
def measure_train_step(args, device, results, glue_dir) -> dict:
    """One training step of each setting, in rounds; each step's FLOPs."""
    out = {}
    for name in args.models:
        base = build_model(name)
        batch = random_batch(base.config, args.batch, args.length, device)
        models = {s: prepare_setting(copy.deepcopy(base), s).to(device) for s in SETTINGS}
        steps = {s: _step(m, device) for s, m in models.items()}
        times = rounds({s: (lambda st=st: st(batch)) for s, st in steps.items()}, args.warmup,
                       args.steps, label="training step", sub_label=name)
        out[name] = {
            "config": {k: getattr(base.config, k) for k in ("num_hidden_layers", "hidden_size",
                                                            "intermediate_size", "num_labels")},
            "trainable_parameters": {s: trainable_parameters(m) for s, m in models.items()},
            "flops_per_step": {s: flops(lambda st=st: st(batch)) for s, st in steps.items()},
            "settings": {s: stats(m, args.batch * args.length) for s, m in times.items()},
        }
        del base, models, steps
        free_memory()
    return out


def table_train_step(result: dict):
    rows = [[name, s, r["trainable_parameters"][s], *_ms(v), v["tokens_per_s"]]
            for name, r in result.items() for s, v in r["settings"].items()]
    return (f"1. training step (forward + backward + AdamW; *_dropout: LoRA dropout {DROPOUT})",
            ["model", "setting", "trainable", "median ms", "min ms", "max ms", "tokens/s"], rows)


def _ratio(a: list[float], b: list[float]) -> dict:
    """median(a) / median(b), and the min and max of the same-round ratios a_i / b_i."""
    pairs = paired_ratios(a, b)
    return {"median": median(a) / median(b), "min": pairs["min"], "max": pairs["max"]}


def ratios_train_step(result: dict) -> dict[str, dict]:
    out = {}
    for name, r in result.items():
        t = {s: v["times_s"] for s, v in r["settings"].items()}
        out[f"{name}: lora/peft step time"] = _ratio(t["lora"], t["peft"])
        out[f"{name}: lora/peft step time, dropout {DROPOUT}"] = _ratio(t["lora_dropout"], t["peft_dropout"])
        out[f"{name}: lora/full step time"] = _ratio(t["lora"], t["full"])
    return out


# 2. peak memory
def memory_child(args: argparse.Namespace, device: torch.device) -> dict:
    """In a fresh process: build one setting, train a few steps, report peak memory."""
    (name,) = args.models
    peak_memory_reset(device)
    model = prepare_setting(build_model(name), args.memory_child).to(device)
    batch = random_batch(model.config, args.batch, args.length, device)
    after_build = peak_memory_bytes(device)
    step = _step(model, device)
    for _ in range(args.warmup + args.memory_steps):
        step(batch)
    benchmark.timer()  # waits for the device
    peak = peak_memory_bytes(device)
    return {"peak_bytes": peak, "after_build_bytes": after_build, "training_bytes": peak - after_build}


def measure_memory(args, device, results, glue_dir) -> dict:
    """Peak memory per setting, each measured in its own subprocess (`memory_child`)."""
    out: dict = {}
    for name in args.models:
        out[name] = {}
        for setting in args.memory_settings:
            cmd = [sys.executable, "-m", "benchmarks.bench", "--memory-child", setting,
                   "--models", name, "--batch", str(args.batch), "--length", str(args.length),
                   "--warmup", str(args.warmup), "--memory-steps", str(args.memory_steps)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MEMORY_MARK)]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"memory child {name}/{setting} failed:\n{proc.stderr[-3000:]}")
            out[name][setting] = json.loads(lines[-1].removeprefix(MEMORY_MARK))
    return out


def table_memory(result: dict):
    rows = [[name, s, v["peak_bytes"] / MiB, v["after_build_bytes"] / MiB, v["training_bytes"] / MiB]
            for name, r in result.items() for s, v in r.items()]
    return ("2. peak memory (own process each)",
            ["model", "setting", "peak MiB", "after build MiB", "training MiB"], rows)


def ratios_memory(result: dict) -> dict[str, dict]:
    out = {}
    for name, r in result.items():
        if {"lora", "full"} <= set(r):
            out[f"{name}: lora/full peak memory"] = single(r["lora"]["peak_bytes"] / r["full"]["peak_bytes"])
            out[f"{name}: lora/full training memory (peak - after build)"] = single(
                r["lora"]["training_bytes"] / max(r["full"]["training_bytes"], 1))
    return out


# 3. inference latency
def measure_inference(args, device, results, glue_dir) -> dict:
    """Eval forward of the base model, LoRA unmerged and LoRA merged (§4.1), in rounds."""
    out = {}
    for name in args.models:
        base = build_model(name).to(device).eval()
        unmerged = prepare_setting(copy.deepcopy(base), "lora").eval()
        merged = merge_lora(copy.deepcopy(unmerged)).eval()
        models = {"base": base, "lora_unmerged": unmerged, "lora_merged": merged}
        inputs = random_batch(base.config, args.batch, args.length, device, labels=False)

        def forward(model: torch.nn.Module) -> Callable[[], None]:
            def run() -> None:
                with autocast(device, device.type == "cuda"):
                    model(**inputs)
            return run

        times = rounds({v: forward(m) for v, m in models.items()}, args.warmup, args.steps,
                       label="inference", sub_label=name, no_grad=True)
        out[name] = {v: stats(m, args.batch * args.length) for v, m in times.items()}
        del base, unmerged, merged, models
        free_memory()
    return out


def table_inference(result: dict):
    rows = [[name, v, *_ms(s), s["tokens_per_s"]] for name, r in result.items() for v, s in r.items()]
    return ("3. inference latency (eval, no_grad)",
            ["model", "variant", "median ms", "min ms", "max ms", "tokens/s"], rows)


def ratios_inference(result: dict) -> dict[str, dict]:
    return {f"{name}: merged/base inference latency":
            _ratio(r["lora_merged"]["times_s"], r["base"]["times_s"]) for name, r in result.items()}


# 4. one epoch with each padding strategy
EPOCH_VARIANTS = ("padded", "dynamic", "dynamic_grouped")


def measure_epoch(args, device, results, glue_dir) -> dict:
    """One LoRA epoch on SST-2 with each padding strategy, batch by batch in turn (the order
    rotates every round); tokens processed count the padding."""
    from transformers import AutoTokenizer

    from lora_nb.models import resolve_model

    base = build_model("minilm")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    data = tokenize_glue(load_glue(get_task("sst2"), glue_dir), tokenizer, get_task("sst2"), args.length)
    train = subset(data["train"], args.epoch_examples, seed=0)
    options = {"padded": {"pad_to": args.length}, "dynamic": {}, "dynamic_grouped": {"group_by_length": True}}
    loaders = {v: make_dataloader(train, tokenizer, args.batch, train=True, seed=0, **options[v])
               for v in EPOCH_VARIANTS}
    steps = {v: _step(prepare_setting(copy.deepcopy(base), "lora").to(device), device) for v in EPOCH_VARIANTS}
    iterators = {v: iter(loader) for v, loader in loaders.items()}
    out = {v: {"wall_s": 0.0, "steps": 0, "tokens": 0, "real_tokens": 0} for v in EPOCH_VARIANTS}
    for i in tqdm(range(len(loaders["padded"])), desc="epoch", leave=False):
        for v in EPOCH_VARIANTS[i % 3:] + EPOCH_VARIANTS[: i % 3]:
            start = benchmark.timer()
            batch = {k: t.to(device) for k, t in next(iterators[v]).items()}
            steps[v](batch)
            out[v]["wall_s"] += benchmark.timer() - start
            out[v]["steps"] += 1
            out[v]["tokens"] += batch["input_ids"].numel()
            out[v]["real_tokens"] += int(batch["attention_mask"].sum())
    for s in out.values():
        s["tokens_per_s"] = s["real_tokens"] / s["wall_s"]
        s["padding_fraction"] = 1 - s["real_tokens"] / s["tokens"]
    del base, steps
    free_memory()
    return {"examples": len(train), "batch": args.batch, "max_length": args.length, "variants": out}


def table_epoch(result: dict):
    rows = [[v, s["steps"], s["tokens"], s["real_tokens"], 100 * s["padding_fraction"], s["wall_s"],
             s["tokens_per_s"]] for v, s in result["variants"].items()]
    return (f"4. one LoRA epoch, {result['examples']} SST-2 examples, batch {result['batch']}, "
            f"max length {result['max_length']} ({REAL_MODEL})",
            ["variant", "steps", "tokens (with padding)", "real tokens", "padding %", "wall s",
             "real tokens/s"], rows)


def ratios_epoch(result: dict) -> dict[str, dict]:
    v = result["variants"]
    return {"epoch time padded/(dynamic+grouped)": single(v["padded"]["wall_s"] / v["dynamic_grouped"]["wall_s"])}


# 5. whole runs: lora_nb.train.run against peft + Trainer
def run_config(args: argparse.Namespace, glue_dir: Path, seed: int, output_dir: str) -> RunConfig:
    """The whole-run setting: Table 9's SST-2 LoRA learning rate and warmup, shorter runs."""
    return paper_config(
        "sst2", "lora", model=REAL_MODEL, batch_size=args.batch, epochs=args.run_epochs,
        max_length=args.length, max_train_samples=args.run_examples,
        max_eval_samples=args.run_eval_examples, glue_dir=str(glue_dir), seed=seed,
        output_dir=output_dir, overwrite=True, num_threads=args.threads)


def run_lora_nb(config: RunConfig) -> dict:
    """`lora_nb.train.run`: wall time and best validation accuracy."""
    from lora_nb.train import run

    start = time.perf_counter()
    record = run(config, progress=False)
    return {"wall_s": time.perf_counter() - start, "best_accuracy": record["best_metric"]}


def run_peft_trainer(config: RunConfig) -> dict:
    """What a user would otherwise write: peft's LoRA and transformers' `Trainer` with its
    defaults, given the same model, data, hyperparameters and epochs, evaluating every epoch."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                              TrainingArguments, set_seed)

    from lora_nb.models import resolve_model

    start = time.perf_counter()
    set_seed(config.seed)
    ref = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(ref)
    model = peft_lora(AutoModelForSequenceClassification.from_pretrained(ref, num_labels=2))
    data = tokenize_glue(load_glue(config.glue_task, config.glue_dir), tokenizer, config.glue_task,
                         config.max_length)
    train = subset(data["train"], config.max_train_samples, config.seed).remove_columns("length")
    val = subset(data["validation"], config.max_eval_samples, 0).remove_columns("length")

    def accuracy(pred) -> dict:
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    training_args = TrainingArguments(
        output_dir=config.output_dir, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size, num_train_epochs=config.epochs,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        eval_strategy="epoch", save_strategy="no", report_to=[], seed=config.seed,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), disable_tqdm=True)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=val,
                      processing_class=tokenizer, compute_metrics=accuracy)
    trainer.train()
    best = max(e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e)
    return {"wall_s": time.perf_counter() - start, "best_accuracy": best}


WHOLE_RUN = {"lora_nb": run_lora_nb, "peft_trainer": run_peft_trainer}


def measure_whole_run(args, device, results, glue_dir) -> dict:
    """Whole runs per seed, the two pipelines alternating which goes first."""
    from transformers import AutoTokenizer

    from lora_nb.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(REAL_MODEL))
    tokenize_glue(load_glue(get_task("sst2"), glue_dir), tokenizer, get_task("sst2"), args.length)  # fill the cache
    runs: dict[str, list[dict]] = {p: [] for p in WHOLE_RUN}
    with tempfile.TemporaryDirectory(prefix="lora_nb_bench_", dir=args.tmp_dir) as tmp:
        for seed in tqdm(range(args.seeds), desc="whole runs", leave=False):
            for pipeline in list(WHOLE_RUN) if seed % 2 == 0 else list(WHOLE_RUN)[::-1]:
                config = run_config(args, glue_dir, seed, os.path.join(tmp, f"{pipeline}-{seed}"))
                runs[pipeline].append({"seed": seed, **WHOLE_RUN[pipeline](config)})
                free_memory()
    return {
        "settings": {k: getattr(config, k) for k in ("task", "model", "learning_rate", "batch_size",
                                                     "epochs", "warmup_ratio", "max_length",
                                                     "max_train_samples", "max_eval_samples")},
        "pipelines": {p: {"runs": r, "median_wall_s": median(x["wall_s"] for x in r),
                          "median_best_accuracy": median(x["best_accuracy"] for x in r)}
                      for p, r in runs.items()},
    }


def table_whole_run(result: dict):
    rows = [[p, x["seed"], x["wall_s"], x["best_accuracy"]]
            for p, r in result["pipelines"].items() for x in r["runs"]]
    rows += [[p, "median", r["median_wall_s"], r["median_best_accuracy"]] for p, r in result["pipelines"].items()]
    return (f"5. whole run: {json.dumps(result['settings'])}", ["pipeline", "seed", "wall s", "best accuracy"], rows)


def ratios_whole_run(result: dict) -> dict[str, dict]:
    p = result["pipelines"]
    out = {"whole run lora_nb/(peft+Trainer) wall time": _ratio(
        [x["wall_s"] for x in p["lora_nb"]["runs"]], [x["wall_s"] for x in p["peft_trainer"]["runs"]])}
    for pipeline, label in (("lora_nb", "lora_nb"), ("peft_trainer", "peft+Trainer")):
        acc = [x["best_accuracy"] for x in p[pipeline]["runs"]]
        out[f"best accuracy {label}"] = {"median": median(acc), "min": min(acc), "max": max(acc)}
    return out


# 6. the matmul rate
def measure_ceiling(args, device, results, glue_dir) -> dict:
    """The matmul rate and each training setting of section 1 as a fraction of it."""
    size = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    ceiling = matmul_rate(device, size, min_run_time=0.2 if size < 1024 else 1.0)
    out: dict = {"matmul": ceiling, "train_step": {}}
    for name, result in results.get("train_step", {}).items():
        out["train_step"][name] = {}
        for setting, s in result["settings"].items():
            count = result["flops_per_step"][setting]
            per_step = [count / t / ceiling["flops_per_s"] for t in s["times_s"]]
            out["train_step"][name][setting] = {
                "flops_per_step": count, "flops_per_s": count / s["median_s"],
                "fraction_of_ceiling": count / s["median_s"] / ceiling["flops_per_s"],
                "fraction_min": min(per_step), "fraction_max": max(per_step)}
    return out


def table_ceiling(result: dict):
    m = result["matmul"]
    rows = [[name, s, v["flops_per_step"] / 1e9, v["flops_per_s"] / 1e9, v["fraction_of_ceiling"]]
            for name, r in result["train_step"].items() for s, v in r.items()]
    return (f"6. matmul rate ({m['size']}³ {m['dtype']}): {m['median_ms']:.4g} ms, "
            f"{m['flops_per_s'] / 1e9:.4g} GFLOP/s; training steps against it",
            ["model", "setting", "GFLOP/step", "achieved GFLOP/s", "fraction of matmul rate"], rows)


def ratios_ceiling(result: dict) -> dict[str, dict]:
    return {f"{name}: lora step FLOP/s / matmul rate":
            {"median": r["lora"]["fraction_of_ceiling"], "min": r["lora"]["fraction_min"],
             "max": r["lora"]["fraction_max"]}
            for name, r in result["train_step"].items()}


SECTIONS: dict[int, Section] = {s.number: s for s in (
    Section(1, "train_step", measure_train_step, table_train_step, ratios_train_step),
    Section(2, "memory", measure_memory, table_memory, ratios_memory),
    Section(3, "inference", measure_inference, table_inference, ratios_inference),
    Section(4, "epoch", measure_epoch, table_epoch, ratios_epoch),
    Section(5, "whole_run", measure_whole_run, table_whole_run, ratios_whole_run),
    Section(6, "ceiling", measure_ceiling, table_ceiling, ratios_ceiling),
)}


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sections", type=comma_list(int, tuple(SECTIONS)), default=list(SECTIONS),
                   help="comma-separated sections to run")
    p.add_argument("--models", type=comma_list(str, MODELS), default=["roberta-base-shape", "minilm"],
                   help="models for sections 1, 2, 3 and 6")
    p.add_argument("--batch", type=at_least(1), default=16, help="batch size (all sections)")
    p.add_argument("--length", type=at_least(1), default=128,
                   help="sequence length (sections 1-3), max and padded length (4, 5)")
    p.add_argument("--warmup", type=at_least(0), default=2, help="unmeasured warm-up rounds")
    p.add_argument("--steps", type=at_least(1), default=5, help="measured rounds per setting")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch CPU threads; 0: torch's default")
    p.add_argument("--memory-settings", type=comma_list(str, SETTINGS), default=["lora", "peft", "full"],
                   help="settings measured in section 2")
    p.add_argument("--memory-steps", type=at_least(1), default=2, help="steps after warm-up (section 2)")
    p.add_argument("--glue-dir", default=None,
                   help="GLUE parquet directory (sections 4, 5); None: $LORA_NB_GLUE_DIR")
    p.add_argument("--epoch-examples", type=at_least(1), default=2000,
                   help="SST-2 training examples in section 4's epoch")
    p.add_argument("--run-examples", type=at_least(1), default=2000,
                   help="SST-2 training examples in section 5's runs")
    p.add_argument("--run-epochs", type=at_least(1), default=2, help="epochs of section 5's runs")
    p.add_argument("--run-eval-examples", type=at_least(1), default=872,
                   help="validation examples in section 5 (872: all)")
    p.add_argument("--seeds", type=at_least(1), default=3, help="seeds of section 5 (0, 1, ...)")
    p.add_argument("--matmul-size", type=at_least(0), default=0, help="0: 2048 on the CPU, 8192 on a GPU")
    p.add_argument("--out", default="bench.json", help="the JSON file written")
    p.add_argument("--tmp-dir", default=None,
                   help="where section 5's runs go (a temporary folder inside); None: the system's")
    p.add_argument("--memory-child", choices=SETTINGS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true",
                   help="print torch.profiler's table for a LoRA step of the first model and exit")
    p.add_argument("--compare-peft", action="store_true",
                   help="print lora_nb's and peft's step times and the operators that differ, "
                   f"LoRA dropout 0 and {DROPOUT}, for the first model, and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.memory_child:
        if len(args.models) != 1:
            parser.error("--memory-child takes one model")
        print(MEMORY_MARK + json.dumps(memory_child(args, device)), flush=True)
        return 0
    if args.profile:
        print(profile_lora_step(args, device))
        return 0
    if args.compare_peft:
        print(compare_with_peft(args, device))
        return 0
    glue_dir = resolve_glue_dir(args.glue_dir)
    if {4, 5} & set(args.sections) and glue_dir is None:
        parser.error("sections 4 and 5 need --glue-dir or $LORA_NB_GLUE_DIR")

    results: dict = {"environment": {**environment(device, "peft"),
                                     "autocast": "bf16" if device.type == "cuda" else "none"},
                     "args": vars(args), "ratios": {}}
    print(f"# lora_nb benchmark — {results['environment']['device']}, "
          f"{torch.get_num_threads()} threads, batch {args.batch} × length {args.length}")
    for number in sorted(set(args.sections)):
        section = SECTIONS[number]
        results[section.key] = section.measure(args, device, results, glue_dir)
        title, headers, rows = section.table(results[section.key])
        print(f"\n## {title}\n\n" + (markdown_table(headers, rows) if rows else "(no training steps: section 1 did not run)"))
        results["ratios"].update(section.ratios(results[section.key]))
        sys.stdout.flush()
    print("\n## ratios (of medians; min/max over the same round's pairs)\n")
    print(markdown_table(["ratio", "median", "min", "max"],
                         [[g, r["median"], r["min"], r["max"]] for g, r in results["ratios"].items()]))
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
