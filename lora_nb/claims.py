"""The paper's claims, decided from run records: a difference, its 95% interval and a verdict.

Each claim compares two conditions (say LoRA and FT on SST-2) run with the same seeds on the
same validation examples. Every record keeps its best evaluation's predictions, so the
difference gets a **paired, two-level bootstrap** interval: each round resamples the validation
examples (the same ones for both conditions) and, independently, each condition's seeds; the
statistic is the difference of the seed means of the task's metric (× 100). The interval thus
holds both the sampling error of a finite validation set and the seed-to-seed spread.

The verdict rule (`verdict`) never calls a gap inside the noise a success or a failure:

- "matches" / "at least as good as" (non-inferiority, margin δ): *reproduced* when the whole
  interval lies above −δ, *not reproduced* when it lies below −δ, else *inconclusive*;
- "beats" (superiority): *reproduced* when the interval lies above 0, *not reproduced* when it
  lies below 0, else *inconclusive*.

A comparison on a task that full fine-tuning does not learn (it must beat the trivial baseline
by `LEARNED`) is *inconclusive at this scale* whatever its interval: nothing was learned to match.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .tuning import choose_rate

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
MARGIN = 2.0  # δ, in points of the metric × 100: "matches" means "is not worse by more than δ"
# How far full fine-tuning must beat the trivial baseline for a task to count as learned
# (accuracy points; Matthews correlation and Pearson × 100).
LEARNED = {"accuracy": 10.0, "matthews_correlation": 20.0, "pearson": 60.0}
N_BOOT = 2000


def score(metric: str, preds: np.ndarray, labels: np.ndarray) -> float:
    """The task's primary metric × 100 (NumPy, for the bootstrap). A constant prediction has no
    correlation: it scores 0 (the trivial baseline), not NaN."""
    if metric == "accuracy":
        return 100.0 * float(np.mean(preds == labels))
    if metric == "pearson":
        if np.std(preds) == 0 or np.std(labels) == 0:
            return 0.0
        return 100.0 * float(np.corrcoef(preds, labels)[0, 1])
    if metric == "matthews_correlation":
        classes = np.unique(np.concatenate([preds, labels]))
        if len(classes) < 2 or len(np.unique(preds)) < 2:
            return 0.0
        tp = float(np.sum((preds == 1) & (labels == 1)))
        tn = float(np.sum((preds == 0) & (labels == 0)))
        fp = float(np.sum((preds == 1) & (labels == 0)))
        fn = float(np.sum((preds == 0) & (labels == 1)))
        denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return 0.0 if denom == 0 else 100.0 * (tp * tn - fp * fn) / denom
    raise ValueError(f"metric: unknown {metric!r}")


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
    raise ValueError(f"kind: 'noninferior' or 'superior', got {kind!r}")


def all_of(verdicts: list[str]) -> str:
    """A claim made of parts that must all hold."""
    if not verdicts:
        return INCONCLUSIVE
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    return REPRODUCED if all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE


def any_of(verdicts: list[str]) -> str:
    """A claim that holds when one of its alternatives does."""
    if REPRODUCED in verdicts:
        return REPRODUCED
    return NOT_REPRODUCED if verdicts and all(v == NOT_REPRODUCED for v in verdicts) else INCONCLUSIVE


@dataclass
class Runs:
    """The seeds of one condition: predictions (seeds × examples), the shared labels, the metric."""

    name: str
    metric: str
    preds: np.ndarray
    labels: np.ndarray

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
        return cls(name, metric, np.stack(preds), labels)

    def scores(self) -> np.ndarray:
        return np.array([score(self.metric, p, self.labels) for p in self.preds])


def bootstrap_difference(a: Runs, b: Runs, n_boot: int = N_BOOT, seed: int = 0
                         ) -> tuple[float, float, float]:
    """Mean over seeds of A's metric minus B's, and its 95% paired two-level bootstrap interval
    (module docstring)."""
    if not np.array_equal(a.labels, b.labels) or a.metric != b.metric:
        raise ValueError(f"{a.name} and {b.name} were not evaluated on the same examples and metric")
    rng = np.random.default_rng(seed)
    n = len(a.labels)
    point = float(a.scores().mean() - b.scores().mean())
    stats = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        sa = rng.integers(0, len(a.preds), len(a.preds))
        sb = rng.integers(0, len(b.preds), len(b.preds))
        labels = a.labels[idx]
        stats[i] = (np.mean([score(a.metric, a.preds[s][idx], labels) for s in sa])
                    - np.mean([score(b.metric, b.preds[s][idx], labels) for s in sb]))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, float(lo), float(hi)


@dataclass
class Comparison:
    """One row of the claims table."""

    claim: str
    task: str
    a: str
    b: str
    kind: str
    a_median: float
    b_median: float
    difference: float
    lo: float
    hi: float
    seeds: str
    verdict: str
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def compare(claim: str, task: str, a: Runs, b: Runs, kind: str, learned: bool | None = None,
            margin: float = MARGIN) -> Comparison:
    """Compare A with B (`kind`: noninferior or superior) and give the verdict; on a task that
    is not learned (`learned` False) the verdict is inconclusive."""
    diff, lo, hi = bootstrap_difference(a, b)
    v = verdict(lo, hi, kind, margin)
    note = ""
    if learned is not None and not learned:
        v, note = INCONCLUSIVE, "FT does not learn this task at this scale"
    return Comparison(claim, task, a.name, b.name, kind, float(np.median(a.scores())),
                      float(np.median(b.scores())), diff, lo, hi,
                      f"{len(a.preds)} vs {len(b.preds)}", v, note)


def comparisons_table(rows: list[Comparison]) -> pd.DataFrame:
    return pd.DataFrame([r.to_dict() for r in rows])


# --- The paper's claims C1–C4, from a records DataFrame (`lora_nb.results.load_records`) ---

CLAIMS = {
    "C1": "LoRA (Wq,Wv, r = 8) matches full fine-tuning on each task while training < 1% of its parameters",
    "C2": "LoRA is at least as good as BitFit, and both are clearly above the frozen-encoder (head-only) baseline",
    "C3": "A very small rank suffices: r = 1 or 2 is within noise of r = 8 and r = 64 (Wq,Wv)",
    "C4": "At an equal parameter budget, adapting more weight types beats adapting Wq alone",
}
PAPER_EVIDENCE = {
    "C1": "Table 2, RoBERTa-base: LoRA {lora_avg} vs FT {ft_avg} (average of the tasks shown), 0.3M vs 125M trainable",
    "C2": "Table 2, RoBERTa-base: LoRA {lora_avg} vs BitFit {bitfit_avg} (tasks shown); no head-only row (frozen encoders are far below)",
    "C3": "Table 6, GPT-3 on MultiNLI, Wq,Wv: r = 1 {qv1}, r = 2 {qv2}, r = 8 {qv8}, r = 64 {qv64} (±0.1)",
    "C4": "Table 5, GPT-3 on MultiNLI at 18M parameters: Wq r = 8 {q8}, Wq,Wv r = 4 {qv4}, all four r = 2 {qkvo2} (±0.1)",
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
    sel = df[df["status"] == "completed"]
    for key, value in where.items():
        if key == "tag":
            sel = sel[sel["tags"].map(lambda t: value in t)]
        else:
            sel = sel[sel[key] == value]
    sel = best_learning_rate(sel)
    sel = sel[sel["record"].map(lambda r: bool(r.get("best_outputs")))]
    return Runs.from_records(name, list(sel["record"])) if len(sel) else None


def task_learned(ft: Runs) -> tuple[bool, float, float]:
    """Whether full fine-tuning learned the task: (learned, FT median, trivial baseline)."""
    trivial = trivial_score(ft.metric, ft.labels)
    ft_median = float(np.median(ft.scores()))
    return bool(ft_median - trivial >= LEARNED[ft.metric]), ft_median, trivial


def decide(df: pd.DataFrame) -> pd.DataFrame:
    """Every comparison behind claims C1–C4 that the records allow, one row each."""
    rows: list[Comparison] = []
    learned: dict[str, bool] = {}
    t2 = df[df["tags"].map(lambda t: "table2" in t)] if len(df) else df
    for task in dict.fromkeys(t2.get("task", [])):
        get = {m: _runs(t2, label, task=task, method=m) for m, label in
               (("lora", "LoRA"), ("full", "FT"), ("bitfit", "BitFit"), ("head", "Head only"))}
        if get["full"] is not None:
            learned[task] = task_learned(get["full"])[0]
        ok = learned.get(task)
        pairs = [("C1", "lora", "full", "noninferior"), ("C2", "lora", "bitfit", "noninferior"),
                 ("C2", "bitfit", "head", "superior"), ("C2", "lora", "head", "superior")]
        for claim, a, b, kind in pairs:
            if get[a] is not None and get[b] is not None:
                rows.append(compare(claim, task, get[a], get[b], kind, ok))
    t6 = df[df["tags"].map(lambda t: "table6" in t or "table5" in t)] if len(df) else df
    for task in dict.fromkeys(t6.get("task", [])):
        cell = {(wt, r): _runs(t6, f"{wt} r={r}", task=task, weight_type=wt, r=r)
                for wt, r in {(w, int(r)) for w, r in zip(t6["weight_type"], t6["r"])}}
        ok = learned.get(task)
        for small in (1, 2):
            for large in (8, 64):
                a, b = cell.get(("Wq,Wv", small)), cell.get(("Wq,Wv", large))
                if a is not None and b is not None:
                    rows.append(compare("C3", task, a, b, "noninferior", ok))
        base = cell.get(("Wq", 8))
        for wt, r in (("Wq,Wv", 4), ("Wq,Wk,Wv,Wo", 2)):
            if base is not None and cell.get((wt, r)) is not None:
                rows.append(compare("C4", task, cell[(wt, r)], base, "superior", ok))
    return comparisons_table(rows)


def claim_verdicts(comparisons: pd.DataFrame) -> dict[str, str]:
    """Each claim's overall verdict from its comparisons: C1 must hold on every task, C2's
    three comparisons on every task, C4 both budget comparisons; C3 holds when r = 1 or r = 2
    is within noise of both r = 8 and r = 64."""
    out = {}
    for claim in CLAIMS:
        rows = comparisons[comparisons["claim"] == claim] if len(comparisons) else comparisons
        if not len(rows):
            out[claim] = INCONCLUSIVE
        elif claim == "C3":
            out[claim] = any_of([all_of(list(g["verdict"])) for _, g in rows.groupby("a")])
        else:
            out[claim] = all_of(list(rows["verdict"]))
    return out
