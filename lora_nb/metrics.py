"""GLUE metrics through evaluate's `Metric` API, offline.

`evaluate.load("glue", task)` fetches its script from the Hub; `GlueMetric(config_name=task)` is
the same interface (`add_batch`, `compute`) backed by scikit-learn and scipy, with nothing to
download. Values are fractions in [0, 1] (correlations in [-1, 1]); tables show them × 100.
"""

from __future__ import annotations

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

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


class GlueMetric(evaluate.Metric):
    """GLUE's metric for one task (``config_name``): accuracy, plus F1 for MRPC and QQP;
    Matthews correlation for CoLA; Pearson and Spearman for STS-B."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in PRIMARY_METRIC:
            raise KeyError(
                f"GlueMetric: unknown task {self.config_name!r}; choose from {sorted(PRIMARY_METRIC)}"
            )
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description="GLUE metrics computed locally with scikit-learn and scipy.",
            citation="Wang et al., 2019, GLUE: A Multi-Task Benchmark and Analysis Platform.",
            inputs_description="predictions and references: class ids, or scores for STS-B.",
            features=datasets.Features(
                {"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        task = self.config_name
        if task == "stsb":
            return {
                "pearson": float(pearsonr(references, predictions)[0]),
                "spearman": float(spearmanr(references, predictions)[0]),
            }
        if task == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        scores = {"accuracy": float(accuracy_score(references, predictions))}
        if task in ("mrpc", "qqp"):
            scores["f1"] = float(f1_score(references, predictions))
        return scores


def glue_metric(task: str) -> GlueMetric:
    """A fresh in-memory metric for `task`."""
    return GlueMetric(config_name=task, keep_in_memory=True)
