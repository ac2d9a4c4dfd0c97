"""The paper's claims, decided from run records: a difference, its 95% interval and a verdict.

Each claim compares two conditions (say LoRA and FT on SST-2). Every seed of both trains on the
same examples (`RunConfig.data_seed`) and is scored on the same validation examples, and every
record keeps its best evaluation's predictions. A difference of the **mean over seeds** (the one
statistic of the tables and the claims) has two sources of error, and its interval counts both:

- **training randomness**, across seeds: the per-seed differences A(s) − B(s), *paired by seed*
  where both ran the same seeds (the seed fixes the data order and the head's initialisation
  for both, so their noise is shared and pairing removes it), else unpaired (Welch); a
  t-distribution with n − 1 degrees of freedom, not a bootstrap of 3 values (which under-covers:
  its spread is √((n−1)/n)·1.96 standard errors where t₂ needs 4.30);
- **test-set sampling**: a paired bootstrap over the validation examples (the same resampled
  examples for A and B) of the difference of the seed means.

The two are independent; their variances add, and the interval is t-based with the
Welch–Satterthwaite degrees of freedom (`difference_interval`). `tests/test_claims.py` checks its
coverage by simulation (≥ 93% at nominal 95%) and that the old two-level percentile bootstrap
falls short of it.

The verdict rule (`verdict`) never calls a gap inside the noise a success or a failure:

- "matches" / "on par with" (non-inferiority, margin δ): *reproduced* when the whole interval
  lies above −δ, *not reproduced* when it lies below −δ, else *inconclusive*;
- "beats" (superiority): *reproduced* above 0, *not reproduced* below 0, else *inconclusive*;
- "within noise of" (equivalence, C3): *reproduced* when the whole interval lies inside ±δ,
  *not reproduced* when it lies wholly outside, else *inconclusive*.

δ = 2 points: the gaps Table 2 reports between methods on one task are 0.1–3 points; a claim
that two settings "match" in a 2-point window is a claim a reader can use, and 2 points is
above the validation sets' sampling error of a difference of two paired runs (≈ 0.5–1.5 points).

A claim made of parts that must all hold (C1 on every task) is an intersection–union test: each
part at level α gives level α overall, with no correction. A claim that holds when *one of*
several alternatives does (C3: r = 1 *or* r = 2) is a union: its intervals are widened by
Bonferroni to level 1 − α/k for k alternatives.

A comparison on a task that full fine-tuning does not learn (it must beat the trivial baseline
by `LEARNED`) is *inconclusive at this scale*; one where either side has a run that did not
converge by `lora_nb.convergence`'s rule, or that has a single seed (its interval could not
count training randomness), is *not testable at this budget*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from scipy import stats

from . import metrics
from .convergence import judge_record
from .rundir import is_completed
from .tuning import choose_rate

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
NOT_TESTABLE = "not testable at this budget"
MARGIN = 2.0  # δ, in points of the metric × 100: "matches" means "is not worse by more than δ"
# How far full fine-tuning must beat the trivial baseline for a task to count as learned
# (accuracy points; Matthews correlation and Pearson × 100).
LEARNED = {"accuracy": 10.0, "matthews_correlation": 20.0, "pearson": 60.0}
N_BOOT = 2000


def score(metric: str, preds: np.ndarray, labels: np.ndarray) -> float:
    """The task's primary metric × 100 (`lora_nb.metrics.score`). A constant prediction has no
    correlation: it scores 0 (the trivial baseline), not NaN."""
    value = metrics.score(metric, preds, labels)
    return 0.0 if np.isnan(value) else 100.0 * value


def trivial_score(metric: str, labels: np.ndarray) -> float:
    """The best constant prediction: the majority class's accuracy; 0 for correlations."""
    if metric == "accuracy":
        _, counts = np.unique(labels, return_counts=True)
        return 100.0 * counts.max() / counts.sum()
    return 0.0


def verdict(lo: float, hi: float, kind: str, margin: float = MARGIN) -> str:
    """The verdict on a difference A − B with 95% interval [lo, hi] (see module docstring)."""
    if not lo <= hi:
        raise ValueError(f"interval: lo {lo} must not exceed hi {hi}")
    if kind == "noninferior":
        return REPRODUCED if lo > -margin else NOT_REPRODUCED if hi < -margin else INCONCLUSIVE
    if kind == "superior":
        return REPRODUCED if lo > 0 else NOT_REPRODUCED if hi < 0 else INCONCLUSIVE
    if kind == "equivalent":
        if -margin < lo and hi < margin:
            return REPRODUCED
        return NOT_REPRODUCED if hi < -margin or lo > margin else INCONCLUSIVE
    raise ValueError(f"kind: 'noninferior', 'superior' or 'equivalent', got {kind!r}")


