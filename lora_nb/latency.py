"""Inference latency of LoRA against bottleneck adapters on the CPU (paper §3 and Table 1).

    python -m lora_nb.latency --out report/latency.json

The paper (Table 1: GPT-2 medium on an NVIDIA Quadro RTX8000, batch 1 × 128 tokens, averaged
over 100 trials) measures 19.8 ms for a fine-tuned or LoRA model, 23.9 ms (+20.7%) for AdapterL
and 25.8 ms (+30.3%) for AdapterH: adapter layers run in sequence after the layers they adapt and
cannot be folded into W, while LoRA merges B A into W (`lora_nb.lora.merge_lora`) and adds no
latency. Here, on the CPU, for each model, number of torch threads and batch × length:

- ``base``: the base model (what a merged LoRA model computes with);
- ``base_copy``: a second copy of the base model, the same weights: the noise control — its
  ratio to ``base`` shows how far two identical models' times differ round by round;
- ``lora_merged``: LoRA r = 8, α = 8 on Wq, Wv (Table 9), B randomised (nonzero, as after
  training), then merged into W;
- ``lora_unmerged``: the same LoRA, not merged (x ↦ W x + B A x · α/r);
- ``houlsby`` (AdapterH, m = 8) and ``pfeiffer`` (AdapterL, m = 16 after the MLP only): the
  bottleneck sizes that give Table 2's ≈ 0.3M on RoBERTa-base, their ``up`` projections
  randomised so that they are not the identity.

Each pass is one forward of the classifier (``model.eval()``, `torch.inference_mode()`) on random
token ids of the full length, attention mask all ones. The methods run interleaved, one pass
each per round, in a new random order every round (so that no method always follows the same
one), after ``--warmup`` unmeasured rounds; the table gives the median, min and
max per method and its ratio to ``base`` taken per round (the same round's times, paired), their
median and min–max. The paper's batch 1 × 128 is kept; its larger settings (16 × 256,
32 × 512 on a GPU) are shrunk to 16 × 128 and 16 × 256, what a CPU runs in reasonable time.
Every model is built once and reused for every thread count and shape.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Callable, Iterable

import torch
from torch import nn

from .bottleneck import AdapterConfig, adapter_modules
from .lora import LoRAConfig, lora_layers, merge_lora
from .methods import prepare_model
from .paper import reference_rows

# ---------------------------------------------------------------- what is measured

METHODS = ("base", "base_copy", "lora_merged", "lora_unmerged", "houlsby", "pfeiffer")
METHOD_LABELS = {
    "base": "base (= FT)",
    "base_copy": "base copy (noise control)",
    "lora_merged": "LoRA merged",
    "lora_unmerged": "LoRA unmerged",
    "houlsby": "Houlsby adapter (m=8)",
    "pfeiffer": "Pfeiffer adapter (m=16, after the MLP)",
}
# The paper's Table 1 column at batch 1 × 128 (GPT-2 medium, Quadro RTX8000), in ms.
def _paper_table1() -> dict[str, float]:
    """Table 1's batch 1 × 128 row (GPT-2 medium on an RTX8000), from the reference CSV."""
    return {row["method"]: float(row["latency_ms"]) for row in reference_rows("table1")}


PAPER_TABLE1 = _paper_table1()
# Our row beside the paper's: its AdapterL (Lin et al., 2020) is, like Pfeiffer's, one adapter after the MLP.
PAPER_ANALOGUE = {"base": "Fine-Tune/LoRA", "lora_merged": "Fine-Tune/LoRA",
                  "houlsby": "AdapterH", "pfeiffer": "AdapterL"}
LORA = LoRAConfig(("q", "v"), r=8, alpha=8.0)
ADAPTERS = {"houlsby": AdapterConfig("houlsby", 8), "pfeiffer": AdapterConfig("pfeiffer", 16)}
ADAPTER_METHODS = tuple(ADAPTERS)

DEFAULTS = {"models": ["minilm", "roberta-base-shape"], "threads": [1, 2],
            "shapes": [(1, 128), (16, 128), (16, 256)], "passes_small": 20, "passes_large": 5,
            "warmup": 3}
