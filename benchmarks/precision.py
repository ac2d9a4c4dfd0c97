"""bf16 autocast against fp32: one training step's time per method, interleaved in one process.

    python -m benchmarks.precision [--threads 1] [--batch 16] [--length 48] [--rounds 8]

A step is forward + backward + AdamW (fused) on all-MiniLM-L6-v2, batch × length random tokens,
as a sweep worker runs it (one thread). Rounds alternate fp32 and bf16 so that both see the same
machine load; each round is timed by `torch.utils.benchmark.Timer`. Prints the median step time
per precision and their ratio (bf16 / fp32) per method, and whether the CPU has bf16 arithmetic.
"""

from __future__ import annotations

import statistics

import torch
from torch.utils import benchmark

from benchmarks.harness import script_parser
from lora_nb.bottleneck import AdapterConfig
from lora_nb.lora import LoRAConfig
from lora_nb.machine import cpu_has_bf16
from lora_nb.methods import ADAPTER_METHODS, prepare_model
from lora_nb.models import load_model, load_model_config

METHODS = ("full", "lora", "bitfit", "houlsby", "pfeiffer", "head")


def training_step(method: str, batch: int, length: int):
    """A closure running one training step of `method`, and its model."""
    torch.manual_seed(0)
    model, _ = load_model("all-MiniLM-L6-v2", load_model_config("all-MiniLM-L6-v2", 3), "mean")
    prepare_model(model, method, LoRAConfig() if method == "lora" else None,
                  AdapterConfig(method) if method in ADAPTER_METHODS else None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], fused=True)
    ids = torch.randint(1000, 20_000, (batch, length))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 3, (batch,))}

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = script_parser(__doc__, glue_dir=False)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=8, help="alternating fp32/bf16 rounds per method")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU bf16 arithmetic: {cpu_has_bf16()}; {args.threads} thread(s); batch {args.batch} × {args.length} tokens")
    print("| method | fp32 step (ms) | bf16 step (ms) | bf16 / fp32 |")
    print("|---|---|---|---|")
    for method in args.methods.split(","):
        step = training_step(method, args.batch, args.length)
        for bf16 in (False, True):  # warm-up
            step(bf16)
        times = {False: [], True: []}
        for _ in range(args.rounds):
            for bf16 in (False, True):
                timer = benchmark.Timer("step(bf16)", globals={"step": step, "bf16": bf16},
                                        num_threads=args.threads)
                times[bf16].append(timer.timeit(2).median)
        fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {method} | {1000 * fp32:.0f} | {1000 * bf16:.0f} | {bf16 / fp32:.2f} |", flush=True)


if __name__ == "__main__":
    main()
