"""What the head reads: [CLS] against the mean over tokens, on all-MiniLM-L6-v2 and STS-B.

    python -m benchmarks.pooling --glue-dir ../shared/glue --runs-dir runs/pooling

all-MiniLM-L6-v2 was trained as a mean-pooled sentence encoder. Two measurements:

1. No training at all: the frozen encoder's cosine similarity between the two sentences'
   embeddings, read as the mean over tokens and as the [CLS] state, against STS-B's gold
   scores (Pearson × 100 on the validation split). This is the trivial baseline that a
   frozen-encoder (head-only) run should at least approach.
2. Training: head-only and LoRA (Wq,Wv, r = 8) with the reference preset's STS-B settings,
   seed 0, reading [CLS] and the mean. LoRA's mean-pooled run is the convergence study's
   (`--study-records`, report/records) when it is there; every other run is an
   ordinary run record under --runs-dir (completed runs are kept: a second call only prints).

Prints one table: per read-out and method, the best validation Pearson and the dev curve.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from scipy.stats import pearsonr
from transformers import AutoModel, AutoTokenizer

from benchmarks.harness import script_parser
from lora_nb.config import RunConfig
from lora_nb.glue import get_task, load_glue
from lora_nb.models import resolve_model
from lora_nb.rundir import COMPLETED, read_record
from lora_nb.presets import PRESETS
from lora_nb.train import run

MODEL = "all-MiniLM-L6-v2"
RATES = {"head": 3e-3, "lora": 3e-3}  # head-only: the reference's one rate; LoRA: the study's best
PRECISION = {"no": "fp32", "bf16": "bf16 autocast"}


@torch.no_grad()
def frozen_cosine(glue_dir: str | None, batch: int = 64) -> dict[str, float]:
    """Pearson × 100 of the frozen encoder's cosine similarity with STS-B's validation scores."""
    validation = load_glue(get_task("stsb"), glue_dir)["validation"]
    ref = resolve_model(MODEL)
    tokenizer, encoder = AutoTokenizer.from_pretrained(ref), AutoModel.from_pretrained(ref).eval()

    def embed(sentences: list[str]) -> dict[str, torch.Tensor]:
        out = {"mean": [], "cls": []}
        for i in range(0, len(sentences), batch):
            enc = tokenizer(sentences[i:i + batch], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
            states = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
            out["mean"].append((states * mask).sum(1) / mask.sum(1))
            out["cls"].append(states[:, 0])
        return {k: torch.cat(v) for k, v in out.items()}

    a, b = embed(validation["sentence1"]), embed(validation["sentence2"])
    gold = validation["label"]
    return {k: 100 * pearsonr(torch.cosine_similarity(a[k], b[k]).tolist(), gold)[0] for k in a}


def dev_curve(record: dict) -> str:
    return " ".join(f"{100 * e['eval']['dev']['pearson']:.1f}" for e in record["evaluations"])


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--runs-dir", default="runs/pooling")
    parser.add_argument("--study-records", default="report/records")
    args = parser.parse_args()
    preset = PRESETS["reference"]
    steps = preset.task_settings["stsb"]["max_steps"]
    common = dict(preset.common, **preset.task_settings["stsb"], task="stsb", model=MODEL,
                  glue_dir=args.glue_dir, num_threads=args.threads, seed=0)
    cosine = frozen_cosine(args.glue_dir)
    print(f"STS-B validation, Pearson × 100; training runs: seed 0, {steps} optimizer steps, "
          "dev curve at 8 evaluations")
    print("| read-out | method | best validation | dev curve | arithmetic |")
    print("|---|---|---|---|---|")
    for pooling in ("cls", "mean"):
        print(f"| {pooling} | frozen encoder, cosine similarity (no training) | "
              f"{cosine[pooling]:.1f} | | fp32 |")
    for method, rate in RATES.items():
        for pooling in ("cls", "mean"):
            study = Path(args.study_records) / f"t2-stsb-{method}-lr{rate:g}-s0.json"
            if pooling == "mean" and study.is_file():
                record = json.loads(study.read_text())
            else:
                out = Path(args.runs_dir) / f"stsb-{method}-{pooling}-s0"
                record = read_record(out)
                if not record or record.get("status") != COMPLETED:
                    config = RunConfig(**{**common, "pooling": pooling}, method=method,
                                       learning_rate=rate, output_dir=str(out))
                    record = run(config, progress=False)
            print(f"| {pooling} | {method} at {rate:g} | {100 * record['best_metric']:.1f} | "
                  f"{dev_curve(record)} | {PRECISION.get(record.get('mixed_precision'), '?')} |", flush=True)


if __name__ == "__main__":
    main()