QUICK = {"shapes": [(1, 16), (2, 16)], "passes_small": 5, "passes_large": 3, "warmup": 1}
NOISE_WIDENING = 0.01  # the base_copy range is widened by 1 point of the ratio (verdict_rows)
# "No latency" needs a measurement that could have seen some: the widened base_copy range must
# lie within 1 ± MAX_NOISE (a 10% slowdown, half the paper's smallest batch-1 adapter overhead).
MAX_NOISE = 0.10

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
SHAPE_NOTE = ("Measured on the CPU. The paper's setting is batch 1 × 128 tokens on a GPU "
              "(Table 1: GPT-2 medium, Quadro RTX8000); its larger batches (16 × 256, "
              "32 × 512) are shrunk here to 16 × 128 and 16 × 256, what a CPU runs in "
              "reasonable time.")


def _tiny(kind: str) -> nn.Module:
    """A 2-layer hidden-32 classifier with random weights (tests)."""
    from .models import from_config, tiny_config

    return from_config(tiny_config(kind))


def _minilm() -> nn.Module:
    from .models import load_model, load_model_config

    name = "all-MiniLM-L6-v2"
    return load_model(name, load_model_config(name, 2))[0]


def _roberta_base_shape() -> nn.Module:
    """RoBERTa-base's shape with random weights (timing only, no download)."""
    from .models import from_config, roberta_base_config

    return from_config(roberta_base_config())


# name -> (builder, longest input its position embeddings allow)
MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "minilm": (_minilm, 512),
    "roberta-base-shape": (_roberta_base_shape, 512),
    "tiny-bert": (lambda: _tiny("bert"), 512),  # for tests
    "tiny-roberta": (lambda: _tiny("roberta"), 512),  # for tests
}


def build_base(name: str, seed: int = 0) -> nn.Module:
    """Benchmark model `name` in eval mode (MiniLM: pretrained encoder, new 2-label head)."""
    if name not in MODELS:
        raise ValueError(f"model: unknown {name!r}; choose from {list(MODELS)}")
    torch.manual_seed(seed)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = MODELS[name][0]()
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval()


@torch.no_grad()
def _randomize(params: Iterable[torch.Tensor], gen: torch.Generator, std: float) -> None:
    for p in params:
        p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)


def build_methods(base: nn.Module, seed: int = 0, std: float = 0.02) -> dict[str, nn.Module]:
    """Every method's model, each a deep copy of `base` (left unchanged), in eval mode: see the
    module docstring. B of LoRA and ``up`` of each adapter are drawn from N(0, std²) with a fixed
    seed: nonzero, as after training.

    ``base`` too is a copy, built as ``base_copy`` is: in trials on a tiny model (sub-millisecond
    passes on a busy CPU) the object the constructor returned ran 5-8% slower than its own deep
    copies, cause not established; as copies, ``base`` and ``base_copy`` matched."""
    gen = torch.Generator().manual_seed(seed)
    base = base.eval()
    unmerged = prepare_model(copy.deepcopy(base), "lora", LORA)
    _randomize([layer.lora_B for layer in lora_layers(unmerged).values()], gen, std)
    models = {"base": copy.deepcopy(base), "base_copy": copy.deepcopy(base),
              "lora_merged": merge_lora(copy.deepcopy(unmerged)), "lora_unmerged": unmerged}
    for method, config in ADAPTERS.items():
        model = prepare_model(copy.deepcopy(base), method, adapter=config)
        _randomize([a.up.weight for a in adapter_modules(model).values()], gen, std)
        models[method] = model
    for model in models.values():
        model.eval()
        model.requires_grad_(False)
    return models


