"""Run records → one DataFrame → Table 2 and Table 6 beside the reference numbers.

Reads records only (never the training code). A run's score is its best-epoch primary metric
(§5.1); a table cell is the mean over seeds with the standard deviation: the one statistic of
the tables and the claims (`lora_nb.claims`; the paper's Table 2 shows medians of 5 seeds).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import claims
from .convergence import DEV_SPLIT, judge_record
from .tuning import choose_rate, dev_score
from .paper import reference_table
from .rundir import RecordError, find_records, load_record

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


def _completed(df: pd.DataFrame, tag: str) -> pd.DataFrame:
    if df.empty:
        return df
    return df[(df["status"] == "completed") & df["tags"].map(lambda t: tag in t)]


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
    runs = _completed(df, "table2")
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
    runs = _completed(df, "table6")
    if runs.empty:
        return pd.DataFrame(columns=["task", "weight_type", "r", "mean", "std", "seeds"])
    out = runs.groupby(["task", "weight_type", "r"]).apply(_summary, include_groups=False).reset_index()
    out["r"] = out["r"].astype(int)
    out["seeds"] = out["seeds"].astype(int)
    return out


def _cell(mean: float, std: float, failed: int = 0, mismatched: float = np.nan) -> str:
    """"86.1 ±0.4"; MNLI "m 86.1 ±0.4 / mm 86.5" when mismatched was evaluated; runs without a
    score (constant predictions) noted as failed."""
    if pd.isna(mean) and not failed:
        return ""
    text = "" if pd.isna(mean) else f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} ±{std:.1f}"
    if not pd.isna(mismatched):
        text = f"m {text} / mm {mismatched:.1f}"
    return text + (f" ({failed} failed)" if failed else "")


def format_params(n: float) -> str:
    """294912 → "0.29M", as Table 2 writes parameter counts."""
    if pd.isna(n):
        return ""
    return f"{n / 1e6:.2f}M" if n < 1e8 else f"{n / 1e6:.0f}M"


def table2_display(t2: pd.DataFrame, model: str) -> pd.DataFrame:
    """Wide Table 2: our rows (one per method) above the paper's RoBERTa-base rows (± its
    standard deviations where the paper gives them). "Avg." is over the tasks shown."""
    paper = reference_table("table2")
    std = reference_table("table2_std")
    tasks = [t for t in TASK_LABELS if t in set(t2["task"])]
    avg = f"Avg. ({len(tasks)} tasks)"
    rows = []
    for method in [m for m in METHOD_LABELS if m in set(t2["method"])]:
        sub = t2[t2["method"] == method].set_index("task")
        row = {"source": f"ours ({model})", "method": METHOD_LABELS[method],
               "trainable (no head)": format_params(sub["trainable_without_head"].median()),
               "trainable (with head)": format_params(sub["trainable"].median()),
               "seeds": int(sub["seeds"].min())}
        row.update({TASK_LABELS[t]: _cell(sub.at[t, "mean"], sub.at[t, "std"], sub.at[t, "failed"],
                                          sub.at[t, "mismatched"]) if t in sub.index else ""
                    for t in tasks})
        row[avg] = f"{sub.loc[tasks, 'mean'].mean():.1f}" if set(tasks) <= set(sub.index) else ""
        rows.append(row)
    for _, p in paper.iterrows():
        match = std[(std["method"] == p["method"]) & (std["trainable_params"] == p["trainable_params"])]
        row = {"source": "paper (RoBERTa-base)", "method": p["method"],
               "trainable (no head)": p["trainable_params"], "trainable (with head)": "",
               "seeds": 5 if p["method"] == "LoRA" else ""}
        row.update({TASK_LABELS[t]: _cell(p[t], match.iloc[0][t] if len(match) else np.nan) for t in tasks})
        row[avg] = f"{np.mean([p[t] for t in tasks]):.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def table6_display(t6: pd.DataFrame, model: str) -> pd.DataFrame:
    """Wide Table 6: rows source × weight type, columns r, with the paper's GPT-3 MultiNLI rows
    and the course reproduction's RoBERTa-base MNLI rows."""
    ranks = sorted(set(t6["r"])) or [1, 2, 4, 8, 64]
    canonical = ["Wq", "Wq,Wv", "Wq,Wk,Wv,Wo"]
    present = list(dict.fromkeys(t6["weight_type"]))
    rows = []
    for wt in [w for w in canonical if w in present] + [w for w in present if w not in canonical]:
        sub = t6[t6["weight_type"] == wt].set_index("r")
        rows.append({"source": f"ours ({model})", "weight type": wt,
                     **{f"r={r}": _cell(sub.at[r, "mean"], sub.at[r, "std"]) if r in sub.index else ""
                        for r in ranks}})
    paper = reference_table("table6")
    for _, p in paper[paper["dataset"] == "MultiNLI"].iterrows():
        rows.append({"source": "paper (GPT-3 175B)", "weight type": p["weight_type"],
                     **{f"r={r}": f"{p[f'r{r}']:.1f}" for r in ranks if f"r{r}" in p}})
    course = reference_table("course_table6")
    course = course[course["table"] == 6]
    parsed = course["setting"].str.extract(r"^(?P<wt>\S+) r(?P<r>\d+)$")
    for wt in parsed["wt"].unique():
        sel = parsed["wt"] == wt
        values = dict(zip(parsed.loc[sel, "r"].astype(int), course.loc[sel, "value"]))
        rows.append({"source": "tn292 (RoBERTa-base, 3 ep.)", "weight type": wt,
                     **{f"r={r}": f"{values[r]:.1f}" if r in values else "" for r in ranks}})
    return pd.DataFrame(rows)


