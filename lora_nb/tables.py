"""Run records → one DataFrame → the tables: Table 2, 5 and 6, the learning-rate grids, the
convergence study, the trivial baselines and what the runs cost.

Reads records only (never the training code). A run's score is its best-epoch primary metric
(§5.1); a table cell is the mean over seeds with the standard deviation: the one statistic of
the tables and the claims (`lora_nb.claims`; the paper's Table 2 shows medians of 5 seeds).
The tables hold numbers; `lora_nb.findings` formats them for a page and writes the prose.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from . import claims
from .convergence import DEV_SPLIT, judge_record
from .paper import reference_table
from .rundir import COMPLETED, RecordError, find_records, load_record
from .tuning import choose_rate, dev_score

METHOD_LABELS = {"lora": "LoRA", "full": "FT", "bitfit": "BitFit", "head": "Head only",
                 "houlsby": "AdptH", "pfeiffer": "AdptP"}
TASK_LABELS = {"mnli": "MNLI", "sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA", "qnli": "QNLI",
               "qqp": "QQP", "rte": "RTE", "stsb": "STS-B"}
WEIGHT_LABELS = {"q": "Wq", "k": "Wk", "v": "Wv", "o": "Wo"}


def weight_label(targets: list[str]) -> str:
    """["q", "v"] → "Wq,Wv", as Table 6 names weight types."""
    return ",".join(WEIGHT_LABELS.get(t, t) for t in targets)


def load_records(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per run record under `runs_dir` (any status): run folders, or the committed
    reference run's flat records. The raw record is kept in column ``record``. A file that is
    not a run record raises `RecordError`, naming it."""
    rows = []
    for run_id, path in find_records(runs_dir):
        rec = load_record(path)
        try:
            rows.append(_row(run_id, rec))
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise RecordError(f"{path}: not a run record ({type(err).__name__}: {err})") from None
    return pd.DataFrame(rows)


def _row(run_id: str, rec: dict) -> dict:
    """One row of `load_records` from a run record."""
    cfg = rec.get("config", {})
    params = rec.get("parameters", {})
    epochs = rec.get("epochs", [])
    method = cfg.get("method")
    convergence = judge_record(rec)
    return {
        "run_id": run_id,
        "status": rec.get("status"),
        "converged": convergence.converged,
        "convergence": convergence.reason,
        "error": rec.get("error"),
        "task": cfg.get("task"),
        "method": method,
        "model": cfg.get("model"),
        "weight_type": weight_label(cfg.get("targets", [])) if method == "lora" else "",
        "r": cfg.get("r") if method == "lora" else np.nan,
        "alpha": cfg.get("alpha") if method == "lora" else np.nan,
        "adapter_size": cfg.get("adapter_size") if method in ("houlsby", "pfeiffer") else np.nan,
        "pooling": cfg.get("pooling", "cls"),
        "seed": cfg.get("seed"),
        "learning_rate": cfg.get("learning_rate"),
        "batch_size": cfg.get("batch_size"),
        "tags": tuple(cfg.get("tags", [])),
        "train_examples": rec.get("data", {}).get("train_examples"),
        # the validation split(s) a score is reported on; the dev split only chooses rates
        "eval_examples": sum(n for split, n in rec.get("data", {}).get("eval_examples", {}).items()
                             if split != DEV_SPLIT) or np.nan,
        "epochs": cfg.get("epochs"),
        "optimizer_steps": rec.get("optimizer_steps"),
        "max_length": cfg.get("max_length"),
        "primary_metric": rec.get("primary_metric"),
        "best_metric": rec.get("best_metric", np.nan),
        "mismatched": _mismatched(rec),
        "best_epoch": rec.get("best_epoch"),
        "best_step": rec.get("best_step"),
        "trainable": params.get("trainable"),
        "trainable_without_head": params.get("trainable_without_head"),
        "lora_params": params.get("lora"),
        "adapter_params": params.get("adapter"),
        "head_params": params.get("head"),
        "total_params": params.get("total"),
        "wall_time_s": rec.get("wall_time_s"),
        "train_seconds": rec.get("train_seconds", sum(e.get("train_seconds", 0) for e in epochs)),
        "eval_seconds": rec.get("eval_seconds", sum(e.get("eval_seconds", 0) for e in epochs)),
        "seconds_per_epoch": np.mean([e["train_seconds"] for e in epochs]) if epochs else np.nan,
        "train_tokens_per_s": rec.get("train_tokens_per_s"),
        "peak_memory_gib": (rec.get("peak_memory_bytes") or 0) / 2**30,
        "device": rec.get("device"),
        "torch_threads": rec.get("torch_threads"),
        "mixed_precision": rec.get("mixed_precision"),
        "started_at": rec.get("started_at"),
        "finished_at": rec.get("finished_at"),
        "git_commit": rec.get("git_commit"),
        "versions": rec.get("versions", {}),
        "loss_curve": rec.get("loss_curve", []),
        "evaluations": [(e["step"], e["primary"]) for e in rec.get("evaluations", [])],
        "record": rec,
    }


