"""The verdict rule and the paired bootstrap behind the claims table (synthetic cases)."""

import numpy as np
import pandas as pd
import pytest

from lora_nb import claims
from lora_nb.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Runs


@pytest.mark.parametrize("lo, hi, kind, expected", [
    (-1.5, 3.0, "noninferior", REPRODUCED),        # whole interval above −δ (δ = 2)
    (-5.0, -2.5, "noninferior", NOT_REPRODUCED),   # whole interval below −δ
    (-4.0, 1.0, "noninferior", INCONCLUSIVE),      # straddles −δ
    (0.2, 4.0, "superior", REPRODUCED),
    (-3.0, -0.1, "superior", NOT_REPRODUCED),
    (-0.5, 0.5, "superior", INCONCLUSIVE),         # a gap inside the noise decides nothing
])
def test_verdict_rule(lo, hi, kind, expected):
    assert claims.verdict(lo, hi, kind) == expected


def test_verdict_refuses_bad_input():
    with pytest.raises(ValueError, match="kind"):
        claims.verdict(0, 1, "better")
    with pytest.raises(ValueError, match="interval"):
        claims.verdict(1, 0, "superior")


def test_combining_parts():
    assert claims.all_of([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert claims.all_of([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert claims.all_of([REPRODUCED, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert claims.all_of([]) == INCONCLUSIVE
    assert claims.any_of([NOT_REPRODUCED, REPRODUCED]) == REPRODUCED
    assert claims.any_of([NOT_REPRODUCED, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert claims.any_of([NOT_REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE


def test_scores_and_trivial_baselines():
    labels = np.array([1, 1, 1, 0])
    assert claims.score("accuracy", np.array([1, 1, 0, 0]), labels) == pytest.approx(75.0)
    assert claims.trivial_score("accuracy", labels) == pytest.approx(75.0)  # majority class
    assert claims.score("matthews_correlation", np.ones(4, int), labels) == 0.0  # constant
    assert claims.score("matthews_correlation", labels, labels) == pytest.approx(100.0)
    y = np.array([0.0, 1.0, 2.0, 3.0])
    assert claims.score("pearson", 2 * y + 1, y) == pytest.approx(100.0)
    assert claims.score("pearson", np.full(4, 2.5), y) == 0.0  # undefined: counts as no learning


def _runs(name, accuracy, n=1000, seeds=3, rng=None, labels=None):
    """Seeds of a classifier that is right on about `accuracy` of n binary examples."""
    rng = rng or np.random.default_rng(0)
    labels = labels if labels is not None else rng.integers(0, 2, n)
    preds = np.stack([np.where(rng.random(n) < accuracy, labels, 1 - labels) for _ in range(seeds)])
    return Runs(name, "accuracy", preds, labels)


def test_the_interval_covers_a_true_zero_and_separates_a_real_gap():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 1000)
    a, b = _runs("A", 0.80, rng=rng, labels=labels), _runs("B", 0.80, rng=rng, labels=labels)
    diff, lo, hi = claims.difference_interval(a, b, n_boot=400)
    assert lo < 0 < hi and lo < diff < hi
    assert claims.verdict(lo, hi, "superior") == INCONCLUSIVE
    c = _runs("C", 0.90, rng=rng, labels=labels)
    diff, lo, hi = claims.difference_interval(c, a, n_boot=400)
    assert 7 < diff < 13 and lo > 0
    assert claims.verdict(lo, hi, "superior") == REPRODUCED
    diff, lo, hi = claims.difference_interval(a, c, n_boot=400)
    assert claims.verdict(lo, hi, "noninferior") == NOT_REPRODUCED


def test_the_interval_refuses_runs_on_different_examples():
    a = _runs("A", 0.8, rng=np.random.default_rng(2))
    b = _runs("B", 0.8, rng=np.random.default_rng(3))
    with pytest.raises(ValueError, match="same examples"):
        claims.difference_interval(a, b)


FLIP = 0.03


def _simulated_pair(rng, n=400, seeds=3, gap=0.02, seed_sd=0.025):
    """Two conditions on one sampled test set, as fine-tuned runs behave: an example is right
    when its difficulty (uniform, shared by every run) lies under the run's accuracy, which is
    its condition's mean plus seed noise (sd `seed_sd`), and a few predictions (`FLIP`) flip at
    random. The true difference of the population accuracies is gap × (1 − 2·FLIP) × 100."""
    labels = rng.integers(0, 2, n)
    difficulty = rng.random(n)
    out = []
    for name, mean in (("A", 0.75 + gap), ("B", 0.75)):
        p = mean + seed_sd * rng.standard_normal(seeds)
        correct = (difficulty[None, :] < p[:, None]) ^ (rng.random((seeds, n)) < FLIP)
        out.append(Runs(name, "accuracy", np.where(correct, labels, 1 - labels), labels,
                        tuple(range(seeds))))
    return out


def _old_two_level_percentile(a, b, n_boot, rng):
    """The earlier scheme: examples and, independently, each condition's seeds resampled; the
    2.5th and 97.5th percentiles of the difference of seed means."""
    n, stats_ = len(a.labels), np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        sa, sb = (rng.integers(0, len(r.preds), len(r.preds)) for r in (a, b))
        stats_[i] = a.scores(idx)[sa].mean() - b.scores(idx)[sb].mean()
    return np.percentile(stats_, [2.5, 97.5])


def test_one_bootstrap_draws_each_round_then_its_second_level_from_one_generator():
    """`claims.bootstrap`, behind `difference_interval` and C5's `bootstrap_units`: round by round,
    the indices first, then what the statistic draws; the committed intervals rest on this order."""
    values = [np.array([1.0, 3.0]), np.array([2.0]), np.array([4.0, 5.0, 9.0])]
    rng, expected = np.random.default_rng(11), []
    for _ in range(50):
        units = rng.integers(0, 3, 3)
        expected.append(np.mean([values[u][rng.integers(0, len(values[u]), len(values[u]))].mean() for u in units]))
    got = claims.bootstrap(lambda units, g: np.mean([values[u][g.integers(0, len(values[u]), len(values[u]))].mean()
                                                     for u in units]), 3, n_boot=50, seed=11)
    assert got.tolist() == expected
    labels = np.random.default_rng(1).integers(0, 2, 200)
    a, b = (_runs(name, acc, n=200, rng=np.random.default_rng(i), labels=labels)
            for i, (name, acc) in enumerate((("a", 0.8), ("b", 0.7))))
    rng, boot = np.random.default_rng(3), []
    for _ in range(40):
        idx = rng.integers(0, 200, 200)
        boot.append(a.scores(idx).mean() - b.scores(idx).mean())
    assert claims.bootstrap(lambda idx, _: a.scores(idx).mean() - b.scores(idx).mean(), 200, 40, 3).tolist() == boot


def test_coverage_by_simulation_counts_both_sources_and_the_old_scheme_falls_short():
    rng = np.random.default_rng(7)
    truth, new, old, replicates = 2.0 * (1 - 2 * FLIP), 0, 0, 400
    for _ in range(replicates):  # seed noise dominates, as on the committed MNLI runs
        a, b = _simulated_pair(rng, n=1000, seed_sd=0.03)
        _, lo, hi = claims.difference_interval(a, b, n_boot=150, seed=int(rng.integers(1 << 30)))
        new += lo <= truth <= hi
        lo, hi = _old_two_level_percentile(a, b, 150, rng)
        old += lo <= truth <= hi
    assert 0.93 <= new / replicates <= 0.99, new / replicates
    assert old / replicates < 0.90, old / replicates


def test_seeds_pair_when_both_ran_the_same_and_welch_otherwise():
    rng = np.random.default_rng(3)
    a, b = _simulated_pair(rng, seeds=3)
    paired = claims.difference_interval(a, b, n_boot=200)
    b_other = Runs("B", b.metric, b.preds, b.labels, (5, 6, 7))
    unpaired = claims.difference_interval(a, b_other, n_boot=200)
    assert paired[0] == pytest.approx(unpaired[0])  # the same difference of means
    assert paired[1:] != unpaired[1:]


@pytest.mark.parametrize("lo, hi, expected", [
    (-1.5, 1.5, REPRODUCED),       # inside ±δ: equivalent
    (-2.5, 1.0, INCONCLUSIVE),     # a bound outside ±δ
    (2.5, 4.0, NOT_REPRODUCED),    # wholly outside
])
def test_equivalence_needs_both_bounds_inside_the_margin(lo, hi, expected):
    assert claims.verdict(lo, hi, "equivalent") == expected


def test_a_side_that_did_not_converge_is_not_testable():
    rng = np.random.default_rng(5)
    a, b = _simulated_pair(rng, gap=0.2)
    late = Runs(a.name, a.metric, a.preds, a.labels, a.seeds, converged=False)
    assert claims.compare("C1", "sst2", a, b, "noninferior").verdict == REPRODUCED
    row = claims.compare("C1", "sst2", late, b, "noninferior")
    assert row.verdict == claims.NOT_TESTABLE and "did not converge" in row.note
    assert claims.all_of([REPRODUCED, claims.NOT_TESTABLE]) == claims.NOT_TESTABLE
    assert claims.all_of([NOT_REPRODUCED, claims.NOT_TESTABLE]) == NOT_REPRODUCED


def test_a_single_seed_is_not_testable_however_narrow_its_interval():
    rng = np.random.default_rng(5)
    a, b = _simulated_pair(rng, gap=0.2)
    one = lambda r: Runs(r.name, r.metric, r.preds[:1], r.labels, r.seeds[:1])
    row = claims.compare("C1", "sst2", one(a), one(b), "noninferior")
    assert row.verdict == claims.NOT_TESTABLE and "one seed" in row.note
    assert row.hi - row.lo > 0  # the interval is still given: test-set sampling alone


def _record(task, method, preds, labels, tags=("table2",), seed=0, **cfg):
    plateau = [{"step": s, "primary": 0.8, "eval": {"validation": {"accuracy": 0.8}}} for s in (100, 200, 300, 400)]
    return {"status": "completed", "primary_metric": "accuracy", "optimizer_steps": 400,
            "evaluations": plateau, "config": {"task": task, "method": method, "tags": list(tags),
                                               "seed": seed, **cfg},
            "best_outputs": {"validation": {"predictions": [int(p) for p in preds],
                                            "labels": [int(x) for x in labels]}}}


def _frame(records):
    rows = [{"status": r["status"], "task": r["config"]["task"], "method": r["config"]["method"],
             "tags": tuple(r["config"]["tags"]), "weight_type": r["config"].get("weight_type", ""),
             "r": r["config"].get("r", np.nan), "record": r} for r in records]
    return pd.DataFrame(rows)


def test_decide_gives_each_claim_its_verdict_and_gates_unlearned_tasks():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 800)
    make = lambda acc: np.where(rng.random(800) < acc, labels, 1 - labels)
    shared = make(0.85)  # methods that learn the task err on much the same examples
    near = lambda: np.where(rng.random(800) < 0.01, 1 - shared, shared)
    records = []
    for seed in range(3):
        records += [_record("sst2", m, near(), labels, seed=seed) for m in ("lora", "full", "bitfit", "houlsby")]
        records += [_record("sst2", "head", make(0.60), labels, seed=seed)]
        # A task that FT does not learn: everything sits near the majority class.
        flat = np.where(rng.random(800) < 0.03, 1 - labels, labels) * 0 + labels.max()
        records += [_record("mrpc", "lora", flat, labels, seed=seed), _record("mrpc", "full", flat, labels, seed=seed)]
    comparisons = claims.decide(_frame(records))
    sst2 = comparisons[comparisons["task"] == "sst2"].set_index(["claim", "a", "b"])
    assert sst2.loc[(claims.CONTEXT, "BitFit", "Head only"), "verdict"] == REPRODUCED  # context only
    assert sst2.loc[(claims.CONTEXT, "LoRA", "Head only"), "verdict"] == REPRODUCED
    assert sst2.loc[("C1", "LoRA", "FT"), "verdict"] == REPRODUCED  # same accuracy: matches
    assert sst2.loc[("C2", "LoRA", "BitFit"), "verdict"] == REPRODUCED
    assert sst2.loc[("C6", "LoRA", "AdptH"), "verdict"] == REPRODUCED
    mrpc = comparisons[comparisons["task"] == "mrpc"]
    assert set(mrpc["verdict"]) == {INCONCLUSIVE} and set(mrpc["note"]) == {"FT does not learn this task at this scale"}
    verdicts = claims.claim_verdicts(comparisons)
    assert verdicts["C1"] == INCONCLUSIVE  # must hold on every task; MRPC decides nothing
    assert verdicts["C3"] == claims.NOT_TESTABLE and verdicts["C4"] == claims.NOT_TESTABLE  # not run
    assert claims.CONTEXT not in verdicts