def table5(df: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 5 on our model: the cells at one parameter budget (one weight type at r = 8,
    two at r = 4, four at r = 2), from the Table 6 and Table 5 runs, beside the paper's GPT-3
    MultiNLI numbers. Long format."""
    runs = df[(df["status"] == "completed") & df["tags"].map(lambda t: "table5" in t or "table6" in t)] \
        if len(df) else df
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
    runs = _completed(df, "table2")
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


def tuning_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every method's learning-rate grid per task: each tuning run (the first seed at each rate)
    with its best dev and validation scores (× 100), whether it converged, and which rate
    `lora_nb.tuning.choose_rate` picks on the dev split (the rate the other seeds run at)."""
    columns = ["task", "method", "learning_rate", "dev", "validation", "converged", "chosen"]
    runs = _completed(df, "table2")
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


def tuning_display(tuning: pd.DataFrame) -> pd.DataFrame:
    """`tuning_table` one row per task and method: each rate's dev score, the chosen one starred,
    ✗ where that run did not converge."""
    rows = []
    for (task, method), g in tuning.groupby(["task", "method"], sort=False):
        cells = [f"{r.learning_rate:g}: {r.dev:.1f}{' ★' if r.chosen else ''}{'' if r.converged else ' ✗'}"
                 for r in g.itertuples()]
        rows.append({"task": TASK_LABELS.get(task, task), "method": METHOD_LABELS.get(method, method),
                     "learning rate: best dev score (★ chosen, ✗ not converged)": ";  ".join(cells)})
    return pd.DataFrame(rows)


def signed(value: float, digits: int = 1) -> str:
    """A difference for prose: "+1.2", "−1.2" (a minus sign, not a hyphen), and "0.0" where it
    rounds to zero (never "−0.0")."""
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return f"{0:.{digits}f}"
    return text.replace("-", "−")


def grid_edge_text(tuning: pd.DataFrame) -> str:
    """Which chosen rates lie at an edge of their grid (the grid may not bracket the best rate)."""
    if tuning.empty:
        return "No tuning runs in these records."
    edges = []
    for (task, method), g in tuning.groupby(["task", "method"], sort=False):
        chosen = g[g["chosen"]]["learning_rate"]
        if len(chosen) and chosen.iloc[0] in (g["learning_rate"].min(), g["learning_rate"].max()):
            side = "top" if chosen.iloc[0] == g["learning_rate"].max() else "bottom"
            edges.append(f"{TASK_LABELS.get(task, task)} {METHOD_LABELS.get(method, method)} "
                         f"({chosen.iloc[0]:g}, the {side})")
    n = tuning.groupby(["task", "method"]).ngroups
    if not edges:
        return f"Every one of the {n} tuned cells chose a rate inside its grid."
    return (f"{len(edges)} of {n} tuned cells chose a rate at the edge of the grid: "
            + "; ".join(edges) + ".")


def claim_text(comparisons: pd.DataFrame, claim: str) -> str:
    """One claim in prose: the paper's statement, its verdict, and each comparison's difference
    with its interval and verdict, from `claims.decide`'s comparisons."""
    verdict = claims.claim_verdicts(comparisons)[claim]
    rows = comparisons[comparisons["claim"] == claim] if len(comparisons) else comparisons
    head = f"**{claim}: {claims.CLAIMS[claim]}.** Verdict: **{verdict}**."
    if not len(rows):
        return head + " No comparison could be made: a side has no completed runs in these records."
    parts = [f"{TASK_LABELS.get(r.task, r.task)}, {r.a} − {r.b}: {signed(r.difference)} points "
             f"[{signed(r.lo)}, {signed(r.hi)}], {r.verdict}" + (f" ({r.note})" if r.note else "")
             for r in rows.itertuples()]
    return head + " " + "; ".join(parts) + "."


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
    reaches (median over the Table 2 seeds), and whether the task counts as learned."""
    rows = []
    done = df[df["status"] == "completed"] if len(df) else df
    for task, group in done.groupby("task", sort=False):
        ft = group[(group["method"] == "full") & group["tags"].map(lambda t: "table2" in t)]
        rec = group["record"].iloc[0]
        metric = rec["primary_metric"]
        base = trivial_baseline(rec)
        ft_median = 100 * ft["best_metric"].median() if len(ft) else np.nan
        rows.append({"task": TASK_LABELS.get(task, task), "metric": metric,
                     "validation examples": int(group["eval_examples"].max()),
                     "trivial baseline": base,
                     "trivial baseline is": "majority class" if metric == "accuracy" else "a constant (0)",
                     "FT (median)": ft_median,
                     "FT learned it": ("yes" if ft_median - base >= claims.LEARNED[metric] else "no")
                     if len(ft) else "not run"})
    return pd.DataFrame(rows)


def claims_summary(comparisons: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """The claims table: claim, the paper's evidence, ours (differences with 95% intervals),
    verdict — all from `claims.decide`'s comparisons and the reference CSVs."""
    verdicts = claims.claim_verdicts(comparisons)
    paper2 = reference_table("table2").set_index("method")
    t6 = reference_table("table6")
    t6 = t6[t6["dataset"] == "MultiNLI"].set_index("weight_type")
    t5 = reference_table("table5")
    t5 = t5[t5["dataset"] == "MultiNLI"].set_index("weight_type")["value"]
    tasks = [t for t in TASK_LABELS if len(df) and t in set(df[df["tags"].map(lambda x: "table2" in x)]["task"])]
    avg = lambda m: (" / ".join(f"{v:.1f}" for v in paper2.loc[[m], tasks].mean(axis=1))
                     if tasks else "n/a")
    evidence = {
        "C1": claims.PAPER_EVIDENCE["C1"].format(lora_avg=avg("LoRA"), ft_avg=avg("FT")),
        "C2": claims.PAPER_EVIDENCE["C2"].format(lora_avg=avg("LoRA"), bitfit_avg=avg("BitFit")),
        "C3": claims.PAPER_EVIDENCE["C3"].format(**{f"qv{r}": t6.loc["Wq,Wv", f"r{r}"] for r in (1, 2, 8, 64)}),
        "C4": claims.PAPER_EVIDENCE["C4"].format(q8=t5["Wq"], qv4=t5["Wq,Wv"], qkvo2=t5["Wq,Wk,Wv,Wo"]),
        "C6": claims.PAPER_EVIDENCE["C6"].format(lora_avg=avg("LoRA"), adpt_avg=avg("AdptD")),
    }
    rows = []
    for claim, text in claims.CLAIMS.items():
        sub = comparisons[comparisons["claim"] == claim] if len(comparisons) else comparisons
        ours = "; ".join(
            f"{TASK_LABELS.get(r.task, r.task)}: {r.a} − {r.b} = {signed(r.difference)} [{signed(r.lo)}, {signed(r.hi)}]"
            + (f" ({r.note})" if r.note else "")
            for r in sub.itertuples()) or "not run"
        if claim == "C1" and len(df):
            share = _parameter_share(df)
            if share is not None:
                ours = f"LoRA trains {share:.2%} of FT's parameters (head excluded). " + ours
        rows.append({"claim": claim, "statement": text, "paper": evidence[claim],
                     "ours: difference [95% interval], points": ours, "verdict": verdicts[claim]})
    return pd.DataFrame(rows)


def _parameter_share(df: pd.DataFrame) -> float | None:
    t2 = df[(df["status"] == "completed") & df["tags"].map(lambda t: "table2" in t)]
    lora = t2[t2["method"] == "lora"]["trainable_without_head"].median()
    full = t2[t2["method"] == "full"]["trainable_without_head"].median()
    return None if pd.isna(lora) or pd.isna(full) else float(lora / full)


def comparisons_display(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons rounded for a page: one row per comparison, no index."""
    if comparisons.empty:
        return comparisons
    out = comparisons.assign(task=comparisons["task"].map(lambda t: TASK_LABELS.get(t, t)))
    out = out.rename(columns={"a_stat": "A (mean over seeds)", "b_stat": "B (mean over seeds)",
                              "difference": "A − B (mean)", "lo": "95% low", "hi": "95% high",
                              "kind": "test"})
    out = out.round(1)
    floats = out.select_dtypes("float").columns
    out[floats] = out[floats] + 0.0  # −0.0 rounds to 0.0
    return out


def cost_summary(df: pd.DataFrame) -> dict:
    """What the runs cost: runs, summed run wall time, training + evaluation seconds, the span
    from the first start to the last finish, the machine's cores, and the share of its
    core-seconds spent in training and evaluation steps (× each run's threads)."""
    done = df[df["status"] == "completed"]
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
    done = df[df["status"] == "completed"]
    out = done.groupby(["task", "method"])[["optimizer_steps", "train_seconds", "eval_seconds", "wall_time_s"]] \
        .median().round(0).astype("Int64").reset_index()
    out = out.rename(columns={"optimizer_steps": "optimizer steps", "train_seconds": "training (s)",
                              "eval_seconds": "evaluation (s)", "wall_time_s": "whole run (s)"})
    out["task"] = out["task"].map(lambda t: TASK_LABELS.get(t, t))
    out["method"] = out["method"].map(lambda m: METHOD_LABELS.get(m, m))
    return out


def _values(series: pd.Series, fmt=str) -> str:
    vals = sorted({v for v in series.dropna()}, key=lambda v: (str(type(v)), v))
    return ", ".join(fmt(v) for v in vals) if vals else "n/a"


def deviations(df: pd.DataFrame) -> pd.DataFrame:
    """Paper against ours, row by row: every setting that differs, ours read from the records."""
    done = df[(df["status"] == "completed") & df["tags"].map(lambda t: "budget" not in t)]
    if done.empty:
        return pd.DataFrame(columns=["setting", "paper (RoBERTa-base, Table 9)", "ours"])
    t9 = reference_table("table9").set_index("task")
    tasks = [t for t in TASK_LABELS if t in set(done["task"])]
    per_task = lambda col, fmt=str: "; ".join(
        f"{TASK_LABELS[t]} {_values(done[done['task'] == t][col], fmt)}" for t in tasks)
    lrs = done.groupby("method")["learning_rate"].agg(lambda s: _values(s, lambda v: f"{v:g}"))
    lora = done[done["method"] == "lora"]
    adapters = done[done["method"].isin(["houlsby", "pfeiffer"])]
    threads = _values(done["torch_threads"], lambda v: f"{int(v)}")
    device = _values(done["device"].map(lambda d: "CPU" if str(d).startswith("cpu") else d))
    rows = [
        ("model", "RoBERTa-base (125M parameters, 12 layers, d = 768)",
         f"{_values(done['model'])} ({_model_size(done) / 1e6:.2f}M parameters with head, "
         "6 layers, d = 384; BERT)"),
        ("training examples", "the whole training set (MNLI 393k, SST-2 67k, QQP 364k, STS-B 5.7k, …)",
         per_task("train_examples", lambda v: f"{int(v):,}")),
        ("optimizer steps per run", "epochs × examples / batch: e.g. SST-2 60 epochs × 67,349 / 128 "
         f"≈ {60 * 67349 / 128 / 1000:.1f}k steps",
         per_task("optimizer_steps", lambda v: f"{int(v)}")),
        ("epochs", "; ".join(f"{TASK_LABELS[t]} {t9.at[t, 'epochs']}" for t in tasks if t in t9.index),
         "passes over the training examples, steps × batch / examples: " + "; ".join(
             f"{TASK_LABELS[t]} {_values(g['optimizer_steps'] * g['batch_size'] / g['train_examples'], lambda v: f'{v:.1f}')}"
             for t in tasks for g in [done[done["task"] == t]])),
        ("batch size", "Table 9's 16 or 32 per GPU on the scripts' 8 GPUs (CoLA 2): 128 or 256 per "
         "optimizer step (CoLA 64)",
         _values(done["batch_size"], lambda v: f"{int(v)}") + " per optimizer step, one process"),
        ("learning rate", "LoRA 4e-4 … 5e-4 (Table 9); FT, BitFit, adapters: from prior work",
         "; ".join(f"{METHOD_LABELS.get(m, m)} {v}" for m, v in lrs.items())),
        ("LoRA r, α, targets", "r = 8, α = 8 (scripts: 16), Wq,Wv",
         f"Table 2: r = {_values(lora[lora['tags'].map(lambda t: 'table2' in t)]['r'], lambda v: f'{int(v)}')}, "
         f"α = {_values(lora['alpha'], lambda v: f'{v:g}')}, Wq,Wv; Tables 5–6: r ∈ "
         f"{{{_values(lora['r'], lambda v: f'{int(v)}')}}} × {_values(lora['weight_type'])}"),
        ("adapters", "AdptD (Rücklé et al.): 0.3M and 0.9M, numbers quoted from that paper",
         ("trained here: " + "; ".join(f"{METHOD_LABELS[m]} m = {_values(g['adapter_size'], lambda v: f'{int(v)}')}"
                                       for m, g in adapters.groupby("method"))) if len(adapters) else "not run"),
        ("classification head reads", "the first token (RoBERTa's classification head)", _values(done["pooling"])),
        ("max sequence length", "512", _values(done["max_length"], lambda v: f"{int(v)}")),
        ("seeds per cell", "5 (median)", _values(done.groupby(["task", "method", "weight_type", "r"],
                                                              dropna=False)["seed"].nunique(),
                                                 lambda v: f"{int(v)}") + " (median)"),
        ("validation examples", "the whole validation split (MNLI matched 9,815)",
         per_task("eval_examples", lambda v: f"{int(v):,}")),
        ("metric", "MNLI matched and mismatched acc. (best epoch chosen on matched), CoLA MCC, "
         "STS-B Pearson, accuracy elsewhere; best epoch",
         "the same metrics; best of the run's evaluations ("
         + _values(done["record"].map(lambda r: len(r.get("evaluations") or [])), lambda v: f"{int(v)}")
         + " per run)" + (
             "; MNLI matched only (the local data has no mismatched split)"
             if "mnli" in set(done["task"]) and done["mismatched"].isna().all() else "")),
        ("FT baseline", "not run: RoBERTa's numbers (Liu et al., 2019) copied, with MRPC, RTE and "
         "STS-B started from the MNLI model, weight decay 0.1 and the learning rate picked from "
         "{1e-5, 2e-5, 3e-5} on the validation set",
         "run here on every task from the pretrained model: " + "; ".join(
             f"lr {_values(g['learning_rate'], lambda v: f'{v:g}')}, weight decay {_values(g['record'].map(lambda r: r['config'].get('weight_decay', 0.0)))}"
             for _, g in done[done["method"] == "full"].groupby("method")) or "not run"),
        ("hardware", "NVIDIA Tesla V100 GPUs (microsoft/LoRA's scripts launch 8 processes; CoLA 2)",
         f"{device}, {threads} {'thread' if threads == '1' else 'threads'} per run"),
    ]
    return pd.DataFrame(rows, columns=["setting", "paper (RoBERTa-base, Table 9)", "ours"])


def styled(df: pd.DataFrame):
    """A table for a rendered page: no row index, floats to one decimal, text columns and their
    headers left-aligned (numbers stay right-aligned)."""
    text = [c for c in df.columns if df[c].dtype == object]
    # Element ids from the table's content, not pandas' random ones: a re-render is byte-identical.
    uuid = hashlib.sha1(df.to_csv().encode()).hexdigest()[:8]
    style = df.style.set_uuid(uuid).hide(axis="index").format(precision=1, na_rep="")
    if text:
        style = style.set_properties(subset=text, **{"text-align": "left"}).set_table_styles(
            [{"selector": f"th.col{df.columns.get_loc(c)}", "props": "text-align: left"} for c in text])
    return style


def table5_display(t5: pd.DataFrame) -> pd.DataFrame:
    """Table 5 for a page: weight type, r, ours (mean ± std, seeds), the paper's GPT-3 MultiNLI."""
    return pd.DataFrame({"weight type": t5["weight_type"], "r": t5["r"],
                         "ours (MNLI)": [_cell(m, s) for m, s in zip(t5["mean"], t5["std"])],
                         "seeds": t5["seeds"], "paper (GPT-3, MultiNLI ±0.1)": t5["paper"]})


def _model_size(done: pd.DataFrame) -> float:
    """The model's own parameters with its head: a fine-tuned run's (every other method adds
    some: LoRA's A and B, the adapters), else the smallest run's."""
    full = done[done["method"] == "full"]["total_params"]
    return float((full if len(full) else done["total_params"]).min())


def summary_text(df: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    """The page's opening paragraph, from the records: what ran, on what, and the verdicts."""
    main = df[(df["status"] == "completed") & df["tags"].map(lambda t: "budget" not in t)]
    if main.empty:
        return "No completed runs yet."
    tasks = [t for t in TASK_LABELS if t in set(main["task"])]
    t2 = main[main["tags"].map(lambda t: "table2" in t)]
    steps = "; ".join(f"{TASK_LABELS[t]} {_values(main[main['task'] == t]['optimizer_steps'], lambda v: f'{int(v)}')}"
                      for t in tasks)
    examples = "; ".join(f"{TASK_LABELS[t]} {_values(main[main['task'] == t]['train_examples'], lambda v: f'{int(v):,}')}"
                         f" / {_values(main[main['task'] == t]['eval_examples'], lambda v: f'{int(v):,}')}"
                         for t in tasks)
    verdicts = claims.claim_verdicts(comparisons)
    counts = {v: sum(x == v for x in verdicts.values()) for v in
              (claims.REPRODUCED, claims.INCONCLUSIVE, claims.NOT_REPRODUCED, claims.NOT_TESTABLE)}
    size = _model_size(main) / 1e6
    methods = ", ".join(METHOD_LABELS.get(m, m) for m in METHOD_LABELS if m in set(t2["method"]))
    seeds = int(t2.groupby(["task", "method"])["seed"].nunique().median()) if len(t2) else 0
    t6 = main[main["tags"].map(lambda t: "table6" in t)]
    t6_seeds = int(t6.groupby(["weight_type", "r"])["seed"].nunique().median()) if len(t6) else 0
    return (
        f"**What ran.** {len(main)} fine-tuning runs of **{_values(main['model'])}** "
        f"({size:.2f}M parameters; the paper: RoBERTa-base, 125M) on real GLUE data: "
        f"{', '.join(TASK_LABELS[t] for t in tasks)} (training / validation examples: {examples}). "
        f"Optimizer steps per run (batch {_values(main['batch_size'], lambda v: f'{int(v)}')}): {steps} — "
        f"the paper trains for tens of thousands. Table 2 compares {methods} with {seeds} "
        f"{'seed' if seeds == 1 else 'seeds'} per cell (median); "
        + (f"Tables 5–6 vary LoRA's rank and weight types on MNLI with {t6_seeds} "
           f"{'seed' if t6_seeds == 1 else 'seeds'} per cell.\n\n" if t6_seeds else
           "Tables 5–6 have not run yet.\n\n")
        + f"**Verdicts.** Of the paper's {len(verdicts)} claims tested on this page, {counts[claims.REPRODUCED]} "
        f"{'is' if counts[claims.REPRODUCED] == 1 else 'are'} reproduced, {counts[claims.INCONCLUSIVE]} "
        f"inconclusive at this scale, {counts[claims.NOT_TESTABLE]} not testable at this budget (a run did "
        f"not converge, a side has one seed, or a side has not run) and {counts[claims.NOT_REPRODUCED]} "
        "not reproduced: " + "; ".join(f"{c} {v}" for c, v in verdicts.items())
        + ". §7's claim (C5) is decided on the companion page. A small model trained for "
        f"{_values(main['optimizer_steps'], lambda v: f'{int(v):,}')} optimizer steps tests the claims' "
        "direction and relative size, not the paper's absolute numbers.")


def cost_text(df: pd.DataFrame) -> str:
    """What the runs on this page cost, from their records, and the command that regenerates them."""
    cost = cost_summary(df)
    done = df[df["status"] == "completed"]
    threads = int(done["torch_threads"].max()) if len(done) else 0
    versions = done["versions"].iloc[-1] if len(done) else {}
    commits = sorted({c[:10] for c in done["git_commit"].dropna()})
    return (
        f"{cost['runs']} completed runs, {threads} {'thread' if threads == 1 else 'threads'} each, ran between {cost['first_start'][:16]} and "
        f"{cost['last_finish'][:16]}: {cost['span_seconds'] / 3600:.2f} h of wall time, "
        f"{cost['span_seconds'] * cost['cores'] / 3600:.2f} core-hours on {cost['cores']} cores, "
        f"{cost['step_fraction']:.0%} of which went to training and evaluation steps (the rest: kernels, imports, "
        "data and model loading, idle workers). "
        "Regenerate with `make reference`: it restores the committed records, runs only what is "
        "missing (so an interrupted sweep resumes, also on a fresh clone) and renders this page. "
        f"Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; git commit{'s' if len(commits) > 1 else ''} {', '.join(commits) or 'unknown'}.")


def to_markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False)


def headline(runs_dir: str | os.PathLike) -> str:
    """The README's results block, as Markdown, from the records under `runs_dir`: the claims
    table and Table 2 (``python -m lora_nb.results report/records``)."""
    df = load_records(runs_dir)
    comparisons = claims.decide(df)
    summary = claims_summary(comparisons, df)
    main = df[df["tags"].map(lambda t: "budget" not in t)]
    t2 = table2_display(table2(df), main["model"].mode()[0])
    cols = ["claim", "statement", "ours: difference [95% interval], points", "verdict"]
    return "\n\n".join([to_markdown(summary[cols]), to_markdown(t2), convergence_text(main)])


def convergence_text(df: pd.DataFrame) -> str:
    """How many completed runs converged by `lora_nb.convergence`'s rule, and which did not."""
    done = df[df["status"] == "completed"] if len(df) else df
    if not len(done):
        return "no completed runs"
    late = done[~done["converged"]]
    lines = [f"{int(done['converged'].sum())} of {len(done)} completed runs converged "
             "(best dev score before the last quarter of training, or a gain in it below one "
             "standard error of the dev score and at least half a point)"]
    lines += [f"- not converged: {r.run_id}: {r.convergence}" for r in late.itertuples()]
    return "\n".join(lines)


def reproduced(runs_dir: str | os.PathLike, reference_dir: str | os.PathLike) -> str:
    """Whether the completed runs under `runs_dir` reproduce the runs of `reference_dir` made with
    the same settings (matched by configuration and seed, whatever their names): the same best
    score and every validation prediction the same. One line per run that differs, then a count."""
    from .config import RunConfig

    def key(record: dict) -> str:  # every setting with its default filled in, where runs go aside
        try:
            config = RunConfig.from_dict(record["config"]).computation()
        except (TypeError, ValueError) as err:
            raise RecordError(f"the record of {record['config'].get('output_dir') or 'a run'}: "
                              f"its config is not a run configuration ({err})") from None
        return json.dumps(config, sort_keys=True, default=str)

    reference = {key(r): r for r in load_records(reference_dir)["record"] if r.get("status") == "completed"}
    lines, same, compared = [], 0, 0
    for run_id, record in zip(*(load_records(runs_dir)[c] for c in ("run_id", "record"))):
        if record.get("status") != "completed" or key(record) not in reference:
            continue
        ref = reference[key(record)]
        compared += 1
        if (record.get("best_metric"), record.get("best_outputs")) == (ref.get("best_metric"), ref.get("best_outputs")):
            same += 1
        else:
            lines.append(f"{run_id}: best {record.get('best_metric')} against {ref.get('best_metric')}")
    return "\n".join(lines + [f"{same} of {compared} runs made with the reference's settings reproduce "
                               "its best score and every validation prediction"])


def check_records_folder(runs_dir: str | os.PathLike) -> Path:
    """Refuse a folder that does not exist, is a file, or holds no run records."""
    folder = Path(runs_dir)
    if not folder.exists():
        raise FileNotFoundError(f"{runs_dir}: no such folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"{runs_dir}: a file, not a folder of run records")
    if not any(True for _ in find_records(folder)):
        raise FileNotFoundError(f"{runs_dir}: holds no run records (<run-id>/record.json or <run-id>.json)")
    return folder


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m lora_nb.results",
                                     description="the README's results block, or a check against a reference run")
    parser.add_argument("runs_dir", nargs="?", default="report/records",
                        help="run folders or published records (default report/records)")
    parser.add_argument("--same-as", metavar="REFERENCE_DIR",
                        help="instead: which runs reproduce this reference run exactly, e.g. report/records")
    args = parser.parse_args(argv)
    try:
        for folder in (args.runs_dir, args.same_as):
            if folder is not None:
                check_records_folder(folder)
        if args.same_as:
            text = reproduced(args.runs_dir, args.same_as)
        else:
            df = load_records(args.runs_dir)
            done = df[(df["status"] == "completed") & df["tags"].map(lambda t: "budget" not in t)]
            if done.empty:
                raise ValueError(f"{args.runs_dir}: holds no completed Table 2, 5 or 6 runs ({len(df)} "
                                 f"record(s), status {', '.join(sorted(set(map(str, df['status']))))})")
            try:
                text = headline(args.runs_dir)
            except (KeyError, IndexError) as err:  # records too few or too odd for the tables
                raise ValueError(f"{args.runs_dir}: its records do not make the results block "
                                 f"({type(err).__name__}: {err})") from None
    except (OSError, ValueError) as err:  # RecordError names the file
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
