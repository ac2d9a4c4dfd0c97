"""The benchmarks' one harness: the models, random batches and training step they time, the timing
(`torch.utils.benchmark`) and FLOP counting (`torch.utils.flop_counter`), and the tables, command-
line types and environment they share.

Run a benchmark from the repository root: ``python -m benchmarks.<name> --help``. Nothing in
`lora_nb` imports this folder; the benchmarks import `lora_nb`.
"""

from __future__ import annotations

import argparse
import gc
import random
from typing import Callable, Sequence

import torch
from tabulate import tabulate
from torch import nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from lora_nb.bottleneck import AdapterConfig
from lora_nb.lora import LoRAConfig
from lora_nb.machine import cpu_count, cpu_name, device_name, git_commit, versions
from lora_nb.methods import ADAPTER_METHODS, prepare_model

# The paper's GLUE setting for RoBERTa-base (Table 9): r = 8, α = 8 on Wq and Wv; the adapters at
# the bottleneck sizes that give Table 2's ≈ 0.3M on RoBERTa-base (AdapterH m = 8, AdapterL m = 16).
LORA = LoRAConfig(("q", "v"), r=8, alpha=8.0)
ADAPTERS = {"houlsby": AdapterConfig("houlsby", 8), "pfeiffer": AdapterConfig("pfeiffer", 16)}
# Benchmark models: RoBERTa-base's shape and the tiny ones with random weights (timing only, no
# download); all-MiniLM-L6-v2 pretrained (the offline package). Each reads 512 tokens at most.
MODELS = ("roberta-base-shape", "minilm", "tiny", "tiny-bert", "tiny-roberta", "tiny-1k")
MAX_LENGTH = 512
MiB, GiB = 2**20, 2**30


def model_config(name: str, num_labels: int = 2):
    """The configuration of benchmark model `name`: RoBERTa-base's shape (roberta-base's
    config.json), the real all-MiniLM-L6-v2, a 2-layer hidden-32 RoBERTa (``tiny``,
    ``tiny-roberta``) or BERT (``tiny-bert``), or the tiny RoBERTa with a 1,000-token vocabulary
    and RoBERTa-base's 514 positions (``tiny-1k``, the GPU check's stand-in)."""
    from lora_nb.models import load_model_config, roberta_base_config, tiny_config

    if name == "roberta-base-shape":
        return roberta_base_config(num_labels)
    if name == "minilm":
        return load_model_config("all-MiniLM-L6-v2", num_labels)
    if name in ("tiny", "tiny-roberta", "tiny-bert"):
        return tiny_config("bert" if name == "tiny-bert" else "roberta", num_labels)
    if name == "tiny-1k":
        return tiny_config("roberta", num_labels, vocab_size=1000, intermediate_size=64,
                           max_position_embeddings=514, type_vocab_size=1)
    raise ValueError(f"model: unknown {name!r}; choose from {', '.join(MODELS)}")


def build_model(name: str, method: str | None = None, seed: int = 0, lora: LoRAConfig = LORA,
                num_labels: int = 2) -> nn.Module:
    """Benchmark model `name` (random weights from its configuration; MiniLM's pretrained ones
    with a new head), prepared by `lora_nb.methods.prepare_model` for `method` when given: LoRA
    at `lora`, the adapters at `ADAPTERS`' sizes. The same weights for the same seed."""
    from transformers.utils import logging as hf_logging

    from lora_nb.models import from_config, load_model

    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        config = model_config(name, num_labels)
        model = load_model("all-MiniLM-L6-v2", config)[0] if name == "minilm" else from_config(config)
    finally:
        hf_logging.set_verbosity(verbosity)
    if method is None:
        return model
    return prepare_model(model, method, lora if method == "lora" else None,
                         ADAPTERS.get(method) if method in ADAPTER_METHODS else None)