def all_of(verdicts: list[str]) -> str:
    """A claim made of parts that must all hold; a part that is not testable leaves the claim
    not testable, unless another part refutes it."""
    if not verdicts:
        return INCONCLUSIVE
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    if NOT_TESTABLE in verdicts:
        return NOT_TESTABLE
    return REPRODUCED if all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE


def any_of(verdicts: list[str]) -> str:
    """A claim that holds when one of its alternatives does."""
    if REPRODUCED in verdicts:
        return REPRODUCED
    if verdicts and all(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return NOT_TESTABLE if NOT_TESTABLE in verdicts else INCONCLUSIVE


@dataclass
class Runs:
    """The seeds of one condition: predictions (seeds × examples), the shared labels, the metric,
    the seeds, and whether every run converged."""

    name: str
    metric: str
    preds: np.ndarray
    labels: np.ndarray
    seeds: tuple[int, ...] = ()
    converged: bool = True

    @classmethod
    def from_records(cls, name: str, records: list[dict]) -> "Runs":
        if not records:
            raise ValueError(f"{name}: no completed runs")
        metric = records[0]["primary_metric"]
        split = next(iter(records[0]["best_outputs"]))
        labels = np.asarray(records[0]["best_outputs"][split]["labels"])
        preds = []
        for r in records:
            out = r["best_outputs"][split]
            if not np.array_equal(np.asarray(out["labels"]), labels):
                raise ValueError(f"{name}: runs were evaluated on different examples")
            preds.append(np.asarray(out["predictions"]))
        seeds = tuple(r.get("config", {}).get("seed", i) for i, r in enumerate(records))
        converged = all(judge_record(r).converged for r in records)
        return cls(name, metric, np.stack(preds), labels, seeds, converged)

    def scores(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Each seed's score, on the validation examples `idx` (all when None)."""
        labels = self.labels if idx is None else self.labels[idx]
        return np.array([score(self.metric, p if idx is None else p[idx], labels) for p in self.preds])


def bootstrap(statistic: Callable[[np.ndarray, np.random.Generator], float], n: int,
              n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """The one bootstrap of the claims: `statistic` on `n_boot` resamples of `n` items (validation
    examples in `difference_interval`, units in `lora_nb.subspace_claims`). Each round draws `n`
    indices with replacement from ``np.random.default_rng(seed)`` and returns
    ``statistic(indices, rng)``; a two-level bootstrap draws its second level from that `rng`."""
    rng = np.random.default_rng(seed)
    return np.array([statistic(rng.integers(0, n, n), rng) for _ in range(n_boot)], dtype=np.float64)


def difference_interval(a: Runs, b: Runs, level: float = 0.95, n_boot: int = N_BOOT,
                        seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds of A's metric minus B's, and its `level` interval counting training
    randomness (t over seeds, paired by seed when both ran the same seeds) and test-set sampling
    (a paired bootstrap over validation examples): module docstring."""
    if not np.array_equal(a.labels, b.labels) or a.metric != b.metric:
        raise ValueError(f"{a.name} and {b.name} were not evaluated on the same examples and metric")
    sa, sb = a.scores(), b.scores()
    point = float(sa.mean() - sb.mean())
    if a.seeds and sorted(a.seeds) == sorted(b.seeds) and len(set(a.seeds)) == len(a.seeds):
        order_a, order_b = np.argsort(a.seeds), np.argsort(b.seeds)
        diffs = sa[order_a] - sb[order_b]
        seed_var, seed_df = (diffs.var(ddof=1) / len(diffs), len(diffs) - 1) if len(diffs) > 1 else (0.0, np.inf)
    else:  # Welch
        va = sa.var(ddof=1) / len(sa) if len(sa) > 1 else 0.0
        vb = sb.var(ddof=1) / len(sb) if len(sb) > 1 else 0.0
        seed_var = va + vb
        parts = [v ** 2 / (n - 1) for v, n in ((va, len(sa)), (vb, len(sb))) if n > 1 and v > 0]
        seed_df = seed_var ** 2 / sum(parts) if parts else np.inf
    boot = bootstrap(lambda idx, _: a.scores(idx).mean() - b.scores(idx).mean(), len(a.labels), n_boot, seed)
    test_var = float(boot.var(ddof=1))
    total = seed_var + test_var
    if total == 0:
        return point, point, point
    # Welch–Satterthwaite: the bootstrap's variance counts as known (many examples, df → ∞).
    df = total ** 2 * seed_df / seed_var ** 2 if seed_var and np.isfinite(seed_df) else np.inf
    half = float(stats.t.ppf(0.5 + level / 2, df) * np.sqrt(total))
    return point, point - half, point + half


@dataclass
class Comparison:
    """One row of the claims table."""

    claim: str
    task: str
    a: str
    b: str
    kind: str
    a_stat: float
    b_stat: float
    difference: float
    lo: float
    hi: float
    seeds: str
    verdict: str
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def compare(claim: str, task: str, a: Runs, b: Runs, kind: str, learned: bool | None = None,
            margin: float = MARGIN, level: float = 0.95) -> Comparison:
    """Compare A with B (`kind`: noninferior, superior or equivalent) at interval `level` and give
    the verdict: inconclusive on a task that is not learned (`learned` False), not testable where
    a run of either side did not converge."""
    diff, lo, hi = difference_interval(a, b, level)
    v = verdict(lo, hi, kind, margin)
    note = ""
    if not (a.converged and b.converged):
        late = " and ".join(r.name for r in (a, b) if not r.converged)
        v, note = NOT_TESTABLE, f"{late}: a run did not converge"
    elif min(len(a.preds), len(b.preds)) < 2:
        v, note = NOT_TESTABLE, "one seed: training randomness is not measured"
    elif learned is not None and not learned:
        v, note = INCONCLUSIVE, "FT does not learn this task at this scale"
    return Comparison(claim, task, a.name, b.name, kind, float(a.scores().mean()),
                      float(b.scores().mean()), diff, lo, hi,
                      f"{len(a.preds)} vs {len(b.preds)}", v, note)


def comparisons_table(rows: list[Comparison]) -> pd.DataFrame:
    return pd.DataFrame([r.to_dict() for r in rows])


# --- The paper's claims C1–C4, from a records DataFrame (`lora_nb.tables.load_records`) ---

CLAIMS = {
    "C1": "LoRA (Wq,Wv, r = 8) matches full fine-tuning on each task while training < 1% of its parameters",
    "C2": "LoRA is at least as good as BitFit on each task",
    "C3": "A very small rank suffices: r = 1 or 2 is within noise of r = 8 and r = 64 (Wq,Wv)",
    "C4": "At an equal parameter budget, adapting more weight types beats adapting Wq alone",
    "C6": "LoRA is on par with or better than the adapters (Houlsby's and Pfeiffer's) at a similar budget",
}
# Comparisons shown beside the claims, outside every verdict: the paper makes no claim about a
# frozen encoder's head, but a reader needs to see how far each method is from it.
CONTEXT = "context"
PAPER_EVIDENCE = {
    "C1": "Table 2, RoBERTa-base: LoRA {lora_avg} vs FT {ft_avg} (average of the tasks shown), 0.3M vs 125M trainable",
    "C2": "Table 2, RoBERTa-base: LoRA {lora_avg} vs BitFit {bitfit_avg} (tasks shown); no head-only row (frozen encoders are far below)",
    "C3": "Table 6, GPT-3 on MultiNLI, Wq,Wv: r = 1 {qv1}, r = 2 {qv2}, r = 8 {qv8}, r = 64 {qv64} (±0.1)",
    "C4": "Table 5, GPT-3 on MultiNLI at 18M parameters: Wq r = 8 {q8}, Wq,Wv r = 4 {qv4}, all four r = 2 {qkvo2} (±0.1)",
    "C6": "Table 2, RoBERTa-base: LoRA {lora_avg} vs adapters (AdapterDrop, 0.3M / 0.9M) {adpt_avg} (tasks shown; its Houlsby and Pfeiffer rows are RoBERTa-large's)",
}


def best_learning_rate(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs at the learning rate `lora_nb.tuning.choose_rate` picks, where one setting ran at
    several (the tuning seed's best dev score; without a dev split, the best median validation
    score, as Liu et al., 2019 picked RoBERTa's). The one rule for the sweep, tables and claims."""
    if runs.empty or "learning_rate" not in runs or runs["learning_rate"].nunique() < 2:
        return runs
    chosen = choose_rate(runs["record"])
    return runs[runs["learning_rate"] == chosen]


def _runs(df: pd.DataFrame, name: str, **where) -> Runs | None:
    sel = df[df["record"].map(is_completed)]
    for key, value in where.items():
        if key == "tag":
            sel = sel[sel["tags"].map(lambda t: value in t)]
        else:
            sel = sel[sel[key] == value]
    sel = best_learning_rate(sel)
    sel = sel[sel["record"].map(lambda r: bool(r.get("best_outputs")))]
    return Runs.from_records(name, list(sel["record"])) if len(sel) else None


def task_learned(ft: Runs) -> tuple[bool, float, float]:
    """Whether full fine-tuning learned the task: (learned, FT's mean over seeds, trivial baseline)."""
    trivial = trivial_score(ft.metric, ft.labels)
    ft_mean = float(np.mean(ft.scores()))
    return bool(ft_mean - trivial >= LEARNED[ft.metric]), ft_mean, trivial


def decide(df: pd.DataFrame) -> pd.DataFrame:
    """Every comparison behind the claims that the records allow, one row each (and the
    head-only context rows)."""
    rows: list[Comparison] = []
    learned: dict[str, bool] = {}
    t2 = df[df["tags"].map(lambda t: "table2" in t)] if len(df) else df
    labels = (("lora", "LoRA"), ("full", "FT"), ("bitfit", "BitFit"), ("head", "Head only"),
              ("houlsby", "AdptH"), ("pfeiffer", "AdptP"))
    for task in dict.fromkeys(t2.get("task", [])):
        get = {m: _runs(t2, label, task=task, method=m) for m, label in labels}
        if get["full"] is not None:
            learned[task] = task_learned(get["full"])[0]
        ok = learned.get(task)
        pairs = [("C1", "lora", "full", "noninferior"), ("C2", "lora", "bitfit", "noninferior"),
                 ("C6", "lora", "houlsby", "noninferior"), ("C6", "lora", "pfeiffer", "noninferior"),
                 (CONTEXT, "bitfit", "head", "superior"), (CONTEXT, "lora", "head", "superior")]
        for claim, a, b, kind in pairs:
            if get[a] is not None and get[b] is not None:
                rows.append(compare(claim, task, get[a], get[b], kind, ok))
    t6 = df[df["tags"].map(lambda t: "table6" in t or "table5" in t)] if len(df) else df
    for task in dict.fromkeys(t6.get("task", [])):
        cell = {(wt, r): _runs(t6, f"{wt} r={r}", task=task, weight_type=wt, r=r)
                for wt, r in {(w, int(r)) for w, r in zip(t6["weight_type"], t6["r"])}}
        ok = learned.get(task)
        # C3 holds when r = 1 or r = 2 (two alternatives: Bonferroni, level 1 − 0.05/2) is
        # equivalent to both r = 8 and r = 64 (an intersection: no further correction).
        for small in (1, 2):
            for large in (8, 64):
                a, b = cell.get(("Wq,Wv", small)), cell.get(("Wq,Wv", large))
                if a is not None and b is not None:
                    rows.append(compare("C3", task, a, b, "equivalent", ok, level=1 - 0.05 / 2))
        base = cell.get(("Wq", 8))
        for wt, r in (("Wq,Wv", 4), ("Wq,Wk,Wv,Wo", 2)):
            if base is not None and cell.get((wt, r)) is not None:
                rows.append(compare("C4", task, cell[(wt, r)], base, "superior", ok))
    return comparisons_table(rows)


def claim_verdicts(comparisons: pd.DataFrame) -> dict[str, str]:
    """Each claim's overall verdict from its comparisons: C1, C2 and C6 must hold on every task
    (and C6 against both adapters), C4 both budget comparisons; C3 holds when r = 1 or r = 2 is
    equivalent to both r = 8 and r = 64. A claim with a part that is not testable is not
    testable unless another part already refutes it."""
    out = {}
    for claim in CLAIMS:
        rows = comparisons[comparisons["claim"] == claim] if len(comparisons) else comparisons
        if not len(rows):  # a side has no completed runs: nothing was tested
            out[claim] = NOT_TESTABLE
        elif claim == "C3":
            out[claim] = any_of([all_of(list(g["verdict"])) for _, g in rows.groupby("a")])
        else:
            out[claim] = all_of(list(rows["verdict"]))
    return out
