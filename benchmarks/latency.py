"""Inference latency of LoRA against bottleneck adapters on the CPU (paper §3 and Table 1).

    python -m benchmarks.latency --out report/latency.json

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
token ids of the full length, attention mask all ones. The variants run in rounds, one pass each
per round, in a new random order every round (`benchmarks.harness.rounds`), after ``--warmup``
unmeasured rounds; the table gives the median, min and max per variant and its ratio to ``base``
taken per round (the same round's times, paired), their median and min–max. The verdicts and
the figure are `lora_nb.table1`'s, which the analysis reads from the JSON written here. The
paper's batch 1 × 128 is kept; its larger settings (16 × 256, 32 × 512 on a GPU) are shrunk to
16 × 128 and 16 × 256, what a CPU runs in reasonable time. Every model is built once and reused
for every thread count and shape.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from benchmarks.harness import (ADAPTERS, LORA, MAX_LENGTH, at_least, build_model, comma_list,
                                markdown_table, paired_ratios, random_batch, rounds)
from lora_nb.bottleneck import adapter_modules
from lora_nb.lora import lora_layers, merge_lora
from lora_nb.machine import cpu_name
from lora_nb.methods import prepare_model
from lora_nb.table1 import (MAX_NOISE, PAPER_ANALOGUE, PAPER_TABLE1, VARIANT_LABELS, latency_figure,
                            load_note, paper_table, result_verdicts, verdict_table)

MODELS = ("minilm", "roberta-base-shape", "tiny-bert", "tiny-roberta")  # the tiny ones: tests
DEFAULTS = {"models": ["minilm", "roberta-base-shape"], "threads": [1, 2],
            "shapes": [(1, 128), (16, 128), (16, 256)], "passes_small": 20, "passes_large": 5,
            "warmup": 3}
QUICK = {"shapes": [(1, 16), (2, 16)], "passes_small": 5, "passes_large": 3, "warmup": 1}
SHAPE_NOTE = ("Measured on the CPU. The paper's setting is batch 1 × 128 tokens on a GPU "
              "(Table 1: GPT-2 medium, Quadro RTX8000); its larger batches (16 × 256, "
              "32 × 512) are shrunk here to 16 × 128 and 16 × 256, what a CPU runs in "
              "reasonable time.")


@torch.no_grad()
def _randomize(params: Iterable[torch.Tensor], gen: torch.Generator, std: float) -> None:
    for p in params:
        p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)


def build_variants(base: nn.Module, seed: int = 0, std: float = 0.02) -> dict[str, nn.Module]:
    """Every variant's model, each a deep copy of `base` (left unchanged), in eval mode: see the
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


def time_variants(models: dict[str, nn.Module], inputs: dict, warmup: int, passes: int,
                  seed: int = 0) -> dict[str, list[float]]:
    """Forward passes of every variant in rounds (`harness.rounds`: a new random order each
    round, the garbage collector paused, inference mode): each one's seconds per pass."""
    passes_of: dict[str, Callable[[], object]] = {n: (lambda m=m: m(**inputs)) for n, m in models.items()}
    return {n: list(m.times) for n, m in rounds(passes_of, warmup, passes, seed, no_grad=True).items()}


def latency_rows(times: dict[str, list[float]], model: str, batch: int, length: int,
                 threads: int) -> list[dict]:
    """One row per variant: median, min, max in ms, the per-round ratio to ``base`` (median,
    min, max) and, robust to passes slowed by other processes, the ratio of the fastest passes."""
    rows = []
    for method, t in times.items():
        r = paired_ratios(t, times["base"])
        rows.append({"model": model, "method": method, "batch": batch, "length": length,
                     "threads": threads, "median_ms": 1000 * statistics.median(t),
                     "min_ms": 1000 * min(t), "max_ms": 1000 * max(t), "ratio_median": r["median"],
                     "ratio_min": r["min"], "ratio_max": r["max"], "ratio_of_mins": r["of_mins"],
                     "passes": len(t), "times_ms": [1000 * x for x in t]})
    return rows