def _mismatched(record: dict) -> float:
    """MNLI's mismatched accuracy at the evaluation chosen on matched (the paper's caption:
    matched and mismatched, best epoch on matched); NaN when not evaluated."""
    for e in record.get("evaluations", []):
        if e.get("step") == record.get("best_step") and "validation_mismatched" in e.get("eval", {}):
            return e["eval"]["validation_mismatched"].get("accuracy", np.nan)
    return np.nan


def completed(df: pd.DataFrame) -> pd.Series:
    """Which rows of a `load_records` frame are completed runs (`rundir.COMPLETED`): the one
    test of a run's status on a frame (`rundir.is_completed` on a record). All False for a frame
    without records."""
    if "status" not in df:
        return pd.Series(False, index=df.index, dtype=bool)
    return df["status"] == COMPLETED


def _tagged(df: pd.DataFrame, tag: str) -> pd.DataFrame:
    """The completed runs tagged `tag`."""
    if df.empty:
        return df
    return df[completed(df) & df["tags"].map(lambda t: tag in t)]


def _summary(group: pd.DataFrame) -> pd.Series:
    """Mean and std over the seeds that have a score. A completed run without one (an STS-B run
    whose predictions are all equal: Pearson undefined) counts under ``failed``, not as a seed."""
    scores = group["best_metric"].dropna() * 100
    return pd.Series({
        "mean": scores.mean(), "std": scores.std(ddof=1) if len(scores) > 1 else np.nan,
        "seeds": len(scores), "failed": int(group["best_metric"].isna().sum()),
        "mismatched": group["mismatched"].dropna().median() * 100 if group["mismatched"].notna().any() else np.nan,
        "learning_rate": group["learning_rate"].iloc[0],
        "trainable_without_head": group["trainable_without_head"].median(),
        "trainable": group["trainable"].median(), "seconds_per_epoch": group["seconds_per_epoch"].median(),
        "eval_examples": group["eval_examples"].max(),
    })


def table2(df: pd.DataFrame) -> pd.DataFrame:
    """Per task and method: mean and std over seeds of the best-epoch metric (× 100), and
    trainable parameters with and without the head. Long format, one row per cell."""
    runs = _tagged(df, "table2")
    if runs.empty:
        return pd.DataFrame(columns=["task", "method", "mean", "std", "seeds", "failed"])
    groups = runs.groupby(["task", "method"], sort=False)
    rates = groups["learning_rate"].nunique().rename("rates_tried")
    chosen = groups.apply(claims.best_learning_rate, include_groups=False).reset_index(level=[0, 1])
    out = chosen.groupby(["task", "method"]).apply(_summary, include_groups=False).reset_index()
    out = out.merge(rates.reset_index(), on=["task", "method"])
    out["seeds"], out["failed"] = out["seeds"].astype(int), out["failed"].astype(int)
    return out


def table6(df: pd.DataFrame) -> pd.DataFrame:
    """Per weight type and rank: mean and std over seeds (× 100). Long format."""
    runs = _tagged(df, "table6")
    if runs.empty:
        return pd.DataFrame(columns=["task", "weight_type", "r", "mean", "std", "seeds"])
    out = runs.groupby(["task", "weight_type", "r"]).apply(_summary, include_groups=False).reset_index()
    out["r"] = out["r"].astype(int)
    out["seeds"] = out["seeds"].astype(int)
    return out


