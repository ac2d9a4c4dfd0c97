"""torch.compile on a whole run: wall time of N training steps with and without it, compile time
included, on real GLUE batches of varying length (dynamic shapes).

    python -m benchmarks.compile --glue-dir ../shared/glue [--task sst2] [--method lora] [--steps 150]

Both runs train the same model from the same seed on the same batches (the reference preset's
length-grouped batches of 16, bf16 autocast where the CPU has it, one thread). Prints each run's
total wall time, its first step (where compilation happens) and its median later step.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.harness import script_parser
from lora_nb.glue import get_task, load_glue, make_dataloader, tokenize_glue
from lora_nb.lora import LoRAConfig
from lora_nb.machine import cpu_has_bf16
from lora_nb.methods import prepare_model
from lora_nb.models import load_model, load_model_config


def run(task_name: str, method: str, steps: int, glue_dir: str | None, compiled: bool) -> list[float]:
    """Seconds of each of `steps` training steps."""
    task = get_task(task_name)
    torch.manual_seed(0)
    model, tokenizer = load_model("all-MiniLM-L6-v2", load_model_config("all-MiniLM-L6-v2", task.num_labels), "mean")
    prepare_model(model, method, LoRAConfig() if method == "lora" else None)
    data = tokenize_glue(load_glue(task, glue_dir), tokenizer, task, 128)["train"]
    loader = make_dataloader(data, tokenizer, 16, train=True, seed=0, group_by_length=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    forward = torch.compile(model, dynamic=True) if compiled else model
    bf16 = cpu_has_bf16()
    times = []
    for batch, _ in zip(loader, range(steps)):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forward(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| {args.task} {args.method}, {args.steps} steps | total (s) | first step (s) | median later step (ms) |")
    print("|---|---|---|---|")
    totals = {}
    for compiled in (False, True):
        times = run(args.task, args.method, args.steps, args.glue_dir, compiled)
        totals[compiled] = sum(times)
        print(f"| {'torch.compile(dynamic=True)' if compiled else 'eager'} | {sum(times):.1f} | "
              f"{times[0]:.1f} | {1000 * statistics.median(times[1:]):.0f} |", flush=True)
    print(f"compiled / eager, whole run: {totals[True] / totals[False]:.2f}")


if __name__ == "__main__":
    main()