def measure(models: list[str], threads: list[int], shapes: list[tuple[int, int]],
            passes_small: int, passes_large: int, warmup: int,
            report: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Every (model, threads, shape): each variant `passes_small` times at batch 1, else
    `passes_large` times. Each model is built once; `report` gets each setting's rows as they
    come. The torch thread count is restored afterwards."""
    before = torch.get_num_threads()
    rows: list[dict] = []
    try:
        for name in models:
            variants = build_variants(build_model(name).eval())
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                for batch, length in shapes:
                    inputs = random_batch(variants["base"].config, batch, length, labels=False)
                    passes = passes_small if batch == 1 else passes_large
                    print(f"… {name}, {batch}×{length}, {n_threads} thread(s): "
                          f"{warmup} + {passes} rounds × {len(variants)} variants",
                          file=sys.stderr, flush=True)
                    setting = latency_rows(time_variants(variants, inputs, warmup, passes),
                                           name, batch, length, n_threads)
                    rows += setting
                    if report:
                        report(setting)
            del variants
            gc.collect()
    finally:
        torch.set_num_threads(before)
    return rows


def setting_table(rows: list[dict]) -> str:
    """One model and setting's Markdown table."""
    r0 = rows[0]
    table = markdown_table(
        ["method", "paper analogue", "median ms", "min–max ms",
         "ratio to base, median [min–max] per round", "overhead %", "ratio of fastest passes", "passes"],
        [[VARIANT_LABELS.get(r["method"], r["method"]), PAPER_ANALOGUE.get(r["method"], ""),
          f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}–{r['max_ms']:.2f}",
          f"{r['ratio_median']:.3f} [{r['ratio_min']:.3f}–{r['ratio_max']:.3f}]",
          f"{100 * (r['ratio_median'] - 1):+.1f}", f"{r['ratio_of_mins']:.3f}", r["passes"]] for r in rows])
    return (f"#### {r0['model']}: batch {r0['batch']} × length {r0['length']}, "
            f"{r0['threads']} thread(s)\n\n{table}")


def markdown(result: dict) -> str:
    """The whole result as Markdown: settings, the paper's numbers, verdicts, every table."""
    rows, verdicts = result["rows"], result["verdicts"]
    parts = [
        "### Inference latency: LoRA vs adapters (paper §3, Table 1)", "",
        f"`{result['command']}` — {result['date']}, torch {result['torch']}, "
        f"CPU: {result['cpu']}, threads {', '.join(map(str, result['threads']))}, "
        f"load average {result['loadavg_start'][0]:.2f} at the start and "
        f"{result['loadavg_end'][0]:.2f} at the end.", "",
        SHAPE_NOTE + " Ratios are per round (each variant's pass divided by the same round's "
        "`base` pass); `base copy` is a second copy of the base model, so its ratios show the "
        "noise.", "", paper_table(), "",
        "Verdicts (LoRA merged adds no latency: its median ratio lies inside the base copy's "
        f"range ± 1 point, a range within ±{MAX_NOISE:.0%}; an adapter adds latency: its "
        "smallest ratio exceeds the base copy's largest; \"(largest)\" marks where a method's "
        "overhead is largest, the paper's batch 1 × short sequence):", "",
        verdict_table(verdicts), "",
    ]
    settings: dict[tuple, list[dict]] = {}
    for r in rows:
        settings.setdefault((r["model"], r["batch"], r["length"], r["threads"]), []).append(r)
    for setting in settings.values():
        parts += [setting_table(setting), ""]
    return "\n".join(parts)