def random_inputs(model: nn.Module, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids of the full length (no special ids 0-2), attention mask all ones."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


# ---------------------------------------------------------------- timing


def round_orders(names: list[str], rounds: int, seed: int = 0) -> list[list[str]]:
    """Each round's order of `names`: a seeded random permutation, so that no method always runs
    right after the same other one (a fixed cyclic order A B C A B C … does that, rotated or not),
    nor always first: a safeguard against position effects (caches, the allocator)."""
    rng = random.Random(seed)
    return [rng.sample(names, len(names)) for _ in range(rounds)]


def time_interleaved(models: dict[str, nn.Module], inputs: dict[str, torch.Tensor], warmup: int,
                     passes: int, seed: int = 0) -> dict[str, list[float]]:
    """Forward passes of every model, one per model per round in `round_orders`' order; each
    model's times in seconds over the `passes` rounds after `warmup` rounds. The garbage
    collector is paused while timing."""
    names = list(models)
    orders = round_orders(names, warmup + passes, seed)
    times: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode():
            for i, order in enumerate(orders):
                for name in order:
                    start = time.perf_counter()
                    models[name](**inputs)
                    elapsed = time.perf_counter() - start
                    if i >= warmup:
                        times[name].append(elapsed)
    finally:
        if was_enabled:
            gc.enable()
    return times


def latency_rows(times: dict[str, list[float]], model: str, batch: int, length: int,
                 threads: int) -> list[dict]:
    """One row per method: median, min, max in ms, the per-round ratio to ``base`` (median, min,
    max) and, robust to passes slowed by other processes, the ratio of the fastest passes."""
    rows = []
    for method, t in times.items():
        ratios = [x / y for x, y in zip(t, times["base"], strict=True)]
        rows.append({"model": model, "method": method, "batch": batch, "length": length,
                     "threads": threads, "median_ms": 1000 * median(t), "min_ms": 1000 * min(t),
                     "max_ms": 1000 * max(t), "ratio_median": median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "ratio_of_mins": min(t) / min(times["base"]), "passes": len(t),
                     "times_ms": [1000 * x for x in t]})
    return rows


def measure(models: list[str], threads: list[int], shapes: list[tuple[int, int]],
            passes_small: int, passes_large: int, warmup: int,
            report: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Every (model, threads, shape): each method `passes_small` times at batch 1, else
    `passes_large` times. Each model is built once; `report` gets each setting's rows as they
    come. The torch thread count is restored afterwards."""
    before = torch.get_num_threads()
    rows: list[dict] = []
    try:
        for name in models:
            variants = build_methods(build_base(name))
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                for batch, length in shapes:
                    inputs = random_inputs(variants["base"], batch, length)
                    passes = passes_small if batch == 1 else passes_large
                    print(f"… {name}, {batch}×{length}, {n_threads} thread(s): "
                          f"{warmup} + {passes} rounds × {len(variants)} methods",
                          file=sys.stderr, flush=True)
                    times = time_interleaved(variants, inputs, warmup, passes)
                    setting = latency_rows(times, name, batch, length, n_threads)
                    rows += setting
                    if report:
                        report(setting)
            del variants
            gc.collect()
    finally:
        torch.set_num_threads(before)
    return rows


# ---------------------------------------------------------------- verdicts


def _settings(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    out: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        out.setdefault((r["model"], r["batch"], r["length"], r["threads"]), {})[r["method"]] = r
    return out


def setting_label(batch: int, length: int, threads: int) -> str:
    return f"{batch}×{length}, {threads} thr"


def verdict_rows(rows: list[dict]) -> list[dict]:
    """The paper's two latency claims, per (model, batch × length, threads), against the noise
    control ``base_copy`` (the same weights as ``base``), whose per-round ratios to ``base`` span
    [noise_min, noise_max]:

    - "LoRA merged adds no latency": *reproduced* when merged's median ratio lies within
      [noise_min − 1%, noise_max + 1%] and that range within 1 ± `MAX_NOISE` (else a wide noise
      range, from a few preempted passes on a busy machine, would call anything "no latency");
      *not reproduced* when even its smallest ratio lies above noise_max + 1% (slower in every
      round); else *inconclusive*;
    - "<adapter> adds latency": *reproduced* when the adapter's smallest ratio exceeds noise_max
      (slower than base in every round by more than identical models ever differ); *not
      reproduced* when its largest ratio lies below noise_min (faster in every round); else
      *inconclusive*.

    ``overhead_pct`` is (median ratio − 1) · 100; ``largest_overhead`` marks, per model and
    method, the setting where it is largest (the paper: batch 1, short sequences). Settings
    without a method are skipped; a setting without ``base_copy`` is an error."""
    out = []
    for (model, batch, length, threads), by_method in _settings(rows).items():
        if "base_copy" not in by_method:
            raise ValueError(f"verdict_rows: {model} {batch}×{length} ({threads} threads) has no "
                             "base_copy row, the noise control the verdicts need")
        noise = by_method["base_copy"]
        lo, hi = noise["ratio_min"], noise["ratio_max"]
        for method in ("lora_merged", *ADAPTER_METHODS):
            if method not in by_method:
                continue
            r = by_method[method]
            note = ""
            if method == "lora_merged":
                claim = "LoRA merged adds no latency"
                band = (lo - NOISE_WIDENING, hi + NOISE_WIDENING)
                quiet = 1 - MAX_NOISE <= band[0] and band[1] <= 1 + MAX_NOISE
                if r["ratio_min"] > band[1]:
                    verdict = NOT_REPRODUCED
                elif band[0] <= r["ratio_median"] <= band[1]:
                    verdict = REPRODUCED if quiet else INCONCLUSIVE
                    if not quiet:
                        note = f"noise range wider than ±{MAX_NOISE:.0%}"
                else:
                    verdict = INCONCLUSIVE
            else:
                claim = f"{METHOD_LABELS[method].split(' ')[0]} adds latency"
                if r["ratio_min"] > hi:
                    verdict = REPRODUCED
                elif r["ratio_max"] < lo:
                    verdict = NOT_REPRODUCED
                else:
                    verdict = INCONCLUSIVE
            out.append({"model": model, "batch": batch, "length": length, "threads": threads,
                        "setting": setting_label(batch, length, threads), "claim": claim,
                        "method": method, "ratio_median": r["ratio_median"],
                        "ratio_min": r["ratio_min"], "ratio_max": r["ratio_max"],
                        "noise_min": lo, "noise_max": hi,
                        "overhead_pct": 100 * (r["ratio_median"] - 1), "verdict": verdict,
                        "note": note, "largest_overhead": False})
    for model in {v["model"] for v in out}:
        for method in ADAPTER_METHODS:
            mine = [v for v in out if v["model"] == model and v["method"] == method]
            if mine:
                max(mine, key=lambda v: v["overhead_pct"])["largest_overhead"] = True
    return out


# ---------------------------------------------------------------- tables and figure


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"


def setting_table(rows: list[dict]) -> str:
    """One model and setting's Markdown table."""
    r0 = rows[0]
    lines = [f"#### {r0['model']}: batch {r0['batch']} × length {r0['length']}, "
             f"{r0['threads']} thread(s)", "",
             "| method | paper analogue | median ms | min–max ms | ratio to base, median "
             "[min–max] per round | overhead % | ratio of fastest passes | passes |",
             "|:---|:---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {METHOD_LABELS.get(r['method'], r['method'])} | "
            f"{PAPER_ANALOGUE.get(r['method'], '')} | {r['median_ms']:.2f} | "
            f"{r['min_ms']:.2f}–{r['max_ms']:.2f} | {r['ratio_median']:.3f} "
            f"[{r['ratio_min']:.3f}–{r['ratio_max']:.3f}] | "
            f"{100 * (r['ratio_median'] - 1):+.1f} | {r['ratio_of_mins']:.3f} | {r['passes']} |")
    return "\n".join(lines)


def verdict_table(verdicts: list[dict]) -> str:
    lines = ["| model | setting | claim | ratio median [min–max] | base_copy range (noise) | "
             "overhead % | verdict |", "|:---|:---|:---|---:|---:|---:|:---|"]
    for v in verdicts:
        mark = " (largest)" if v["largest_overhead"] else ""
        lines.append(f"| {v['model']} | {v['setting']} | {v['claim']} | {v['ratio_median']:.3f} "
                     f"[{v['ratio_min']:.3f}–{v['ratio_max']:.3f}] | "
                     f"{v['noise_min']:.3f}–{v['noise_max']:.3f} | "
                     f"{v['overhead_pct']:+.1f}{mark} | {v['verdict']}"
                     f"{' (' + v['note'] + ')' if v['note'] else ''} |")
    return "\n".join(lines)


def paper_table() -> str:
    base = PAPER_TABLE1["Fine-Tune/LoRA"]
    lines = ["| paper, Table 1 (batch 1 × 128, GPU) | ms | overhead % |", "|:---|---:|---:|"]
    lines += [f"| {k} | {v} | {100 * (v / base - 1):+.1f} |" for k, v in PAPER_TABLE1.items()]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The whole result as Markdown: settings, the paper's numbers, verdicts, every table."""
    rows, verdicts = result["rows"], result["verdicts"]
    parts = [
        "### Inference latency: LoRA vs adapters (paper §3, Table 1)", "",
        f"`{result['command']}` — {result['date']}, torch {result['torch']}, "
        f"CPU: {result['cpu']}, threads {', '.join(map(str, result['threads']))}, "
        f"load average {result['loadavg_start'][0]:.2f} at the start and "
        f"{result['loadavg_end'][0]:.2f} at the end.", "",
        SHAPE_NOTE + " Ratios are per round (each method's pass divided by the same round's "
        "`base` pass); `base copy` is a second copy of the base model, so its ratios show the "
        "noise.", "",
        paper_table(), "",
        "Verdicts (LoRA merged adds no latency: its median ratio lies inside the base copy's "
        f"range ± 1 point, a range within ±{MAX_NOISE:.0%}; an adapter adds latency: its "
        "smallest ratio exceeds the base copy's largest; \"(largest)\" marks where a method's "
        "overhead is largest, the paper's batch 1 × short sequence):", "",
        verdict_table(verdicts), "",
    ]
    for setting in _settings(rows).values():
        parts += [setting_table(list(setting.values())), ""]
    return "\n".join(parts)


def latency_figure(rows: list[dict], path=None):
    """Latency overhead vs ``base`` in % (median per-round ratio − 1, whiskers min–max) by setting
    (batch × length, threads), one bar per method, one panel per model; a line at 0. Given `path`,
    saves PNG and SVG."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    from .plots import save_figure

    df = pd.DataFrame([r for r in rows if r["method"] != "base"])
    df["overhead"] = 100 * (df["ratio_median"] - 1)
    df["setting"] = [setting_label(b, n, t) for b, n, t in zip(df["batch"], df["length"], df["threads"])]
    df = df.sort_values(["threads", "batch", "length"], kind="stable")
    settings = list(dict.fromkeys(df["setting"]))
    methods = [m for m in METHODS if m in set(df["method"])]
    labels = [METHOD_LABELS[m] for m in methods]
    df["label"] = df["method"].map(METHOD_LABELS)
    palette = dict(zip(labels, sns.color_palette("colorblind", len(labels))))
    model_names = list(dict.fromkeys(df["model"]))
    panel_width = max(3.4, 0.8 * len(settings) + 0.25 * len(settings) * len(methods) / 2)
    fig, axes = plt.subplots(1, len(model_names), figsize=(panel_width * len(model_names) + 2.8, 4.2),
                             squeeze=False, sharey=True, layout="constrained")
    # The y range follows the medians: a pass preempted on a busy machine gives whiskers of
    # thousands of percent, which are clipped at the edge and marked by a triangle.
    span = max(df["overhead"].max(), 0) - min(df["overhead"].min(), 0)
    pad = max(5.0, 0.6 * span)
    ylim = (min(df["overhead"].min(), 0) - pad, max(df["overhead"].max(), 0) + pad)
    clipped = False
    for ax, model in zip(axes.flat, model_names):
        sub = df[df["model"] == model]
        sns.barplot(sub, x="setting", y="overhead", hue="label", order=settings, hue_order=labels,
                    palette=palette, errorbar=None, ax=ax, legend=False)
        for container, label in zip(ax.containers, labels):
            m = sub[sub["label"] == label].set_index("setting")
            for bar, setting in zip(container, settings):
                if setting in m.index:
                    r = m.loc[setting]
                    x = bar.get_x() + bar.get_width() / 2
                    lo, hi = 100 * (r["ratio_min"] - 1), 100 * (r["ratio_max"] - 1)
                    ax.plot([x, x], [max(lo, ylim[0]), min(hi, ylim[1])], color="0.25", lw=0.9)
                    for end, edge, marker in ((lo, ylim[0], "v"), (hi, ylim[1], "^")):
                        if (end < edge) if marker == "v" else (end > edge):
                            ax.plot([x], [edge], marker=marker, color="0.25", ms=4, clip_on=False)
                            clipped = True
        ax.set_ylim(*ylim)
        ax.axhline(0, color="black", lw=1)
        ax.set_title(model)
        ax.set_xlabel("batch × length, threads")
        ax.set_ylabel("latency overhead vs base (%)")
        ax.tick_params(axis="x", labelrotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[lab]) for lab in labels]
    fig.legend(handles, labels, loc="outside right center", title="method", frameon=False)
    fig.suptitle("Inference latency overhead vs the base model (bar: median of per-round ratios "
                 "− 1; whisker: min–max" + ("; ▲▼ clipped" if clipped else "") + ")",
                 fontsize="medium")
    return save_figure(fig, path)


# ---------------------------------------------------------------- command line


def _csv_choice(choices) -> Callable[[str], list[str]]:
    def parse(s: str) -> list[str]:
        values = [x.strip() for x in s.split(",") if x.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"unknown model(s) {bad or s!r}; choose from {', '.join(choices)}")
        return values
    return parse


def _positive_int(s: str) -> int:
    try:
        value = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{s}: must be >= 1")
    return value


def _nonnegative_int(s: str) -> int:
    return 0 if s.strip() == "0" else _positive_int(s)


def _thread_list(s: str) -> list[int]:
    values = [x.strip() for x in s.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{s!r}: give thread counts like 1,2")
    try:
        return [_positive_int(v) for v in values]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"thread count {err}") from None


def _shape_list(s: str) -> list[tuple[int, int]]:
    shapes = []
    for item in (x.strip() for x in s.split(",")):
        parts = item.lower().replace("×", "x").split("x")
        try:
            batch, length = (int(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r}: a shape is BATCHxLENGTH, e.g. 1x128") from None
        if batch < 1 or length < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: batch and length must be >= 1")
        shapes.append((batch, length))
    return shapes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lora_nb.latency", description=__doc__.split("\n\n")[0],
        epilog="The default run is estimated at about 35 min on 2 idle cores (from "
               "report/bench.md's 16×128 forward times; 30-45 min), over half of it RoBERTa-base "
               "shape at batch 16 on 1 thread.")
    p.add_argument("--models", type=_csv_choice(list(MODELS)), default=None,
                   help="comma-separated models (tiny-bert and tiny-roberta are for tests); "
                        "default: minilm,roberta-base-shape")
    p.add_argument("--threads", type=_thread_list, default=None,
                   help="comma-separated torch thread counts; default: 1,2")
    p.add_argument("--shapes", type=_shape_list, default=None,
                   help="comma-separated BATCHxLENGTH; default: 1x128,16x128,16x256 "
                        "(--quick: 1x16,2x16)")
    p.add_argument("--passes-small", type=_positive_int, default=None,
                   help="measured passes per method at batch 1; default: 20 (--quick: 5)")
    p.add_argument("--passes-large", type=_positive_int, default=None,
                   help="measured passes per method at batch > 1; default: 5 (--quick: 3)")
    p.add_argument("--warmup", type=_nonnegative_int, default=None,
                   help="unmeasured warm-up passes per method; default: 3 (--quick: 1)")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few passes (a smoke test); explicit flags still win")
    p.add_argument("--out", default="latency.json",
                   help="the JSON written; the Markdown goes next to it (same stem, .md); "
                        "default: latency.json")
    p.add_argument("--figure", default=None,
                   help="also draw latency_figure to this path (PNG and SVG); default: none")
    return p


def resolve_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Fill unset flags from the defaults (or --quick's) and check shapes against the models'
    position embeddings, before anything is built."""
    fill = {**DEFAULTS, **(QUICK if args.quick else {})}
    for key, value in fill.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if Path(args.out).suffix.lower() == ".md":
        parser.error("--out: the JSON path; the Markdown is written next to it (same stem, .md)")
    for name in args.models:
        longest = MODELS[name][1]
        too_long = [f"{b}x{n}" for b, n in args.shapes if n > longest]
        if too_long:
            parser.error(f"--shapes: {', '.join(too_long)} longer than {name}'s {longest} "
                         "positions")
    return args


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = resolve_args(parser.parse_args(argv), parser)
    command = " ".join(["python -m lora_nb.latency", *argv])
    load_start = os.getloadavg()
    print(f"# inference latency — {cpu_model()}, torch {torch.__version__}\n\n{SHAPE_NOTE}\n")

    def report(setting: list[dict]) -> None:
        print(setting_table(setting) + "\n", flush=True)

    rows = measure(args.models, args.threads, args.shapes, args.passes_small, args.passes_large,
                   args.warmup, report)
    verdicts = verdict_rows(rows)
    result = {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "threads": args.threads, "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "settings": {"models": args.models, "shapes": [f"{b}x{n}" for b, n in args.shapes],
                     "passes_small": args.passes_small, "passes_large": args.passes_large,
                     "warmup": args.warmup, "quick": args.quick, "lora": LORA.to_dict(),
                     "adapters": {k: v.to_dict() for k, v in ADAPTERS.items()}},
        "note": SHAPE_NOTE,
        "paper_table1_batch1x128_ms": PAPER_TABLE1,
        "rows": rows,
        "verdicts": verdicts,
    }
    print("## verdicts\n\n" + verdict_table(verdicts))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    if args.figure:
        import matplotlib.pyplot as plt

        plt.close(latency_figure(rows, args.figure))
        print(f"wrote {Path(args.figure).with_suffix('.png')} and .svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
