"""Which learning rate a setting uses: one rule for the sweep (which rate the later seeds run at)
and for the tables and claims (which runs form a cell).

Every method is tuned alike: a grid of rates at one seed (the tuning seed), the rate whose run
scores best on the **dev split** (held out of the training data, `RunConfig.dev_examples`) is
chosen, and the other seeds run at it. Only rates whose tuning run **converged**
(`lora_nb.convergence`) compete while any did: a run still gaining at its last evaluation
understates its rate at this budget, and the seeds at a rate that does not converge within the
task's budget would test nothing. With no converged run the best score decides. The reported
score stays on the validation split. Records without a dev split (the paper presets: every seed
at every rate, as Liu et al., 2019 picked RoBERTa's rates on validation) fall back to the best
median validation score over seeds.

A grid must bracket the rate it chooses: when the chosen rate is the grid's largest (smallest),
the grid grows by one rate beyond it, one step of the grid's own spacing, and the choice is made
again; at most `MAX_EXTENSIONS` rates on each side (`extended_grid`). Every method's grid grows by
the same rule, so the tuning stays equal.
"""

from __future__ import annotations

import math
import statistics
from typing import Container, Iterable

from .convergence import DEV_SPLIT, judge_record
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
    ran at several rates; None when none completed. Ties go to the smaller rate; on the dev split
    only converged tuning runs compete while any converged (`_best`)."""
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
        tuned = {rate: [r for r in rs if seed is None or r["config"]["seed"] == seed]
                 for rate, rs in by_rate.items()}
        scores = {rate: max([v for v in map(dev_score, rs) if not math.isnan(v)], default=-math.inf)
                  for rate, rs in tuned.items()}
        return _best(by_rate, scores, {rate for rate, rs in tuned.items()
                                       if any(judge_record(r).converged for r in rs)})

    def score(rate: float) -> float:
        values = [r.get("best_metric") for r in by_rate[rate]]
        values = [v for v in values if v is not None and not math.isnan(v)]
        return statistics.median(values) if values else -math.inf
    return max(sorted(by_rate), key=lambda rate: (score(rate), -rate))


def _best(rates: Iterable[float], scores: dict[float, float], converged: Container[float]) -> float:
    """The rate with the highest score (NaN counts as −inf; ties: the smaller rate), among the
    `converged` rates when any of `rates` is one."""
    rates = sorted(rates)
    pool = [r for r in rates if r in converged] or rates
    value = lambda r: -math.inf if math.isnan(scores[r]) else scores[r]
    return max(pool, key=lambda r: (value(r), -r))


def _round(rate: float) -> float:
    return float(f"{rate:.2g}")


def extended_grid(grid: tuple[float, ...], scores: dict[float, float],
                  converged: frozenset[float] = frozenset()) -> tuple[float, ...]:
    """The grid as far as the tuning runs' `scores` ({rate: dev score} of finished runs, NaN or
    −inf for a failed one) extend it: while every rate has a score and the best (`_best`: among
    the `converged` rates when any is; ties: the smaller rate) is at an edge, one rate beyond
    that edge, the grid's own spacing at that end (`MAX_EXTENSIONS` per side). A rate without a
    score ends the growth: it is still to run."""
    rates = sorted(grid)
    if len(rates) < 2:
        return tuple(rates)
    up, down = rates[-1] / rates[-2], rates[1] / rates[0]
    added = {"top": 0, "bottom": 0}
    while all(r in scores for r in rates):
        best = _best(rates, scores, converged)
        if not scores[best] > -math.inf:
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
