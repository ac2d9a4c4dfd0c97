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


def test_bootstrap_interval_covers_a_true_zero_and_separates_a_real_gap():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 1000)
    a, b = _runs("A", 0.80, rng=rng, labels=labels), _runs("B", 0.80, rng=rng, labels=labels)
    diff, lo, hi = claims.bootstrap_difference(a, b, n_boot=400)
    assert lo < 0 < hi and lo < diff < hi
    assert claims.verdict(lo, hi, "superior") == INCONCLUSIVE
    c = _runs("C", 0.90, rng=rng, labels=labels)
    diff, lo, hi = claims.bootstrap_difference(c, a, n_boot=400)
    assert 7 < diff < 13 and lo > 0
    assert claims.verdict(lo, hi, "superior") == REPRODUCED
    diff, lo, hi = claims.bootstrap_difference(a, c, n_boot=400)
    assert claims.verdict(lo, hi, "noninferior") == NOT_REPRODUCED


def test_bootstrap_refuses_runs_on_different_examples():
    a = _runs("A", 0.8, rng=np.random.default_rng(2))
    b = _runs("B", 0.8, rng=np.random.default_rng(3))
    with pytest.raises(ValueError, match="same examples"):
        claims.bootstrap_difference(a, b)


def _record(task, method, preds, labels, tags=("table2",), **cfg):
    return {"status": "completed", "primary_metric": "accuracy",
            "config": {"task": task, "method": method, "tags": list(tags), **cfg},
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
    near = lambda: np.where(rng.random(800) < 0.03, 1 - shared, shared)
    records = []
    for seed in range(3):
        records += [_record("sst2", "lora", near(), labels), _record("sst2", "full", near(), labels),
                    _record("sst2", "bitfit", near(), labels), _record("sst2", "head", make(0.60), labels)]
        # A task that FT does not learn: everything sits near the majority class.
        flat = np.where(rng.random(800) < 0.03, 1 - labels, labels) * 0 + labels.max()
        records += [_record("mrpc", "lora", flat, labels), _record("mrpc", "full", flat, labels)]
    comparisons = claims.decide(_frame(records))
    sst2 = comparisons[comparisons["task"] == "sst2"].set_index(["claim", "a", "b"])
    assert sst2.loc[("C2", "BitFit", "Head only"), "verdict"] == REPRODUCED
    assert sst2.loc[("C2", "LoRA", "Head only"), "verdict"] == REPRODUCED
    assert sst2.loc[("C1", "LoRA", "FT"), "verdict"] == REPRODUCED  # same accuracy: matches
    mrpc = comparisons[comparisons["task"] == "mrpc"]
    assert set(mrpc["verdict"]) == {INCONCLUSIVE} and set(mrpc["note"]) == {"FT does not learn this task at this scale"}
    verdicts = claims.claim_verdicts(comparisons)
    assert verdicts["C1"] == INCONCLUSIVE  # must hold on every task; MRPC decides nothing
    assert verdicts["C3"] == INCONCLUSIVE and verdicts["C4"] == INCONCLUSIVE  # not run
