"""GLUE metrics (offline, evaluate's Metric API) against values computed by hand."""

import math

import pytest

from lora_nb.metrics import PRIMARY_METRIC, glue_metric


def compute(task, preds, refs, batches=2):
    metric = glue_metric(task)
    step = math.ceil(len(preds) / batches)
    for i in range(0, len(preds), step):  # the add_batch/compute protocol
        metric.add_batch(predictions=preds[i:i + step], references=refs[i:i + step])
    return metric.compute()


def test_accuracy_and_f1_mrpc():
    preds, refs = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]
    # 4 of 6 right; tp = 2, fp = 1, fn = 1 → precision = recall = 2/3, F1 = 2/3.
    assert compute("mrpc", preds, refs) == pytest.approx({"accuracy": 4 / 6, "f1": 2 / 3})


def test_accuracy_only_for_sst2_and_mnli():
    assert compute("sst2", [1, 0, 1], [1, 1, 1]) == pytest.approx({"accuracy": 2 / 3})
    assert compute("mnli", [0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx({"accuracy": 0.75})


def test_matthews_correlation_cola():
    preds, refs = [1, 1, 1, 0, 0, 1], [1, 1, 0, 0, 1, 1]
    tp, tn, fp, fn = 3, 1, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute("cola", preds, refs) == pytest.approx({"matthews_correlation": mcc})


def test_pearson_and_spearman_stsb():
    preds, refs = [0.5, 2.0, 3.5, 1.0], [1.0, 2.0, 4.0, 3.0]
    mp, mr = sum(preds) / 4, sum(refs) / 4
    cov = sum((p - mp) * (r - mr) for p, r in zip(preds, refs))
    pearson = cov / math.sqrt(sum((p - mp) ** 2 for p in preds) * sum((r - mr) ** 2 for r in refs))
    # ranks: preds 1,3,4,2; refs 1,2,4,3 → Spearman = 1 - 6·Σd² / (n(n²-1)) = 1 - 6·2/60
    result = compute("stsb", preds, refs)
    assert result["pearson"] == pytest.approx(pearson, rel=1e-5)
    assert result["spearman"] == pytest.approx(1 - 12 / 60)


def test_primary_metric_per_task_matches_table2():
    assert PRIMARY_METRIC == {"mnli": "accuracy", "sst2": "accuracy", "mrpc": "accuracy",
                              "cola": "matthews_correlation", "qnli": "accuracy", "qqp": "accuracy",
                              "rte": "accuracy", "stsb": "pearson"}


def test_unknown_task_is_refused():
    with pytest.raises(KeyError, match="unknown task 'wnli'"):
        glue_metric("wnli")


def test_score_agrees_with_scikit_learn_and_scipy():
    """The one definition (`score`, NumPy for speed) gives scikit-learn's and scipy's values."""
    import numpy as np
    from scipy.stats import pearsonr
    from sklearn.metrics import accuracy_score, matthews_corrcoef

    from lora_nb.metrics import score

    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 300)
        preds = np.where(rng.random(300) < 0.7, labels, 1 - labels)
        assert score("accuracy", preds, labels) == accuracy_score(labels, preds)
        assert score("matthews_correlation", preds, labels) == pytest.approx(matthews_corrcoef(labels, preds), abs=1e-12)
        x = rng.normal(size=300)
        y = x + rng.normal(size=300)
        assert score("pearson", y, x) == pytest.approx(pearsonr(x, y)[0], abs=1e-12)
    three = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    assert score("matthews_correlation", *three) == pytest.approx(matthews_corrcoef(three[1], three[0]))
    # Undefined correlations: Matthews' is 0 (scikit-learn's convention), Pearson's NaN.
    assert score("matthews_correlation", np.ones(4, int), np.array([0, 1, 0, 1])) == 0.0
    assert math.isnan(score("pearson", np.full(4, 2.5), np.array([1.0, 2.0, 3.0, 4.0])))
    with pytest.raises(ValueError, match="metric: unknown"):
        score("bleu", [1], [1])