def random_batch(config, batch: int, length: int | Sequence[int], device: torch.device | str = "cpu",
                 seed: int = 0, labels: bool = True, pad_id: int = 1) -> dict[str, torch.Tensor]:
    """Random token ids (none of the special ids 0-2) of `batch` × `length` tokens, the mask all
    ones; or, given one length per example, each row padded (with `pad_id`, RoBERTa's) to the
    longest. Random labels unless `labels` is False."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.full((batch,), length) if isinstance(length, int) else torch.as_tensor(length)
    n = int(lengths.max())
    mask = (torch.arange(n)[None, :] < lengths[:, None]).long()
    ids = torch.randint(3, config.vocab_size, (len(lengths), n), generator=gen).masked_fill(mask == 0, pad_id)
    out = {"input_ids": ids, "attention_mask": mask}
    if labels:
        out["labels"] = torch.randint(0, config.num_labels, (len(lengths),), generator=gen)
    return {k: v.to(device) for k, v in out.items()}


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def train_step(model: nn.Module, device: torch.device, bf16: bool = False,
               lr: float = 1e-4) -> Callable[[dict], None]:
    """One optimisation step as `lora_nb.train` takes it: forward (bf16 autocast when `bf16`),
    backward, gradient clipping to norm 1, AdamW (fused on a GPU), zero_grad."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=device.type == "cuda")
    model.train()

    def step(batch: dict) -> None:
        with autocast(device, bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- timing and FLOPs


def measurement(times: Sequence[float], label: str = "", sub_label: str = "", description: str = "",
                num_threads: int | None = None) -> benchmark.Measurement:
    """`times` (seconds, one run each) as torch.utils.benchmark's `Measurement`, for its
    statistics and for `benchmark.Compare`."""
    spec = benchmark.TaskSpec(stmt=description or label, setup="pass", label=label, sub_label=sub_label,
                              description=description, num_threads=num_threads or torch.get_num_threads())
    return benchmark.Measurement(number_per_run=1, raw_times=list(times), task_spec=spec)


def rounds(fns: dict[str, Callable[[], object]], warmup: int, measured: int, seed: int | None = 0,
           label: str = "", sub_label: str = "", no_grad: bool = False) -> dict[str, benchmark.Measurement]:
    """Run the callables in rounds, each once per round, timed by `benchmark.timer` (which waits
    for the accelerator); each one's times over the `measured` rounds after `warmup` rounds.
    With `seed`, each round runs them in a new seeded random order (so that none always runs
    first or right after the same other one: caches, the allocator); None keeps their order.
    Same-round times pair up: `paired_ratios`. The garbage collector is paused while timing."""
    names = list(fns)
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode(no_grad):
            for i in range(warmup + measured):
                for name in rng.sample(names, len(names)) if seed is not None else names:
                    start = benchmark.timer()
                    fns[name]()
                    elapsed = benchmark.timer() - start
                    if i >= warmup:
                        times[name].append(elapsed)
    finally:
        if was_enabled:
            gc.enable()
    return {name: measurement(t, label, sub_label, name) for name, t in times.items()}


def round_orders(names: list[str], count: int, seed: int = 0) -> list[list[str]]:
    """The orders `rounds` runs `names` in, round by round."""
    rng = random.Random(seed)
    return [rng.sample(names, len(names)) for _ in range(count)]


def stats(m: benchmark.Measurement, tokens: int | None = None) -> dict:
    """Median, min and max of a measurement's times (seconds), the times themselves, and tokens
    per second at the median when `tokens` (per run) is given."""
    out = {"median_s": m.median, "min_s": min(m.times), "max_s": max(m.times), "times_s": list(m.times)}
    if tokens:
        out["tokens_per_s"] = tokens / m.median
    return out


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> dict:
    """The ratios a_i / b_i of times measured in the same round: their median, min and max, and
    the ratio of the fastest runs (robust to runs slowed by other processes)."""
    pairs = sorted(x / y for x, y in zip(a, b, strict=True))
    mid = len(pairs) // 2
    median = pairs[mid] if len(pairs) % 2 else (pairs[mid - 1] + pairs[mid]) / 2
    return {"median": median, "min": pairs[0], "max": pairs[-1], "of_mins": min(a) / min(b)}


def single(value: float) -> dict:
    """A ratio measured once: median = min = max."""
    return {"median": value, "min": value, "max": value}


def flops(fn: Callable[[], object]) -> int:
    """The FLOPs `fn()` runs (matmuls, convolutions, attention: `FlopCounterMode`'s count),
    forward and backward when it trains."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_rate(device: torch.device, size: int, min_run_time: float = 1.0,
                dtype: torch.dtype | None = None) -> dict:
    """FLOP/s of a size³ matmul (`benchmark.Timer.blocked_autorange`, its median block): float32
    on the CPU, bf16 on a GPU unless `dtype` says otherwise."""
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    m = benchmark.Timer("a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads(),
                        label="matmul", description=f"{size}³").blocked_autorange(min_run_time=min_run_time)
    count = flops(lambda: a @ b)
    return {**stats(m), "size": size, "dtype": str(dtype).removeprefix("torch."),
            "median_ms": 1000 * m.median, "flops_per_s": count / m.median}


def peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def free_memory() -> None:
    """Collect garbage and return cached GPU memory, between measurements."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def environment(device: torch.device, *packages: str) -> dict:
    """What a benchmark ran on: device, CPU, threads, library versions, git commit."""
    return {"device": device_name(device), "cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
            "cpu_count": cpu_count(), "versions": versions("torch", "transformers", *packages),
            "git_commit": git_commit()}


# ---------------------------------------------------------------- tables and command lines


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub Markdown table: floats to 4 significant digits, a dash for a missing value."""
    rows = [[str(v).replace("|", "\\|") if isinstance(v, str) else v for v in row] for row in rows]
    return tabulate(rows, headers, tablefmt="github", floatfmt=".4g", missingval="–")


def comma_list(kind: Callable[[str], object] = str, choices: Sequence | None = None) -> Callable[[str], list]:
    """An argparse type: comma-separated values of `kind`, each one of `choices` when given."""
    def parse(text: str) -> list:
        try:
            values = [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: comma-separated {getattr(kind, '__name__', 'values')}") from None
        bad = [v for v in values if choices is not None and v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"unknown {bad or text!r}; choose from {', '.join(map(str, choices or ()))}"
                                             if choices else f"{text!r}: give at least one value")
        return values
    return parse


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text}: must be >= {minimum}")
        return value
    return parse


def script_parser(doc: str, glue_dir: bool = True, threads: bool = True) -> argparse.ArgumentParser:
    """The small scripts' parser: the first paragraph of their docstring, and (when asked)
    ``--glue-dir`` (a local GLUE folder; default ``$LORA_NB_GLUE_DIR``, else the Hub) and
    ``--threads`` (torch CPU threads; default 1)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if glue_dir:
        parser.add_argument("--glue-dir", default=None, help="local GLUE folder (default $LORA_NB_GLUE_DIR)")
    if threads:
        parser.add_argument("--threads", type=at_least(1), default=1, help="torch CPU threads")
    return parser
