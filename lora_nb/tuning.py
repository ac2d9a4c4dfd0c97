"""Which learning rate a setting uses: one rule for the sweep (which rate the later seeds run at)
and for the tables and claims (which runs form a cell).

Every method is tuned alike: a grid of rates at one seed (the tuning seed), the rate whose run
scores best on the **dev split** (held out of the training data, `RunConfig.dev_examples`) is
chosen, and the other seeds run at it. The reported score stays on the validation split. Records
without a dev split (the paper presets: every seed at every rate, as Liu et al., 2019 picked
RoBERTa's rates on validation) fall back to the best median validation score over seeds.

A grid must bracket the rate it chooses: when the chosen rate is the grid's largest (smallest),
the grid grows by one rate beyond it, one step of the grid's own spacing, and the choice is made
again; at most `MAX_EXTENSIONS` rates on each side (`extended_grid`). Every method's grid grows by
the same rule, so the tuning stays equal.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable

from .convergence import DEV_SPLIT
from .rundir import is_completed

MAX_EXTENSIONS = 2  # rates added beyond each edge of a grid, at most


def dev_score(record: dict) -> float:
    """A run's best dev score over its evaluations (NaN when it has none)."""
    metric = record.get("primary_metric")
    values = [e["eval"][DEV_SPLIT].get(metric) for e in record.get("evaluations") or []
              if DEV_SPLIT in e.get("eval", {})]
    values = [v for v in values if v is not None and not math.isnan(v)]
    return max(values) if values else math.nan


def choose_rate(records: Iterable[dict]) -> float | None:
    """The chosen learning rate among completed records of one setting (task, method, ...) that
    ran at several rates; None when none completed. Ties go to the smaller rate."""
    by_rate: dict[float, list[dict]] = {}
    for r in records:
        if is_completed(r):
            by_rate.setdefault(float(r["config"]["learning_rate"]), []).append(r)
    if not by_rate:
        return None
    if len(by_rate) == 1:
        return next(iter(by_rate))
    if any(any(DEV_SPLIT in e.get("eval", {}) for e in r.get("evaluations") or [])
           for rs in by_rate.values() for r in rs):
        seeds = set.intersection(*({r["config"]["seed"] for r in rs} for rs in by_rate.values()))
        seed = min(seeds) if seeds else None

        def score(rate: float) -> float:
            tuned = [r for r in by_rate[rate] if r["config"]["seed"] == seed] if seed is not None else by_rate[rate]
            values = [dev_score(r) for r in tuned]
            values = [v for v in values if not math.isnan(v)]
            return max(values) if values else -math.inf
    else:
        def score(rate: float) -> float:
            values = [r.get("best_metric") for r in by_rate[rate]]
            values = [v for v in values if v is not None and not math.isnan(v)]
            return statistics.median(values) if values else -math.inf
    return max(sorted(by_rate), key=lambda rate: (score(rate), -rate))


def _round(rate: float) -> float:
    return float(f"{rate:.2g}")


def extended_grid(grid: tuple[float, ...], scores: dict[float, float]) -> tuple[float, ...]:
    """The grid as far as the tuning runs' `scores` ({rate: dev score} of finished runs, NaN or
    −inf for a failed one) extend it: while every rate has a score and the best (ties: the
    smaller rate) is at an edge, one rate beyond that edge, the grid's own spacing at that end
    (`MAX_EXTENSIONS` per side). A rate without a score ends the growth: it is still to run."""
    rates = sorted(grid)
    if len(rates) < 2:
        return tuple(rates)
    up, down = rates[-1] / rates[-2], rates[1] / rates[0]
    added = {"top": 0, "bottom": 0}
    while all(r in scores for r in rates):
        value = lambda r: -math.inf if math.isnan(scores[r]) else scores[r]
        best = max(rates, key=lambda r: (value(r), -r))
        if value(best) == -math.inf:
            break
        if best == rates[-1] and added["top"] < MAX_EXTENSIONS:
            rates.append(_round(best * up))
            added["top"] += 1
        elif best == rates[0] and added["bottom"] < MAX_EXTENSIONS:
            rates.insert(0, _round(best / down))
            added["bottom"] += 1
        else:
            break
    return tuple(rates)