def table5(df: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 5 on our model: the cells at one parameter budget (one weight type at r = 8,
    two at r = 4, four at r = 2), from the Table 6 and Table 5 runs, beside the paper's GPT-3
    MultiNLI numbers. Long format."""
    runs = df[completed(df) & df["tags"].map(lambda t: "table5" in t or "table6" in t)] if len(df) else df
    n_types = runs["weight_type"].str.count(",") + 1 if len(runs) else pd.Series(dtype=int)
    budget = runs[(n_types * runs["r"]) == 8] if len(runs) else runs
    if budget.empty:
        return pd.DataFrame(columns=["task", "weight_type", "r", "mean", "std", "seeds", "paper"])
    out = budget.groupby(["task", "weight_type", "r"]).apply(_summary, include_groups=False).reset_index()
    paper = reference_table("table5")
    paper = paper[paper["dataset"] == "MultiNLI"].set_index("weight_type")["value"]
    out["paper"] = out["weight_type"].map(paper)
    order = {w: i for i, w in enumerate(paper.index)}
    out["r"], out["seeds"] = out["r"].astype(int), out["seeds"].astype(int)
    return out.sort_values("weight_type", key=lambda s: s.map(order)).reset_index(drop=True)


def study_curves(df: pd.DataFrame) -> pd.DataFrame:
    """The convergence study: every tuning run (Table 2's first seed at each rate of a grid), one
    row per evaluation — task, method, learning rate, step, dev and validation scores (× 100),
    the run's budget and convergence verdict, the task's trivial baseline on validation."""
    columns = ["task", "method", "learning_rate", "step", "dev", "validation", "budget", "converged", "trivial"]
    runs = _tagged(df, "table2")
    if runs.empty:
        return pd.DataFrame(columns=columns)
    grid = runs.groupby(["task", "method"])["learning_rate"].transform("nunique") > 1
    runs = runs[grid & (runs["seed"] == runs.groupby(["task", "method"])["seed"].transform("min"))]
    rows = []
    for r in runs.itertuples():
        rec, metric = r.record, r.primary_metric
        for e in rec.get("evaluations", []):
            dev = e["eval"].get("dev", {}).get(metric)
            rows.append({"task": r.task, "method": r.method, "learning_rate": r.learning_rate,
                         "step": e["step"], "dev": np.nan if dev is None else 100 * dev,
                         "validation": 100 * e["primary"], "budget": r.optimizer_steps,
                         "converged": r.converged, "trivial": trivial_baseline(rec)})
    return pd.DataFrame(rows, columns=columns)


def study_budgets(curves: pd.DataFrame) -> pd.DataFrame:
    """Per task of the convergence study (`study_curves`): its budget and, per method, how many
    of its rates' runs converged, and at which step the best of them (by dev score) peaked."""
    rows = []
    for task, sub in curves.groupby("task", sort=False):
        row = {"task": TASK_LABELS.get(task, task), "budget (steps)": int(sub["budget"].max())}
        for method, runs in sub.groupby("method", sort=False):
            label = METHOD_LABELS.get(method, method)
            verdicts = runs.groupby("learning_rate")["converged"].first()
            best = runs.loc[runs["dev"].idxmax()]
            row[f"{label} converged"] = f"{int(verdicts.sum())} of {len(verdicts)}"
            row[f"{label} best run peaks at"] = f"step {int(best['step'])} (lr {best['learning_rate']:g})"
        rows.append(row)
    return pd.DataFrame(rows).fillna("grid not complete yet")


def tuning_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every method's learning-rate grid per task: each tuning run (the first seed at each rate)
    with its best dev and validation scores (× 100), whether it converged, and which rate
    `lora_nb.tuning.choose_rate` picks on the dev split (the rate the other seeds run at)."""
    columns = ["task", "method", "learning_rate", "dev", "validation", "converged", "chosen"]
    runs = _tagged(df, "table2")
    if runs.empty:
        return pd.DataFrame(columns=columns)
    grid = runs.groupby(["task", "method"])["learning_rate"].transform("nunique") > 1
    rows = []
    for (task, method), group in runs[grid].groupby(["task", "method"], sort=False):
        chosen = choose_rate(group["record"])
        tuning = group[group["seed"] == group["seed"].min()]
        for r in tuning.sort_values("learning_rate").itertuples():
            rows.append({"task": task, "method": method, "learning_rate": r.learning_rate,
                         "dev": 100 * dev_score(r.record), "validation": 100 * r.best_metric,
                         "converged": r.converged, "chosen": r.learning_rate == chosen})
    return pd.DataFrame(rows, columns=columns)


def trivial_baseline(record: dict) -> float:
    """The best constant prediction's score (× 100) on the run's validation examples: the
    majority class's accuracy, 0 for correlations (NaN when the record holds no outputs)."""
    outputs = record.get("best_outputs") or {}
    if not outputs:
        return np.nan
    labels = np.asarray(next(iter(outputs.values()))["labels"])
    return claims.trivial_score(record["primary_metric"], labels)


def baselines(df: pd.DataFrame) -> pd.DataFrame:
    """Per task: metric, validation examples, the trivial baseline and what full fine-tuning
    reaches (its Table 2 runs at the chosen rate, mean over seeds: the tables' statistic), and
    whether the task counts as learned."""
    rows = []
    done = df[completed(df)]
    for task, group in done.groupby("task", sort=False):
        ft = claims.best_learning_rate(group[(group["method"] == "full") & group["tags"].map(lambda t: "table2" in t)])
        rec = group["record"].iloc[0]
        metric = rec["primary_metric"]
        base = trivial_baseline(rec)
        ft_mean = 100 * ft["best_metric"].mean() if len(ft) else np.nan
        rows.append({"task": TASK_LABELS.get(task, task), "metric": metric,
                     "validation examples": int(group["eval_examples"].max()),
                     "trivial baseline": base,
                     "trivial baseline is": "majority class" if metric == "accuracy" else "a constant (0)",
                     "FT (mean, chosen rate)": ft_mean,
                     "FT learned it": ("yes" if ft_mean - base >= claims.LEARNED[metric] else "no")
                     if len(ft) else "not run"})
    return pd.DataFrame(rows)


def cost_summary(df: pd.DataFrame) -> dict:
    """What the runs cost: runs, summed run wall time, training + evaluation seconds, the span
    from the first start to the last finish, the machine's cores, and the share of its
    core-seconds spent in training and evaluation steps (× each run's threads)."""
    done = df[completed(df)]
    start = pd.to_datetime(done["started_at"]).min()
    end = pd.to_datetime(done["finished_at"]).max()
    span = (end - start).total_seconds() if len(done) else 0.0
    counts = [r["cpu_count"] for r in done["record"] if r.get("cpu_count")] if len(done) else []
    cores = max(counts) if counts else int(done["torch_threads"].max() or 1) if len(done) else 1
    busy = float(((done["train_seconds"] + done["eval_seconds"]) * done["torch_threads"]).sum())
    return {"runs": len(done), "run_seconds": float(done["wall_time_s"].sum()),
            "step_seconds": float((done["train_seconds"] + done["eval_seconds"]).sum()),
            "span_seconds": span, "first_start": str(start), "last_finish": str(end), "cores": cores,
            "step_fraction": busy / (span * cores) if span else float("nan")}


def seconds_per_run(df: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per run (training, evaluation, whole run) by task and method."""
    done = df[completed(df)]
    out = done.groupby(["task", "method"])[["optimizer_steps", "train_seconds", "eval_seconds", "wall_time_s"]] \
        .median().round(0).astype("Int64").reset_index()
    out = out.rename(columns={"optimizer_steps": "optimizer steps", "train_seconds": "training (s)",
                              "eval_seconds": "evaluation (s)", "wall_time_s": "whole run (s)"})
    out["task"] = out["task"].map(lambda t: TASK_LABELS.get(t, t))
    out["method"] = out["method"].map(lambda m: METHOD_LABELS.get(m, m))
    return out
