"""Did a run converge? One rule, applied to every record (train writes it, results re-applies it).

A run converged when its learning curve had levelled off before training ended: its best score
came before the last quarter of its optimizer steps, or the last quarter gained less than
`MIN_GAIN` (half a point) over the best before it. The curve is the dev split's score where the
run held one out (`RunConfig.dev_examples`), else the validation split's. A run with fewer than
`MIN_EVALUATIONS` evaluations cannot show a plateau and counts as not converged. Imports nothing
heavy: the sweep and the analysis read it without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

LAST_SHARE = 0.25  # the last quarter of the optimizer steps
MIN_GAIN = 0.005  # half a point of accuracy, F1, Matthews or Pearson correlation
MIN_EVALUATIONS = 4
DEV_SPLIT = "dev"


@dataclass(frozen=True)
class Convergence:
    converged: bool
    reason: str
    split: str  # the split whose curve was judged

    def to_dict(self) -> dict:
        return asdict(self)


def curve(record: dict) -> tuple[list[tuple[int, float]], str]:
    """(step, score) of every evaluation on the dev split when the run has one, else on the
    validation split, and which split that was. A missing score (constant predictions) is NaN."""
    evaluations = record.get("evaluations") or []
    has_dev = any(DEV_SPLIT in e.get("eval", {}) for e in evaluations)
    metric = record.get("primary_metric")
    points = []
    for e in evaluations:
        if has_dev:
            value = e.get("eval", {}).get(DEV_SPLIT, {}).get(metric)
        else:
            value = e.get("primary")
        points.append((int(e["step"]), float("nan") if value is None else float(value)))
    return points, DEV_SPLIT if has_dev else "validation"


def judge(points: list[tuple[int, float]], total_steps: int, split: str = DEV_SPLIT) -> Convergence:
    """The rule on one curve of (step, score) over `total_steps` optimizer steps."""
    scored = [(s, v) for s, v in points if not math.isnan(v)]
    if len(points) < MIN_EVALUATIONS:
        return Convergence(False, f"{len(points)} evaluation(s): too few to show a plateau", split)
    if not scored:
        return Convergence(False, "no evaluation has a score", split)
    cut = (1 - LAST_SHARE) * total_steps
    before = [v for s, v in scored if s <= cut]
    after = [v for s, v in scored if s > cut]
    best_step, best = max(scored, key=lambda p: (p[1], -p[0]))
    if not before or not after:
        return Convergence(False, "no evaluation on one side of the last quarter", split)
    if best_step <= cut:
        return Convergence(True, f"best {split} score at step {best_step} of {total_steps}, "
                                 "before the last quarter", split)
    gain = max(after) - max(before)
    if gain < MIN_GAIN:
        return Convergence(True, f"the last quarter gained {100 * gain:+.2f} points "
                                 f"(< {100 * MIN_GAIN:.1f})", split)
    return Convergence(False, f"still gaining: {100 * gain:+.2f} points in the last quarter", split)


def judge_record(record: dict) -> Convergence:
    """The rule on a run record: its curve over its optimizer steps."""
    points, split = curve(record)
    total = record.get("optimizer_steps") or (points[-1][0] if points else 0)
    return judge(points, int(total), split)
