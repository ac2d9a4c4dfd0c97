"""Which learning rate a setting uses: one rule for the sweep (which rate the later seeds run at)
and for the tables and claims (which runs form a cell).

Every method is tuned alike: a grid of rates at one seed (the tuning seed), the rate whose run
scores best on the **dev split** (held out of the training data, `RunConfig.dev_examples`) is
chosen, and the other seeds run at it. The reported score stays on the validation split. Records
without a dev split (the paper presets: every seed at every rate, as Liu et al., 2019 picked
RoBERTa's rates on validation) fall back to the best median validation score over seeds.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable

from .convergence import DEV_SPLIT


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
        if r.get("status") == "completed":
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
