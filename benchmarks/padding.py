"""Padded tokens per training batch: random batches against length-grouped ones, per GLUE task.

    python -m benchmarks.padding --glue-dir ../shared/glue

A batch is padded to its longest example (`DataCollatorWithPadding`), so its cost follows the
longest; transformers' `LengthGroupedSampler` (random mega-batches of 50 batches, sorted within)
keeps batches of similar lengths. Prints, per task, the mean length and the mean padded length
of 300 batches of 16 both ways (the reference preset's batches; why it groups by length).
"""

from __future__ import annotations

import random
import statistics

import torch
from transformers import AutoTokenizer
from transformers.trainer_pt_utils import LengthGroupedSampler

from benchmarks.harness import script_parser
from lora_nb.glue import get_task, load_glue, tokenize_glue
from lora_nb.models import resolve_model


def padded(lengths: list[int], order: list[int], batch: int, batches: int) -> float:
    """The mean longest length over the first `batches` batches of `order`."""
    n = min(batches, len(order) // batch)
    return statistics.mean(max(lengths[i] for i in order[k * batch:(k + 1) * batch]) for k in range(n))


def main() -> None:
    parser = script_parser(__doc__, threads=False)
    parser.add_argument("--tasks", default="mnli,qqp,sst2,cola,stsb,mrpc")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    print("| task | mean tokens | random batches: padded | grouped batches: padded | ratio |")
    print("|---|---|---|---|---|")
    for name in args.tasks.split(","):
        task = get_task(name)
        lengths = tokenize_glue(load_glue(task, args.glue_dir), tokenizer, task, args.max_length)["train"]["length"]
        shuffled = list(range(len(lengths)))
        random.Random(0).shuffle(shuffled)
        grouped = list(LengthGroupedSampler(args.batch, lengths=lengths,
                                            generator=torch.Generator().manual_seed(0)))
        rnd, grp = padded(lengths, shuffled, args.batch, 300), padded(lengths, grouped, args.batch, 300)
        print(f"| {name} | {statistics.mean(lengths):.1f} | {rnd:.1f} | {grp:.1f} | {rnd / grp:.2f} |")


if __name__ == "__main__":
    main()
