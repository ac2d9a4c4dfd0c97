"""The convergence rule (lora_nb.convergence) and the learning-rate rule (lora_nb.tuning), on
synthetic curves and records."""

import math

import pytest

from lora_nb.convergence import MIN_GAIN, judge, judge_record, standard_error
from lora_nb.tuning import choose_rate, dev_score


def saturating(steps, ceiling, rate):
    """A learning curve that rises to `ceiling` with time constant `rate` (steps)."""
    return [(s, ceiling * (1 - math.exp(-s / rate))) for s in steps]


STEPS = list(range(100, 1001, 100))


def test_a_curve_that_plateaued_early_converged():
    verdict = judge(saturating(STEPS, 0.8, 80), 1000)
    assert verdict.converged, verdict.reason


def test_a_curve_still_climbing_at_the_end_did_not_converge():
    verdict = judge(saturating(STEPS, 0.8, 2000), 1000)  # nearly linear over the run
    assert not verdict.converged and verdict.reason.startswith("still gaining")


def test_the_best_score_before_the_last_quarter_is_enough():
    points = [(100, 0.5), (200, 0.7), (300, 0.72), (400, 0.71), (800, 0.70), (900, 0.69), (1000, 0.705)]
    verdict = judge(points, 1000)
    assert verdict.converged and "step 300" in verdict.reason


@pytest.mark.parametrize("gain, converged", [(MIN_GAIN * 0.5, True), (MIN_GAIN * 2, False)])
def test_a_late_best_converged_only_when_the_last_quarter_gained_little(gain, converged):
    points = [(100, 0.5), (400, 0.7), (700, 0.75), (800, 0.75 + gain / 2), (1000, 0.75 + gain)]
    assert judge(points, 1000).converged is converged


def test_a_gain_inside_one_standard_error_is_noise_and_one_beyond_it_is_not():
    points = [(100, 0.5), (400, 0.62), (700, 0.63), (800, 0.635), (1000, 0.645)]  # +1.5 points
    assert not judge(points, 1000).converged  # above half a point, no noise given
    noise = standard_error("accuracy", 0.645, 899)  # 1.6 points on a dev split of 899
    assert noise == pytest.approx(math.sqrt(0.645 * 0.355 / 899))
    verdict = judge(points, 1000, noise=noise)
    assert verdict.converged and "standard error" in verdict.reason
    assert not judge(points, 1000, noise=standard_error("accuracy", 0.645, 20_000)).converged


def test_standard_errors_follow_the_metric():
    # correlations: the delta method through Fisher's z, shrinking as r approaches 1
    assert standard_error("pearson", 0.85, 578) == pytest.approx((1 - 0.85**2) / math.sqrt(575))
    assert standard_error("matthews_correlation", 0.0, 103) == pytest.approx(0.1)
    assert standard_error("accuracy", 0.9, 0) == 0.0  # split size unknown: no noise allowance


def test_the_record_rule_uses_the_dev_split_size():
    steps = [100, 200, 300, 400, 500, 600, 700, 800]
    dev = [0.5, 0.55, 0.6, 0.61, 0.62, 0.625, 0.63, 0.64]  # +1.5 points in the last quarter
    small, large = record(steps, dev, dev), record(steps, dev, dev)
    small["data"] = {"eval_examples": {"validation": 1000, "dev": 300}}
    large["data"] = {"eval_examples": {"validation": 1000, "dev": 100_000}}
    assert judge_record(small).converged and not judge_record(large).converged


def test_too_few_evaluations_or_no_score_cannot_show_a_plateau():
    assert not judge([(125, 0.5), (250, 0.6)], 250).converged  # the old reference runs: 2 evaluations
    nan = float("nan")
    assert not judge([(s, nan) for s in STEPS], 1000).converged


def record(steps, dev, validation, rate=1e-3, seed=0, status="completed", metric="accuracy"):
    evaluations = [{"step": s, "primary": v, "eval": {"validation": {metric: v}, "dev": {metric: d}}}
                   for s, d, v in zip(steps, dev, validation)]
    return {"status": status, "primary_metric": metric, "optimizer_steps": steps[-1],
            "evaluations": evaluations, "best_metric": max(validation),
            "config": {"learning_rate": rate, "seed": seed}}


def test_the_rule_reads_the_dev_split_when_the_run_has_one():
    # validation still climbs, dev has levelled off: the dev curve decides
    rec = record([100, 200, 300, 400], dev=[0.6, 0.7, 0.7, 0.7], validation=[0.5, 0.6, 0.7, 0.8])
    verdict = judge_record(rec)
    assert verdict.split == "dev" and verdict.converged


