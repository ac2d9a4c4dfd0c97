"""GLUE metrics: one definition of each (`score`), and evaluate's `Metric` API over it, offline.

`evaluate.load("glue", task)` fetches its script from the Hub; `glue_metric(task)` is the same
interface (`add_batch`, `compute`) with nothing to download. Values are fractions in [0, 1]
(correlations in [-1, 1]); tables show them × 100. The records (`lora_nb.train.evaluate`) and
the claims' bootstrap (`lora_nb.claims.score`, some 10⁵ calls per report) both call `score`;
this module imports NumPy and scipy alone (evaluate and datasets load with the first metric).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.stats import spearmanr

# The metric Table 2 shows for each task (paper Table 2 caption).
PRIMARY_METRIC: dict[str, str] = {
    "mnli": "accuracy",
    "sst2": "accuracy",
    "mrpc": "accuracy",
    "cola": "matthews_correlation",
    "qnli": "accuracy",
    "qqp": "accuracy",
    "rte": "accuracy",
    "stsb": "pearson",
}
# What GLUE reports for each task: its primary metric, F1 beside MRPC's and QQP's accuracy,
# Spearman beside STS-B's Pearson.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    **{task: (metric,) for task, metric in PRIMARY_METRIC.items()},
    "mrpc": ("accuracy", "f1"), "qqp": ("accuracy", "f1"), "stsb": ("pearson", "spearman"),
}


def score(metric: str, predictions, references) -> float:
    """One GLUE metric of `predictions` against `references`: ``accuracy``, ``f1`` (of the
    positive class), ``matthews_correlation``, ``pearson`` or ``spearman``. A correlation that
    is undefined (constant predictions or references) is NaN, except Matthews', which
    scikit-learn defines as 0 there.

    Pearson's r is NumPy's `corrcoef`; so is the Matthews correlation of two binary variables,
    which is their Pearson correlation (the phi coefficient: scikit-learn's `matthews_corrcoef`
    gives the same to rounding, at some 30× the time, which the claims' bootstrap cannot
    spend). More than two classes go to scikit-learn."""
    preds, refs = np.asarray(predictions), np.asarray(references)
    if metric == "accuracy":
        return float(np.mean(preds == refs))
    if metric == "spearman":
        return float(spearmanr(refs, preds)[0])
    if metric == "f1" or (metric == "matthews_correlation" and len(np.union1d(preds, refs)) > 2):
        from sklearn.metrics import f1_score, matthews_corrcoef

        return float((f1_score if metric == "f1" else matthews_corrcoef)(refs, preds))
    if metric in ("pearson", "matthews_correlation"):
        if np.ptp(preds) == 0 or np.ptp(refs) == 0:
            return 0.0 if metric == "matthews_correlation" else math.nan
        return float(np.corrcoef(refs, preds)[0, 1])
    raise ValueError(f"metric: unknown {metric!r}; choose from accuracy, f1, "
                     "matthews_correlation, pearson, spearman")


@functools.cache
def _glue_metric_class():
    """`GlueMetric`, defined on first use: evaluate and datasets are slow to import."""
    import datasets
    import evaluate

    class GlueMetric(evaluate.Metric):
        """GLUE's metrics for one task (``config_name``, `TASK_METRICS`), by `score`."""

        def _info(self) -> evaluate.MetricInfo:
            if self.config_name not in PRIMARY_METRIC:
                raise KeyError(f"GlueMetric: unknown task {self.config_name!r}; "
                               f"choose from {sorted(PRIMARY_METRIC)}")
            dtype = "float32" if self.config_name == "stsb" else "int64"
            return evaluate.MetricInfo(
                description="GLUE metrics computed locally with NumPy, scikit-learn and scipy.",
                citation="Wang et al., 2019, GLUE: A Multi-Task Benchmark and Analysis Platform.",
                inputs_description="predictions and references: class ids, or scores for STS-B.",
                features=datasets.Features(
                    {"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            )

        def _compute(self, predictions, references) -> dict[str, float]:
            return {m: score(m, predictions, references) for m in TASK_METRICS[self.config_name]}

    return GlueMetric


def glue_metric(task: str):
    """A fresh in-memory metric for `task` (evaluate's `Metric`: `add_batch`, `compute`)."""
    return _glue_metric_class()(config_name=task, keep_in_memory=True)