def _shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in (x.strip() for x in text.split(",")):
        try:
            batch, length = (int(p) for p in item.lower().replace("×", "x").split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: a shape is BATCHxLENGTH, e.g. 1x128") from None
        if batch < 1 or length < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: batch and length must be >= 1")
        shapes.append((batch, length))
    return shapes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0],
        epilog="The default run is estimated at about 35 min on 2 idle cores (from "
               "report/bench.md's 16×128 forward times; 30-45 min), over half of it RoBERTa-base "
               "shape at batch 16 on 1 thread.")
    p.add_argument("--models", type=comma_list(str, MODELS), default=None,
                   help="comma-separated models (tiny-bert and tiny-roberta are for tests); "
                        "default: minilm,roberta-base-shape")
    p.add_argument("--threads", type=comma_list(at_least(1)), default=None,
                   help="comma-separated torch thread counts; default: 1,2")
    p.add_argument("--shapes", type=_shapes, default=None,
                   help="comma-separated BATCHxLENGTH; default: 1x128,16x128,16x256 (--quick: 1x16,2x16)")
    p.add_argument("--passes-small", type=at_least(1), default=None,
                   help="measured passes per variant at batch 1; default: 20 (--quick: 5)")
    p.add_argument("--passes-large", type=at_least(1), default=None,
                   help="measured passes per variant at batch > 1; default: 5 (--quick: 3)")
    p.add_argument("--warmup", type=at_least(0), default=None,
                   help="unmeasured warm-up passes per variant; default: 3 (--quick: 1)")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few passes (a smoke test); explicit flags still win")
    p.add_argument("--out", default="latency.json",
                   help="the JSON written; the Markdown goes next to it (same stem, .md); default: latency.json")
    p.add_argument("--allow-load", action="store_true",
                   help="measure even when other processes load the machine (the result is then "
                        "flagged and its verdicts read inconclusive); default: refuse")
    p.add_argument("--figure", default=None,
                   help="also draw lora_nb.table1.latency_figure to this path (PNG and SVG); default: none")
    return p


def resolve_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Fill unset flags from the defaults (or --quick's) and check shapes against the models'
    position embeddings, before anything is built."""
    for key, value in {**DEFAULTS, **(QUICK if args.quick else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if Path(args.out).suffix.lower() == ".md":
        parser.error("--out: the JSON path; the Markdown is written next to it (same stem, .md)")
    too_long = [f"{b}x{n}" for b, n in args.shapes if n > MAX_LENGTH]
    if too_long:
        parser.error(f"--shapes: {', '.join(too_long)} longer than the models' {MAX_LENGTH} positions")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = resolve_args(parser.parse_args(argv), parser)
    command = " ".join(["python -m benchmarks.latency", *argv])
    load_start = os.getloadavg()
    note = load_note({"loadavg_start": load_start, "cpu_count": os.cpu_count()})
    if note and not args.allow_load:
        print(f"error: {note}: other processes share the cores, so the timings would measure "
              f"them; stop them and rerun (or pass --allow-load to record a flagged result)",
              file=sys.stderr)
        return 2
    print(f"# inference latency — {cpu_name()}, torch {torch.__version__}\n\n{SHAPE_NOTE}\n")
    rows = measure(args.models, args.threads, args.shapes, args.passes_small, args.passes_large,
                   args.warmup, lambda setting: print(setting_table(setting) + "\n", flush=True))
    verdicts = result_verdicts([{"rows": rows, "loadavg_start": load_start, "cpu_count": os.cpu_count()}])
    result = {
        "command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "threads": args.threads, "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "load_note": note,
        "settings": {"models": args.models, "shapes": [f"{b}x{n}" for b, n in args.shapes],
                     "passes_small": args.passes_small, "passes_large": args.passes_large,
                     "warmup": args.warmup, "quick": args.quick, "lora": LORA.to_dict(),
                     "adapters": {k: v.to_dict() for k, v in ADAPTERS.items()}},
        "note": SHAPE_NOTE, "paper_table1_batch1x128_ms": PAPER_TABLE1, "rows": rows,
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