def test_the_rate_is_chosen_on_the_dev_split_at_the_tuning_seed():
    steps = [100, 200, 300, 400]
    low = record(steps, dev=[0.6, 0.7, 0.71, 0.72], validation=[0.9] * 4, rate=1e-4)  # best validation
    high = record(steps, dev=[0.7, 0.75, 0.8, 0.78], validation=[0.6] * 4, rate=1e-3)  # best dev
    other_seed = record(steps, dev=[0.9] * 4, validation=[0.9] * 4, rate=1e-4, seed=1)
    assert dev_score(high) == 0.8
    assert choose_rate([low, high, other_seed]) == 1e-3  # seed 1 ran only at 1e-4: not compared
    failed = record(steps, dev=[0.99] * 4, validation=[0.99] * 4, rate=3e-3, status="failed")
    assert choose_rate([low, high, failed]) == 1e-3
    assert choose_rate([failed]) is None


def test_ties_go_to_the_smaller_rate_and_runs_without_a_dev_split_use_median_validation():
    steps = [100, 200, 300, 400]
    a, b = (record(steps, [0.7] * 4, [0.5] * 4, rate=r) for r in (1e-3, 1e-4))
    assert choose_rate([a, b]) == 1e-4
    plain = []
    for rate, scores in ((1e-5, [0.80, 0.81, 0.30]), (2e-5, [0.79, 0.79, 0.79])):
        for seed, v in enumerate(scores):
            plain.append({"status": "completed", "best_metric": v, "evaluations": [],
                          "config": {"learning_rate": rate, "seed": seed}})
    assert choose_rate(plain) == 1e-5  # median 0.80 against 0.79


def test_a_grid_grows_past_the_edge_its_best_rate_sits_on():
    from lora_nb.tuning import MAX_EXTENSIONS, extended_grid

    grid = (3e-4, 1e-3, 3e-3)
    assert extended_grid(grid, {}) == grid  # nothing ran yet
    assert extended_grid(grid, {3e-4: 0.6, 1e-3: 0.7}) == grid  # 3e-3 still to run
    assert extended_grid(grid, {3e-4: 0.6, 1e-3: 0.8, 3e-3: 0.7}) == grid  # bracketed
    grown = extended_grid(grid, {3e-4: 0.6, 1e-3: 0.7, 3e-3: 0.8})
    assert grown == (3e-4, 1e-3, 3e-3, 9e-3)  # one step of ×3 beyond the top
    assert extended_grid(grid, {3e-4: 0.6, 1e-3: 0.7, 3e-3: 0.8, 9e-3: 0.75}) == grown  # now bracketed
    rising = {3e-4: 0.6, 1e-3: 0.7, 3e-3: 0.8, 9e-3: 0.85, 2.7e-2: 0.9}
    assert extended_grid(grid, rising) == (3e-4, 1e-3, 3e-3, 9e-3, 2.7e-2)  # at most MAX_EXTENSIONS
    assert MAX_EXTENSIONS == 2
    ft = extended_grid((2e-5, 5e-5, 1e-4), {2e-5: 0.9, 5e-5: 0.8, 1e-4: 0.7})
    assert ft == (8e-6, 2e-5, 5e-5, 1e-4)  # the bottom grows by the bottom's own spacing (×2.5)
    assert extended_grid(grid, {3e-4: float("nan"), 1e-3: float("nan"), 3e-3: float("nan")}) == grid


def test_only_converged_tuning_runs_compete_while_any_converged():
    from lora_nb.tuning import extended_grid

    grid = (2e-5, 5e-5, 1e-4)
    scores = {2e-5: 0.77, 5e-5: 0.78, 1e-4: 0.80}
    assert extended_grid(grid, scores) == (2e-5, 5e-5, 1e-4, 2e-4)  # 1e-4 best: grow past it
    # 1e-4 is still gaining: among the converged, 5e-5 is best and inside the grid
    assert extended_grid(grid, scores, frozenset({2e-5, 5e-5})) == grid
    # none converged: the scores alone decide
    assert extended_grid(grid, scores, frozenset()) == (2e-5, 5e-5, 1e-4, 2e-4)


def _tuning_record(rate: float, curve: list[float]) -> dict:
    return {"status": "completed", "primary_metric": "accuracy", "optimizer_steps": 100 * len(curve),
            "config": {"learning_rate": rate, "seed": 0},
            "data": {"eval_examples": {"dev": 1000}},
            "evaluations": [{"step": 100 * (i + 1), "eval": {"dev": {"accuracy": v}}}
                            for i, v in enumerate(curve)]}


def test_choose_rate_prefers_a_converged_run_to_a_higher_one_still_gaining():
    from lora_nb.convergence import judge_record
    from lora_nb.tuning import choose_rate

    plateau = _tuning_record(5e-5, [0.70, 0.76, 0.78, 0.78, 0.78, 0.78, 0.78, 0.78])
    gaining = _tuning_record(1e-4, [0.50, 0.60, 0.65, 0.70, 0.72, 0.75, 0.78, 0.80])
    assert judge_record(plateau).converged and not judge_record(gaining).converged
    assert choose_rate([plateau, gaining]) == 5e-5
    # with no converged run the best score decides
    still = _tuning_record(5e-5, [0.50, 0.60, 0.65, 0.70, 0.72, 0.74, 0.76, 0.78])
    assert choose_rate([still, gaining]) == 1e-4
