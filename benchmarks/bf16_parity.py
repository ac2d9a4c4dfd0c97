"""bf16 autocast against fp32 on real runs: the same settings and seeds, scores side by side.

    python -m benchmarks.bf16_parity --glue-dir ../shared/glue --runs-dir runs/parity

LoRA and FT on SST-2 with the reference preset's settings (mean pooling, batches of 16 grouped by
length, a dev split) for `--steps` optimizer steps, seeds 0–2, once with mixed_precision "no"
(fp32) and once "bf16". Each run is an ordinary run record under --runs-dir (completed runs are
kept, so a second call only prints). Prints per method and precision the mean ± std over seeds of
the best validation score, the mean paired difference bf16 − fp32, and whether it lies within the
seeds' spread (|difference| below the larger std).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.harness import script_parser
from lora_nb.config import RunConfig
from lora_nb.rundir import is_completed, read_record
from lora_nb.presets import PRESETS
from lora_nb.train import run

RATES = {"lora": 1e-3, "full": 5e-5}


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--runs-dir", default="runs/parity")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="lora,full", help="comma-separated, of: lora, full")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if not methods or set(methods) - set(RATES):
        parser.error(f"--methods: a comma-separated subset of {', '.join(RATES)}, got {args.methods!r}")
    seeds = [int(s) for s in args.seeds.split(",")]
    common = dict(PRESETS["reference"].common, task="sst2", model="all-MiniLM-L6-v2",
                  max_steps=args.steps, eval_every=args.steps // 8, glue_dir=args.glue_dir,
                  num_threads=args.threads)
    scores: dict[tuple[str, str], dict[int, float]] = {}
    for method, rate in ((m, RATES[m]) for m in methods):
        for precision in ("no", "bf16"):
            for seed in seeds:
                out = Path(args.runs_dir) / f"sst2-{method}-{precision}-s{seed}"
                record = read_record(out)
                if not is_completed(record):
                    config = RunConfig(**common, method=method, learning_rate=rate, seed=seed,
                                       mixed_precision=precision, output_dir=str(out))
                    record = run(config, progress=False)
                scores.setdefault((method, precision), {})[seed] = 100 * record["best_metric"]
    print(f"SST-2, {args.steps} optimizer steps, seeds {seeds}: best validation accuracy (× 100)")
    print("| method | fp32 | bf16 | bf16 − fp32 (paired, mean) | within the seeds' spread |")
    print("|---|---|---|---|---|")
    for method in methods:
        fp32, bf16 = scores[(method, "no")], scores[(method, "bf16")]
        cell = lambda s: f"{statistics.mean(s.values()):.2f} ± {statistics.stdev(s.values()):.2f}"
        diff = statistics.mean(bf16[s] - fp32[s] for s in seeds)
        spread = max(statistics.stdev(fp32.values()), statistics.stdev(bf16.values()))
        print(f"| {method} | {cell(fp32)} | {cell(bf16)} | {diff:+.2f} | {'yes' if abs(diff) < spread else 'no'} |")


if __name__ == "__main__":
    main()
