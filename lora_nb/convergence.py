"""Did a run converge? One rule, applied to every record (train writes it, results re-applies it).

A run converged when its learning curve had levelled off before training ended: its best score
came before the last quarter of its optimizer steps, or the last quarter gained less than the
split can resolve over the best before it: `MIN_GAIN` (half a point) or one standard error of
the score on that split, whichever is larger. On a dev split of ~900 examples one standard error
of an accuracy near 0.65 is 1.6 points, so a 0.5-point rule would call sampling noise "still
gaining"; `standard_error` says how the error is approximated per metric. The curve is the dev
split's score where the run held one out (`RunConfig.dev_examples`), else the validation
split's. A run with fewer than `MIN_EVALUATIONS` evaluations cannot show a plateau and counts as
not converged. Imports nothing heavy: the sweep and the analysis read it without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

LAST_SHARE = 0.25  # the last quarter of the optimizer steps
MIN_GAIN = 0.005  # half a point of accuracy, F1, Matthews or Pearson correlation
MIN_EVALUATIONS = 4
DEV_SPLIT = "dev"


CORRELATIONS = ("pearson", "spearmanr", "matthews_correlation")


def standard_error(metric: str, score: float, examples: int) -> float:
    """One standard error of `score` on `examples` examples: binomial for accuracy (and, as an
    approximation, F1), the delta method through Fisher's z, (1 − r²)/√(n − 3), for Pearson,
    Spearman and Matthews correlations. Zero when the split size is unknown."""
    if not examples or examples < 4 or math.isnan(score):
        return 0.0
    if metric in CORRELATIONS:
        return (1 - score**2) / math.sqrt(examples - 3)
    p = min(max(score, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / examples)


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


def judge(points: list[tuple[int, float]], total_steps: int, split: str = DEV_SPLIT,
          noise: float = 0.0) -> Convergence:
    """The rule on one curve of (step, score) over `total_steps` optimizer steps; `noise` is one
    standard error of the score on the split (`standard_error`)."""
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
    threshold = max(MIN_GAIN, noise)
    bound = f"{100 * threshold:.2f}" + (" = one standard error" if noise > MIN_GAIN else "")
    if gain < threshold:
        return Convergence(True, f"the last quarter gained {100 * gain:+.2f} points (< {bound})",
                           split)
    return Convergence(False, f"still gaining: {100 * gain:+.2f} points in the last quarter "
                              f"(≥ {bound})", split)


def judge_record(record: dict) -> Convergence:
    """The rule on a run record: its curve over its optimizer steps."""
    points, split = curve(record)
    total = record.get("optimizer_steps") or (points[-1][0] if points else 0)
    scored = [v for _, v in points if not math.isnan(v)]
    examples = (record.get("data") or {}).get("eval_examples", {}).get(split)
    if examples is None and split != DEV_SPLIT:  # the validation split under its task's own name
        sizes = [n for name, n in (record.get("data") or {}).get("eval_examples", {}).items()
                 if name != DEV_SPLIT]
        examples = sizes[0] if sizes else None
    noise = standard_error(record.get("primary_metric", ""), max(scored), examples or 0) if scored else 0.0
    return judge(points, int(total), split, noise)
